"""Planted scores documents (the body of ``GET /v1/suites/{id}/scores``, the suite contract)
for the tests of what a suite's results look like: the report (services/report/suite_page.py)
and the web page's suite view, in Python and in headless Chromium.

The times are planted; r, rho, B and the speedups are derived here from them by the
contract's definitions, so the document is consistent with itself. This is not the scoring
(services/suite/scores.py is, tested on its own): only a fixture the view is drawn from.

    succeeded()   4 optimizers x 5 workloads, 2 studies each: a tie (moons), a ratio past
                  r_max (gd on moons), misses, a workload nobody solved (rosenbrock)
    running()     the same suite part way: rosenbrock's and wine's jobs still training
"""

from __future__ import annotations

import copy
import math
import statistics
from typing import Any

OPTIMIZERS = ["gd", "sgd", "momentum", "adam"]
REFERENCE = "adam"
R_MAX = 4.0
# workload -> (dataset, model, target, budget, {optimizer: [t per study]}); None = a miss
WORKLOADS: dict[str, tuple[str, str, dict[str, Any], int, dict[str, list[float | None]]]] = {
    "digits-mlp": (
        "digits", "mlp", {"metric": "val_accuracy", "value": 0.95}, 1230,
        {"gd": [None, None], "sgd": [600, 600], "momentum": [190, 210], "adam": [250, None]},
    ),
    "moons-mlp": (
        "moons", "mlp", {"metric": "val_accuracy", "value": 0.97}, 1000,
        {"gd": [900, 900], "sgd": [300, 300], "momentum": [150, 150], "adam": [150, 150]},
    ),
    "wine-linear": (
        "wine", "linear", {"metric": "val_accuracy", "value": 0.95}, 400,
        {"gd": [None, None], "sgd": [100, 100], "momentum": [80, 80], "adam": [40, 40]},
    ),
    "breast-cancer-linear": (
        "breast_cancer", "linear", {"metric": "val_accuracy", "value": 0.96}, 300,
        {"gd": [50, 50], "sgd": [45, 45], "momentum": [30, 30], "adam": [None, None]},
    ),
    "rosenbrock-point": (
        "rosenbrock", "point", {"metric": "distance", "value": 0.001}, 500,
        {label: [None, None] for label in OPTIMIZERS},
    ),
}  # fmt: skip
STUDIES = 2


def job_id(workload: str, study: int) -> str:
    """A fixed UUID per (workload, study), so links can be checked."""
    index = list(WORKLOADS).index(workload)
    return f"00000000-0000-4000-8000-{index:06d}{study:06d}"


def _median(times: list[float | None]) -> float | None:
    """The median over studies, a miss infinite (None when the median is infinite)."""
    values = sorted(math.inf if t is None else float(t) for t in times)
    middle = statistics.median(values)
    return None if math.isinf(middle) else middle


def succeeded() -> dict[str, Any]:
    """The finished suite (see the module docstring)."""
    t = {
        (label, name): _median(spec[4][label])
        for name, spec in WORKLOADS.items()
        for label in OPTIMIZERS
    }
    cells = []
    for name, (_, _, _, _, times) in WORKLOADS.items():
        finite = [v for (_, w), v in t.items() if w == name and v is not None]
        best = min(finite) if finite else None
        for label in OPTIMIZERS:
            value = t[(label, name)]
            cells.append(
                {
                    "optimizer": label,
                    "workload": name,
                    "t": value,
                    "t_per_study": times[label],
                    "r": None if value is None or best is None else value / best,
                    "speed_epochs": None if value is None else round(value / 50, 2),
                    "solved_by_anyone": best is not None,
                }
            )
    n = len(WORKLOADS)
    ratios = {label: [c["r"] for c in cells if c["optimizer"] == label] for label in OPTIMIZERS}
    grid = sorted(
        {1 + (R_MAX - 1) * i / 40 for i in range(41)}
        | {r for rs in ratios.values() for r in rs if r is not None and r <= R_MAX}
    )
    rho = {
        label: [sum(1 for r in rs if r is not None and r <= tau) / n for tau in grid]
        for label, rs in ratios.items()
    }
    # B = 1/(r_max - 1) * integral of rho over [1, r_max], exactly for a step function:
    # each workload with r <= r_max contributes (r_max - r) / n.
    score = {
        label: sum(R_MAX - r for r in rs if r is not None and r <= R_MAX) / n / (R_MAX - 1)
        for label, rs in ratios.items()
    }
    budgets = {name: spec[3] for name, spec in WORKLOADS.items()}

    def time_or_budget(label: str, name: str) -> float:
        value = t[(label, name)]
        return budgets[name] + 1 if value is None else value

    speedup = {
        label: math.exp(
            statistics.fmean(
                math.log(time_or_budget(REFERENCE, w) / time_or_budget(label, w)) for w in WORKLOADS
            )
        )
        for label in OPTIMIZERS
    }
    order = sorted(OPTIMIZERS, key=lambda label: (-score[label], OPTIMIZERS.index(label)))
    table = [
        {
            "optimizer": label,
            "rank": order.index(label) + 1,
            "score": score[label],
            "geomean_speedup": speedup[label],
            "solved": sum(1 for r in ratios[label] if r is not None),
            "workloads": n,
        }
        for label in order
    ]
    return {
        "suite_id": "5a17e000-0000-4000-8000-000000000001",
        "name": "lecture suite",
        "status": "succeeded",
        "definition": {
            "source": "AlgoPerf (mlcommons/algorithmic-efficiency) scoring/performance_profile.py "
            "and compute_speedups.py (planted for the tests)",
            "profile": "Dolan & Moré 2002",
            "notes": [
                "a miss is infinite: JSON has no Infinity, so every infinite t or r is null",
                "t(s, w) is the median over studies of the fastest trial's time to the target",
            ],
        },
        "time_measure": "steps",
        "r_max": R_MAX,
        "reference": REFERENCE,
        "optimizers": list(OPTIMIZERS),
        "workloads": [
            {
                "name": name,
                "dataset": dataset,
                "model": model,
                "target": target,
                "budget": budget,
                "jobs": [
                    {"study": s, "job_id": job_id(name, s), "status": "succeeded"}
                    for s in range(STUDIES)
                ],
            }
            for name, (dataset, model, target, budget, _) in WORKLOADS.items()
        ],
        "cells": cells,
        "profile": {"tau": grid, "rho": rho},
        "table": table,
        "speedup_note": "misses count as the budget plus one (AlgoPerf's rule)",
    }


RUNNING_WORKLOADS = ("wine-linear", "rosenbrock-point")


def running() -> dict[str, Any]:
    """The suite part way: the jobs of RUNNING_WORKLOADS still training, their cells without
    a time yet (the other numbers are left as the finished suite's: only the view is tested)."""
    scores = copy.deepcopy(succeeded())
    scores["status"] = "running"
    for workload in scores["workloads"]:
        if workload["name"] in RUNNING_WORKLOADS:
            for job in workload["jobs"]:
                job["status"] = "running"
    for cell in scores["cells"]:
        if cell["workload"] in RUNNING_WORKLOADS:
            cell.update(t=None, r=None, t_per_study=[None, None], solved_by_anyone=False)
    return scores


def queued() -> dict[str, Any]:
    """The suite before anything trained: every job queued, no cells, profile or table."""
    scores = copy.deepcopy(succeeded())
    scores.update(status="queued", cells=[], profile={"tau": [], "rho": {}}, table=[])
    for workload in scores["workloads"]:
        for job in workload["jobs"]:
            job["status"] = "queued"
    return scores
