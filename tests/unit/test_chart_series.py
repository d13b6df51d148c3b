"""services/web/js/series.js, the charts' pure data functions, run under Node: the EMA (the
one definition the page and the report both use), means and bands over seeds, the aligned
table uPlot draws, and the dash patterns that keep overlapping curves apart."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from services.report.assets import WEB_DIR
from tests.support import unavailable

SERIES = (WEB_DIR / "js" / "series.js").as_uri()


def js(expression: str) -> Any:
    """The JSON value of ``expression``, evaluated with series.js's exports in scope."""
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed (apt-get install nodejs): it runs series.js")
    script = f'import * as S from "{SERIES}";\nprocess.stdout.write(JSON.stringify({expression}));'
    result = subprocess.run(
        [node, "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def tensorboard_ema(values: list[float | None], smoothing: float) -> list[float | None]:
    """TensorBoard's debiased EMA, step by step: the reference for evenly spaced steps."""
    out: list[float | None] = []
    last, weight = 0.0, 0.0
    for value in values:
        if value is None:
            out.append(None)
            continue
        last = smoothing * last + (1 - smoothing) * value
        weight = smoothing * weight + (1 - smoothing)
        out.append(last / weight)
    return out


def test_ema_on_consecutive_steps_is_tensorboards() -> None:
    values = [3.0, 2.5, 2.9, 2.7, 1.0, 0.5, 0.75]
    got = js(f"S.ema([1,2,3,4,5,6,7], {json.dumps(values)}, 0.8)")
    assert got == pytest.approx(tensorboard_ema(values, 0.8), rel=1e-12)
    # a missing value stays missing; the next one decays the average by two steps
    gap = js("S.ema([1,2,3], [3, null, 1], 0.5)")
    assert gap[1] is None and gap[2] == pytest.approx((0.25 * 0.5 * 3 + 0.75 * 1) / (0.125 + 0.75))
    assert js("S.ema([1,2,3], [2,2,2], 0.99)") == [2, 2, 2]  # debiased: a constant stays
    assert js("S.ema([1,2,3], [1,5,3], 0)") == [1, 5, 3]  # no smoothing: the values


def test_ema_decays_per_step_so_bucket_means_smooth_like_the_raw_steps() -> None:
    # Raw: 40 steps at 4.0 then 40 at 1.0; bucketed: means of 8 steps at their last step.
    raw = [4.0] * 40 + [1.0] * 40
    smoothed_raw = js(f"S.ema({list(range(1, 81))}, {raw}, 0.95)")
    steps = list(range(8, 81, 8))
    buckets = [4.0] * 5 + [1.0] * 5
    smoothed_buckets = js(f"S.ema({steps}, {buckets}, 0.95)")
    at_bucket_ends = [smoothed_raw[s - 1] for s in steps]
    # Equal within the bucket's own smoothing error: far closer than an EMA blind to the gap
    naive = js(f"S.ema({list(range(10))}, {buckets}, 0.95)")
    error = max(abs(a - b) for a, b in zip(smoothed_buckets, at_bucket_ends, strict=True))
    naive_error = max(abs(a - b) for a, b in zip(naive, at_bucket_ends, strict=True))
    assert error < 0.2 and naive_error > 3 * error


def test_over_seeds_gives_mean_min_and_max_per_key() -> None:
    got = js(
        "S.overSeeds(["
        "{key:[1,2,3], x:[10,20,30], y:[1,2,3]},"
        "{key:[1,2,3], x:[12,22,32], y:[3,4,null]},"
        "{key:[1,2], x:[14,24], y:[5,6]}])"
    )
    assert got["key"] == [1, 2, 3] and got["seeds"] == 3
    assert got["mean"] == [3, 4, 3] and got["lo"] == [1, 2, 3] and got["hi"] == [5, 6, 3]
    assert got["x"] == [12, 22, 30]  # the drawn x: the mean of the runs that have the point


def test_align_places_each_curve_on_the_union_of_x() -> None:
    got = js("S.align([{x:[1,3], y:[10,30]}, {x:[2,3,5], y:[2,3,null]}])")
    assert got == [[1, 2, 3, 5], [10, None, 30, None], [None, 2, 3, None]]


def test_overlapping_curves_get_distinct_dashes_and_others_stay_solid() -> None:
    got = js(
        "Object.fromEntries(S.dashesFor(['sgd','momentum','nag','adam'], new Map(["
        "['sgd', {key:[1,2,3], mean:[2,1.5,1.2]}],"
        "['momentum', {key:[1,2,3], mean:[2,1,0.5]}],"
        "['nag', {key:[1,2,3], mean:[2,1.01,0.505]}],"
        "['adam', {key:[1,2,3], mean:[2,0.6,0.1]}]])))"
    )
    assert got == {"sgd": 0, "momentum": 0, "nag": 1, "adam": 0}
    # past the palette's ten colours a label reuses one: it is dashed even if it overlaps none
    labels = [f"o{i}" for i in range(11)]
    curves = ",".join(f"['o{i}', {{key:[1], mean:[{10**i}]}}]" for i in range(11))
    dashes = js(f"Object.fromEntries(S.dashesFor({json.dumps(labels)}, new Map([{curves}])))")
    assert dashes["o10"] != dashes["o0"] and all(dashes[f"o{i}"] == 0 for i in range(10))


def test_values_are_shown_with_four_significant_digits() -> None:
    assert js("[1.23456, 0.000012345, 123456789, null, 0, 0.5].map(S.formatValue)") == [
        "1.235",
        "1.234e-5",
        "1.235e+8",
        "\u2013",  # an en dash: nothing
        "0",
        "0.5",
    ]


# ---------------------------------------------------------------- tuning studies

STUDY_LABELS = [
    {"label": "sgd", "baseline_of": None},
    {"label": "sgd:one-shot", "baseline_of": "sgd"},
    {"label": "adam", "baseline_of": None},
    {"label": "adam:one-shot", "baseline_of": "adam"},
    {"label": "nag", "baseline_of": None},
]


def study(entries: list[dict[str, Any]], **progress: int) -> dict[str, Any]:
    counts = dict.fromkeys(
        ("budget", "trials", "done", "completed", "pruned", "diverged", "failed"), 0
    )
    return {
        "axes": {
            "lr": {"scale": "log", "categories": None},
            "amsgrad": {"scale": "category", "categories": [True, False]},
        },
        "entries": entries,
        "phase": "search",
        "progress": {**counts, "reruns": 0, "reruns_done": 0, **progress},
    }


def trial(n: int, status: str, score: float | None, **values: Any) -> dict[str, Any]:
    return {
        "trial": n,
        "run_id": str(100 + n),
        "status": status,
        "score": score,
        "pruned_at_epoch": 2 if status == "pruned" else None,
        "values": values,
    }


def test_a_baseline_takes_its_tuned_labels_colour_and_the_others_take_the_next() -> None:
    got = js(f"Object.fromEntries(S.colourIndex({json.dumps(STUDY_LABELS)}))")
    assert got == {"sgd": 0, "sgd:one-shot": 0, "adam": 1, "adam:one-shot": 1, "nag": 2}
    plain = [{"label": name} for name in ("a", "b", "c")]
    assert js(f"Object.fromEntries(S.colourIndex({json.dumps(plain)}))") == {"a": 0, "b": 1, "c": 2}


def test_baselines_are_dashed_and_overlapping_tuned_labels_never_take_their_dash() -> None:
    curves = (
        "new Map([['sgd', {key:[1,2], mean:[2,1]}], ['sgd:one-shot', {key:[1,2], mean:[2,1]}],"
        "['adam', {key:[1,2], mean:[3,0.1]}], ['adam:one-shot', {key:[1,2], mean:[3,2]}],"
        "['nag', {key:[1,2], mean:[2,1.01]}]])"
    )
    got = js(f"Object.fromEntries(S.labelDashes({json.dumps(STUDY_LABELS)}, {curves}))")
    # nag lies on sgd: it gets a pattern of its own, not the baselines' dashes (1)
    assert got == {"sgd": 0, "sgd:one-shot": 1, "adam": 0, "adam:one-shot": 1, "nag": 2}
    # without baselines the plain rule holds: nag's overlap takes the first free pattern
    plain = json.dumps([{"label": "sgd"}, {"label": "nag"}])
    assert js(f"Object.fromEntries(S.labelDashes({plain}, {curves}))") == {"sgd": 0, "nag": 1}


def test_tuneability_points_are_the_finished_trials_of_the_entries_that_search_the_key() -> None:
    entries = [
        {
            "label": "sgd",
            "search": {"lr": {}},
            "best_trial": 1,
            "trials": [
                trial(0, "pruned", 0.2, lr=0.01),
                trial(1, "completed", 0.9, lr=0.1),
                trial(2, "diverged", None, lr=3.0),
                trial(3, "running", 0.5, lr=0.03),
            ],
        },
        {
            "label": "adam",
            "search": {"lr": {}, "amsgrad": {}},
            "best_trial": 0,
            "trials": [
                trial(0, "completed", 0.95, lr=0.001, amsgrad=False),
                trial(1, "queued", None, lr=0.002, amsgrad=True),
            ],
        },
        {"label": "gd", "search": {}, "best_trial": 0, "trials": [trial(0, "completed", 0.5)]},
    ]
    got = js(f"S.tuneabilityPoints({json.dumps(study(entries))}, 'lr')")
    assert [(p["label"], p["trial"], p["x"], p["status"], p["best"]) for p in got] == [
        ("sgd", 0, 0.01, "pruned", False),
        ("sgd", 1, 0.1, "completed", True),
        ("sgd", 2, 3.0, "diverged", False),
        ("adam", 0, 0.001, "completed", True),
    ]  # running and queued trials have no result yet; gd searches nothing
    assert got[0]["prunedAt"] == 2 and got[0]["runId"] == "100"
    flags = js(f"S.tuneabilityPoints({json.dumps(study(entries))}, 'amsgrad')")
    assert [(p["label"], p["x"], p["value"]) for p in flags] == [("adam", 1, False)]  # its index


def test_expected_best_curves_run_from_one_trial_to_all() -> None:
    entries = [
        {"label": "sgd", "expected_best": [0.5, 0.6, 0.65]},
        {"label": "tpe-less", "expected_best": None},
        {"label": "none yet", "expected_best": []},
    ]
    got = js(f"S.bestOfKCurves({json.dumps(study(entries))})")
    assert got == [{"label": "sgd", "x": [1, 2, 3], "y": [0.5, 0.6, 0.65]}]


def test_the_progress_line_names_the_phase_and_counts_the_trials() -> None:
    searching = study([], budget=16, trials=8, done=5, pruned=3, diverged=1)
    assert js(f"S.studyProgressText({json.dumps(searching)}, 'running')") == (
        "Study searching: 5 of 16 trials done (3 pruned, 1 diverged); 3 training or queued"
    )
    rerunning = {
        **searching,
        "phase": "reruns",
        "progress": {
            **searching["progress"],
            "trials": 16,
            "done": 16,
            "failed": 1,
            "reruns": 10,
            "reruns_done": 4,
        },
    }
    assert js(f"S.studyProgressText({json.dumps(rerunning)}, 'running')") == (
        "Study rerunning the best settings: search 16 of 16 trials done (3 pruned, 1 diverged, "
        "1 failed); 4 of 10 reruns of the best settings done"
    )
    done = {**rerunning, "progress": {**rerunning["progress"], "reruns_done": 10}}
    assert js(f"S.studyProgressText({json.dumps(done)}, 'succeeded')").startswith(
        "Study done: search 16"
    )
    assert js(f"S.studyProgressText({json.dumps(searching)}, 'cancelled')") == (
        "Study cancelled: 5 of 16 trials done (3 pruned, 1 diverged)"
    )
