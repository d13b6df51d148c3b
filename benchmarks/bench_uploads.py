"""Uploads (issue 16, point 1): the API's peak memory for an upload at the limit, and the time
to refuse a 1,000,000-column CSV header, each beside a baseline measured in the same run.

    .venv/bin/python -m benchmarks.bench_uploads [--limit-mib 50]

- **Peak memory**: each upload goes through the route's handler (``upload_dataset``, as
  FastAPI calls it, on a fresh embedded SQLite database) in a fresh child process: the file
  is spooled as Starlette spools a form's file (in memory up to 1 MiB, then on disk, written
  64 KiB at a time), the peak RSS reset (``/proc/self/clear_refs``) before the spooling, and
  ``VmHWM`` minus the RSS before it reported. An NPZ of float32 features as large as the
  upload limit (uncompressed: unpacked = upload), and a CSV as large as the limit (its
  unpacked size: its text). Aim: under 3x. (When the route read the upload into bytes and
  the NPZ went to the insert beside them: 4.59x for the NPZ, 3.55x for the CSV.)
- **Refusing wide headers**: ``csv_header`` on 1,000,000 distinct names (about 6.9 MB) and,
  as the baseline, the old duplicate check (``header.count`` per name) on 5,000 and 10,000
  names, with its quadratic extrapolation to 1,000,000. Aim: under 1 s.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, os, sys, tempfile
os.environ["OPTBENCH_HOME"] = tempfile.mkdtemp()
os.environ.pop("OPTBENCH_DATABASE_URL", None)
os.environ["OPTBENCH_MAX_UPLOAD_BYTES"] = sys.argv[3]
from fastapi import Response
from starlette.datastructures import UploadFile
from services.api.routes.datasets import upload_dataset
from services.db.migrate import upgrade
upgrade()

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise KeyError(field)

path, label = sys.argv[1], sys.argv[2] or None
spooled = tempfile.SpooledTemporaryFile(max_size=1 << 20)  # Starlette's spool_max_size
before = rss("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # peak RSS := current RSS
with open(path, "rb") as source:
    while chunk := source.read(1 << 16):
        spooled.write(chunk)
spooled.seek(0)
upload = UploadFile(spooled, filename=os.path.basename(path))
dataset = upload_dataset(upload, Response(), "local", label_column=label)
print(json.dumps({"peak": rss("VmHWM:") - before, "samples": dataset.n_samples,
                  "features": dataset.n_features}))
"""


def peak_of(path: Path, label: str | None, limit: int) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), label or "", str(limit)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    result: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def npz_at(limit: int, folder: Path) -> tuple[Path, int]:
    """An uncompressed NPZ just under ``limit`` bytes: float32 x (N x 32), int64 y."""
    per_sample = 32 * 4 + 8
    n = (limit - 4096) // per_sample
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 32)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    path = folder / "limit.npz"
    np.savez(path, x=x, y=y)
    return path, x.nbytes + y.nbytes


def csv_at(limit: int, folder: Path) -> Path:
    """A CSV just under ``limit`` bytes: 16 features with 6 significant digits, a 0/1 label."""
    rng = np.random.default_rng(0)
    header = ",".join(f"f{i}" for i in range(16)) + ",label\n"
    path = folder / "limit.csv"
    with path.open("w") as out:
        out.write(header)
        written = len(header)
        while True:
            block = rng.normal(size=(10_000, 16))
            text = io.StringIO()
            np.savetxt(text, np.column_stack([block, block[:, 0] > 0]), fmt="%.6g", delimiter=",")
            chunk = text.getvalue()
            if written + len(chunk) > limit:
                lines = chunk.splitlines(keepends=True)
                for line in lines:
                    if written + len(line) > limit:
                        return path
                    out.write(line)
                    written += len(line)
            out.write(chunk)
            written += len(chunk)


def old_duplicate_check(header: list[str]) -> set[str]:
    return {c for c in header if header.count(c) > 1}  # what services/uploads.py did


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-mib", type=float, default=50.0, help="OPTBENCH_MAX_UPLOAD_BYTES")
    limit = int(parser.parse_args().limit_mib * 1024 * 1024)
    from services.errors import InvalidSpec
    from services.upload_formats.csv_format import csv_header

    print(f"machine: {os.cpu_count()} cores; upload limit {limit / 2**20:.0f} MiB")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        npz, unpacked = npz_at(limit, folder)
        result = peak_of(npz, None, limit)
        print(
            f"NPZ at the limit: {npz.stat().st_size / 1e6:.1f} MB, unpacked {unpacked / 1e6:.1f}"
            f" MB ({result['samples']} x {result['features']}): API peak"
            f" {result['peak'] / 1e6:.1f} MB = {result['peak'] / unpacked:.2f}x unpacked"
        )
        csv = csv_at(limit, folder)
        size = csv.stat().st_size
        result = peak_of(csv, "label", limit)
        print(
            f"CSV at the limit: {size / 1e6:.1f} MB ({result['samples']} x"
            f" {result['features']}): API peak {result['peak'] / 1e6:.1f} MB ="
            f" {result['peak'] / size:.2f}x its size"
        )

    wide = ",".join(f"c{i}" for i in range(1_000_000)).encode() + b"\n"
    started = time.perf_counter()
    try:
        csv_header(wide, 20_000)
        raise SystemExit("the 1,000,000-column header was accepted")
    except InvalidSpec:
        refused = time.perf_counter() - started
    print(f"1,000,000-column header ({len(wide) / 1e6:.1f} MB): refused in {refused:.3f} s")
    for n in (5_000, 10_000):
        names = [f"c{i}" for i in range(n)]
        started = time.perf_counter()
        old_duplicate_check(names)
        took = time.perf_counter() - started
        estimate = took * (1_000_000 / n) ** 2
        print(
            f"  baseline, the old duplicate check on {n:,} names: {took:.2f} s "
            f"(quadratic: about {estimate / 3600:.1f} h for 1,000,000)"
        )


if __name__ == "__main__":
    main()
