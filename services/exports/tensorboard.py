"""``export_series(job_id, "tensorboard", directory)``: TensorBoard event files.

Written with tensorboardX (pure Python, the optional extra ``optbench[tensorboard]``), so
neither the API nor the CLI needs torch or TensorBoard itself. ``tensorboard --logdir
DIRECTORY`` then lists one run per optbench run:

- **directory**: ``DIRECTORY/<label>/seed-<seed>``, so that TensorBoard's run list groups
  the seeds of a label (its run filter matches ``adam/``). Characters a file name cannot
  hold everywhere (``/ \\ : * ? " < > |``, control characters) become ``_``; if two labels
  then collide, the run id tells them apart (``<label>-run<id>``). A run directory that
  already holds event files is refused (TensorBoard would merge both exports' curves):
  export into a new directory, or delete the old one.
- **scalars**: every stored step field at ``global_step=step`` (``train/loss``,
  ``train/accuracy``, ``train/lr``, ``train/grad_norm``, ``train/seconds``, ``train/x`` and
  ``train/y`` for landscapes, and ``val/loss``, ``val/accuracy`` for mid-epoch validation),
  every epoch field at the epoch's last global step (``epoch/train_loss``,
  ``epoch/val_accuracy``, ``epoch/distance``, ...), and the test results (``test/loss``,
  ``test/accuracy``: R² for regression) at the run's last step. Missing and non-finite
  values (a diverged run's last steps) are left out. TensorBoard stores scalars as 32-bit
  floats. All the values of one global step are one event.
- **wall time**: the run's start (``Run.started_at``; the job's start, else its submission,
  for a run that never started) plus the stored ``train_seconds`` of that step. Those are
  training seconds (evaluation excluded), so TensorBoard's "relative" axis is the run's
  training time, comparable across optimizers, not when the value was written.
- **hyperparameters**: the HParams plugin's session start info in the run's own event file
  (optimizer, label, seed, dataset, model and every optimizer keyword argument, flattened:
  ``betas.0``, ``betas.1``), and its session end info with the run's status. Not
  tensorboardX's ``add_hparams``: that writes them to a new timestamped sub-directory, a
  second entry per run in the run list. No experiment summary is written, so TensorBoard
  derives it from all the runs: the union of their hyperparameters (Adam's ``betas`` and
  SGD's ``momentum`` alike) and every scalar tag as a metric column.

Returns the number of scalar values written.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from services.db.models import FINISHED, SUCCEEDED
from services.errors import InvalidSpec
from services.exports.data import ExportJob, ExportRun, flatten, points, start_time

_UNPORTABLE = re.compile(r'[\\/:*?"<>|\x00-\x1f]')


def _import_tensorboardx() -> None:
    """Import tensorboardX, or say how to install it. Its writer module imports torch
    whenever torch is installed (for type checks this export never needs): torch is hidden
    during that import, so that exporting does not load torch (seconds, hundreds of MiB) on
    a machine that has it; only while nothing has imported torch yet, and undone right
    after. The later ``from tensorboardX ... import`` lines find the modules loaded."""
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` fails
    try:
        import tensorboardX.writer  # noqa: F401
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith("tensorboardX"):
            raise
        raise InvalidSpec(
            "format tensorboard needs tensorboardX: pip install 'optbench[tensorboard]'"
        ) from None
    finally:
        if hide and sys.modules.get("torch", ...) is None:
            del sys.modules["torch"]


def run_directories(runs: list[ExportRun]) -> dict[int, str]:
    """Per run id, its directory relative to the export's: ``<label>/seed-<seed>``."""
    names: dict[int, str] = {}
    for run in runs:
        label = _UNPORTABLE.sub("_", run.label).strip(" .") or "run"
        name = f"{label}/seed-{run.seed}"
        if name in names.values():
            name = f"{label}-run{run.id}/seed-{run.seed}"
        names[run.id] = name
    return names


def hyperparameters(job: ExportJob, run: ExportRun) -> dict[str, Any]:
    """The run's HParams: who it is, then its optimizer's keyword arguments, flattened.
    (No torch.optim keyword is named like the first five.)"""
    values = {
        "optimizer": run.optimizer,
        "label": run.label,
        "seed": run.seed,
        "dataset": job.dataset,
        "model": job.model,
        **flatten(run.hyperparameters),
    }
    # The plugin holds strings, booleans and numbers; None (an unset default) is left out.
    return {
        k: v if isinstance(v, str | bool | int | float) else str(v)
        for k, v in values.items()
        if v is not None
    }


def write_tensorboard(job: ExportJob, directory: str | os.PathLike[str]) -> int:
    _import_tensorboardx()
    from tensorboardX.proto.summary_pb2 import Summary
    from tensorboardX.summary import hparams
    from tensorboardX.writer import FileWriter

    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise InvalidSpec(f"format tensorboard: {root} is a file; name a directory")
    names = run_directories(job.runs)
    for name in names.values():
        if any((root / name).glob("events.out.tfevents.*")):
            raise InvalidSpec(
                f"format tensorboard: {root / name} already holds event files (an earlier "
                "export?); TensorBoard would merge both: export into a new directory or "
                "delete it"
            )
    count = 0
    for run in job.runs:
        start = start_time(job, run)
        writer = FileWriter(str(root / names[run.id]), max_queue=1024, flush_secs=3600)
        try:
            _, session_start, _ = hparams(hyperparameters(job, run), {})
            writer.add_summary(session_start, 0, start)
            last = start
            for point in points(job, run):
                values = [Summary.Value(tag=t, simple_value=v) for t, v in point.values.items()]
                last = start + (point.seconds or 0.0)
                writer.add_summary(Summary(value=values), point.step, last)
                count += len(values)
            if run.status in FINISHED:
                writer.add_summary(_session_end(run.status, last), None, last)
        finally:
            writer.close()
    return count


def _session_end(status: str, when: float) -> Any:
    """The HParams session end of a finished run: success if it succeeded (diverged or
    not), failure if it failed or was cancelled (the plugin has no "cancelled")."""
    from tensorboardX.proto import plugin_hparams_pb2 as plugin
    from tensorboardX.proto.api_pb2 import Status
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

    state = Status.Value("STATUS_SUCCESS" if status == SUCCEEDED else "STATUS_FAILURE")
    content = plugin.HParamsPluginData(
        session_end_info=plugin.SessionEndInfo(status=state, end_time_secs=when), version=0
    )
    metadata = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(
            plugin_name="hparams", content=content.SerializeToString()
        )
    )
    return Summary(value=[Summary.Value(tag="_hparams_/session_end_info", metadata=metadata)])
