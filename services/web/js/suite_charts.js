// A suite's results, for the web page and the suite's HTML report alike: both hand this
// module the body of GET /v1/suites/{id}/scores (the suite contract), so both show one
// picture.
//
//   const view = mountSuiteCharts(container, scores, options);   // → { update(scores), destroy() }
//
// It draws, in order: how far the suite has got; the score table (rank, optimizer, score B,
// geometric-mean speedup against the reference, workloads solved); the performance profile
// ρ_s(τ) on uPlot (services/web/vendor/, the global `uPlot`; τ on a log axis from 1 to r_max,
// one step line per optimizer, a legend that hides and shows them, ρ at the cursor on hover,
// PNG and CSV); the heat map of r(s, w) (a row per optimizer, a column per workload, coloured
// by log r, misses hatched, a workload nobody solved marked, t and r in each cell's title, each
// workload's header linking to its jobs' reports); and what the numbers mean (the definition's
// source, r_max, the time measure, the miss rule).
//
// options.jobLinks(job, workload) → the links a workload header shows per job (default: its
// report, /v1/jobs/{id}/report). The profile's figure carries data-series (lines drawn),
// data-x-scale, data-x-min and data-x-max, the heat map's cells data-state, so tests and
// scripts can read what is drawn. Colours are set through the CSSOM, which the web page's
// Content-Security-Policy allows (style attributes it would not).
import { DASHES, colourOf, dashesFor } from "./series.js";
import {
  cellsCsv, definitionItems, formatRatio, formatScore, formatSpeedup, heatColour, heatGrid, optimizerIndex,
  profileTable, rankedRows, rhoAt, rhoText, suiteProgress, tauTicks, textOn,
} from "./suite_series.js";
import { download, el, pngOf, swatch } from "./chart_dom.js";

const PROFILE_HEIGHT = 320;
const PROFILE_AXIS = { stroke: "#555", grid: { stroke: "#eceef1", width: 1 }, ticks: { stroke: "#ddd" } };
const SUITE_FINISHED = ["succeeded", "failed", "cancelled"];

function paint(element, background, colour) {
  // CSSOM, not a style attribute: the web page's CSP allows it.
  if (background) element.style.background = background;
  if (colour) element.style.color = colour;
  return element;
}

function defaultJobLinks(job, workload) {
  const text = workload.jobs.length > 1 ? `study ${job.study}` : "report";
  return [el("a", {
    href: `/v1/jobs/${job.job_id}/report`, class: "ob-job-link", "data-testid": "workload-report",
    "data-job-id": job.job_id, "data-api-link": `report-${job.job_id}.html`,
    title: `${workload.name}${workload.jobs.length > 1 ? `, study ${job.study}` : ""}: the job's report (${job.status})`,
  }, text)];
}

export function mountSuiteCharts(container, initial, options = {}) {
  const uPlot = globalThis.uPlot;
  const jobLinks = options.jobLinks || defaultJobLinks;
  let scores = initial;
  let signature = "";
  let plot = null;
  const hidden = new Set();

  const progressLine = el("p", { class: "ob-suite-progress", "data-testid": "suite-progress", "aria-live": "polite" });
  const tableBox = el("div", { class: "ob-suite-part", "data-testid": "suite-table-box" });
  const profileBox = el("div", { class: "ob-suite-part" });
  const heatBox = el("div", { class: "ob-suite-part" });
  const definitionBox = el("div", { class: "ob-suite-part ob-definition", "data-testid": "suite-definition" });
  container.classList.add("ob-suite");
  container.replaceChildren(progressLine, tableBox, profileBox, heatBox, definitionBox);

  const colour = (label) => colourOf(optimizerIndex(scores).get(label) ?? 0);
  const final = () => scores.status === "succeeded";

  function render() {
    renderProgress();
    renderTable();
    renderProfile();
    renderHeat();
    renderDefinition();
  }

  function renderProgress() {
    const progress = suiteProgress(scores);
    const head = final() ? "Suite done" : SUITE_FINISHED.includes(scores.status) ? `Suite ${scores.status}` : `Suite ${scores.status || "running"}`;
    const partial = final() ? "" : ": the scores below are over the jobs finished so far and will change";
    progressLine.dataset.done = String(progress.done);
    progressLine.dataset.total = String(progress.total);
    progressLine.textContent = `${head}: ${progress.text}${partial}.`;
  }

  // ---------------------------------------------------------------- the score table

  function renderTable() {
    const rows = rankedRows(scores);
    const n = (scores.workloads || []).length;
    const head = ["Rank", "Optimizer", "Score B", `Speedup vs ${scores.reference}`, "Solved"];
    const table = el("table", { class: "ob-scores", "data-testid": "suite-scores" },
      el("caption", {}, final() ? "Ranked by score B, best first" : "Ranked by score B so far (provisional)"),
      el("thead", {}, el("tr", {}, head.map((t, i) => el("th", { scope: "col", class: i === 1 ? "text" : null }, t)))),
      el("tbody", {}, rows.map((row) => el("tr", { "data-testid": "score-row", "data-optimizer": row.optimizer, "data-rank": row.rank, "data-score": row.score },
        el("td", {}, String(row.rank)),
        el("th", { scope: "row", class: "text" }, paint(el("i", { class: "ob-dot" }), colour(row.optimizer)), row.optimizer),
        el("td", { title: "1 / (r_max − 1) · ∫ ρ(τ) dτ over [1, r_max]" }, formatScore(row.score)),
        el("td", { title: `geometric mean of t(${scores.reference}, w) / t(${row.optimizer}, w)` }, formatSpeedup(row.geomean_speedup)),
        el("td", {}, `${row.solved} / ${row.workloads ?? n}`)))));
    tableBox.replaceChildren(el("h2", {}, "Scores"), el("div", { class: "ob-scroll" }, table),
      el("p", { class: "ob-note" }, `Score B: the area under the performance profile from 1 to r_max = ${scores.r_max}, scaled to [0, 1]. `
        + `Speedup: how many times faster than ${scores.reference} to the target, geometric mean over workloads. Solved: workloads whose target it reached.`));
  }

  // ---------------------------------------------------------------- the profile

  function renderProfile() {
    if (plot) plot.destroy();
    plot = null;
    const title = "ρ(τ): the share of workloads each optimizer solved within τ times the fastest";
    const figure = el("figure", { class: "ob-chart", "data-chart": "profile" });
    const tools = el("span", { class: "ob-tools" });
    const legend = el("div", { class: "ob-legend", role: "group", "aria-label": "optimizers: click to hide or show" });
    const area = el("div", { class: "ob-plot", role: "img", "aria-label": title });
    const readout = el("div", { class: "ob-readout", "data-testid": "readout" }, "hover for ρ at each τ");
    const note = el("p", { class: "ob-note" });
    figure.append(el("figcaption", {}, el("span", { class: "ob-title" }, title), tools), legend, area, readout, note);
    profileBox.replaceChildren(el("h2", {}, "Performance profile"), figure);
    const { labels, table, dropped } = profileTable(scores);
    const nWorkloads = (scores.workloads || []).length;
    figure.dataset.series = "0";
    if (!uPlot) {
      area.replaceWith(el("p", { class: "ob-empty" }, "The chart library did not load: the scores are in the table and the heat map."));
      readout.remove();
      return;
    }
    if (!labels.length || table[0].length < 1) {
      area.replaceWith(el("p", { class: "ob-empty" }, "Drawn once a workload has finished."));
      readout.remove();
      return;
    }
    const rMax = scores.r_max;
    const curves = new Map(labels.map((label, i) => [label, { key: table[0], mean: table[i + 1] }]));
    const dash = dashesFor(scores.optimizers, curves);
    const stepped = uPlot.paths.stepped({ align: 1 });
    const series = [{ label: "τ" }, ...labels.map((label) => ({
      label, stroke: colour(label), width: 2, dash: DASHES[dash.get(label) ?? 0], paths: stepped,
      points: { show: false }, show: !hidden.has(label), value: (u, v) => formatRatio(v),
    }))];
    const opts = {
      width: Math.max(320, Math.min(container.clientWidth || 900, 1100) - 8), height: PROFILE_HEIGHT,
      legend: { show: false }, series,
      cursor: { drag: { x: false, y: false }, points: { show: false } },
      scales: {
        x: { time: false, auto: false, distr: 3, log: 2, range: [1, rMax] },
        y: { auto: false, range: [-0.03, 1.03] },
      },
      axes: [
        { ...PROFILE_AXIS, label: "τ: within this factor of the fastest (log axis)", splits: () => tauTicks(rMax), values: (u, splits) => splits.map(formatRatio) },
        { ...PROFILE_AXIS, label: "ρ(τ): share of workloads", size: 56, splits: () => [0, 0.2, 0.4, 0.6, 0.8, 1], values: (u, splits) => splits.map((v) => String(Number(v.toFixed(1)))) },
      ],
      hooks: {
        setCursor: [(u) => {
          const left = u.cursor.left;
          if (left === undefined || left === null || left < 0) return;
          const tau = u.posToVal(left, "x");
          readout.replaceChildren(el("b", {}, `τ ${formatRatio(tau)}`), ...labels.filter((l) => !hidden.has(l)).map((label, i) => {
            const rho = rhoAt(table[0], table[labels.indexOf(label) + 1], tau);
            return el("span", { class: "ob-value" }, paint(el("i", { class: "ob-dot" }), colour(label)), `${label} ${rhoText(rho, nWorkloads)}`);
          }));
        }],
      },
    };
    const markRange = (u) => {
      figure.dataset.xMin = String(u.scales.x.min);
      figure.dataset.xMax = String(u.scales.x.max);
    };
    opts.hooks.setScale = [(u, key) => key === "x" && markRange(u)];
    plot = new uPlot(opts, table, area);
    figure.dataset.series = String(labels.length);
    figure.dataset.xScale = "log";
    markRange(plot);
    legend.replaceChildren(...labels.map((label, i) => {
      const button = el("button", {
        type: "button", class: "ob-key", "data-label": label, "aria-pressed": String(!hidden.has(label)), title: "click to hide or show",
      }, swatch(colour(label), DASHES[dash.get(label) ?? 0]), label);
      button.addEventListener("click", () => {
        if (hidden.has(label)) hidden.delete(label);
        else hidden.add(label);
        button.setAttribute("aria-pressed", String(!hidden.has(label)));
        plot.setSeries(i + 1, { show: !hidden.has(label) });
      });
      return button;
    }));
    note.textContent = `One step line per optimizer: at τ, the share of the ${nWorkloads} workloads it reached the target on within τ times the fastest optimizer's time; `
      + `τ from 1 to r_max = ${rMax} on a log axis. Higher and further left is better; a line that ends below 1 missed workloads or was slower than r_max times the fastest on them`
      + `${dropped.length ? `; not drawn (no profile): ${dropped.join(", ")}` : ""}.`;
    tools.replaceChildren(
      el("button", { type: "button", class: "ob-tool", "data-testid": "chart-png", on: { click: () => pngOf(plot, `${scores.name}: ${title}`, scores.optimizers.filter((label) => !hidden.has(label)).map((label) => ({ label, colour: colour(label) }))).toBlob((blob) => download(`${fileStem()}-profile.png`, blob)) } }, "PNG"),
      el("button", { type: "button", class: "ob-tool", "data-testid": "chart-csv", on: { click: () => download(`${fileStem()}-profile.csv`, new Blob([profileCsv(labels, table)], { type: "text/csv" })) } }, "CSV"),
    );
  }

  function fileStem() {
    return `suite-${String(scores.suite_id || "").slice(0, 8)}`;
  }

  function profileCsv(labels, table) {
    const quote = (s) => `"${String(s).replaceAll('"', '""')}"`;
    const lines = [["tau", ...labels].map(quote).join(",")];
    table[0].forEach((tau, i) => lines.push([tau, ...labels.map((_, j) => table[j + 1][i] ?? "")].join(",")));
    return `${lines.join("\n")}\n`;
  }

  // ---------------------------------------------------------------- the heat map

  function renderHeat() {
    const grid = heatGrid(scores);
    const rMax = scores.r_max;
    const header = grid.columns.map((column) => {
      const target = column.target ? `${column.target.metric} ${/loss|distance/.test(column.target.metric) ? "≤" : "≥"} ${column.target.value}` : "";
      return el("th", {
        scope: "col", class: `ob-workload${column.unsolved ? " ob-unsolved" : ""}`, "data-testid": "heat-workload",
        "data-workload": column.name, "data-solved": String(column.solved), "data-unsolved": String(column.unsolved),
      },
      el("span", { class: "ob-workload-name" }, column.name),
      el("span", { class: "ob-workload-facts" }, [column.dataset, column.model].filter(Boolean).join(" · ")),
      target ? el("span", { class: "ob-workload-facts" }, target) : null,
      !column.unsolved ? null : el("span", { class: "ob-unsolved-mark", "data-testid": "unsolved-mark", title: "no optimizer reached this workload's target: every r is ∞, and it lowers every profile alike" }, "solved by none"),
      column.running ? el("span", { class: "ob-workload-facts" }, "running") : null,
      el("span", { class: "ob-job-links" }, column.jobs.map((job) => jobLinks(job, column)).flat()));
    });
    const body = grid.rows.map((row) => el("tr", { "data-testid": "heat-row", "data-optimizer": row.optimizer },
      el("th", { scope: "row", class: "text" }, paint(el("i", { class: "ob-dot" }), colour(row.optimizer)), row.optimizer),
      row.cells.map((cell) => paint(el("td", {
        class: `ob-cell ob-${cell.state}`, "data-testid": "heat-cell", "data-state": cell.state,
        "data-optimizer": cell.optimizer, "data-workload": cell.workload, "data-r": cell.r ?? "", "data-t": cell.t ?? "",
        title: cell.title, "aria-label": cell.title,
      }, cell.text), cell.colour, cell.colour ? textOn(cell.colour) : null))));
    const table = el("table", { class: "ob-heat", "data-testid": "suite-heatmap" },
      el("caption", {}, "r(s, w): each optimizer's time to the target over the fastest optimizer's, per workload (hover a cell for t)"),
      el("thead", {}, el("tr", {}, el("th", { scope: "col", class: "text" }, "optimizer"), header)),
      el("tbody", {}, body));
    const key = [
      [heatColour(1, rMax), "1: the fastest", "best"],
      [heatColour(Math.sqrt(rMax), rMax), formatRatio(Math.sqrt(rMax)), "solved"],
      [heatColour(rMax, rMax), `${formatRatio(rMax)} = r_max`, "solved"],
      [heatColour(rMax * 2, rMax), `> r_max: outside the profile`, "beyond"],
      [null, "miss: never reached the target (t = ∞)", "miss"],
      [null, "…: still training", "pending"],
    ].map(([background, text, state]) => el("span", { class: "ob-heat-key" }, paint(el("i", { class: `ob-heat-swatch ob-${state}` }), background), text));
    heatBox.replaceChildren(
      el("h2", {}, "Heat map of r(s, w)"),
      el("div", { class: "ob-scroll" }, table),
      el("p", { class: "ob-heat-legend", "data-testid": "heat-legend" }, "colour by log r: ", key),
      el("p", { class: "ob-note" }, "A column per workload (its header links to each study's job report), a row per optimizer. "
        + `t is in ${scores.time_measure === "seconds" ? "training seconds" : "optimizer steps"}; a workload that no optimizer solved is marked, every r on it is ∞.`),
      el("p", { class: "ob-tools" }, el("button", {
        type: "button", class: "ob-tool", "data-testid": "cells-csv",
        on: { click: () => download(`${fileStem()}-cells.csv`, new Blob([cellsCsv(scores)], { type: "text/csv" })) },
      }, "CSV of every t(s, w) and r(s, w)")),
    );
  }

  // ---------------------------------------------------------------- the definition

  function renderDefinition() {
    definitionBox.replaceChildren(
      el("h2", {}, "What the numbers mean"),
      el("dl", {}, definitionItems(scores).map(([term, text]) => [el("dt", {}, term), el("dd", {}, text)])),
    );
  }

  const onResize = () => plot && plot.setSize({ width: Math.max(320, Math.min(container.clientWidth || 900, 1100) - 8), height: PROFILE_HEIGHT });
  window.addEventListener("resize", onResize);
  render();
  signature = JSON.stringify(scores);
  container.dataset.suiteReady = "true";

  return {
    update(next) {
      const sign = JSON.stringify(next);
      if (sign === signature) return;
      signature = sign;
      scores = next;
      render();
    },
    destroy() {
      window.removeEventListener("resize", onResize);
      if (plot) plot.destroy();
      plot = null;
      container.replaceChildren();
      delete container.dataset.suiteReady;
    },
  };
}
