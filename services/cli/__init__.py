"""The ``optbench`` command (click; tables and live progress with rich).

    optbench demo            the lecture comparison on the embedded default (API + one worker)
    optbench run SPEC        run a spec file (JSON or YAML) in this process, print the table
    optbench api             serve the HTTP API
    optbench worker          start a Celery worker
    optbench migrate         apply database migrations
    optbench reconcile       send queued jobs the broker does not hold, and runs whose worker
                             vanished or whose message was lost (the API does it too)
    optbench submit SPEC     submit a spec to the API (--watch to follow it)
    optbench list            your jobs, newest first (--status, --name, --dataset, --model,
                             --limit, --json)
    optbench status JOB      a job's status and per-run progress
    optbench cancel JOB      cancel a queued or running job
    optbench watch JOB       live progress per optimizer (seeds combined), then the summary
    optbench summary JOB     the per-optimizer table
    optbench compare JOB JOB ...    jobs side by side, rows aligned by optimizer label
    optbench history LABEL --dataset D    one label's results over your jobs on a data set
    optbench report JOB      write the HTML report (-o FILE)
    optbench export JOB      dump the series (--format csv|json|parquet|tensorboard|mlflow,
                             -o FILE, DIR or URI)
    optbench keys create --owner NAME | list | revoke ID    API keys (printed once)
    optbench suite lecture | run FILE | scores SUITE | report SUITE -o FILE
                             suites: one optimizer set over many workloads, AlgoPerf scores

Every command has ``--help``. Exit status: 0 done; 1 the job failed, no such job (or key), or
the API refused the operation (a conflict, a missing or wrong key); 2 a usage mistake
(arguments, with click's message; an unreadable file, a file that exists where ``report``
would write, an export without its destination); 3 the API cannot be reached or is
unavailable; 4 invalid input (a spec that is not JSON/YAML or fails validation, here or in
the API; a value the service refuses).

``--url`` (or OPTBENCH_API_URL) points submit/list/status/cancel/watch/summary (and report)
at a remote API, ``--key`` (or OPTBENCH_API_KEY) is the API key they send; ``--json`` prints
JSON. ``keys``, ``run``, ``export`` and ``report`` without ``--url`` work on the configured
database directly: whoever can run them there is an operator, not an API caller. Colour only
on a terminal, never under ``NO_COLOR`` or ``--no-color`` (services/console.py); progress
goes to standard error, as plain lines when that is not a terminal (services/cli/progress.py).

This is the one place that joins services and workers: it imports ``workers`` (and so torch)
only inside the commands that train.

Modules: ``base`` (the group, ``main``, exit statuses, shared options, job ids, spec files),
``local`` (demo, run, api, worker, migrate, reconcile), ``remote`` (the API commands),
``compare`` (compare, history: across jobs),
``files`` (report, export), ``keys``, ``progress`` (live progress).
"""

# The commands register on the group as their modules load, in the overview's order.
# isort: off
from services.cli import local, remote, compare, files, keys, suites  # noqa: F401  (registration)

# isort: on
from services.cli.base import (
    INVALID_SPEC,
    JOB_FAILED,
    OK,
    UNREACHABLE,
    USAGE,
    CliError,
    SpecError,
    cli,
    exit_status,
    full_id,
    load_spec,
    main,
)

__all__ = [
    "INVALID_SPEC",
    "JOB_FAILED",
    "OK",
    "UNREACHABLE",
    "USAGE",
    "CliError",
    "SpecError",
    "cli",
    "exit_status",
    "full_id",
    "load_spec",
    "main",
]
