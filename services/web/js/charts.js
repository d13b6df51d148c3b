// Every chart of a job, on uPlot (services/web/vendor/, loaded before this module as the
// global `uPlot`), for the web page and the HTML report alike: both hand this module the
// body of GET /v1/jobs/{id}/charts (services/report/chart_data.py), so both draw one picture.
//
//   const charts = mountJobCharts(container, data);   // → { update(data), destroy() }
//
// Shared controls (x axis: step, epoch or training seconds; seeds: mean with a min-max band
// or each run; smoothing) and one legend (click a label to hide it everywhere); per chart:
// values on hover, drag to zoom and double-click to reset, log or linear y, PNG and CSV of
// the visible series. Each chart's figure carries data-x-label, data-x-min and data-x-max
// (and the contour data-levels and data-paths) so tests and scripts can read what is drawn.
//
// A tuning study (data.study, services/report/study_data.py) adds, first, a tuneability
// scatter per searched key (data-points, data-best, data-diverged, data-x-scale) and the
// expected best score after k trials (data-points; a note instead for grid and TPE), and
// its loss and accuracy charts draw the reruns and the one-shot baselines, not the trials.
import {
  DASHES, PLOTTED, align, bestOfKCurves, colourIndex, colourOf, ema, formatValue, labelDashes, overSeeds,
  tuneabilityPoints,
} from "./series.js";
import { download, el, pngOf, swatch } from "./chart_dom.js";

const HEIGHT = 300;
const X_AXES = { step: "step", epoch: "epoch", seconds: "training seconds" };
// A curve with this many points or fewer, or under a tenth of the longest curve's (a
// full-batch run beside mini-batch ones), is drawn with markers too, so it shows.
const FEW_POINTS = 20;
const AXIS = { stroke: "#555", grid: { stroke: "#eceef1", width: 1 }, ticks: { stroke: "#ddd" } };

function withAlpha(hex, alpha) {
  const a = Math.round(alpha * 255).toString(16).padStart(2, "0");
  return `${hex}${a}`;
}

// [lo, hi] around values with 5 % of room each side (of the decades on a log axis).
function spread(values, log) {
  const vs = values.filter((v) => Number.isFinite(v) && (!log || v > 0));
  if (!vs.length) return log ? [0.1, 10] : [0, 1];
  const t = log ? Math.log10 : (v) => v;
  const back = log ? (v) => 10 ** v : (v) => v;
  const lo = t(Math.min(...vs));
  const hi = t(Math.max(...vs));
  const room = (hi - lo) * 0.05 || (log ? 0.5 : Math.abs(lo) * 0.1 || 0.5);
  return [back(lo - room), back(hi + room)];
}

// A log axis labels its decades only (uPlot ticks every 1..9 x 10^n; it hands over null
// for the ticks it leaves unlabelled).
function decadeLabel(value) {
  if (!(value > 0)) return "";
  const exponent = Math.log10(value);
  if (Math.abs(exponent - Math.round(exponent)) > 1e-9) return "";
  return Math.abs(exponent) < 4 ? String(Number(value.toPrecision(1))) : `1e${Math.round(exponent)}`;
}

// A five-pointed star (a landscape's minimum, a study's best trial), outlined dark.
function drawStar(ctx, cx, cy, r, fill) {
  ctx.fillStyle = fill;
  ctx.strokeStyle = "#222";
  ctx.lineWidth = globalThis.uPlot.pxRatio;
  ctx.beginPath();
  for (let i = 0; i < 10; i++) {
    const radius = i % 2 ? r * 0.45 : r;
    const angle = -Math.PI / 2 + (i * Math.PI) / 5;
    ctx.lineTo(cx + radius * Math.cos(angle), cy + radius * Math.sin(angle));
  }
  ctx.closePath();
  ctx.fill();
  ctx.stroke();
}

// ---------------------------------------------------------------- what each chart shows

function stepCurves(data, state, field, smooth) {
  // Per label: the smoothed mean with its band (or each run), and the raw curve faint behind.
  const smoothing = smooth ? state.smoothing : 0;
  return curvesOver(data, state, (run) => {
    const s = data.steps[run.id];
    if (!s) return null;
    const x = { step: s.step, epoch: s.epoch, seconds: s.train_seconds }[state.x];
    return { key: s.step, x, raw: s[field], y: ema(s.step, s[field], smoothing) };
  }, smoothing > 0);
}

function epochCurves(data, state, field) {
  return curvesOver(data, state, (run) => {
    const e = data.epochs[run.id];
    if (!e) return null;
    const x = { step: e.step, epoch: e.epoch, seconds: e.train_seconds }[state.x];
    return { key: e.epoch, x, raw: e[field], y: e[field] };
  }, false);
}

function curvesOver(data, state, read, faint) {
  const curves = [];
  const means = new Map();
  for (const { label } of data.labels) {
    // A study's trials are drawn by their scores (the tuneability plots), not as curves.
    const runs = data.runs.filter((r) => r.label === label && r.role !== "trial");
    const read_ = runs.map((run) => ({ run, s: read(run) })).filter((r) => r.s && r.s.key.length);
    if (!read_.length) continue;
    const mean = overSeeds(read_.map(({ s }) => ({ key: s.key, x: s.x, y: s.y })));
    means.set(label, mean);
    if (state.seeds === "mean" || read_.length === 1) {
      if (faint) {
        const raw = overSeeds(read_.map(({ s }) => ({ key: s.key, x: s.x, y: s.raw })));
        curves.push({ label, role: "raw", x: raw.x, y: raw.mean });
      }
      if (mean.seeds > 1) {
        curves.push({ label, role: "hi", x: mean.x, y: mean.hi });
        curves.push({ label, role: "lo", x: mean.x, y: mean.lo });
      }
      const name = mean.seeds > 1 ? `${label} (mean of ${mean.seeds})` : label;
      curves.push({ label, role: "line", name, x: mean.x, y: mean.mean });
    } else {
      for (const { run, s } of read_) {
        if (faint) curves.push({ label, role: "raw", x: s.x, y: s.raw });
        curves.push({ label, role: "line", name: `${label} seed ${run.seed}`, x: s.x, y: s.y, thin: true });
      }
    }
  }
  return { curves, means };
}

function chartsFor(data, state) {
  const r2 = data.task === "regression";
  const target = data.target;
  const ref = (columns) => (target && columns.includes(target.column) ? target : null);
  const landscape = data.task === "landscape";
  const smoothNote = state.smoothing > 0
    ? `smoothed per step (debiased EMA, ${state.smoothing.toFixed(2)}); faint: unsmoothed`
    : "unsmoothed";
  const list = data.study ? studyCharts(data.study) : [];
  if (landscape && data.landscape) list.push({ id: "contour", kind: "contour", title: `Trajectories on ${data.landscape.name}` });
  if (landscape) {
    list.push({
      id: "distance-epoch", kind: "series", title: "Distance to the nearest minimum per epoch",
      y: "distance", build: () => epochCurves(data, state, "distance"), log: true,
      reference: ref(["distance"]), note: "unsmoothed",
    });
  }
  list.push({
    id: "loss-step", kind: "series", title: landscape ? "f(x, y) per step" : "Training loss per step",
    y: landscape ? "f(x, y)" : "training loss (batch)", smooth: true, log: true,
    build: () => stepCurves(data, state, "loss", true), note: smoothNote,
  });
  if (!landscape) {
    list.push({
      id: "loss-epoch", kind: "series", title: "Training loss per epoch",
      y: "training loss (epoch mean)", log: true, build: () => epochCurves(data, state, "train_loss"),
      reference: ref(["train_loss"]), note: "the epoch's sample-weighted mean batch loss; gd takes one step per epoch, so it compares here",
    });
    list.push({
      id: "val-epoch", kind: "series", title: r2 ? "Validation R² per epoch" : "Validation accuracy per epoch",
      y: r2 ? "validation R²" : "validation accuracy", log: false,
      build: () => epochCurves(data, state, "val_accuracy"), reference: ref(["val_accuracy"]), note: "unsmoothed",
    });
  }
  if (target && data.bars.length) {
    list.push({ id: "steps-to-target", kind: "bars", title: "Steps to target", field: "steps_to_target", unit: "optimizer steps", note: "optimizer steps, the median over the seeds that reached it" });
    list.push({ id: "seconds-to-target", kind: "bars", title: "Time to target", field: "seconds_to_target", unit: "training seconds", note: "training seconds (evaluation excluded), the median over the seeds that reached it" });
  }
  return list;
}

// A study's own charts: one tuneability plot per searched key, then the expected best
// after k trials (random and quasirandom samplers; otherwise a note says why not).
function studyCharts(study) {
  const metric = study.metric.replaceAll("_", " ");
  const list = Object.entries(study.axes).map(([key, axis]) => ({
    id: `tuneability-${key}`, kind: "scatter", key, axis,
    title: `Tuneability: ${metric} against ${key}`, y: `${metric} (selection score)`,
  }));
  const noCurve = study.expected_best_note;
  list.push(noCurve
    ? { id: "best-of-k", kind: "note", title: "Expected best score after k trials", text: `Not drawn: ${noCurve}.` }
    : {
      id: "best-of-k", kind: "series", title: "Expected best score after k trials", y: `expected best ${metric}`,
      xLabel: "trials k", wholeX: true, log: false, build: () => ({ curves: bestOfKCurves(study).map((c) => ({ ...c, role: "line" })), means: new Map() }),
      fullNote: bestOfKNote(study), empty: "Drawn once trials have completed.",
    });
  return list;
}

function bestOfKNote(study) {
  const counts = study.entries
    .filter((e) => Object.keys(e.search).length)
    .map((e) => `${e.label} ${e.trials.filter((t) => t.status === "completed").length} of ${e.budget}`);
  return `E[best of k trials drawn from the N completed ones] (Dodge et al. 2019), k = 1..N, on ${study.metric} `
    + `(${study.higher_is_better ? "higher" : "lower"} is better); pruned and diverged trials are not counted, their scores are not full trainings; `
    + `completed trials: ${counts.join(", ")}.`;
}

// ---------------------------------------------------------------- the module

export function mountJobCharts(container, initial) {
  const uPlot = globalThis.uPlot;
  let data = initial;
  if (!uPlot) {
    container.textContent = "The chart library did not load: the numbers are in the tables.";
    return { update() {}, destroy() {} };
  }
  const state = {
    x: "epoch", // every optimizer compares per pass over the data (gd takes one step each)
    seeds: "mean",
    smoothing: data.smoothing ?? 0,
    hidden: new Set(),
    log: new Map(), // chart id → log y chosen by the user
  };
  let labelIndex = colourIndex(data.labels);
  let charts = [];
  let signature = "";

  const controls = el("div", { class: "ob-controls" });
  const studyLine = el("p", { class: "ob-study", "data-testid": "chart-study" });
  const legend = el("div", { class: "ob-legend", role: "group", "aria-label": "optimizers: click to hide or show" });
  const panels = el("div", { class: "ob-panels" });
  container.classList.add("ob-charts");
  container.replaceChildren(studyLine, controls, legend, panels);

  function colour(label) {
    return colourOf(labelIndex.get(label) ?? 0);
  }

  function renderControls() {
    const manySeeds = data.labels.some((l) => l.seeds > 1);
    const pick = (name, testid, options, value, onChange) =>
      el("label", {}, `${name} `,
        el("select", { "data-testid": testid, on: { change: (e) => onChange(e.target.value) } },
          Object.entries(options).map(([k, v]) => el("option", { value: k, selected: k === value }, v))));
    const slider = el("input", {
      type: "range", min: 0, max: 0.99, step: 0.01, value: state.smoothing,
      "data-testid": "chart-smoothing", "aria-label": "smoothing",
    });
    const shown = el("output", {}, state.smoothing.toFixed(2));
    slider.addEventListener("input", () => {
      state.smoothing = Number(slider.value);
      shown.textContent = state.smoothing.toFixed(2);
      rebuild();
    });
    controls.replaceChildren(...[
      pick("x axis", "chart-x", X_AXES, state.x, (v) => { state.x = v; rebuild({ keepZoom: false }); }),
      manySeeds
        ? pick("seeds", "chart-seeds", { mean: "mean and min-max band", each: "each run" }, state.seeds, (v) => { state.seeds = v; rebuild(); })
        : null,
      el("label", {}, "smoothing ", slider, " ", shown),
    ].filter(Boolean));
  }

  function renderLegend(dash) {
    legend.replaceChildren(...data.labels.map(({ label, seeds }) => {
      const button = el("button", {
        type: "button", class: "ob-key", "data-label": label, "aria-pressed": String(!state.hidden.has(label)),
        title: `${seeds} run${seeds === 1 ? "" : "s"}: click to hide or show`,
      }, swatch(colour(label), DASHES[dash.get(label) ?? 0]), label);
      button.addEventListener("click", () => {
        if (state.hidden.has(label)) state.hidden.delete(label);
        else state.hidden.add(label);
        button.setAttribute("aria-pressed", String(!state.hidden.has(label)));
        for (const chart of charts) chart.show(label, !state.hidden.has(label));
      });
      return button;
    }));
  }

  function figure(spec) {
    const figureEl = el("figure", { class: "ob-chart", "data-chart": spec.id });
    const buttons = el("span", { class: "ob-tools" });
    const caption = el("figcaption", {}, el("span", { class: "ob-title" }, spec.title), buttons);
    const plot = el("div", { class: "ob-plot", role: "img", "aria-label": spec.title });
    const readout = el("div", { class: "ob-readout", "data-testid": "readout" }, "hover for values; drag to zoom, double-click to reset");
    const note = el("p", { class: "ob-note" });
    figureEl.append(caption, plot, readout, note);
    return { figureEl, buttons, plot, readout, note };
  }

  function width() {
    return Math.max(320, Math.min(container.clientWidth || 900, 1100) - 8);
  }

  // Draws every chart anew from data and state; a user's x zoom survives unless the x axis
  // changed (its numbers would mean something else).
  function rebuild({ keepZoom = true } = {}) {
    const zooms = keepZoom ? new Map(charts.filter((c) => c.zoomed()).map((c) => [c.id, c.zoomed()])) : new Map();
    for (const chart of charts) chart.destroy();
    charts = [];
    panels.replaceChildren();
    const specs = chartsFor(data, state);
    renderStudy();
    let dash = new Map();
    for (const spec of specs) {
      const parts = figure(spec);
      panels.append(parts.figureEl);
      let chart = null;
      if (spec.kind === "series") {
        const built = spec.build();
        if (spec.id === "loss-step" || (spec.id === "distance-epoch" && !dash.size)) dash = labelDashes(data.labels, built.means);
        if (!built.curves.length) {
          parts.plot.replaceWith(el("p", { class: "ob-empty" }, emptyText(spec)));
          parts.readout.remove();
          continue;
        }
        chart = seriesChart(spec, built, parts, dash, zooms.get(spec.id));
      } else if (spec.kind === "bars") {
        chart = barsChart(spec, parts);
      } else if (spec.kind === "scatter") {
        if (!tuneabilityPoints(data.study, spec.key).length) {
          parts.plot.replaceWith(el("p", { class: "ob-empty" }, "Drawn as the trials finish."));
          parts.readout.remove();
          parts.figureEl.dataset.points = "0";
          continue;
        }
        chart = scatterChart(spec, parts);
      } else if (spec.kind === "note") {
        parts.plot.replaceWith(el("p", { class: "ob-empty", "data-testid": "chart-not-drawn" }, spec.text));
        parts.readout.remove();
        parts.figureEl.dataset.points = "0";
        continue;
      } else {
        chart = contourChart(spec, parts, () => dash);
      }
      charts.push(chart);
    }
    renderLegend(dash);
  }

  function emptyText(spec) {
    if (spec.empty) return spec.empty;
    if (data.study) return "Drawn from the reruns of each optimizer's best setting (and its one-shot baseline, dashed) once the search has ended.";
    return data.finished ? "Nothing was recorded for this chart." : "Waiting for the first points…";
  }

  // A study's protocol in one line above its charts.
  function renderStudy() {
    const study = data.study;
    studyLine.hidden = !study;
    if (!study) return;
    const budgets = [...new Set(study.entries.filter((e) => Object.keys(e.search).length).map((e) => e.budget))];
    const per = budgets.length === 1 ? `${budgets[0]} trials per optimizer` : `unequal budgets (${study.entries.map((e) => `${e.label} ${e.budget}`).join(", ")})`;
    studyLine.textContent = `Tuning study: ${study.sampler} sampler, ${per}, selected on ${study.metric} at its best epoch `
      + `(${study.higher_is_better ? "higher" : "lower"} is better). The loss and accuracy charts show the reruns of each optimizer's best trial on fresh seeds`
      + `${data.labels.some((l) => l.baseline_of) ? ", its one-shot baseline (the given values) dashed beside it" : ""}; the trials are in the tuneability plots.`;
  }

  // ---------------------------------------------------------------- line charts

  function seriesChart(spec, built, parts, dash, zoom) {
    const { curves } = built;
    const positive = curves.every((c) => c.y.every((v) => v === null || v > 0));
    const log = positive && (state.log.has(spec.id) ? state.log.get(spec.id) : spec.log);
    const table = align(curves.map((c) => ({ x: c.x, y: log ? c.y.map((v) => (v > 0 ? v : null)) : c.y })));
    const xLabel = spec.xLabel || X_AXES[state.x];
    const series = [{ label: xLabel }];
    const bands = [];
    const longest = Math.max(...curves.map((c) => c.y.length));
    curves.forEach((c, i) => {
      const hue = colour(c.label);
      const points = c.y.filter((v) => v !== null).length;
      const base = { label: c.name || c.label, show: !state.hidden.has(c.label), spanGaps: true, value: (u, v) => formatValue(v) };
      if (c.role === "raw") series.push({ ...base, stroke: withAlpha(hue, 0.28), width: 1, points: { show: false } });
      else if (c.role === "hi" || c.role === "lo") series.push({ ...base, stroke: withAlpha(hue, 0), width: 0, points: { show: false } });
      else {
        series.push({
          ...base, stroke: hue, width: c.thin ? 1.25 : 2, dash: DASHES[dash.get(c.label) ?? 0],
          points: { show: points <= FEW_POINTS || points < longest / 10, size: 6, fill: hue, stroke: hue },
        });
      }
      if (c.role === "lo") bands.push({ series: [i, i + 1], fill: withAlpha(hue, 0.16) });
    });
    const opts = {
      width: width(), height: HEIGHT, legend: { show: false }, bands, series,
      cursor: { sync: { key: `optbench-${spec.xLabel ? spec.id : state.x}` }, drag: { x: true, y: false }, points: { size: 7 } },
      scales: {
        x: { time: false, range: (u, min, max) => (min === max ? [min - 0.5, max + 0.5] : [min, max]) },
        y: log ? { distr: 3, log: 10 } : {},
      },
      axes: [{ ...AXIS, label: xLabel, ...(spec.wholeX ? { incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500] } : {}) }, { ...AXIS, label: spec.y, size: 64, values: (u, splits) => splits.map(formatValue) }],
      hooks: {
        setCursor: [(u) => readSeries(u, parts.readout, curves, xLabel)],
        setScale: [(u, key) => key === "x" && markRange(u, parts.figureEl, xLabel)],
        draw: [(u) => spec.reference && drawReference(u, spec.reference)],
      },
    };
    const u = new uPlot(opts, table, parts.plot);
    let zoomed = null;
    u.over.addEventListener("mouseup", () => {
      setTimeout(() => {
        const [lo, hi] = [table[0][0], table[0][table[0].length - 1]];
        zoomed = u.scales.x.min > lo || u.scales.x.max < hi ? [u.scales.x.min, u.scales.x.max] : null;
      });
    });
    u.over.addEventListener("dblclick", () => { zoomed = null; });
    if (zoom) u.setScale("x", { min: zoom[0], max: zoom[1] });
    markRange(u, parts.figureEl, xLabel);
    const seedsNote = curves.some((c) => c.role === "hi") ? "line: mean over seeds, band: min-max over seeds" : state.seeds === "each" ? "one line per run" : "one run per optimizer";
    const bucket = spec.smooth && data.bucket > 1 ? `; long series averaged into buckets of ${data.bucket} steps` : "";
    parts.note.textContent = spec.fullNote || `${seedsNote}; ${spec.note}${bucket}; ${log ? "log" : "linear"} y.`;
    parts.figureEl.dataset.points = String(curves.filter((c) => c.role === "line").reduce((n, c) => n + c.y.filter((v) => v !== null).length, 0));
    tools(parts, spec, u, {
      log: positive ? log : null,
      csv: () => seriesCsv(u, curves, xLabel),
    });
    return {
      id: spec.id,
      zoomed: () => zoomed,
      show(label, on) {
        curves.forEach((c, i) => c.label === label && u.setSeries(i + 1, { show: on }));
      },
      resize: (w) => u.setSize({ width: w, height: HEIGHT }),
      destroy: () => u.destroy(),
    };
  }

  function readSeries(u, readout, curves, xLabel) {
    const idx = u.cursor.idx;
    if (idx === null || idx === undefined) return;
    const x = u.data[0][idx];
    const items = [];
    curves.forEach((c, i) => {
      if (c.role !== "line" || !u.series[i + 1].show) return;
      const column = u.data[i + 1];
      let best = null;
      for (let d = 0; d < column.length && best === null; d++) {
        const left = column[idx - d];
        const right = column[idx + d];
        if (left !== null && left !== undefined) best = left;
        else if (right !== null && right !== undefined) best = right;
      }
      if (best !== null) items.push([c, best]);
    });
    readout.replaceChildren(
      el("b", {}, `${xLabel} ${formatValue(x)}`),
      ...items.map(([c, v]) => el("span", { class: "ob-value" }, el("i", { class: "ob-dot", "data-colour": colour(c.label) }), `${c.name || c.label} ${formatValue(v)}`)),
    );
    for (const dot of readout.querySelectorAll(".ob-dot")) dot.style.background = dot.dataset.colour;
  }

  function markRange(u, figureEl, xLabel) {
    figureEl.dataset.xLabel = xLabel;
    figureEl.dataset.xMin = String(u.scales.x.min);
    figureEl.dataset.xMax = String(u.scales.x.max);
  }

  function drawReference(u, target) {
    const y = u.valToPos(target.value, "y", true);
    const { left, top, width: w, height: h } = u.bbox;
    if (!(y >= top && y <= top + h)) return;
    const ctx = u.ctx;
    const ratio = uPlot.pxRatio;
    ctx.save();
    ctx.strokeStyle = "#444";
    ctx.lineWidth = ratio;
    ctx.setLineDash([4 * ratio, 4 * ratio]);
    ctx.beginPath();
    ctx.moveTo(left, y);
    ctx.lineTo(left + w, y);
    ctx.stroke();
    ctx.fillStyle = "#444";
    ctx.font = `${11 * ratio}px system-ui, sans-serif`;
    ctx.textAlign = "right";
    ctx.fillText(`target ${target.text}`, left + w - 4 * ratio, y - 4 * ratio);
    ctx.restore();
  }

  function seriesCsv(u, curves, xLabel) {
    const shown = curves.map((c, i) => [c, i + 1]).filter(([c, i]) => c.role !== "raw" && u.series[i].show);
    const name = (c) => (c.role === "line" ? c.name || c.label : `${c.label} ${c.role === "hi" ? "max" : "min"}`);
    const quote = (s) => `"${String(s).replaceAll('"', '""')}"`;
    const lines = [[xLabel, ...shown.map(([c]) => name(c))].map(quote).join(",")];
    const [lo, hi] = [u.scales.x.min, u.scales.x.max];
    u.data[0].forEach((x, row) => {
      if (x < lo || x > hi) return;
      const values = shown.map(([, i]) => u.data[i][row]);
      if (values.every((v) => v === null)) return;
      lines.push([x, ...values.map((v) => (v === null ? "" : v))].join(","));
    });
    return `${lines.join("\n")}\n`;
  }

  // ---------------------------------------------------------------- tuneability

  // Selection score against one searched value, a point per finished trial: filled when it
  // completed, hollow when pruned (its score is over the epochs before its rung), a cross on
  // the bottom edge when it diverged (no comparable score), a star for the entry's best.
  // Points-only uPlot series (aligned data, no paths), two per label (completed, pruned);
  // the crosses and stars are drawn on top. Hover names the nearest trial.
  function scatterChart(spec, parts) {
    const study = data.study;
    const { axis, key } = spec;
    const points = tuneabilityPoints(study, key);
    const category = axis.scale === "category";
    const log = axis.scale === "log";
    const labels = study.entries.filter((e) => key in e.search).map((e) => e.label);
    const groups = labels.flatMap((label) => ["completed", "pruned"].map((status) => ({ label, status })));
    const xs = [...new Set(points.map((p) => p.x))].sort((a, b) => a - b);
    const at = new Map(xs.map((x, i) => [x, i]));
    const table = [xs, ...groups.map(() => new Array(xs.length).fill(null))];
    // Two trials of one label at one value (a grid) overlap; the later one is drawn.
    points.forEach((p) => {
      const g = groups.findIndex((gr) => gr.label === p.label && gr.status === p.status);
      if (g >= 0 && p.score !== null) table[g + 1][at.get(p.x)] = p.score;
    });
    const none = () => null;
    const series = [{ label: key }, ...groups.map(({ label, status }) => ({
      label: `${label} ${status}`, show: !state.hidden.has(label), paths: none,
      points: { show: true, size: 9, width: 1.75, stroke: colour(label), fill: status === "pruned" ? "#fff" : colour(label) },
    }))];
    const scores = points.filter((p) => p.status !== "diverged" && p.score !== null).map((p) => p.score);
    const [yLo, yHi] = scores.length ? [Math.min(...scores), Math.max(...scores)] : [0, 1];
    const pad = (yHi - yLo) * 0.08 || Math.abs(yHi) * 0.05 || 0.05;
    const bounds = labels.flatMap((label) => study.entries.find((e) => e.label === label).search[key].bounds).filter((v) => typeof v === "number");
    const xRange = category
      ? [-0.5, axis.categories.length - 0.5]
      : spread([...bounds, ...xs], log);
    const ratio = uPlot.pxRatio;
    const marks = { best: 0, diverged: 0 };
    function overlay(u) {
      const ctx = u.ctx;
      const { top, height: h } = u.bbox;
      ctx.save();
      marks.best = 0;
      marks.diverged = 0;
      for (const p of points) {
        if (state.hidden.has(p.label)) continue;
        const x = u.valToPos(p.x, "x", true);
        if (p.status === "diverged") {
          const y = top + h - 7 * ratio;
          const r = 5 * ratio;
          ctx.strokeStyle = colour(p.label);
          ctx.lineWidth = 2 * ratio;
          ctx.beginPath();
          ctx.moveTo(x - r, y - r); ctx.lineTo(x + r, y + r);
          ctx.moveTo(x + r, y - r); ctx.lineTo(x - r, y + r);
          ctx.stroke();
          marks.diverged += 1;
        } else if (p.best && p.score !== null) {
          drawStar(ctx, x, u.valToPos(p.score, "y", true), 10 * ratio, colour(p.label));
          marks.best += 1;
        }
      }
      ctx.restore();
      parts.figureEl.dataset.best = String(marks.best);
      parts.figureEl.dataset.diverged = String(marks.diverged);
      parts.figureEl.dataset.points = String(points.filter((p) => !state.hidden.has(p.label) && (p.status === "diverged" || p.score !== null)).length);
    }
    const ring = el("div", { class: "ob-ring", hidden: true });
    function nearest(u) {
      const { left, top } = u.cursor;
      if (left === undefined || left < 0) return;
      let near = null;
      for (const p of points) {
        if (state.hidden.has(p.label) || (p.status !== "diverged" && p.score === null)) continue;
        const px = u.valToPos(p.x, "x");
        const py = p.status === "diverged" ? u.bbox.height / ratio - 7 : u.valToPos(p.score, "y");
        const d = Math.hypot(px - left, py - top);
        if (!near || d < near.d) near = { d, p, px, py };
      }
      if (!near) return;
      ring.hidden = false;
      ring.style.left = `${near.px}px`;
      ring.style.top = `${near.py}px`;
      ring.style.borderColor = colour(near.p.label);
      parts.readout.replaceChildren(...trialText(near.p, key));
    }
    const opts = {
      width: width(), height: HEIGHT, legend: { show: false }, series,
      cursor: { drag: { x: true, y: false }, points: { show: false } },
      scales: {
        x: { time: false, auto: false, range: xRange, ...(log ? { distr: 3, log: 10 } : {}) },
        y: { auto: false, range: [yLo - pad, yHi + pad] },
      },
      axes: [
        {
          ...AXIS, label: `${key}${log ? " (log axis)" : ""}`,
          ...(category
            ? { splits: () => axis.categories.map((_, i) => i), values: (u, splits) => splits.map((i) => String(axis.categories[i] ?? "")) }
            : { values: (u, splits) => splits.map(log ? decadeLabel : formatValue) }),
        },
        { ...AXIS, label: spec.y, size: 64, values: (u, splits) => splits.map(formatValue) },
      ],
      hooks: {
        draw: [overlay],
        setCursor: [nearest],
        setScale: [(u, k) => k === "x" && markRange(u, parts.figureEl, key)],
      },
    };
    const u = new uPlot(opts, table, parts.plot);
    u.over.append(ring);
    u.over.addEventListener("mouseleave", () => { ring.hidden = true; });
    u.over.addEventListener("dblclick", () => u.setScale("x", { min: xRange[0], max: xRange[1] }));
    markRange(u, parts.figureEl, key);
    parts.figureEl.dataset.xScale = axis.scale;
    const waiting = study.entries.filter((e) => key in e.search).reduce((n, e) => n + e.trials.filter((t) => !PLOTTED.includes(t.status)).length, 0);
    parts.note.textContent = `one point per trial: filled, it completed; hollow, pruned at a rung (its score is over the epochs it trained); `
      + `× on the bottom edge, it diverged (no comparable score); ★ each optimizer's best trial${study.phase === "reruns" ? " (the one rerun)" : " so far"}; `
      + `selection: ${study.metric} at its best epoch, ${study.higher_is_better ? "higher" : "lower"} is better; the x axis spans the searched range`
      + `${log ? " on a log scale" : ""}${waiting ? `; ${waiting} trial${waiting === 1 ? "" : "s"} still training or queued, not drawn yet` : ""}.`;
    tools(parts, spec, u, {
      log: null,
      csv: () => `label,trial,${key},score,status,pruned_at_epoch,best\n${points.map((p) => `"${p.label}",${p.trial},${p.value},${p.score ?? ""},${p.status},${p.prunedAt ?? ""},${p.best}`).join("\n")}\n`,
    });
    return {
      id: spec.id, zoomed: () => null,
      show(label, on) {
        groups.forEach((g, i) => g.label === label && u.setSeries(i + 1, { show: on }));
        u.redraw(false);
      },
      resize: (w) => u.setSize({ width: w, height: HEIGHT }),
      destroy: () => u.destroy(),
    };
  }

  function dot(hue) {
    const node = el("i", { class: "ob-dot" });
    node.style.background = hue; // CSSOM, not a style attribute: the page's CSP allows it
    return node;
  }

  function trialText(p, key) {
    const status = p.status === "pruned" ? `pruned at epoch ${p.prunedAt}` : p.status;
    const value = typeof p.value === "number" ? formatValue(p.value) : String(p.value);
    return [
      el("span", { class: "ob-value" }, dot(colour(p.label)), el("b", {}, `${p.label} trial ${p.trial}`),
        ` · ${key} ${value} · score ${formatValue(p.score)} · ${status}${p.best ? " · best" : ""}`),
    ];
  }

  // ---------------------------------------------------------------- bars

  function barsChart(spec, parts) {
    const rows = data.labels.map(({ label }) => data.bars.find((b) => b.label === label) || { label });
    const n = rows.length;
    const table = [rows.map((_, i) => i), ...rows.map((row, i) => rows.map((_, j) => (j === i ? row[spec.field] ?? null : null)))];
    const bars = uPlot.paths.bars({ size: [0.6, 90] });
    const series = [{}, ...rows.map((row) => ({
      label: row.label, show: !state.hidden.has(row.label), fill: withAlpha(colour(row.label), 0.85),
      stroke: colour(row.label), paths: bars, points: { show: false },
    }))];
    const max = Math.max(0, ...rows.map((r) => r[spec.field] ?? 0));
    const opts = {
      width: width(), height: 240, legend: { show: false }, series,
      cursor: { drag: { x: false, y: false }, points: { show: false } },
      scales: { x: { time: false, range: [-0.5, n - 0.5] }, y: { range: [0, max > 0 ? max * 1.15 : 1] } },
      axes: [
        { ...AXIS, grid: { show: false }, splits: () => rows.map((_, i) => i), values: (u, splits) => splits.map((i) => rows[i]?.label ?? "") },
        { ...AXIS, label: spec.unit, size: 64, values: (u, splits) => splits.map(formatValue) },
      ],
      hooks: {
        draw: [(u) => {
          const ctx = u.ctx;
          const ratio = uPlot.pxRatio;
          ctx.save();
          ctx.fillStyle = "#333";
          ctx.font = `${11 * ratio}px system-ui, sans-serif`;
          ctx.textAlign = "center";
          rows.forEach((row, i) => {
            if (!u.series[i + 1].show) return;
            const x = u.valToPos(i, "x", true);
            const value = row[spec.field];
            const text = value === null || value === undefined ? "not reached" : `${formatValue(value)}${row.target_reached ? ` (${row.target_reached})` : ""}`;
            const y = value === null || value === undefined ? u.valToPos(0, "y", true) - 6 * ratio : u.valToPos(value, "y", true) - 5 * ratio;
            ctx.fillText(text, x, y);
          });
          ctx.restore();
        }],
        setCursor: [(u) => {
          const i = u.cursor.idx;
          if (i === null || i === undefined || !rows[i]) return;
          const row = rows[i];
          const value = row[spec.field];
          parts.readout.replaceChildren(el("b", {}, row.label), ` ${value === null || value === undefined ? "not reached" : formatValue(value)}`,
            row.target_reached ? ` · reached by ${row.target_reached}` : "", row.diverged ? ` · ${row.diverged} diverged` : "");
        }],
      },
    };
    const u = new uPlot(opts, table, parts.plot);
    parts.figureEl.dataset.xLabel = "optimizer";
    parts.note.textContent = `${spec.note}; target ${data.target.text}, checked at the end of each epoch; a run that never reaches it is not counted as the budget.`;
    tools(parts, spec, u, { log: null, csv: () => `label,${spec.field},target_reached\n${rows.map((r) => `"${r.label}",${r[spec.field] ?? ""},${r.target_reached ?? ""}`).join("\n")}\n` });
    return {
      id: spec.id, zoomed: () => null,
      show: (label, on) => { const i = rows.findIndex((r) => r.label === label); if (i >= 0) u.setSeries(i + 1, { show: on }); },
      resize: (w) => u.setSize({ width: w, height: 240 }),
      destroy: () => u.destroy(),
    };
  }

  // ---------------------------------------------------------------- the landscape

  function contourChart(spec, parts, dashOf) {
    const view = data.landscape;
    const [x0, x1] = view.x_range;
    const [y0, y1] = view.y_range;
    const w = Math.min(width(), 760);
    const h = Math.round(Math.max(300, Math.min(620, (w - 80) * ((y1 - y0) / (x1 - x0)) + 60)));
    const paths = data.runs.map((run) => ({ run, s: data.steps[run.id] })).filter(({ s }) => s && s.x && s.x.length);
    const ratio = uPlot.pxRatio;
    let drawn = 0;
    function draw(u) {
      const ctx = u.ctx;
      const { left, top, width: bw, height: bh } = u.bbox;
      const px = (x, y) => [u.valToPos(x, "x", true), u.valToPos(y, "y", true)];
      ctx.save();
      ctx.beginPath();
      ctx.rect(left, top, bw, bh);
      ctx.clip();
      view.levels.forEach((level, i) => {
        const t = i / Math.max(view.levels.length - 1, 1);
        ctx.strokeStyle = `rgba(${Math.round(90 + 110 * t)}, ${Math.round(120 + 90 * t)}, ${Math.round(170 + 60 * t)}, 0.9)`;
        ctx.lineWidth = ratio;
        for (const line of level.lines) {
          ctx.beginPath();
          line.forEach(([x, y], j) => { const [a, b] = px(x, y); if (j) ctx.lineTo(a, b); else ctx.moveTo(a, b); });
          ctx.stroke();
        }
      });
      drawn = 0;
      const dash = dashOf();
      for (const { run, s } of paths) {
        if (state.hidden.has(run.label)) continue;
        const hue = colour(run.label);
        const points = s.x.map((x, i) => [x, s.y[i]]).filter(([x, y]) => x !== null && y !== null);
        if (!points.length) continue;
        drawn += 1;
        ctx.strokeStyle = hue;
        ctx.lineWidth = 1.75 * ratio;
        ctx.setLineDash((DASHES[dash.get(run.label) ?? 0] || []).map((d) => d * ratio));
        ctx.beginPath();
        points.forEach(([x, y], j) => { const [a, b] = px(x, y); if (j) ctx.lineTo(a, b); else ctx.moveTo(a, b); });
        ctx.stroke();
        ctx.setLineDash([]);
        const [sx, sy] = px(...points[0]);
        const [ex, ey] = px(...points[points.length - 1]);
        ctx.lineWidth = 1.5 * ratio;
        ctx.fillStyle = "#fff";
        ctx.beginPath(); ctx.arc(sx, sy, 4 * ratio, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
        ctx.fillStyle = hue;
        ctx.beginPath(); ctx.arc(ex, ey, 4 * ratio, 0, 2 * Math.PI); ctx.fill();
      }
      for (const [mx, my] of view.minima) drawStar(ctx, ...px(mx, my), 7 * ratio, "#ffd400");
      ctx.restore();
      parts.figureEl.dataset.paths = String(drawn);
    }
    const opts = {
      width: w, height: h, legend: { show: false },
      series: [{ label: "x" }, { label: "y", stroke: "transparent", points: { show: false } }],
      cursor: { drag: { x: true, y: true, uni: 30 }, points: { show: false } },
      scales: { x: { time: false, auto: false, range: [x0, x1] }, y: { auto: false, range: [y0, y1] } },
      axes: [{ ...AXIS, label: "x" }, { ...AXIS, label: "y", size: 56, values: (u, splits) => splits.map(formatValue) }],
      hooks: {
        draw: [draw],
        setScale: [(u, key) => key === "x" && markRange(u, parts.figureEl, "x")],
        setCursor: [(u) => {
          const { left, top } = u.cursor;
          if (left === undefined || left < 0) return;
          const cx = u.posToVal(left, "x");
          const cy = u.posToVal(top, "y");
          let near = null;
          for (const { run, s } of paths) {
            if (state.hidden.has(run.label)) continue;
            s.x.forEach((x, i) => {
              if (x === null || s.y[i] === null) return;
              const d = Math.hypot(u.valToPos(x, "x") - left, u.valToPos(s.y[i], "y") - top);
              if (d < 12 && (!near || d < near.d)) near = { d, run, i, x, y: s.y[i], step: s.step[i] };
            });
          }
          parts.readout.replaceChildren(el("b", {}, `(${formatValue(cx)}, ${formatValue(cy)})`),
            near ? ` · ${near.run.label} seed ${near.run.seed}, step ${near.step}: (${formatValue(near.x)}, ${formatValue(near.y)})` : "");
        }],
      },
    };
    const u = new uPlot(opts, [[x0, x1], [null, null]], parts.plot);
    u.over.addEventListener("dblclick", () => {
      u.batch(() => { u.setScale("x", { min: x0, max: x1 }); u.setScale("y", { min: y0, max: y1 }); });
    });
    parts.figureEl.dataset.levels = String(view.levels.length);
    markRange(u, parts.figureEl, "x");
    parts.note.textContent = `each run's path: the point where each step evaluated f, from the start (open circle) to the last step (filled); ★ the minima; ${view.levels.length} contour levels of log f; drag a box to zoom, double-click to reset.`;
    tools(parts, spec, u, { log: null, csv: () => `label,seed,step,x,y\n${paths.flatMap(({ run, s }) => s.x.map((x, i) => `"${run.label}",${run.seed},${s.step[i]},${x ?? ""},${s.y[i] ?? ""}`)).join("\n")}\n` });
    return {
      id: spec.id, zoomed: () => null,
      show: () => u.redraw(false),
      resize: (wd) => u.setSize({ width: Math.min(wd, 760), height: h }),
      destroy: () => u.destroy(),
    };
  }

  // ---------------------------------------------------------------- per-chart tools

  function tools(parts, spec, u, { log, csv }) {
    const button = (text, testid, onClick, extra = {}) => el("button", { type: "button", class: "ob-tool", "data-testid": testid, on: { click: onClick }, ...extra }, text);
    parts.buttons.replaceChildren(...[
      log === null ? null : button(log ? "log y" : "linear y", "chart-log", () => { state.log.set(spec.id, !log); rebuild(); }, { "aria-pressed": String(log), title: "switch between log and linear y" }),
      button("PNG", "chart-png", () => pngOf(u, spec.title, shownLegend()).toBlob((blob) => download(`${data.job_id.slice(0, 8)}-${spec.id}.png`, blob))),
      button("CSV", "chart-csv", () => download(`${data.job_id.slice(0, 8)}-${spec.id}.csv`, new Blob([csv()], { type: "text/csv" }))),
    ].filter(Boolean));
  }

  function shownLegend() {
    return data.labels.filter(({ label }) => !state.hidden.has(label)).map(({ label }) => ({ label, colour: colour(label) }));
  }

  function signatureOf(d) {
    let points = 0;
    for (const s of Object.values(d.steps)) points += s.step.length;
    for (const e of Object.values(d.epochs)) points += e.epoch.length;
    return `${d.status}|${d.runs.length}|${points}|${JSON.stringify(d.bars)}|${JSON.stringify(d.study)}`;
  }

  const onResize = () => { const w = width(); for (const chart of charts) chart.resize(w); };
  window.addEventListener("resize", onResize);
  renderControls();
  rebuild();
  signature = signatureOf(data);
  container.dataset.chartsReady = "true";

  return {
    update(next) {
      const sign = signatureOf(next);
      if (sign === signature) return;
      signature = sign;
      const relabel = next.labels.map((l) => `${l.label}:${l.seeds}`).join() !== data.labels.map((l) => `${l.label}:${l.seeds}`).join();
      data = next;
      labelIndex = colourIndex(next.labels);
      if (relabel) renderControls();
      rebuild();
    },
    destroy() {
      window.removeEventListener("resize", onResize);
      for (const chart of charts) chart.destroy();
      charts = [];
      container.replaceChildren();
      delete container.dataset.chartsReady;
    },
  };
}
