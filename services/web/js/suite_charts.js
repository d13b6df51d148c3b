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

const PROFILE_HEIGHT = 320;
const PROFILE_AXIS = { stroke: "#555", grid: { stroke: "#eceef1", width: 1 }, ticks: { stroke: "#ddd" } };
const SUITE_FINISHED = ["succeeded", "failed", "cancelled"];

function node(tag, attrs = {}, ...children) {
  const made = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (key === "on") for (const [event, fn] of Object.entries(value)) made.addEventListener(event, fn);
    else made.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined && child !== false) made.append(child instanceof Node ? child : String(child));
  }
  return made;
}

function saveFile(name, blob) {
  const link = node("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

function lineSwatch(colour, dash) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", "26");
  svg.setAttribute("height", "10");
  svg.setAttribute("aria-hidden", "true");
  const line = document.createElementNS(ns, "line");
  for (const [k, v] of Object.entries({ x1: 1, y1: 5, x2: 25, y2: 5, stroke: colour, "stroke-width": 2.5 })) line.setAttribute(k, String(v));
  if (dash.length) line.setAttribute("stroke-dasharray", dash.join(" "));
  svg.append(line);
  return svg;
}

function paint(element, background, colour) {
  // CSSOM, not a style attribute: the web page's CSP allows it.
  if (background) element.style.background = background;
  if (colour) element.style.color = colour;
  return element;
}

function defaultJobLinks(job, workload) {
  const text = workload.jobs.length > 1 ? `study ${job.study}` : "report";
  return [node("a", {
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

  const progressLine = node("p", { class: "ob-suite-progress", "data-testid": "suite-progress", "aria-live": "polite" });
  const tableBox = node("div", { class: "ob-suite-part", "data-testid": "suite-table-box" });
  const profileBox = node("div", { class: "ob-suite-part" });
  const heatBox = node("div", { class: "ob-suite-part" });
  const definitionBox = node("div", { class: "ob-suite-part ob-definition", "data-testid": "suite-definition" });
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
    const table = node("table", { class: "ob-scores", "data-testid": "suite-scores" },
      node("caption", {}, final() ? "Ranked by score B, best first" : "Ranked by score B so far (provisional)"),
      node("thead", {}, node("tr", {}, head.map((t, i) => node("th", { scope: "col", class: i === 1 ? "text" : null }, t)))),
      node("tbody", {}, rows.map((row) => node("tr", { "data-testid": "score-row", "data-optimizer": row.optimizer, "data-rank": row.rank, "data-score": row.score },
        node("td", {}, String(row.rank)),
        node("th", { scope: "row", class: "text" }, paint(node("i", { class: "ob-dot" }), colour(row.optimizer)), row.optimizer),
        node("td", { title: "1 / (r_max − 1) · ∫ ρ(τ) dτ over [1, r_max]" }, formatScore(row.score)),
        node("td", { title: `geometric mean of t(${scores.reference}, w) / t(${row.optimizer}, w)` }, formatSpeedup(row.geomean_speedup)),
        node("td", {}, `${row.solved} / ${row.workloads ?? n}`)))));
    tableBox.replaceChildren(node("h2", {}, "Scores"), node("div", { class: "ob-scroll" }, table),
      node("p", { class: "ob-note" }, `Score B: the area under the performance profile from 1 to r_max = ${scores.r_max}, scaled to [0, 1]. `
        + `Speedup: how many times faster than ${scores.reference} to the target, geometric mean over workloads. Solved: workloads whose target it reached.`));
  }

  // ---------------------------------------------------------------- the profile

  function renderProfile() {
    if (plot) plot.destroy();
    plot = null;
    const title = "ρ(τ): the share of workloads each optimizer solved within τ times the fastest";
    const figure = node("figure", { class: "ob-chart", "data-chart": "profile" });
    const tools = node("span", { class: "ob-tools" });
    const legend = node("div", { class: "ob-legend", role: "group", "aria-label": "optimizers: click to hide or show" });
    const area = node("div", { class: "ob-plot", role: "img", "aria-label": title });
    const readout = node("div", { class: "ob-readout", "data-testid": "readout" }, "hover for ρ at each τ");
    const note = node("p", { class: "ob-note" });
    figure.append(node("figcaption", {}, node("span", { class: "ob-title" }, title), tools), legend, area, readout, note);
    profileBox.replaceChildren(node("h2", {}, "Performance profile"), figure);
    const { labels, table, dropped } = profileTable(scores);
    const nWorkloads = (scores.workloads || []).length;
    figure.dataset.series = "0";
    if (!uPlot) {
      area.replaceWith(node("p", { class: "ob-empty" }, "The chart library did not load: the scores are in the table and the heat map."));
      readout.remove();
      return;
    }
    if (!labels.length || table[0].length < 1) {
      area.replaceWith(node("p", { class: "ob-empty" }, "Drawn once a workload has finished."));
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
          readout.replaceChildren(node("b", {}, `τ ${formatRatio(tau)}`), ...labels.filter((l) => !hidden.has(l)).map((label, i) => {
            const rho = rhoAt(table[0], table[labels.indexOf(label) + 1], tau);
            return node("span", { class: "ob-value" }, paint(node("i", { class: "ob-dot" }), colour(label)), `${label} ${rhoText(rho, nWorkloads)}`);
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
      const button = node("button", {
        type: "button", class: "ob-key", "data-label": label, "aria-pressed": String(!hidden.has(label)), title: "click to hide or show",
      }, lineSwatch(colour(label), DASHES[dash.get(label) ?? 0]), label);
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
      node("button", { type: "button", class: "ob-tool", "data-testid": "chart-png", on: { click: () => profilePng(plot, title).toBlob((blob) => saveFile(`${fileStem()}-profile.png`, blob)) } }, "PNG"),
      node("button", { type: "button", class: "ob-tool", "data-testid": "chart-csv", on: { click: () => saveFile(`${fileStem()}-profile.csv`, new Blob([profileCsv(labels, table)], { type: "text/csv" })) } }, "CSV"),
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

  function profilePng(u, title) {
    const ratio = uPlot.pxRatio;
    const source = u.ctx.canvas;
    const head = 28 * ratio;
    const foot = 24 * ratio;
    const canvas = document.createElement("canvas");
    canvas.width = source.width;
    canvas.height = source.height + head + foot;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.fillStyle = "#222";
    ctx.font = `600 ${14 * ratio}px system-ui, sans-serif`;
    ctx.fillText(`${scores.name}: ${title}`, 8 * ratio, 19 * ratio);
    ctx.drawImage(source, 0, head);
    let x = 8 * ratio;
    ctx.font = `${11 * ratio}px system-ui, sans-serif`;
    for (const label of scores.optimizers) {
      if (hidden.has(label)) continue;
      ctx.fillStyle = colour(label);
      ctx.fillRect(x, canvas.height - 14 * ratio, 16 * ratio, 3 * ratio);
      ctx.fillStyle = "#222";
      ctx.fillText(label, x + 20 * ratio, canvas.height - 9 * ratio);
      x += (28 + label.length * 7) * ratio;
    }
    return canvas;
  }

  // ---------------------------------------------------------------- the heat map

  function renderHeat() {
    const grid = heatGrid(scores);
    const rMax = scores.r_max;
    const header = grid.columns.map((column) => {
      const target = column.target ? `${column.target.metric} ${/loss|distance/.test(column.target.metric) ? "≤" : "≥"} ${column.target.value}` : "";
      return node("th", {
        scope: "col", class: `ob-workload${column.unsolved ? " ob-unsolved" : ""}`, "data-testid": "heat-workload",
        "data-workload": column.name, "data-solved": String(column.solved), "data-unsolved": String(column.unsolved),
      },
      node("span", { class: "ob-workload-name" }, column.name),
      node("span", { class: "ob-workload-facts" }, [column.dataset, column.model].filter(Boolean).join(" · ")),
      target ? node("span", { class: "ob-workload-facts" }, target) : null,
      !column.unsolved ? null : node("span", { class: "ob-unsolved-mark", "data-testid": "unsolved-mark", title: "no optimizer reached this workload's target: every r is ∞, and it lowers every profile alike" }, "solved by none"),
      column.running ? node("span", { class: "ob-workload-facts" }, "running") : null,
      node("span", { class: "ob-job-links" }, column.jobs.map((job) => jobLinks(job, column)).flat()));
    });
    const body = grid.rows.map((row) => node("tr", { "data-testid": "heat-row", "data-optimizer": row.optimizer },
      node("th", { scope: "row", class: "text" }, paint(node("i", { class: "ob-dot" }), colour(row.optimizer)), row.optimizer),
      row.cells.map((cell) => paint(node("td", {
        class: `ob-cell ob-${cell.state}`, "data-testid": "heat-cell", "data-state": cell.state,
        "data-optimizer": cell.optimizer, "data-workload": cell.workload, "data-r": cell.r ?? "", "data-t": cell.t ?? "",
        title: cell.title, "aria-label": cell.title,
      }, cell.text), cell.colour, cell.colour ? textOn(cell.colour) : null))));
    const table = node("table", { class: "ob-heat", "data-testid": "suite-heatmap" },
      node("caption", {}, "r(s, w): each optimizer's time to the target over the fastest optimizer's, per workload (hover a cell for t)"),
      node("thead", {}, node("tr", {}, node("th", { scope: "col", class: "text" }, "optimizer"), header)),
      node("tbody", {}, body));
    const key = [
      [heatColour(1, rMax), "1: the fastest", "best"],
      [heatColour(Math.sqrt(rMax), rMax), formatRatio(Math.sqrt(rMax)), "solved"],
      [heatColour(rMax, rMax), `${formatRatio(rMax)} = r_max`, "solved"],
      [heatColour(rMax * 2, rMax), `> r_max: outside the profile`, "beyond"],
      [null, "miss: never reached the target (t = ∞)", "miss"],
      [null, "…: still training", "pending"],
    ].map(([background, text, state]) => node("span", { class: "ob-heat-key" }, paint(node("i", { class: `ob-heat-swatch ob-${state}` }), background), text));
    heatBox.replaceChildren(
      node("h2", {}, "Heat map of r(s, w)"),
      node("div", { class: "ob-scroll" }, table),
      node("p", { class: "ob-heat-legend", "data-testid": "heat-legend" }, "colour by log r: ", key),
      node("p", { class: "ob-note" }, "A column per workload (its header links to each study's job report), a row per optimizer. "
        + `t is in ${scores.time_measure === "seconds" ? "training seconds" : "optimizer steps"}; a workload that no optimizer solved is marked, every r on it is ∞.`),
      node("p", { class: "ob-tools" }, node("button", {
        type: "button", class: "ob-tool", "data-testid": "cells-csv",
        on: { click: () => saveFile(`${fileStem()}-cells.csv`, new Blob([cellsCsv(scores)], { type: "text/csv" })) },
      }, "CSV of every t(s, w) and r(s, w)")),
    );
  }

  // ---------------------------------------------------------------- the definition

  function renderDefinition() {
    definitionBox.replaceChildren(
      node("h2", {}, "What the numbers mean"),
      node("dl", {}, definitionItems(scores).map(([term, text]) => [node("dt", {}, term), node("dd", {}, text)])),
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
