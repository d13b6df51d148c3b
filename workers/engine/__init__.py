"""The training engine: pure torch. It knows nothing of Celery, SQL or Prometheus and reports
everything through hooks (workers/engine/hooks.py); adapters live in workers/sinks/."""

from workers.engine.config import (
    DatasetConfig,
    JobConfig,
    ModelConfig,
    OptimizerConfig,
    ParameterGroupConfig,
    RunConfig,
)
from workers.engine.experiment import Experiment
from workers.engine.hooks import EpochRecord, Hooks, RunResult, StepColumns, StepRecord
from workers.engine.plan import RunGroup

__all__ = [
    "DatasetConfig",
    "EpochRecord",
    "Experiment",
    "Hooks",
    "JobConfig",
    "ModelConfig",
    "OptimizerConfig",
    "ParameterGroupConfig",
    "RunConfig",
    "RunGroup",
    "RunResult",
    "StepColumns",
    "StepRecord",
]
