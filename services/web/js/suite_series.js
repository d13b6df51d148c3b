// Pure data for a suite's results (no DOM, no uPlot): the performance profile as uPlot's
// table, the heat map's cells with their colour and wording, the ranked score table, the
// definition a reader needs and how far the suite has got. Input: the body of
// GET /v1/suites/{id}/scores (the suite contract). The web page imports it; the suite's
// HTML report inlines it after series.js; tests/unit/test_suite_series_js.py runs it under
// Node. Its top-level names differ from series.js's and charts.js's: the report inlines
// these modules into one scope.

const JOB_FINISHED = ["succeeded", "failed", "cancelled"];
const isNumber = (v) => typeof v === "number" && Number.isFinite(v);

// The heat map's ramp over log r: r = 1 (the fastest) green, r = √r_max yellow, r = r_max
// red (ColorBrewer RdYlGn ends and middle, readable on white and by most colour-blind
// readers as light against dark); past r_max (outside the profile) a darker red.
const RAMP = [[0x1a, 0x98, 0x50], [0xfe, 0xe0, 0x8b], [0xd7, 0x30, 0x27]];
export const BEYOND_COLOUR = "#7f0000";

/** A ratio with three significant digits ("1.25", "12.3"), "∞" for null (a miss). */
export function formatRatio(r) {
  if (!isNumber(r)) return "∞";
  return Number(r.toPrecision(3)).toString();
}

/** A time to target in the suite's measure: "340 steps", "1.25 s"; "miss" for null. */
export function formatTime(t, measure) {
  if (!isNumber(t)) return "miss";
  if (measure === "seconds") return `${Number(t.toPrecision(3))} s`;
  const steps = Number.isInteger(t) ? t.toLocaleString("en") : Number(t.toPrecision(4)).toString();
  return `${steps} step${t === 1 ? "" : "s"}`;
}

/** Where log r lies between log 1 and log r_max, in [0, 1] (1 past r_max). */
export function logShare(r, rMax) {
  if (!isNumber(r) || r <= 1 || !(rMax > 1)) return 0;
  return Math.min(1, Math.log(r) / Math.log(rMax));
}

const hex2 = (v) => Math.round(v).toString(16).padStart(2, "0");

/** The heat map colour of a finite ratio (null for a miss: it is drawn as hatched grey). */
export function heatColour(r, rMax) {
  if (!isNumber(r)) return null;
  if (r > rMax) return BEYOND_COLOUR;
  const s = logShare(r, rMax) * (RAMP.length - 1);
  const i = Math.min(Math.floor(s), RAMP.length - 2);
  const f = s - i;
  const mix = RAMP[i].map((c, k) => c + f * (RAMP[i + 1][k] - c));
  return `#${mix.map(hex2).join("")}`;
}

/** Dark text on light colours, white on dark ones (WCAG relative luminance). */
export function textOn(colour) {
  if (!colour) return "#222";
  const channel = (k) => {
    const c = parseInt(colour.slice(1 + 2 * k, 3 + 2 * k), 16) / 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  };
  const luminance = 0.2126 * channel(0) + 0.7152 * channel(1) + 0.0722 * channel(2);
  return luminance > 0.28 ? "#222" : "#fff";
}

/** Jobs of a workload (one per study) that have not finished. */
function openJobs(workload) {
  return (workload.jobs || []).filter((j) => !JOB_FINISHED.includes(j.status)).length;
}

/** The heat map: a column per workload, a row per optimizer (the spec's order), each cell
 * {optimizer, workload, t, r, state, text, title, colour}. States: "best" (r = 1),
 * "solved" (1 < r <= r_max), "beyond" (r > r_max: reached, but outside the profile),
 * "miss" (t is null: never reached the target; r = ∞), "unsolved" (nobody reached this
 * workload's target, so no r is finite), "pending" (no time yet and the workload's jobs
 * are still running). Columns: {name, ..., jobs, running, solved, unsolved}, unsolved once
 * the workload's jobs have all finished and none reached the target. */
export function heatGrid(scores) {
  const rMax = scores.r_max;
  const measure = scores.time_measure;
  const byKey = new Map((scores.cells || []).map((c) => [`${c.optimizer}\u0000${c.workload}`, c]));
  const columns = (scores.workloads || []).map((w) => {
    const cells = (scores.cells || []).filter((c) => c.workload === w.name);
    const running = openJobs(w) > 0;
    const solved = cells.some((c) => c.solved_by_anyone || isNumber(c.t));
    // Nobody solved it: only once its jobs have finished (until then, nobody has yet).
    return {
      name: w.name, dataset: w.dataset, model: w.model, target: w.target, budget: w.budget,
      jobs: w.jobs || [], running, solved, unsolved: !solved && !running,
    };
  });
  const rows = (scores.optimizers || []).map((optimizer) => ({
    optimizer,
    cells: columns.map((column) => {
      const cell = byKey.get(`${optimizer}\u0000${column.name}`) || { optimizer, workload: column.name, t: null, r: null };
      const { t, r } = cell;
      let state;
      if (isNumber(t) && isNumber(r)) state = r <= 1 ? "best" : r > rMax ? "beyond" : "solved";
      else if (column.running) state = "pending";
      else if (!column.solved) state = "unsolved";
      else state = "miss";
      const text = { best: formatRatio(r), solved: formatRatio(r), beyond: formatRatio(r), miss: "miss", unsolved: "miss", pending: "…" }[state];
      const colour = ["best", "solved", "beyond"].includes(state) ? heatColour(r, rMax) : null;
      return {
        optimizer, workload: column.name, t: isNumber(t) ? t : null, r: isNumber(r) ? r : null,
        state, text, colour, title: cellTitle(cell, state, measure, rMax),
      };
    }),
  }));
  return { columns, rows };
}

function cellTitle(cell, state, measure, rMax) {
  const head = `${cell.optimizer} on ${cell.workload}`;
  if (state === "pending") return `${head}: still training`;
  const studies = Array.isArray(cell.t_per_study) ? cell.t_per_study : [];
  const perStudy = studies.length > 1 ? ` (median over ${studies.length} studies: ${studies.map((t) => formatTime(t, measure)).join(", ")})` : "";
  const time = isNumber(cell.t) ? `t = ${formatTime(cell.t, measure)}` : "t = ∞ (the target was never reached)";
  const ratio = state === "unsolved"
    ? "nobody reached this workload's target: r = ∞ for every optimizer"
    : `r = ${formatRatio(cell.r)}${state === "beyond" ? ` (beyond r_max = ${rMax}: counted nowhere in the profile)` : state === "best" ? " (the fastest)" : ""}`;
  const speed = isNumber(cell.speed_epochs) ? `; DeepOBS speed ${Number(cell.speed_epochs.toPrecision(3))} epochs` : "; DeepOBS speed: never reached";
  return `${head}: ${time}${perStudy}; ${ratio}${speed}`;
}

/** The profile as uPlot's table: [tau, rho of each optimizer in the spec's order]. Only
 * optimizers the profile has; a rho array that does not match tau is dropped (and named). */
export function profileTable(scores) {
  const profile = scores.profile || { tau: [], rho: {} };
  const tau = (profile.tau || []).filter(isNumber);
  const labels = [];
  const dropped = [];
  const table = [tau];
  for (const label of scores.optimizers || []) {
    const rho = (profile.rho || {})[label];
    if (!Array.isArray(rho) || rho.length !== tau.length) {
      dropped.push(label);
      continue;
    }
    labels.push(label);
    table.push(rho.map((v) => (isNumber(v) ? v : null)));
  }
  return { labels, table, dropped };
}

/** ρ as a share and as workloads: "0.6 (3 of 5 workloads)". */
export function rhoText(rho, workloads) {
  if (!isNumber(rho)) return "–";
  const count = Math.round(rho * workloads);
  return `${Number(rho.toFixed(3))} (${count} of ${workloads} workload${workloads === 1 ? "" : "s"})`;
}

/** The score table's rows, best first: by rank, ties in the spec's order. */
export function rankedRows(scores) {
  const order = new Map((scores.optimizers || []).map((label, i) => [label, i]));
  return (scores.table || []).slice().sort((a, b) => (a.rank - b.rank) || ((order.get(a.optimizer) ?? 1e9) - (order.get(b.optimizer) ?? 1e9)));
}

/** A score B with three decimals; a speedup as "1.23×". */
export function formatScore(score) {
  return isNumber(score) ? score.toFixed(3) : "–";
}

export function formatSpeedup(speedup) {
  return isNumber(speedup) ? `${speedup.toPrecision(3)}×` : "–";
}

/** The palette index of each optimizer: its place in the spec's order. */
export function optimizerIndex(scores) {
  return new Map((scores.optimizers || []).map((label, i) => [label, i]));
}

/** Jobs finished of all the suite's jobs, and a line saying so. */
export function suiteProgress(scores) {
  const jobs = (scores.workloads || []).flatMap((w) => w.jobs || []);
  const done = jobs.filter((j) => JOB_FINISHED.includes(j.status)).length;
  const failed = jobs.filter((j) => j.status === "failed" || j.status === "cancelled").length;
  const total = jobs.length;
  const plural = (n, one) => `${n} ${one}${n === 1 ? "" : "s"}`;
  const workloads = (scores.workloads || []).length;
  let text = `${done} of ${plural(total, "job")} done (${plural(workloads, "workload")})`;
  if (failed) text += `, ${failed} failed or cancelled`;
  return { done, total, failed, fraction: total ? done / total : null, text };
}

/** What the numbers mean, as [term, text] pairs: the definition's source, the time measure,
 * r and ρ, B, the speedup and the miss rule. */
export function definitionItems(scores) {
  const d = scores.definition || {};
  const measure = scores.time_measure === "seconds"
    ? "training seconds (each member's attributed seconds; evaluation excluded)"
    : "optimizer steps";
  const items = [
    ["source", d.source || "not given"],
    ["profile", d.profile || "Dolan & Moré 2002"],
    ["time t(s, w)", `${measure} to the workload's target: the median over studies of the fastest trial's time; a miss is infinite`],
    ["ratio r(s, w)", "t(s, w) / the fastest optimizer's t on that workload (1 = the fastest; ∞ for a miss, and for every optimizer on a workload nobody solved)"],
    ["profile ρ_s(τ)", "the share of workloads with r(s, w) ≤ τ, for τ from 1 to r_max"],
    ["r_max", String(scores.r_max)],
    ["score B_s", `1 / (r_max − 1) · ∫₁^r_max ρ_s(τ) dτ: 1 when fastest everywhere, 0 when never within r_max`],
    ["speedup", `geometric mean over workloads of t(${scores.reference}, w) / t(s, w), against the reference ${scores.reference}${scores.speedup_note ? `; ${scores.speedup_note}` : ""}`],
  ];
  for (const note of d.notes || []) items.push(["note", note]);
  return items;
}

/** The cells as CSV: every t(s, w) and r(s, w), so a reader can recompute the scores. */
export function cellsCsv(scores) {
  const quote = (s) => `"${String(s).replaceAll('"', '""')}"`;
  const value = (v) => (isNumber(v) ? String(v) : "");
  const lines = ["optimizer,workload,t,r,t_per_study,speed_epochs,solved_by_anyone"];
  for (const c of scores.cells || []) {
    const studies = (c.t_per_study || []).map((t) => (isNumber(t) ? String(t) : "inf")).join(" ");
    lines.push([quote(c.optimizer), quote(c.workload), value(c.t), value(c.r), quote(studies), value(c.speed_epochs), String(Boolean(c.solved_by_anyone))].join(","));
  }
  return `${lines.join("\n")}\n`;
}

/** ρ at τ for a step function sampled on the grid `tau`: the value at the last grid point
 * at or below τ (ρ is right-continuous: it jumps up at each r), null left of the grid. */
export function rhoAt(tauGrid, rho, tau) {
  let value = null;
  for (let i = 0; i < tauGrid.length && tauGrid[i] <= tau * (1 + 1e-12); i++) value = rho[i];
  return value;
}

/** The profile's x ticks: readable ratios from 1 up to r_max (and r_max itself). */
export function tauTicks(rMax) {
  const nice = [1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 100];
  const ticks = nice.filter((t) => t <= rMax * (1 + 1e-9));
  if (isNumber(rMax) && Math.abs(ticks[ticks.length - 1] - rMax) > 1e-9 * rMax) ticks.push(rMax);
  return ticks;
}

/** Jobs done of a suite as GET /v1/suites lists it: {done, total} from `jobs_done` and
 * `jobs_total`, a `progress` object ({done, total} or {jobs_done, jobs_total}) or a `jobs`
 * array with statuses, whichever the item has; null when it has none of them. */
export function listedProgress(item) {
  const pair = (done, total) => (isNumber(done) && isNumber(total) ? { done, total, fraction: total ? done / total : null } : null);
  const p = item.progress || {};
  return pair(item.jobs_done, item.jobs_total)
    ?? pair(p.done, p.total)
    ?? pair(p.jobs_done, p.jobs_total)
    ?? (Array.isArray(item.jobs) ? pair(item.jobs.filter((j) => JOB_FINISHED.includes(j.status)).length, item.jobs.length) : null);
}
