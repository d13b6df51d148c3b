"""A suite's scores, exactly as AlgoPerf and DeepOBS define them (pure: no database).

Definitions (``SOURCE`` names the code they are read from; tests/unit/test_suite_scores.py
checks each against hand-computed values):

- **time to target of a trial**: its time (optimizer steps, or its attributed training
  seconds) at the end of the first epoch whose target metric reached the workload's target
  (services/summary.py computes it per run); a trial that never reaches it is a miss (∞).
- **t(s, w)**: per study, the fastest trial of optimizer ``s`` on workload ``w`` (the
  minimum of its trials' times; AlgoPerf's ``get_best_trial_index`` takes the trial that
  reaches the target at the earliest evaluation index, the same trial when the trials share
  an evaluation schedule, as one optimizer's trials do here in steps: every epoch ends at
  the same step; in seconds the minimum time is taken, the issue's "fastest trial");
  then the **median over the studies**
  (``np.median`` in ``get_workloads_time_to_target``): a study whose trials all missed
  counts as ∞ inside the median, so with 3 studies one miss still leaves a finite median,
  two do not, and with an even count a single ∞ makes the mean of the middle pair ∞.
- **r(s, w) = t(s, w) / min over s' of t(s', w)**: ∞ for a miss. A workload no optimizer
  solved has min = ∞; AlgoPerf's division then gives NaN, which is never ``<= τ``: every
  optimizer gets ∞ there, and the workload still counts in the denominator of rho.
- **rho_s(τ)** = (workloads with r(s, w) <= τ) / (all workloads) (Dolan and Moré 2002).
- **B_s = 1/(r_max - 1) · ∫₁^{r_max} rho_s(τ) dτ** with r_max = 4. rho_s is a step function
  that rises by 1/n at each r(s, w), so the integral is exact here:
  B_s = (1/n) Σ_w max(0, r_max - r(s, w)) / (r_max - 1). AlgoPerf integrates numerically
  (``compute_leaderboard_score``: ``np.trapz`` over the profile's grid of ``num_points``
  τ values, default 100, divided by the grid's range), which differs from the exact value
  by up to about one grid step per workload; it also sets t to ∞ where t > 4 x the fastest
  (the same thing for τ <= r_max = 4). The ratios above r_max are kept here so they can be
  recomputed; they add nothing to B.
- **geometric-mean speedup against a reference**: AlgoPerf's ``compute_speedups.py``
  replaces each ∞ by the workload's budget plus one (``replace_inf``: "maximum runtime
  budget (+1 second)"), divides the comparison's time by the baseline's per workload
  (``comparison / base``) and takes the geometric mean over the workloads. So it is a ratio
  of times: below 1 the optimizer needs less time than the reference (0.8: about 20 % less),
  1 for the reference itself, and a workload both missed counts as 1.
- **DeepOBS speed**: the first epoch reaching the target, averaged over the seeds (here: the
  reruns of the tuned setting, over every study); ``None`` when no rerun reached it, and
  ``speed_reached`` says how many did.

JSON has no infinity: every ∞ leaves this module as ``None``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

INF = math.inf
R_MAX = 4.0
PROFILE_POINTS = 64  # log-spaced τ values on [1, r_max], plus every finite r <= r_max

SOURCE = (
    "AlgoPerf (MLCommons algorithmic-efficiency) scoring/performance_profile.py "
    "(get_best_trial_index, get_workloads_time_to_target, compute_performance_profiles, "
    "compute_leaderboard_score) and scoring/compute_speedups.py (replace_inf, gmean), "
    "commit 2c90454fc05d5bdf3598b0c7651e611f132a7060 (main, 2025-09-05); "
    "DeepOBS (Schneider et al. 2019) for speed"
)
PROFILE_SOURCE = "Dolan & Moré 2002, Benchmarking optimization software with performance profiles"
NOTES = (
    "a miss is infinite; every infinite time or ratio is null in this JSON",
    "t(s, w) = median over studies of the fastest trial's time to target; a study whose "
    "trials all missed is infinite inside the median (AlgoPerf: np.median)",
    "r(s, w) = t(s, w) / min over optimizers of t(s, w); a workload nobody solved gives "
    "every optimizer r = infinite and still counts in rho's denominator",
    "rho_s(tau) = share of all workloads with r(s, w) <= tau",
    "score B_s = 1/(r_max - 1) * integral from 1 to r_max of rho_s(tau) dtau, exact (rho is a "
    "step function): mean over workloads of max(0, r_max - r) / (r_max - 1); AlgoPerf "
    "integrates with np.trapz on a grid of tau values instead",
    "ratios above r_max count as misses in the score (AlgoPerf sets t > 4 x best to infinite)",
    "speed_epochs (DeepOBS): the first epoch reaching the target, mean over the reruns that "
    "reached it (speed_reached says how many of them)",
)
SPEEDUP_NOTE = (
    "geomean_speedup = geometric mean over workloads of t(s, w) / t(reference, w), as "
    "AlgoPerf's compute_speedups.py forms it (comparison / base): below 1 is faster than the "
    "reference (0.8: about 20 % less time), 1 for the reference; misses count as the "
    "workload's budget plus one (a trial's full length in the time measure, + 1; for "
    "seconds the longest trial's training seconds + 1), as AlgoPerf's replace_inf does"
)


@dataclass(frozen=True)
class WorkloadTimes:
    """What scoring needs of one workload, per optimizer label.

    ``trials[label][study]``: the time to target of each of that study's trials (``None``
    or ∞: missed); ``rerun_epochs[label]``: the epochs to target of the reruns of every study
    (``None``: never reached); ``budget``: what a miss counts as in the speedup, minus one
    (``None``: unknown, the speedup is then ``None``)."""

    name: str
    trials: Mapping[str, Sequence[Sequence[float | None]]]
    rerun_epochs: Mapping[str, Sequence[float | None]] = field(default_factory=dict)
    budget: float | None = None


def _time(value: float | None) -> float:
    return INF if value is None or not math.isfinite(value) else float(value)


def fastest_trial(times: Sequence[float | None]) -> float:
    """One study's time: its fastest trial's time to target (∞ when every trial missed or
    there is no trial)."""
    return min((_time(t) for t in times), default=INF)


def median_over_studies(per_study: Sequence[float]) -> float:
    """The median of the studies' times, ∞ counted as a value (as np.median does)."""
    if not per_study:
        return INF
    return float(statistics.median(sorted(per_study)))


def ratios(times: Mapping[str, float]) -> dict[str, float]:
    """r(s, w) = t(s, w) / min over s of t(s, w); ∞ for a miss and where nobody solved it."""
    best = min(times.values(), default=INF)
    if not math.isfinite(best):
        return dict.fromkeys(times, INF)
    return {label: t / best if math.isfinite(t) else INF for label, t in times.items()}


def rho(ratios_of_one: Sequence[float], tau: float) -> float:
    """rho_s(τ): the share of all workloads (``ratios_of_one``: s's r over every workload)
    with r <= τ."""
    if not ratios_of_one:
        return 0.0
    return sum(r <= tau for r in ratios_of_one) / len(ratios_of_one)


def score(ratios_of_one: Sequence[float], r_max: float = R_MAX) -> float:
    """B_s = 1/(r_max - 1) ∫₁^{r_max} rho_s(τ) dτ, exactly: rho_s steps up by 1/n at each r."""
    if not ratios_of_one:
        return 0.0
    area = sum(max(0.0, r_max - max(r, 1.0)) for r in ratios_of_one if math.isfinite(r))
    return area / (len(ratios_of_one) * (r_max - 1.0))


def tau_grid(all_ratios: Sequence[float], r_max: float = R_MAX) -> list[float]:
    """Log-spaced τ on [1, r_max] with every finite r <= r_max added (where rho steps)."""
    step = math.log(r_max) / (PROFILE_POINTS - 1)
    grid = {math.exp(i * step) for i in range(PROFILE_POINTS - 1)} | {r_max}
    grid |= {r for r in all_ratios if math.isfinite(r) and 1.0 <= r <= r_max}
    return sorted(grid)


def geomean_speedup(
    own: Sequence[float], reference: Sequence[float], budgets: Sequence[float | None]
) -> float | None:
    """Geometric mean over workloads of t(s, w) / t(ref, w), each ∞ replaced by that
    workload's budget + 1 (``None`` when a workload's budget is unknown or there is none)."""
    if not own or any(b is None for b in budgets):
        return None
    logs = []
    for t, ref, budget in zip(own, reference, budgets, strict=True):
        miss = float(budget) + 1.0  # type: ignore[arg-type]
        mine = t if math.isfinite(t) else miss
        theirs = ref if math.isfinite(ref) else miss
        logs.append(math.log(mine / theirs))
    return math.exp(statistics.fmean(logs))


def deepobs_speed(epochs: Sequence[float | None]) -> tuple[float | None, int]:
    """Mean of the reruns' first epochs reaching the target, over those that reached it, and
    how many did."""
    reached = [e for e in (_time(x) for x in epochs) if math.isfinite(e)]
    return (statistics.fmean(reached) if reached else None, len(reached))


def _json(value: float) -> float | None:
    return value if math.isfinite(value) else None


def competition_ranks(scores: Sequence[float]) -> list[int]:
    """1 = highest score; equal scores share a rank and the next rank skips (1, 1, 3)."""
    return [1 + sum(other > mine for other in scores) for mine in scores]


def score_suite(
    optimizers: Sequence[str],
    workloads: Sequence[WorkloadTimes],
    reference: str,
    r_max: float = R_MAX,
) -> dict[str, Any]:
    """Every number of the scores document (see the module docstring): ``cells`` (one per
    optimizer and workload, optimizers outer), ``profile`` and the ranked ``table``."""
    if reference not in optimizers:
        raise ValueError(f"reference '{reference}' is not one of {', '.join(optimizers)}")
    t: dict[str, dict[str, float]] = {label: {} for label in optimizers}
    per_study: dict[tuple[str, str], list[float]] = {}
    r: dict[str, dict[str, float]] = {label: {} for label in optimizers}
    for workload in workloads:
        for label in optimizers:
            studies = [fastest_trial(times) for times in workload.trials.get(label, ())]
            per_study[label, workload.name] = studies
            t[label][workload.name] = median_over_studies(studies)
        column = ratios({label: t[label][workload.name] for label in optimizers})
        for label in optimizers:
            r[label][workload.name] = column[label]
    cells = []
    for label in optimizers:
        for workload in workloads:
            speed, reached = deepobs_speed(workload.rerun_epochs.get(label, ()))
            cells.append(
                {
                    "optimizer": label,
                    "workload": workload.name,
                    "t": _json(t[label][workload.name]),
                    "t_per_study": [_json(x) for x in per_study[label, workload.name]],
                    "r": _json(r[label][workload.name]),
                    "speed_epochs": speed,
                    "speed_reached": reached,
                    "speed_reruns": len(workload.rerun_epochs.get(label, ())),
                    "solved_by_anyone": any(
                        math.isfinite(t[other][workload.name]) for other in optimizers
                    ),
                }
            )
    names = [w.name for w in workloads]
    grid = tau_grid([r[label][name] for label in optimizers for name in names], r_max)
    profile = {
        "tau": grid,
        "rho": {
            label: [rho([r[label][name] for name in names], tau) for tau in grid]
            for label in optimizers
        },
    }
    budgets = [w.budget for w in workloads]
    reference_times = [t[reference][name] for name in names]
    scores = [score([r[label][name] for name in names], r_max) for label in optimizers]
    rows = [
        {
            "optimizer": label,
            "score": value,
            "geomean_speedup": geomean_speedup(
                [t[label][name] for name in names], reference_times, budgets
            ),
            "solved": sum(math.isfinite(t[label][name]) for name in names),
            "workloads": len(names),
        }
        for label, value in zip(optimizers, scores, strict=True)
    ]
    for row, rank in zip(rows, competition_ranks(scores), strict=True):
        row["rank"] = rank
    rows.sort(key=lambda row: (row["rank"], optimizers.index(row["optimizer"])))
    return {"cells": cells, "profile": profile, "table": rows}
