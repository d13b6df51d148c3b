"""What every command shares: the ``optbench`` click group and ``main``, the exit statuses,
the errors, the options that several commands take, job ids and spec files."""

from __future__ import annotations

import json
import string
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml
from pydantic import ValidationError

from services.client import ApiClient, ApiError
from services.console import allow_color, make_console
from services.errors import NotFound, OptbenchError
from services.settings import get_settings
from services.spec import JobSpec, field_errors

# Exit statuses (documented in services/cli/__init__.py and README).
OK, JOB_FAILED, USAGE, UNREACHABLE, INVALID_SPEC = 0, 1, 2, 3, 4
INTERRUPTED = 130  # the shell's status for Ctrl-C

EPILOG = (
    "Exit status: 0 done, 1 job failed or not found (or refused), 2 usage mistake, "
    "3 API unreachable, 4 invalid input. A JOB is its id or a unique prefix of it (4 hex "
    "digits at least). NO_COLOR=1 or --no-color: no colour."
)


class CliError(Exception):
    """A usage mistake: printed as one line, exit status 2."""


class SpecError(CliError):
    """A spec that is not JSON/YAML or does not validate: exit status 4."""


def exit_status(error: Exception) -> int:
    """The exit status a failed command returns for ``error``."""
    from services.errors import InvalidSpec, Unavailable

    if isinstance(error, SpecError | InvalidSpec):
        return INVALID_SPEC
    if isinstance(error, CliError):
        return USAGE
    if isinstance(error, ApiError):
        if error.status is None or error.status >= 500:
            return UNREACHABLE
        return INVALID_SPEC if error.status == 422 else JOB_FAILED
    return UNREACHABLE if isinstance(error, Unavailable) else JOB_FAILED  # NotFound, Conflict


def _no_color(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        allow_color(False)


F = TypeVar("F", bound=Callable[..., Any])

# On the group and on each command that prints a table or progress, so that both
# `optbench --no-color list` and `optbench list --no-color` work.
no_color_option = click.option(
    "--no-color",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_no_color,
    help="No colour (the same as NO_COLOR=1; there is none off a terminal anyway).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
job_argument = click.argument("job", metavar="JOB")


def remote_options(command: F) -> F:
    """``--url``, ``--key``, ``--json`` and ``--no-color``: the commands that talk to the API."""
    for option in reversed(
        (
            click.option(
                "--url", help="The API (default: OPTBENCH_API_URL or http://127.0.0.1:8000)."
            ),
            click.option(
                "--key",
                help="API key (default: OPTBENCH_API_KEY, which keeps it out of the process "
                "list); none is needed from this machine under OPTBENCH_AUTH=loopback.",
            ),
            json_option,
            no_color_option,
        )
    ):
        command = option(command)
    return command


class Commands(click.Group):
    """Commands listed in ``--help`` in the order they are registered (the overview's: the
    first steps first), not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(
    cls=Commands,
    help="Compare torch.optim optimizers on real training runs, as a service.",
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@no_color_option
def cli() -> None:
    pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``optbench`` with ``argv`` (default: the process's arguments); the exit status."""
    allow_color(True)  # a --no-color of an earlier call in this process does not stick
    try:
        result = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="optbench",
            standalone_mode=False,  # our exit statuses, not click's sys.exit
        )
    except click.ClickException as error:  # usage mistakes: click's message, status 2
        error.show()
        return error.exit_code
    except click.Abort:  # Ctrl-C
        return INTERRUPTED
    except (CliError, ApiError, OptbenchError) as error:
        print(f"optbench: error: {error}", file=sys.stderr)
        return exit_status(error)
    return int(result or OK)


def print_json(value: object) -> None:
    print(json.dumps(value, indent=2, default=str))


def show(renderable: Any) -> None:
    """Print a table (or text) on standard output through a console made for it now."""
    make_console().print(renderable)


def client(url: str | None, key: str | None) -> ApiClient:
    key = key or get_settings().api_key.get_secret_value() or None
    return ApiClient(url or get_settings().api_url, api_key=key)


def load_spec(path: Path) -> JobSpec:
    try:
        text = path.read_text()
    except OSError as error:
        raise CliError(f"cannot read spec file {path}: {error.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise SpecError(f"{path} is not valid JSON/YAML: {error}") from None
    try:
        return JobSpec.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(map(str, field_errors(error.errors())))
        raise SpecError(f"{path}: {problems}") from None


def full_id(prefix: str, ids: Callable[[], Iterable[str]]) -> str:
    """The job id that ``prefix`` starts (dashes and case ignored), among ``ids()``: a whole id
    is taken as it is; a prefix needs 4 hex digits at least and must name one job."""
    try:
        return str(uuid.UUID(prefix))
    except ValueError:
        pass
    wanted = prefix.replace("-", "").lower()
    if len(wanted) < 4 or any(c not in string.hexdigits for c in wanted):
        raise CliError(
            f"{prefix!r} is not a job id: give the id, or its first 4 hex digits or more"
        )
    matches = sorted({str(i) for i in ids() if str(i).replace("-", "").startswith(wanted)})
    if not matches:
        raise NotFound(f"no job whose id starts with {prefix}")
    if len(matches) > 1:
        shown = ", ".join(matches[:3]) + (", ..." if len(matches) > 3 else "")
        raise CliError(f"{prefix} names {len(matches)} jobs ({shown}): type more of the id")
    return matches[0]


def remote_jobs(api: ApiClient, status: str | None = None) -> Iterator[dict[str, Any]]:
    """The caller's jobs (with ``status``), newest first, through the API's pages."""
    offset = 0
    while True:
        page = api.jobs(status=status, limit=200, offset=offset)
        yield from page["items"]
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            return


def remote_ids(api: ApiClient) -> Iterator[str]:
    return (job["id"] for job in remote_jobs(api))


def local_ids() -> Iterator[str]:
    """Every job id in the configured database (operator commands)."""
    from services import jobs

    offset = 0
    while True:
        items, total = jobs.listing(None, 200, offset)
        yield from (str(job.id) for job in items)
        offset += len(items)
        if not items or offset >= total:
            return


def migrate_if_embedded() -> None:
    # The embedded SQLite file is created on first use; a cluster migrates once, explicitly.
    if get_settings().is_embedded:
        from services.db.migrate import upgrade

        upgrade()
