"""GPU workers: one pool process per GPU, each pinned to its own device, a job's parts spread
over them, and the device each run trained on.

``optbench worker --gpus auto|N|0,1`` (services/cli/local.py) resolves which GPUs the worker
uses (``resolve``: every GPU it sees, the first N, or those listed, numbered as torch numbers
them in the worker: within ``CUDA_VISIBLE_DEVICES`` when that is set), puts the list in
``OPTBENCH_WORKER_GPUS`` for the pool's children and starts one process per GPU (unless
``--concurrency`` says otherwise). Each child pins itself when it starts (``pin``, from the
``worker_process_init`` handler in workers/celery_app.py, before anything initialises CUDA in
it): child i of a pool gets GPU i mod N, which becomes its only visible device
(``CUDA_VISIBLE_DEVICES``), so its CUDA context, its memory and its kernels stay on that
GPU, and torch's ``cuda`` in it means that GPU. Nothing in the worker's parent touches CUDA
before the fork (counting devices goes through NVML, which does not initialise CUDA).

Parts: on CUDA a job is split into one part per GPU of the worker (``parts_setting``, when
``OPTBENCH_JOB_PARTS`` is ``auto``), so the process that plans the job trains one part on its
GPU and the idle processes of the other GPUs take the others (each process trains one task
at a time). A run records where it trained (``Run.device``, shown in the API's run output):
``cuda:<i>``, i the GPU as the worker names it (its ``CUDA_VISIBLE_DEVICES`` entry there, or
its index when that is unset: what ``nvidia-smi`` shows on a machine without the variable),
or ``cpu``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, MutableMapping
from typing import Literal

log = logging.getLogger(__name__)

GPUS_VARIABLE = "OPTBENCH_WORKER_GPUS"  # the worker's GPUs, comma-separated, for its children
VISIBLE = "CUDA_VISIBLE_DEVICES"

_pinned: str | None = None  # this process's GPU (the worker's name for it), if pinned


def visible_devices(environ: MutableMapping[str, str], count: Callable[[], int]) -> list[str]:
    """The devices this process may use, as ``CUDA_VISIBLE_DEVICES`` entries: that variable's
    entries when it is set (empty: none), else ``0..count()-1``."""
    listed = environ.get(VISIBLE)
    if listed is not None:
        return [entry.strip() for entry in listed.split(",") if entry.strip()]
    return [str(index) for index in range(count())]


def resolve(setting: str, environ: MutableMapping[str, str], count: Callable[[], int]) -> list[str]:
    """The GPUs ``--gpus`` names (``auto``, a number N, or indices ``0,1``) as the
    ``CUDA_VISIBLE_DEVICES`` entries of the worker's devices; a ValueError that says what to
    change when it names more than there are, or none."""
    visible = visible_devices(environ, count)
    shown = f"{VISIBLE}={environ[VISIBLE]!r}" if VISIBLE in environ else f"{len(visible)} found"
    text = setting.strip().lower()
    if text == "auto":
        if not visible:
            raise ValueError(
                f"--gpus auto: this machine shows no GPU ({shown}); leave --gpus out to train "
                "on the CPU"
            )
        return visible
    if text.isdigit() and "," not in text:
        wanted = int(text)
        if wanted < 1 or wanted > len(visible):
            raise ValueError(
                f"--gpus {wanted}: the worker sees {len(visible)} GPU(s) ({shown}); give a "
                f"number from 1 to {len(visible)}, indices like 0,1, or auto"
            )
        return visible[:wanted]
    try:
        indices = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"--gpus {setting!r}: expected auto, a number of GPUs, or indices like 0,1"
        ) from None
    if not indices or len(set(indices)) != len(indices):
        raise ValueError(f"--gpus {setting!r}: name each GPU once, e.g. 0,1")
    wrong = [index for index in indices if not 0 <= index < len(visible)]
    if wrong:
        raise ValueError(
            f"--gpus {setting!r}: no GPU {wrong[0]} (the worker sees {len(visible)}, numbered "
            f"0 to {len(visible) - 1}; {shown})"
        )
    return [visible[index] for index in indices]


def device_count() -> int:
    """GPUs this machine shows, counted without initialising CUDA in this process (NVML), so
    that the pool's children, forked later, can still use CUDA."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import torch

    return int(torch.cuda.device_count()) if torch.backends.cuda.is_built() else 0


def worker_gpus(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """The worker's GPUs (``OPTBENCH_WORKER_GPUS``); empty when it was started without
    ``--gpus``."""
    environ = os.environ if environ is None else environ
    return [entry for entry in environ.get(GPUS_VARIABLE, "").split(",") if entry]


def pin(index: int, environ: MutableMapping[str, str] | None = None) -> str | None:
    """Pin the pool process ``index`` to GPU ``index mod N`` of the worker's N GPUs: its
    only visible device from now on. Returns the GPU (its ``CUDA_VISIBLE_DEVICES`` entry in
    the worker; None, and nothing changed, without ``--gpus``). Must run before CUDA
    initialises here."""
    global _pinned
    environ = os.environ if environ is None else environ
    gpus = worker_gpus(environ)
    if not gpus:
        _pinned = None
        return None
    _pinned = gpus[index % len(gpus)]
    environ[VISIBLE] = _pinned
    log.info("pool process %d: GPU %s", index, _pinned)
    return _pinned


def pinned() -> str | None:
    return _pinned


def is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def device_label(device: str) -> str:
    """What a run trained on ``device`` records: ``cuda:<i>`` (the process's GPU as the
    worker names it when pinned, else torch's current device) or the device as it is."""
    if not is_cuda(device):
        return device
    if _pinned is not None:
        return f"cuda:{_pinned}"
    if ":" in device:
        return device
    import torch

    return f"cuda:{torch.cuda.current_device()}"


def parts_setting(
    setting: int | Literal["auto"], device: str, gpus: list[str] | None = None
) -> tuple[int | Literal["auto"], str | None]:
    """The parts setting for a job planned on ``device``: with ``auto`` on CUDA, one part
    per GPU of the worker (and the reason to log); otherwise the setting unchanged."""
    gpus = worker_gpus() if gpus is None else gpus
    if setting == "auto" and is_cuda(device) and len(gpus) > 1:
        return len(gpus), f"CUDA: one part per GPU, {len(gpus)} GPUs"
    return setting, None
