"""GPU workers (workers/gpus.py): which GPUs ``--gpus`` names, one pool process pinned to
each, a job's parts spread over them, the device each run records; and, on CUDA, a training
step loop that never waits for the GPU.

This machine has no GPU: placement is tested by simulation (a fake device count, and the
CPU standing in for the GPUs); the tests that need CUDA skip here, with the reason, and run
on a GPU machine through benchmarks/gpu_check.sh."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from services.api.schemas import JobOut
from services.db import store
from services.db.session import unit_of_work
from services.spec import LECTURE_SPEC, JobSpec
from workers import gpus
from workers.execution import execute_job, execute_part
from workers.parts import choose_parts

NO_CUDA = "needs a CUDA device; this machine has none (benchmarks/gpu_check.sh runs it on one)"


def fake_count(n: int) -> Any:
    return lambda: n


# --- which GPUs ---


def test_auto_is_every_gpu_the_worker_sees() -> None:
    assert gpus.resolve("auto", {}, fake_count(3)) == ["0", "1", "2"]
    assert gpus.resolve("auto", {"CUDA_VISIBLE_DEVICES": "4,6"}, fake_count(8)) == ["4", "6"]


def test_a_number_is_the_first_gpus_and_indices_are_those_gpus() -> None:
    assert gpus.resolve("2", {}, fake_count(4)) == ["0", "1"]
    assert gpus.resolve("1,3", {}, fake_count(4)) == ["1", "3"]
    # Indices count within CUDA_VISIBLE_DEVICES, as torch's cuda:i does in the worker.
    assert gpus.resolve("1", {"CUDA_VISIBLE_DEVICES": "5,7"}, fake_count(8)) == ["5"]
    assert gpus.resolve("0,1", {"CUDA_VISIBLE_DEVICES": "5,7"}, fake_count(8)) == ["5", "7"]


@pytest.mark.parametrize(
    ("setting", "count", "message"),
    [
        ("auto", 0, "shows no GPU (0 found); leave --gpus out to train on the CPU"),
        ("3", 2, "the worker sees 2 GPU(s) (2 found); give a number from 1 to 2"),
        ("0", 2, "give a number from 1 to 2"),
        ("0,2", 2, "no GPU 2 (the worker sees 2, numbered 0 to 1"),
        ("1,1", 2, "name each GPU once"),
        ("many", 2, "expected auto, a number of GPUs, or indices like 0,1"),
    ],
)
def test_naming_gpus_that_are_not_there_says_what_to_change(
    setting: str, count: int, message: str
) -> None:
    with pytest.raises(ValueError, match="--gpus") as error:
        gpus.resolve(setting, {}, fake_count(count))
    assert message in str(error.value)


def test_the_worker_command_refuses_gpus_this_machine_lacks(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.cli import main

    monkeypatch.setattr(gpus, "device_count", fake_count(0))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert main(["worker", "--gpus", "auto"]) == 2
    assert "--gpus auto: this machine shows no GPU" in capsys.readouterr().err


def test_the_worker_starts_one_process_per_gpu_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.cli import main
    from workers.celery_app import app

    started: list[list[str]] = []
    monkeypatch.setattr(gpus, "device_count", fake_count(4))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(app, "worker_main", started.append)
    monkeypatch.setenv(gpus.GPUS_VARIABLE, "")  # restored after the test
    assert main(["worker", "--gpus", "1,2,3"]) == 0
    assert "--concurrency=3" in started[-1]
    assert gpus.worker_gpus() == ["1", "2", "3"]  # what the pool's children read
    assert main(["worker", "--gpus", "auto", "--concurrency", "8"]) == 0
    assert "--concurrency=8" in started[-1] and gpus.worker_gpus() == ["0", "1", "2", "3"]
    assert main(["worker", "--concurrency", "2"]) == 0  # no --gpus: none for the children
    assert gpus.worker_gpus() == []


# --- one process per GPU ---


def test_child_i_of_a_pool_gets_gpu_i_mod_n_as_its_only_visible_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gpus, "_pinned", None)
    seen = []
    for index in range(5):  # five children on three GPUs (--concurrency 5 --gpus 3)
        environ = {gpus.GPUS_VARIABLE: "0,1,2"}
        assert gpus.pin(index, environ) == str(index % 3)
        seen.append((environ["CUDA_VISIBLE_DEVICES"], gpus.device_label("cuda")))
    assert seen == [
        ("0", "cuda:0"),
        ("1", "cuda:1"),
        ("2", "cuda:2"),
        ("0", "cuda:0"),
        ("1", "cuda:1"),
    ]
    environ = {gpus.GPUS_VARIABLE: "GPU-5a,GPU-7b"}  # entries as the worker names them
    gpus.pin(1, environ)
    assert environ["CUDA_VISIBLE_DEVICES"] == "GPU-7b"
    assert gpus.device_label("cuda") == "cuda:GPU-7b"
    assert gpus.device_label("cpu") == "cpu"  # OPTBENCH_DEVICE=cpu on a GPU worker


def test_without_gpus_a_child_is_not_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpus, "_pinned", "3")
    environ: dict[str, str] = {}
    assert gpus.pin(0, environ) is None and environ == {} and gpus.pinned() is None
    assert gpus.device_label("cpu") == "cpu" and gpus.device_label("cuda:1") == "cuda:1"


def test_on_cuda_a_job_has_one_part_per_gpu_of_the_worker() -> None:
    assert gpus.parts_setting("auto", "cuda", ["0", "1", "2"]) == (
        3,
        "CUDA: one part per GPU, 3 GPUs",
    )
    assert gpus.parts_setting("auto", "cuda", ["0"]) == ("auto", None)  # parts.py: one part
    assert gpus.parts_setting("auto", "cpu", ["0", "1"]) == ("auto", None)
    assert gpus.parts_setting(5, "cuda", ["0", "1"]) == (5, None)  # OPTBENCH_JOB_PARTS wins
    choice = choose_parts(
        gpus.parts_setting("auto", "cuda", ["0", "1", "2"])[0],
        0,
        device="cuda",
        cores=12,
        runs=8,
        step_flops=lambda: pytest.fail("not needed"),
    )
    assert (choice.parts, choice.threads) == (3, 4)


class SimulatedPool:
    """A prefork pool on a machine of N (fake) GPUs: child i pinned as workers/celery_app.py
    pins it, the CPU standing in for CUDA. The child that takes the job plans it and trains
    part 1; each part it sends goes to the next idle child (one task per child at a time)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, gpu_count: int, children: int) -> None:
        self.children = children
        on_the_cpu(monkeypatch)  # also where a real GPU is (benchmarks/gpu_check.sh)
        monkeypatch.setenv(gpus.GPUS_VARIABLE, ",".join(map(str, range(gpu_count))))
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # pin() sets it; restored afterwards
        monkeypatch.setattr(gpus, "_pinned", None)
        monkeypatch.setattr(gpus, "is_cuda", lambda device: True)  # the CPU plays the GPUs
        self.sent: list[tuple[str, list[int], int, int, int]] = []

    def run(self, job_id: str) -> dict[int, str]:
        """Train the job; which child trained each part's runs."""
        gpus.pin(0)
        status = execute_job(job_id, send_part=lambda *part: self.sent.append(part))
        trained: dict[int, str] = {}
        for child, (job, runs, threads, part, parts) in enumerate(self.sent, start=1):
            gpus.pin(child % self.children)
            status = execute_part(job, runs, threads, part=part, parts=parts)
            trained |= {run: f"child {child % self.children}" for run in runs}
        assert status == "succeeded"
        return trained


def test_a_jobs_parts_spread_over_the_gpus_and_each_run_records_its_gpu(
    embedded_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = copy.deepcopy(LECTURE_SPEC)
    spec["epochs"] = 2
    with unit_of_work() as session:
        job_id = str(store.create_job(session, JobSpec.model_validate(spec)).id)
    pool = SimulatedPool(monkeypatch, gpu_count=3, children=3)
    pool.run(job_id)

    assert [part[3:] for part in pool.sent] == [(2, 3), (3, 3)]  # 3 parts: 1 here, 2 sent
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        shown = JobOut.of(job).runs  # the API's run output
    devices = {run.id: run.device for run in shown}
    part_of = {run: index for index, part in enumerate(pool.sent, start=2) for run in part[1]}
    by_part: dict[int, set[str | None]] = {}
    for run, device in devices.items():
        by_part.setdefault(part_of.get(run, 1), set()).add(device)
    # Each part on one GPU, the three parts on three different GPUs.
    assert by_part == {1: {"cuda:0"}, 2: {"cuda:1"}, 3: {"cuda:2"}}
    assert all(run.status == "succeeded" for run in shown)


def on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.settings import get_settings

    monkeypatch.setenv("OPTBENCH_DEVICE", "cpu")
    get_settings.cache_clear()


def test_on_the_cpu_a_run_records_cpu(embedded_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_the_cpu(monkeypatch)
    spec = copy.deepcopy(LECTURE_SPEC)
    spec.update(epochs=1, optimizers=[{"name": "sgd"}, {"name": "adam"}])
    with unit_of_work() as session:
        job_id = str(store.create_job(session, JobSpec.model_validate(spec)).id)
        assert [run.device for run in JobOut.of(store.get_job(session, job_id)).runs] == [
            None,
            None,
        ]  # not yet trained
    assert execute_job(job_id) == "succeeded"
    with unit_of_work() as session:
        assert [run.device for run in JobOut.of(store.get_job(session, job_id)).runs] == [
            "cpu",
            "cpu",
        ]


# --- on CUDA: no host synchronisation per step ---


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_on_cuda_the_step_loop_never_waits_for_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``torch.cuda.set_sync_debug_mode("error")`` any call that makes the host wait
    for the GPU (``.item()``, ``float(tensor)``, ``.cpu()``, a blocking copy, a boolean
    mask) raises. It is on for the whole step loop, off only where a flush reads the steps
    back (once per ``flush_every`` steps) and where an epoch's validation is read."""
    from workers.engine import (
        DatasetConfig,
        Experiment,
        Hooks,
        JobConfig,
        ModelConfig,
        OptimizerConfig,
        RunConfig,
    )
    from workers.engine.problem import Problem
    from workers.engine.recorder import Recorder
    from workers.engine.trainer import Trainer

    allowed: list[str] = []

    def allowing(name: str, method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            allowed.append(name)
            previous = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode(0)
            try:
                return method(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode(previous)

        return call

    def strict(method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            torch.cuda.set_sync_debug_mode("error")
            try:
                return method(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode(0)

        return call

    monkeypatch.setattr(Recorder, "drain", allowing("flush", Recorder.drain))
    monkeypatch.setattr(Problem, "evaluate", allowing("evaluate", Problem.evaluate))
    monkeypatch.setattr(Trainer, "run", strict(Trainer.run))

    class Count(Hooks):
        steps = 0

        def on_flush(self, batch: Any) -> None:
            Count.steps += sum(len(steps) for _, steps in batch)

    lecture = [
        OptimizerConfig("gd", "gd", "SGD", {"lr": 0.5}, full_batch=True),
        OptimizerConfig("sgd", "sgd", "SGD", {"lr": 0.05}),
        OptimizerConfig("momentum", "momentum", "SGD", {"lr": 0.05, "momentum": 0.9}),
        OptimizerConfig("nag", "nag", "SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
        OptimizerConfig("adagrad", "adagrad", "Adagrad", {"lr": 0.05}),
        OptimizerConfig("rmsprop", "rmsprop", "RMSprop", {"lr": 0.001}),
        OptimizerConfig("adadelta", "adadelta", "Adadelta", {"lr": 1.0}),
        OptimizerConfig("adam", "adam", "Adam", {"lr": 0.001}),
    ]
    config = JobConfig(
        dataset=DatasetConfig("digits"),
        model=ModelConfig("mlp", {"hidden": [128]}),
        runs=tuple(RunConfig(key, optimizer, 0) for key, optimizer in enumerate(lecture)),
        epochs=3,
        batch_size=64,
        flush_every=10,
        device="cuda",
    )
    Experiment(config).run_all(Count())
    assert Count.steps > 0
    assert allowed.count("flush") <= Count.steps / 10  # read in batches of steps


def test_the_gpu_check_script_is_valid_bash_and_names_what_exists() -> None:
    """benchmarks/gpu_check.sh runs only on a GPU machine: here, its syntax, the files it
    runs and the options it passes are checked."""
    import re
    import subprocess

    from benchmarks import bench_sweep, compare

    root = Path(__file__).resolve().parents[2]
    script = root / "benchmarks/gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    for path in re.findall(r"(tests/unit/\w+\.py|benchmarks/\w+\.py)", text):
        assert (root / path).is_file(), path
    assert "--gpus auto" in text and "set_sync_debug_mode" in text
    for module, options in ((compare, ["--workloads", "--epochs", "--worker-args", "--json"]),):
        source = Path(module.__file__ or "").read_text()
        assert all(f'"{option}"' in source for option in options), module
    assert '"--quick"' in Path(bench_sweep.__file__ or "").read_text()
