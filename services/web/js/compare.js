// #/compare?jobs=<id>,<id>,... any of the caller's jobs side by side: each job's setup (what
// differs between them marked), the summaries aligned by optimizer label (GET /v1/compare: a
// row per label, a block of columns per job, "not in this job" where a job has no such
// label), and their curves overlaid on the same axes, drawn from each job's
// GET /v1/jobs/{id}/charts: one colour per optimizer label (the same in every job), one dash
// pattern per job. Polls while a job is still running.
//
// Each chart's figure carries data-series: JSON [{job, label, dash}] of the lines drawn (the
// dash as "9,5", "" for solid), so tests and scripts can read what is on the canvas.

import { api, poller } from "./api.js";
import { focusHeading, h, show } from "./dom.js";
import { dash, fmtNumber, fmtPercent, fmtSteps, fmtTime } from "./format.js";
import { datasetKey, historyHref } from "./history.js";
import { align, colourOf, ema, formatValue, overSeeds } from "./series.js";
import { targetText } from "./summary.js";
import { FINISHED, problemBox, statusBadge } from "./widgets.js";

const REFRESH_MS = 2000;
// One pattern per job (the API compares 8 at most): solid, dashed, dotted, dash-dot, ...
export const JOB_DASHES = [[], [9, 5], [2, 4], [12, 4, 2, 4], [18, 6], [6, 3, 2, 3, 2, 3], [1, 6], [22, 4, 6, 4]];
const LETTERS = "ABCDEFGH";
const HEIGHT = 280;
const AXIS = { stroke: "#555", grid: { stroke: "#eceef1", width: 1 }, ticks: { stroke: "#ddd" } };

/** The job ids of the route's `jobs` parameter ("a,b" → ["a", "b"]). */
export function jobIdsOf(params) {
  return (params.get("jobs") || "").split(",").map((s) => s.trim()).filter(Boolean);
}

function swatch(colour, pattern) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", "30");
  svg.setAttribute("height", "10");
  svg.setAttribute("aria-hidden", "true");
  const line = document.createElementNS(ns, "line");
  for (const [k, v] of Object.entries({ x1: 1, y1: 5, x2: 29, y2: 5, stroke: colour, "stroke-width": 2.5 })) {
    line.setAttribute(k, String(v));
  }
  if (pattern.length) line.setAttribute("stroke-dasharray", pattern.join(" "));
  svg.append(line);
  return svg;
}

const scoreTitle = (task) => (task === "regression" ? "Best val R²" : task === "landscape" ? "Final distance" : "Best val acc");

function scoreOf(row, task) {
  if (task === "landscape") return fmtNumber(row.final_distance);
  return task === "regression" ? fmtNumber(row.best_val_accuracy) : fmtPercent(row.best_val_accuracy);
}

function setupCells(job, differs) {
  const model = job.model || {};
  const value = {
    dataset: job.dataset.name === "upload" ? `upload ${String(job.dataset.id).slice(0, 8)}` : job.dataset.name,
    model: model.hidden ? `${model.name} ${JSON.stringify(model.hidden)}` : model.name,
    epochs: String(job.epochs),
    batch_size: String(job.batch_size),
    target: targetText(job.target),
  };
  return Object.entries(value).map(([key, text]) => {
    const cell = h("td", { class: differs.includes(key) ? "differs" : null, "data-key": key, title: differs.includes(key) ? "differs between the jobs" : null }, text);
    if (differs.includes(key)) {
      // CSSOM, not a style attribute (the page's CSP allows it); the page's style sheet stays as it is
      cell.style.background = "#fff1cc";
      cell.style.fontWeight = "600";
    }
    return cell;
  });
}

function setupTable(body, labelColour) {
  const { jobs, differs } = body;
  return h(
    "table",
    { class: "summary compare-setup", "data-testid": "compare-setup" },
    h("caption", {}, differs.length ? `Setups differ in: ${differs.join(", ")} — their numbers are not comparable as they stand` : "The same setup in every job"),
    h("thead", {}, h("tr", {}, ["Job", "Line", "Status", "Data set", "Model", "Epochs", "Batch", "Target", "Best", "Submitted"].map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      jobs.map((job, j) =>
        h(
          "tr",
          { "data-testid": "compare-job", "data-job-id": job.id },
          h("th", { scope: "row" }, `${LETTERS[j]} `, h("a", { href: `#/jobs/${job.id}` }, job.name || job.id)),
          h("td", { "data-testid": "job-dash", "data-dash": JOB_DASHES[j].join(",") }, swatch("#333", JOB_DASHES[j])),
          h("td", {}, statusBadge(job.status)),
          setupCells(job, differs),
          h("td", {}, job.best ? h("span", { class: "label-dot", title: "rank 1" }, dot(labelColour(job.best)), job.best) : dash),
          h("td", {}, fmtTime(job.created_at)),
        ),
      ),
    ),
  );
}

// A log axis labels its decades only (uPlot hands every 1..9 x 10^n tick to label).
function decadeLabel(value) {
  if (!(value > 0)) return "";
  const exponent = Math.log10(value);
  if (Math.abs(exponent - Math.round(exponent)) > 1e-9) return "";
  return Math.abs(exponent) < 4 ? String(Number(value.toPrecision(1))) : `1e${Math.round(exponent)}`;
}

function dot(colour) {
  const node = h("i", { class: "ob-dot" });
  node.style.background = colour; // CSSOM, not a style attribute: the page's CSP allows it
  return node;
}

function alignedTable(body, labelColour) {
  const { jobs, rows } = body;
  const block = [
    [(job) => scoreTitle(job.task), (row, job) => scoreOf(row, job.task)],
    [() => "Steps to target", (row) => fmtSteps(row.steps_to_target)],
    [() => "Reached", (row) => row.target_reached ?? dash],
    [() => "Rank", (row, job) => (row.rank === null || row.rank === undefined ? dash : job.finished ? String(row.rank) : `${row.rank} (so far)`)],
  ];
  const historyOf = (label) => {
    const job = jobs.find((_, j) => rows.find((r) => r.label === label).cells[j]);
    return job ? historyHref(label, datasetKey(job.dataset)) : null;
  };
  return h(
    "table",
    { class: "summary compare-rows", "data-testid": "compare-table" },
    h("caption", {}, "Summaries aligned by optimizer label: a block of columns per job; — where a job has no such label"),
    h(
      "thead",
      {},
      h("tr", {}, h("th", { scope: "col", rowspan: "2" }, "Optimizer"), jobs.map((job, j) => h("th", { scope: "colgroup", colspan: String(block.length), class: "job-block" }, `${LETTERS[j]}: ${job.name || job.id}`))),
      h("tr", {}, jobs.map((job) => block.map(([title]) => h("th", { scope: "col", class: "num" }, title(job))))),
    ),
    h(
      "tbody",
      {},
      rows.map((row) => {
        const href = historyOf(row.label);
        return h(
          "tr",
          { "data-testid": "compare-row", "data-label": row.label },
          h("th", { scope: "row" }, dot(labelColour(row.label)), href ? h("a", { href, title: `${row.label} over your jobs`, "data-testid": "history-link" }, row.label) : row.label),
          row.cells.map((cell, j) =>
            cell
              ? block.map(([, value]) => h("td", { class: "num", "data-job": jobs[j].id }, value(cell, jobs[j])))
              : h("td", { colspan: String(block.length), class: "absent muted", "data-testid": "absent", "data-job": jobs[j].id }, h("em", {}, "not in this job")),
          ),
        );
      }),
    ),
  );
}

// ---------------------------------------------------------------- the overlaid curves

/** Per job and label: the mean over seeds of one series ({key, x, y} per run → overSeeds). */
function curvesOf(charts, read) {
  const curves = [];
  charts.forEach((data, j) => {
    if (!data) return;
    for (const { label } of data.labels) {
      const runs = data.runs.filter((r) => r.label === label && r.role !== "trial");
      const series = runs.map((run) => read(data, run)).filter((s) => s && s.key.length);
      if (!series.length) continue;
      const mean = overSeeds(series);
      curves.push({ job: j, label, x: mean.x, y: mean.mean, seeds: mean.seeds });
    }
  });
  return curves;
}

function epochRead(field) {
  return (data, run) => {
    const e = data.epochs[run.id];
    return e ? { key: e.epoch, x: e.epoch, y: e[field] } : null;
  };
}

function stepRead(data, run) {
  const s = data.steps[run.id];
  if (!s) return null;
  return { key: s.step, x: s.step, y: ema(s.step, s.loss, data.smoothing ?? 0) };
}

function chartSpecs(body) {
  const tasks = new Set(body.jobs.map((job) => job.task));
  const landscapes = tasks.size === 1 && tasks.has("landscape");
  const score = tasks.has("regression") ? (tasks.size > 1 ? "validation accuracy or R²" : "validation R²") : "validation accuracy";
  const list = [];
  if (landscapes) {
    list.push({ id: "distance-epoch", title: "Distance to the nearest minimum per epoch", x: "epoch", y: "distance", log: true, read: epochRead("distance") });
  } else {
    list.push({ id: "loss-epoch", title: "Training loss per epoch", x: "epoch", y: "training loss (epoch mean)", log: true, read: epochRead("train_loss") });
    list.push({ id: "val-epoch", title: `${score[0].toUpperCase()}${score.slice(1)} per epoch`, x: "epoch", y: score, log: false, read: epochRead("val_accuracy") });
  }
  list.push({ id: "loss-step", title: landscapes ? "f(x, y) per step" : "Training loss per step", x: "step", y: landscapes ? "f(x, y)" : "training loss (batch, smoothed)", log: true, read: stepRead });
  return list;
}

function drawChart(spec, curves, hidden, labelColour, width, jobs) {
  const figure = h("figure", { class: "ob-chart", "data-chart": spec.id, "data-testid": "compare-chart" });
  const readout = h("div", { class: "ob-readout" }, "hover for values; drag to zoom, double-click to reset");
  const plot = h("div", { class: "ob-plot", role: "img", "aria-label": spec.title });
  figure.append(h("figcaption", {}, h("span", { class: "ob-title" }, spec.title)), plot, readout);
  const shown = curves.filter((c) => !hidden.has(`label:${c.label}`) && !hidden.has(`job:${c.job}`));
  figure.dataset.series = JSON.stringify(shown.map((c) => ({ job: jobs[c.job].id, label: c.label, dash: JOB_DASHES[c.job].join(",") })));
  if (!shown.length || !globalThis.uPlot) {
    plot.replaceWith(h("p", { class: "ob-empty" }, globalThis.uPlot ? "Nothing recorded for this chart yet." : "The chart library did not load."));
    return { figure, destroy() {} };
  }
  const positive = shown.every((c) => c.y.every((v) => v === null || v > 0));
  const log = spec.log && positive;
  const table = align(shown.map((c) => ({ x: c.x, y: log ? c.y.map((v) => (v > 0 ? v : null)) : c.y })));
  const series = [{ label: spec.x }];
  for (const c of shown) {
    series.push({
      label: `${LETTERS[c.job]} ${c.label}`, stroke: labelColour(c.label), width: 2, dash: JOB_DASHES[c.job], spanGaps: true,
      points: { show: c.x.length <= 20, size: 5, fill: labelColour(c.label) },
    });
  }
  const opts = {
    width, height: HEIGHT, legend: { show: false }, series,
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: false, range: (u, min, max) => (min === max ? [min - 0.5, max + 0.5] : [min, max]) }, y: log ? { distr: 3, log: 10 } : {} },
    axes: [{ ...AXIS, label: spec.x }, { ...AXIS, label: spec.y, size: 64, values: (u, splits) => splits.map(log ? decadeLabel : formatValue) }],
    hooks: {
      setCursor: [(u) => {
        const i = u.cursor.idx;
        if (i === null || i === undefined) return;
        const items = shown.map((c, k) => [c, u.data[k + 1][i]]).filter(([, v]) => v !== null && v !== undefined);
        readout.replaceChildren(h("b", {}, `${spec.x} ${formatValue(u.data[0][i])}`), ...items.map(([c, v]) => h("span", { class: "ob-value" }, dot(labelColour(c.label)), `${LETTERS[c.job]} ${c.label} ${formatValue(v)}`)));
      }],
    },
  };
  const chart = new globalThis.uPlot(opts, table, plot);
  figure.append(h("p", { class: "ob-note" }, `colour: optimizer label; line pattern: job (${jobs.map((_, j) => LETTERS[j]).join(", ")}); mean over each label's seeds; ${log ? "log" : "linear"} y.`));
  return { figure, destroy: () => chart.destroy() };
}

function legend(body, labelColour, hidden, redraw) {
  const toggle = (key) => (event) => {
    if (hidden.has(key)) hidden.delete(key);
    else hidden.add(key);
    event.currentTarget.setAttribute("aria-pressed", String(!hidden.has(key)));
    redraw();
  };
  const labels = body.rows.map((row) => row.label);
  return h(
    "div",
    { class: "ob-legend", role: "group", "aria-label": "optimizers and jobs: click to hide or show" },
    labels.map((label) => h("button", { type: "button", class: "ob-key", "data-testid": "legend-label", "aria-pressed": String(!hidden.has(`label:${label}`)), onclick: toggle(`label:${label}`) }, swatch(labelColour(label), []), label)),
    body.jobs.map((job, j) => h("button", { type: "button", class: "ob-key", "data-testid": "legend-job", "data-dash": JOB_DASHES[j].join(","), "aria-pressed": String(!hidden.has(`job:${j}`)), onclick: toggle(`job:${j}`) }, swatch("#333", JOB_DASHES[j]), `${LETTERS[j]}: ${job.name || job.id}`)),
  );
}

// ---------------------------------------------------------------- the view

export function compareView(params) {
  document.title = "Compare jobs · optbench";
  const ids = jobIdsOf(params);
  const problemSlot = h("div");
  const setupSlot = h("div", { class: "table-wrap" });
  const tableSlot = h("div", { class: "table-wrap" });
  const chartsBox = h("section", { class: "charts-box ob-charts", "data-testid": "compare-charts", "aria-label": "Curves of every job", "aria-busy": "true" });
  show(
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "← Jobs")),
    h("h1", {}, `Comparing ${ids.length} job${ids.length === 1 ? "" : "s"}`),
    problemSlot,
    h("section", { "aria-labelledby": "setup-heading" }, h("h2", { id: "setup-heading" }, "Jobs"), setupSlot),
    h("section", { "aria-labelledby": "aligned-heading" }, h("h2", { id: "aligned-heading" }, "Summaries by optimizer"), tableSlot),
    h("section", { "aria-labelledby": "curves-heading" }, h("h2", { id: "curves-heading" }, "Curves"), chartsBox),
  );
  focusHeading();

  const hidden = new Set();
  let drawn = [];
  let last = null; // {body, charts}
  let signature = "";

  function labelColourOf(body) {
    const index = new Map(body.rows.map((row, i) => [row.label, i]));
    return (label) => colourOf(index.get(label) ?? 0);
  }

  function redraw() {
    for (const chart of drawn) chart.destroy();
    drawn = [];
    if (!last) return;
    const { body, charts } = last;
    const labelColour = labelColourOf(body);
    const width = Math.max(320, Math.min(chartsBox.clientWidth || 900, 1100) - 8);
    const figures = chartSpecs(body).map((spec) => drawChart(spec, curvesOf(charts, spec.read), hidden, labelColour, width, body.jobs));
    drawn = figures;
    chartsBox.replaceChildren(legend(body, labelColour, hidden, redraw), ...figures.map((f) => f.figure));
    chartsBox.removeAttribute("aria-busy");
    chartsBox.dataset.chartsReady = "true";
  }

  async function tick(isStopped) {
    const result = await api(`/v1/compare?jobs=${encodeURIComponent(ids.join(","))}`);
    if (isStopped()) return false;
    if (!result.ok) {
      problemSlot.replaceChildren(problemBox(result, "compare-problem"));
      return result.status >= 500 || result.status === 0; // a 404 or 422 will not change
    }
    problemSlot.replaceChildren();
    const body = result.body;
    const answers = await Promise.all(body.jobs.map((job) => api(`/v1/jobs/${job.id}/charts`)));
    if (isStopped()) return false;
    const charts = answers.map((a) => (a.ok ? a.body : null));
    const labelColour = labelColourOf(body);
    setupSlot.replaceChildren(setupTable(body, labelColour));
    tableSlot.replaceChildren(alignedTable(body, labelColour));
    const sign = JSON.stringify([body.jobs.map((j) => j.status), charts.map((c) => (c ? Object.values(c.steps).reduce((n, s) => n + s.step.length, 0) : -1))]);
    if (sign !== signature) {
      signature = sign;
      last = { body, charts };
      try {
        redraw();
      } catch (error) {
        console.error("optbench: the comparison's charts failed", error);
      }
    }
    return !body.jobs.every((job) => FINISHED.has(job.status));
  }

  const handle = poller(tick, REFRESH_MS);
  return {
    stop() {
      handle.stop();
      for (const chart of drawn) chart.destroy();
      drawn = [];
    },
  };
}
