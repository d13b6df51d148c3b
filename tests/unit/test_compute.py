"""The compute estimate (services/compute.py) against torch's own FLOP counter, and the
per-job compute limit it is checked against at submission (services/limits.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from services.api.app import create_app
from services.compute import STEP_FLOOR_FLOPS, estimate, training_flops
from services.settings import get_settings
from services.sizes import DataShape
from services.spec import LECTURE_SPEC, JobSpec
from tests.support import local_client
from tests.unit.test_limits import MODELS  # the same nine models, counted by torch there

SPEC: dict[str, Any] = {
    "dataset": {"name": "digits"},
    "model": {"name": "mlp", "hidden": [32]},
    "optimizers": [{"name": "sgd", "lr": 0.1}],
    "epochs": 2,
}


@pytest.mark.parametrize(("model", "input_shape", "outputs"), MODELS)
def test_training_flops_match_torch_s_flop_counter(
    model: dict[str, Any], input_shape: tuple[int, ...], outputs: int
) -> None:
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from workers.engine.config import ModelConfig
    from workers.engine.models import build

    dataset = {"name": "cifar10" if len(input_shape) == 3 else "digits"}
    spec = JobSpec.model_validate({**SPEC, "dataset": dataset, "model": model})
    module = build(
        ModelConfig(model["name"], {k: v for k, v in model.items() if k != "name"}),
        input_shape,
        outputs,
    )
    batch = 4
    x = torch.randn(batch, *input_shape)
    counter = FlopCounterMode(display=False)
    with counter:
        output = module(x)
        if outputs == 1:
            loss = F.mse_loss(output.squeeze(-1), torch.zeros(batch))
        else:
            loss = F.cross_entropy(output, torch.zeros(batch, dtype=torch.long))
        loss.backward()
    counted = counter.get_total_flops()
    assert training_flops(spec, DataShape(100, 60, input_shape, outputs)) * batch == counted


def test_the_estimate_is_runs_x_steps_x_samples_x_flops() -> None:
    # digits: 1,077 training samples, batch 64: 17 steps an epoch; a 64-1024-10 MLP
    wide = {"name": "mlp", "hidden": [1024]}
    spec = JobSpec.model_validate(
        {
            **SPEC,
            "model": wide,
            "optimizers": [{"name": "sgd"}, {"name": "adam"}],
            "seeds": [0, 1, 2],
            "epochs": 10,
        }
    )
    shape = DataShape(1797, 1077, (64,), 10)
    found = estimate(spec, shape)
    per_sample = 2 * (3 * (64 * 1024 + 1024 * 10) - 64 * 1024)
    assert (found.runs, found.steps, found.samples, found.flops_per_sample) == (
        6,
        170,
        64,
        per_sample,
    )
    assert not found.floored and found.total == 6 * 170 * 64 * per_sample
    full = JobSpec.model_validate({**SPEC, "model": wide, "optimizers": [{"name": "gd"}]})
    assert (estimate(full, shape).steps, estimate(full, shape).samples) == (2, 1077)


def test_a_step_counts_at_least_its_fixed_cost() -> None:
    small = JobSpec.model_validate({**SPEC, "batch_size": 1})  # 64-32-10: 10,112 per sample
    found = estimate(small, DataShape(1797, 1077, (64,), 10))
    assert found.floored and found.per_step == STEP_FLOOR_FLOPS
    assert found.total == 1 * 2 * 1077 * STEP_FLOOR_FLOPS
    landscape = JobSpec.model_validate(
        {**SPEC, "dataset": {"name": "rosenbrock"}, "model": {"name": "point"}, "epochs": 50}
    )
    assert estimate(landscape, None).total == 50 * STEP_FLOOR_FLOPS


# --- the limit, at submission -----------------------------------------------------------------


@pytest.fixture
def client_with(embedded_home: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    def make(**env: str) -> Any:
        for name, value in env.items():
            monkeypatch.setenv(f"OPTBENCH_{name.upper()}", value)
        get_settings.cache_clear()
        return local_client(create_app())

    return make


def refused(client: Any) -> float:
    """The API's count of jobs refused for a limit."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
        if sample.name == "optbench_jobs_rejected_total" and sample.labels["reason"] == "limit"
    )


def test_a_job_over_the_compute_limit_is_a_422_naming_the_estimate_and_the_limit(
    client_with: Callable[..., Any],
) -> None:
    spec = {
        **SPEC,
        "model": {"name": "mlp", "hidden": [1024]},
        "optimizers": [{"name": "sgd"}, {"name": "adam"}],
        "seeds": [0, 1, 2],
    }
    with client_with(max_job_flops="1e11") as client:
        refused_before = refused(client)
        response = client.post("/v1/jobs", json={**spec, "epochs": 50})
        assert response.status_code == 422, response.text[:300]
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["type"].endswith("/limit-exceeded")
        per_sample = 2 * (3 * (64 * 1024 + 1024 * 10) - 64 * 1024)  # 323,584
        estimate = 6 * 850 * 64 * per_sample
        assert body["limit"] == {
            "setting": "OPTBENCH_MAX_JOB_FLOPS",
            "maximum": 10**11,
            "requested": estimate,
        }
        detail = body["detail"]
        assert (
            "compute estimate 6 runs x 850 steps x 64 samples per step x 323,584 FLOP per "
            f"sample (forward and backward) = {estimate:.3g} FLOP" in detail
        )
        assert "at most 1e+11 FLOP per job (OPTBENCH_MAX_JOB_FLOPS)" in detail
        assert "fewer runs (seeds, optimizer entries), epochs or samples" in detail
        assert client.post("/v1/jobs", json={**spec, "epochs": 40}).status_code == 202
        assert refused(client) == refused_before + 1


def test_a_spec_at_every_other_limit_is_refused_by_default(
    client_with: Callable[..., Any],
) -> None:
    """The issue's spec: 256 runs of about 10,000,000 steps each, accepted before."""
    entries = [{"name": "sgd", "lr": 0.1, "label": f"sgd-{i}"} for i in range(64)]
    every_limit = {
        "dataset": {"name": "digits"},  # 1,077 training samples
        "model": {"name": "mlp", "hidden": [128]},
        "optimizers": entries,
        "seeds": [0, 1, 2, 3],
        "batch_size": 1,
        "epochs": 9285,  # x 1,077 steps = 9,999,945 steps per run
    }
    with client_with() as client:
        response = client.post("/v1/jobs", json=every_limit)
        assert response.status_code == 422, response.text[:300]
        body = response.json()
        assert body["limit"]["setting"] == "OPTBENCH_MAX_JOB_FLOPS"
        assert body["limit"]["maximum"] == 2 * 10**15
        assert body["limit"]["requested"] == 256 * 9_999_945 * STEP_FLOOR_FLOPS
        assert "1e+07 FLOP per step (a step's fixed cost, more than its 1 samples" in body["detail"]
        assert "a larger batch_size" in body["detail"]
        assert client.post("/v1/jobs", json=LECTURE_SPEC).status_code == 202


def test_the_api_never_imports_torch_for_the_estimate() -> None:
    code = "import sys, services.limits, services.compute; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
