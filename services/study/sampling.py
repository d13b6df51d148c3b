"""The settings a study tries, drawn by Optuna's samplers through ask/tell (no hand-written
Halton or TPE): ``quasirandom`` is ``QMCSampler`` (scrambled Halton), ``random``
``RandomSampler``, ``tpe`` ``TPESampler``; ``grid`` takes every combination of the entry's
grid and choice values (itertools.product, in the order written: nothing to sample).

Each entry's study is seeded from the job's seed and the entry's label, so the points are the
same on every run of the spec. Non-adaptive samplers draw every trial at submission; ``tpe``
draws a round at a time, its study rebuilt from the scored trials stored so far.
"""

from __future__ import annotations

import itertools
import math
import warnings
import zlib
from typing import Any

from services.spec.tuning import Distribution, TuningSpec


def _optuna() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _distribution(optuna: Any, spec: Distribution) -> Any:
    d = optuna.distributions
    kind, values = spec.kind, spec.values
    if kind == "log_uniform":
        return d.FloatDistribution(values[0], values[1], log=True)
    if kind == "uniform":
        return d.FloatDistribution(values[0], values[1])
    if kind == "int":
        return d.IntDistribution(values[0], values[1])
    return d.CategoricalDistribution(values)


def study_seed(job_seed: int, label: str) -> int:
    """The entry's own sampler seed: reproducible from the spec, different per label."""
    return (job_seed * 1_000_003 + zlib.crc32(label.encode())) % (2**31 - 1)


def _sampler(optuna: Any, tuning: TuningSpec, seed: int, startup: int) -> Any:
    samplers = optuna.samplers
    with warnings.catch_warnings():  # QMCSampler is marked experimental
        warnings.simplefilter("ignore")
        if tuning.sampler == "quasirandom":
            return samplers.QMCSampler(qmc_type="halton", scramble=True, seed=seed)
        if tuning.sampler == "tpe":
            return samplers.TPESampler(seed=seed, n_startup_trials=startup)
    return samplers.RandomSampler(seed=seed)


def grid_points(space: dict[str, Distribution]) -> list[dict[str, Any]]:
    keys = list(space)
    return [
        dict(zip(keys, combo, strict=True))
        for combo in itertools.product(*(space[k].values for k in keys))
    ]


def draw(
    space: dict[str, Distribution],
    tuning: TuningSpec,
    *,
    seed: int,
    count: int,
    history: list[tuple[dict[str, Any], float | None]] = (),  # type: ignore[assignment]
    higher_is_better: bool = True,
) -> list[dict[str, Any]]:
    """``count`` new settings for one entry. ``history``: the entry's trials so far (setting,
    selection score or None) for the adaptive sampler, which learns from the scored ones."""
    if tuning.sampler == "grid":
        return grid_points(space)[len(history) : len(history) + count]
    optuna = _optuna()
    distributions = {key: _distribution(optuna, d) for key, d in space.items()}
    startup = max(1, _round_size(tuning, count + len(history)))
    study = optuna.create_study(
        sampler=_sampler(optuna, tuning, seed + len(history), startup),
        direction="maximize" if higher_is_better else "minimize",
    )
    for params, score in history:
        finite = score is not None and math.isfinite(score)
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=distributions,
                value=score if finite else None,
                state=optuna.trial.TrialState.COMPLETE if finite else optuna.trial.TrialState.FAIL,
            )
        )
    points = []
    for _ in range(count):
        trial = study.ask(distributions)
        points.append(dict(trial.params))
    return points


def _round_size(tuning: TuningSpec, budget: int) -> int:
    return tuning.round_size or max(1, math.ceil(budget / 4))


def first_round(tuning: TuningSpec, budget: int) -> int:
    """How many trials of a ``budget`` are drawn at submission: all of them, except for the
    adaptive sampler, which draws one round (``round_size``, default a quarter of the
    budget: four fused rounds, the first its random start-up)."""
    if tuning.sampler != "tpe":
        return budget
    return min(budget, _round_size(tuning, budget))
