// Pure data for the charts (no DOM, no uPlot): smoothing, the mean and band over seeds,
// aligned tables for uPlot, and which curves overlap. The web page imports it; the HTML
// report inlines it; tests/unit/test_chart_series.py runs it under Node.

// Tableau 10: distinct and readable on white. Labels beyond ten reuse them, dashed.
export const PALETTE = [
  "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
  "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#7f7f7f",
];
// Solid, dashed, dotted, dash-dot: what tells apart curves that lie on one another.
export const DASHES = [[], [9, 5], [2, 4], [12, 4, 2, 4]];

export function colourOf(index) {
  return PALETTE[index % PALETTE.length];
}

const finite = (v) => v !== null && v !== undefined && Number.isFinite(v);

// Debiased exponential moving average (TensorBoard's), defined per step: a point Δ steps
// after the previous one decays the average by smoothing**Δ. On raw series (Δ = 1) this is
// TensorBoard's EMA; on bucket means it smooths as the raw steps would. A missing value
// stays missing; the next present one decays the average by the steps since the last.
export function ema(steps, values, smoothing) {
  if (!(smoothing > 0)) return values.slice();
  const out = new Array(values.length);
  let average = 0;
  let weight = 0;
  let last = null;
  for (let i = 0; i < values.length; i++) {
    const value = values[i];
    if (!finite(value)) {
      out[i] = null;
      continue;
    }
    // From the empty start (weight 0) the first point counts as one step: debiasing.
    const decay = Math.pow(smoothing, last === null ? 1 : Math.max(steps[i] - last, 1));
    average = decay * average + (1 - decay) * value;
    weight = decay * weight + (1 - decay);
    last = steps[i];
    out[i] = average / weight;
  }
  return out;
}

// Mean and min-max over runs, point by point on their shared key (the step, or the epoch):
// runs = [{key: [...], x: [...], y: [...]}]; x is the drawn axis (the mean of the runs' x at
// that key: for training seconds, each seed took its own time). A run that stopped early
// just stops counting.
export function overSeeds(runs) {
  const byKey = new Map();
  for (const run of runs) {
    for (let i = 0; i < run.key.length; i++) {
      const y = run.y[i];
      const x = run.x[i];
      if (!finite(y) || !finite(x)) continue;
      let slot = byKey.get(run.key[i]);
      if (!slot) byKey.set(run.key[i], (slot = { xs: 0, ys: 0, n: 0, lo: y, hi: y }));
      slot.xs += x;
      slot.ys += y;
      slot.n += 1;
      slot.lo = Math.min(slot.lo, y);
      slot.hi = Math.max(slot.hi, y);
    }
  }
  const keys = [...byKey.keys()].sort((a, b) => a - b);
  const out = { key: [], x: [], mean: [], lo: [], hi: [], seeds: runs.length };
  for (const key of keys) {
    const slot = byKey.get(key);
    out.key.push(key);
    out.x.push(slot.xs / slot.n);
    out.mean.push(slot.ys / slot.n);
    out.lo.push(slot.lo);
    out.hi.push(slot.hi);
  }
  return out;
}

// uPlot wants one shared x array: the sorted union of every curve's x, each curve's y
// placed at its own x and null elsewhere (drawn across the gaps).
export function align(curves) {
  const all = new Set();
  for (const curve of curves) for (const x of curve.x) if (finite(x)) all.add(x);
  const xs = Float64Array.from(all).sort();
  const index = new Map();
  xs.forEach((x, i) => index.set(x, i));
  const table = [Array.from(xs)];
  for (const curve of curves) {
    const ys = new Array(xs.length).fill(null);
    curve.x.forEach((x, i) => {
      if (finite(x) && finite(curve.y[i])) ys[index.get(x)] = curve.y[i];
    });
    table.push(ys);
  }
  return table;
}

// Two curves overlap when, on the keys both have, they differ by under 5 % of their size at
// 80 % of the points or more (Momentum and NAG on one data set, say): closer than a line's
// width apart on a log axis of a few decades.
export function overlaps(a, b) {
  const at = new Map();
  a.key.forEach((k, i) => at.set(k, a.mean[i]));
  let shared = 0;
  let close = 0;
  b.key.forEach((k, i) => {
    const u = at.get(k);
    const v = b.mean[i];
    if (!finite(u) || !finite(v)) return;
    shared += 1;
    if (Math.abs(u - v) <= 0.05 * Math.max(Math.abs(u), Math.abs(v), 1e-12)) close += 1;
  });
  return shared > 0 && close >= 0.8 * shared;
}

// A dash pattern per label: solid unless its curve overlaps an earlier label's, then the
// first pattern no overlapping label uses yet (labels past the palette's ten reuse a
// colour: they count as overlapping it). curves: label → overSeeds result.
export function dashesFor(labels, curves) {
  const dash = new Map();
  labels.forEach((label, i) => {
    const taken = new Set();
    labels.slice(0, i).forEach((other, j) => {
      const sameColour = j % PALETTE.length === i % PALETTE.length;
      const a = curves.get(label);
      const b = curves.get(other);
      if (sameColour || (a && b && overlaps(a, b))) taken.add(dash.get(other));
    });
    let pick = 0;
    while (taken.has(pick)) pick += 1;
    dash.set(label, pick % DASHES.length);
  });
  return dash;
}

// Four significant digits, or "–" for nothing.
export function formatValue(value) {
  if (!finite(value)) return "–";
  const size = Math.abs(value);
  if (size !== 0 && (size >= 1e5 || size < 1e-3)) return value.toExponential(3);
  return Number(value.toPrecision(4)).toString();
}

// ---------------------------------------------------------------- tuning studies
// (the chart data's `study` block: services/report/study_data.py)

// Palette index per label: each label in order takes the next colour, except a study's
// one-shot baseline, which takes the colour of the label it is the baseline of.
export function colourIndex(labels) {
  const index = new Map();
  let next = 0;
  for (const { label, baseline_of: base } of labels) if (!base) index.set(label, next++);
  for (const { label, baseline_of: base } of labels) if (base) index.set(label, index.get(base) ?? next++);
  return index;
}

// A dash pattern per label (label objects with baseline_of): without baselines, dashesFor's;
// with them, each baseline is dashed (DASHES[1]) beside its solid tuned label, and tuned
// labels that overlap one another take the other patterns (2, 3), never the baselines'.
export function labelDashes(labels, curves) {
  const names = labels.map((l) => l.label);
  if (!labels.some((l) => l.baseline_of)) return dashesFor(names, curves);
  const tuned = labels.filter((l) => !l.baseline_of).map((l) => l.label);
  const picked = dashesFor(tuned, curves);
  const dash = new Map();
  for (const { label, baseline_of: base } of labels) {
    if (base) dash.set(label, 1);
    else {
      const pick = picked.get(label) ?? 0;
      dash.set(label, pick === 0 ? 0 : 1 + (((pick - 1) % (DASHES.length - 2)) + 1));
    }
  }
  return dash;
}

// The result states a trial can be plotted in (queued and running trials have none yet).
export const PLOTTED = ["completed", "pruned", "diverged"];

// The tuneability plot's points for one searched key: every finished trial of every entry
// that searches it, as {label, trial, runId, value, x, score, status, best, prunedAt}; x is
// the value, or its index among the axis's categories. Best: the entry's best trial.
export function tuneabilityPoints(study, key) {
  const axis = study.axes[key] || { scale: "linear", categories: null };
  const points = [];
  for (const entry of study.entries) {
    if (!(key in entry.search)) continue;
    for (const t of entry.trials) {
      if (!PLOTTED.includes(t.status)) continue;
      const value = t.values[key];
      const x = axis.scale === "category" ? axis.categories.findIndex((c) => c === value) : value;
      if (!finite(x) || (axis.scale === "log" && !(x > 0))) continue;
      points.push({
        label: entry.label, trial: t.trial, runId: t.run_id, value, x, score: t.score,
        status: t.status, best: t.trial === entry.best_trial, prunedAt: t.pruned_at_epoch,
      });
    }
  }
  return points;
}

// The expected best score after k = 1..N trials, per entry that has a curve.
export function bestOfKCurves(study) {
  return study.entries
    .filter((e) => Array.isArray(e.expected_best) && e.expected_best.length)
    .map((e) => ({ label: e.label, x: e.expected_best.map((_, i) => i + 1), y: e.expected_best }));
}

// One line on how far a study has got (status: the job's): its phase, trials done of the
// budget (pruned, diverged, failed), and the reruns once they exist.
export function studyProgressText(study, status = "running") {
  const p = study.progress;
  const plural = (n, one) => `${n} ${one}${n === 1 ? "" : "s"}`;
  const marks = [`${p.pruned} pruned`, `${p.diverged} diverged`];
  if (p.failed) marks.push(`${p.failed} failed`);
  const search = `${p.done} of ${plural(p.budget, "trial")} done (${marks.join(", ")})`;
  const stopped = status === "failed" || status === "cancelled" ? `Study ${status}` : null;
  if (study.phase === "search") {
    const training = p.trials - p.done;
    const more = training > 0 && !stopped ? `; ${training} training or queued` : "";
    return `${stopped || "Study searching"}: ${search}${more}`;
  }
  const reruns = `${p.reruns_done} of ${plural(p.reruns, "rerun")} of the best settings done`;
  const head = stopped || (status === "succeeded" ? "Study done" : "Study rerunning the best settings");
  return `${head}: search ${search}; ${reruns}`;
}
