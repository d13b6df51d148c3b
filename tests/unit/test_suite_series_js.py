"""services/web/js/suite_series.js, the pure data behind a suite's results view, run under
Node on planted scores documents (tests/suite_scores.py): the heat map's states, colours and
wording, the profile's table and its value at a τ, the ranking, the progress line, the
definition a reader is shown and the CSV of every t(s, w)."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from typing import Any

import pytest

from services.report.assets import WEB_DIR
from tests import suite_scores
from tests.support import unavailable

MODULE = (WEB_DIR / "js" / "suite_series.js").as_uri()


def js(expression: str, **values: Any) -> Any:
    """The JSON value of ``expression``, with suite_series.js's exports as ``S`` and each
    keyword argument bound to a constant of that name."""
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed (apt-get install nodejs): it runs suite_series.js")
    bound = "".join(f"const {name} = {json.dumps(value)};\n" for name, value in values.items())
    script = (
        f'import * as S from "{MODULE}";\n{bound}'
        f"process.stdout.write(JSON.stringify({expression}));"
    )
    result = subprocess.run(
        [node, "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_ratios_times_scores_and_speedups_read_as_a_reader_expects() -> None:
    got = js(
        "[S.formatRatio(1), S.formatRatio(1.6666), S.formatRatio(12.345), S.formatRatio(null),"
        ' S.formatTime(340, "steps"), S.formatTime(1, "steps"), S.formatTime(12345, "steps"),'
        ' S.formatTime(1.23456, "seconds"), S.formatTime(null, "steps"),'
        " S.formatScore(0.73333), S.formatScore(null),"
        " S.formatSpeedup(1), S.formatSpeedup(0.63106)]"
    )
    assert got == [
        "1", "1.67", "12.3", "∞",
        "340 steps", "1 step", "12,345 steps", "1.23 s", "miss",
        "0.733", "\u2013", "1.00\u00d7", "0.631\u00d7",
    ]  # fmt: skip


def test_the_heat_colour_follows_log_r_from_green_to_red_and_darker_past_r_max() -> None:
    got = js(
        "[S.heatColour(1, 4), S.heatColour(2, 4), S.heatColour(4, 4), S.heatColour(4.01, 4),"
        " S.heatColour(null, 4), S.logShare(1, 4), S.logShare(2, 4), S.logShare(16, 4)]"
    )
    # r = 1 the ramp's start, √r_max its middle (log scale), r_max its end; a miss: no colour
    assert got == ["#1a9850", "#fee08b", "#d73027", "#7f0000", None, 0, 0.5, 1]
    # green channel: up from r = 1 to √r_max (green to yellow), then down to r_max (to red)
    ramp = js("[1.1, 1.5, 1.9, 2.5, 3, 3.5].map((r) => S.heatColour(r, 4))")
    greens = [int(c[3:5], 16) for c in ramp]
    assert greens[:3] == sorted(set(greens[:3])) and greens[3:] == sorted(set(greens[3:]))[::-1]
    assert js('[S.textOn("#1a9850"), S.textOn("#fee08b"), S.textOn("#7f0000")]') == [
        "#fff",
        "#222",
        "#fff",
    ]


def test_the_heat_grid_has_a_cell_per_optimizer_and_workload_in_its_state() -> None:
    scores = suite_scores.succeeded()
    grid = js("S.heatGrid(scores)", scores=scores)
    assert [c["name"] for c in grid["columns"]] == list(suite_scores.WORKLOADS)
    assert [r["optimizer"] for r in grid["rows"]] == suite_scores.OPTIMIZERS
    states = {(c["optimizer"], c["workload"]): c for r in grid["rows"] for c in r["cells"]}
    assert len(states) == 4 * 5
    assert {k: v["state"] for k, v in states.items() if k[1] == "moons-mlp"} == {
        ("gd", "moons-mlp"): "beyond",  # r = 6 > r_max: reached, outside the profile
        ("sgd", "moons-mlp"): "solved",
        ("momentum", "moons-mlp"): "best",  # a tie: both fastest
        ("adam", "moons-mlp"): "best",
    }
    assert states[("adam", "digits-mlp")]["state"] == "miss"
    assert states[("adam", "digits-mlp")]["text"] == "miss"
    assert states[("adam", "digits-mlp")]["colour"] is None
    # one study reached it (250 steps), the other missed: the median is infinite
    assert "median over 2 studies: 250 steps, miss" in states[("adam", "digits-mlp")]["title"]
    rosenbrock = [states[(label, "rosenbrock-point")] for label in suite_scores.OPTIMIZERS]
    assert {c["state"] for c in rosenbrock} == {"unsolved"}
    assert "nobody reached" in rosenbrock[0]["title"]
    assert [c["solved"] for c in grid["columns"]] == [True, True, True, True, False]
    assert [c["unsolved"] for c in grid["columns"]] == [False, False, False, False, True]
    sgd = states[("sgd", "wine-linear")]
    assert (sgd["text"], sgd["t"], sgd["r"]) == ("2.5", 100, 2.5)
    assert sgd["title"].startswith("sgd on wine-linear: t = 100 steps")
    assert "r = 2.5" in sgd["title"] and "DeepOBS speed 2 epochs" in sgd["title"]


def test_cells_of_a_running_workload_are_pending_not_misses() -> None:
    scores = suite_scores.running()
    grid = js("S.heatGrid(scores)", scores=scores)
    for row in grid["rows"]:
        for cell in row["cells"]:
            if cell["workload"] in suite_scores.RUNNING_WORKLOADS:
                assert cell["state"] == "pending" and cell["text"] == "…", cell
    assert [c["running"] for c in grid["columns"]] == [False, False, True, False, True]
    # nobody has solved the running ones yet: not marked unsolved until their jobs finish
    assert [c["unsolved"] for c in grid["columns"]] == [False] * 5
    progress = js("S.suiteProgress(scores)", scores=scores)
    assert progress["done"] == 6 and progress["total"] == 10 and progress["fraction"] == 0.6
    assert progress["text"] == "6 of 10 jobs done (5 workloads)"
    failed = suite_scores.succeeded()
    failed["workloads"][0]["jobs"][1]["status"] = "failed"
    assert js("S.suiteProgress(s).text", s=failed) == (
        "10 of 10 jobs done (5 workloads), 1 failed or cancelled"
    )


def test_the_profile_table_is_tau_then_one_rho_per_optimizer_in_the_specs_order() -> None:
    scores = suite_scores.succeeded()
    got = js("S.profileTable(scores)", scores=scores)
    assert got["labels"] == suite_scores.OPTIMIZERS and got["dropped"] == []
    assert got["table"][0] == scores["profile"]["tau"]
    assert got["table"][1:] == [scores["profile"]["rho"][label] for label in got["labels"]]
    broken = suite_scores.succeeded()
    broken["profile"]["rho"]["sgd"] = [0.5]  # not one value per tau: not drawn, and named
    got = js("S.profileTable(s)", s=broken)
    assert got["labels"] == ["gd", "momentum", "adam"] and got["dropped"] == ["sgd"]


def test_rho_at_a_tau_is_the_step_functions_value_right_continuous() -> None:
    tau, rho = [1, 1.5, 2, 4], [0.2, 0.4, 0.8, 0.8]
    got = js(
        "[0.5, 1, 1.2, 1.5, 1.99, 2, 3.9, 4].map((t) => S.rhoAt(tau, rho, t))", tau=tau, rho=rho
    )
    assert got == [None, 0.2, 0.2, 0.4, 0.4, 0.8, 0.8, 0.8]
    # on the planted profile: momentum solved 3 of 5 at τ = 1 and 4 of 5 from τ = 2 on
    scores = suite_scores.succeeded()
    at = js("[1, 1.99, 2].map((t) => S.rhoAt(p.tau, p.rho.momentum, t))", p=scores["profile"])
    assert at == [0.6, 0.6, 0.8]
    assert js("S.rhoText(0.6, 5)") == "0.6 (3 of 5 workloads)"
    assert js("[S.tauTicks(4), S.tauTicks(3.5)]") == [
        [1, 1.25, 1.5, 2, 2.5, 3, 4],
        [1, 1.25, 1.5, 2, 2.5, 3, 3.5],
    ]


def test_the_score_table_is_ranked_whatever_order_it_arrives_in() -> None:
    scores = suite_scores.succeeded()
    random.Random(3).shuffle(scores["table"])
    rows = js("S.rankedRows(scores).map((r) => [r.rank, r.optimizer])", scores=scores)
    assert rows == [[1, "momentum"], [2, "sgd"], [3, "adam"], [4, "gd"]]
    # a tie shares the rank and keeps the spec's order
    tied = [
        {"optimizer": "adam", "rank": 1, "score": 0.5},
        {"optimizer": "sgd", "rank": 1, "score": 0.5},
        {"optimizer": "gd", "rank": 3, "score": 0.1},
    ]
    got = js(
        "S.rankedRows({optimizers: ['gd', 'sgd', 'adam'], table: t}).map((r) => r.optimizer)",
        t=tied,
    )
    assert got == ["sgd", "adam", "gd"]


def test_the_definition_names_its_source_r_max_the_time_measure_and_the_miss_rule() -> None:
    scores = suite_scores.succeeded()
    items = dict(js("S.definitionItems(scores)", scores=scores)[:8])
    assert "AlgoPerf" in items["source"] and items["profile"] == "Dolan & Moré 2002"
    assert items["r_max"] == "4" and "optimizer steps" in items["time t(s, w)"]
    assert "a miss is infinite" in items["time t(s, w)"]
    assert "against the reference adam" in items["speedup"]
    assert "budget plus one" in items["speedup"]
    notes = [text for term, text in js("S.definitionItems(s)", s=scores) if term == "note"]
    assert notes == scores["definition"]["notes"]
    seconds = {**scores, "time_measure": "seconds"}
    assert "training seconds" in dict(js("S.definitionItems(s)", s=seconds))["time t(s, w)"]


def test_the_cells_csv_has_every_time_so_the_scores_can_be_recomputed() -> None:
    scores = suite_scores.succeeded()
    lines = js("S.cellsCsv(scores)", scores=scores).splitlines()
    assert lines[0] == "optimizer,workload,t,r,t_per_study,speed_epochs,solved_by_anyone"
    assert len(lines) == 1 + 20
    assert '"adam","digits-mlp",,,"250 inf",,true' in lines
    assert '"sgd","digits-mlp",600,3,"600 600",12,true' in lines


@pytest.mark.parametrize("r_max", [2.0, 4.0, 10.0])
def test_every_planted_ratio_colour_is_a_colour_or_a_miss(r_max: float) -> None:
    scores = {**suite_scores.succeeded(), "r_max": r_max}
    colours = js(
        "S.heatGrid(scores).rows.flatMap((r) => r.cells.map((c) => [c.state, c.colour]))",
        scores=scores,
    )
    for state, colour in colours:
        if state in ("best", "solved", "beyond"):
            assert isinstance(colour, str) and len(colour) == 7 and colour.startswith("#")
        else:
            assert colour is None


def test_a_listed_suites_jobs_done_read_from_whichever_shape_the_list_gives() -> None:
    items = [
        {"jobs_done": 3, "jobs_total": 10},
        {"progress": {"done": 4, "total": 8}},
        {"progress": {"jobs_done": 1, "jobs_total": 2}},
        {"jobs": [{"status": "succeeded"}, {"status": "running"}, {"status": "failed"}]},
        {"status": "queued"},
    ]
    got = js("items.map(S.listedProgress)", items=items)
    assert [g and (g["done"], g["total"]) for g in got] == [(3, 10), (4, 8), (1, 2), (2, 3), None]
