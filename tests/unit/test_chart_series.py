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
