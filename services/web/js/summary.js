// The job page's summary table, read like the report's (services/report/tables.py):
// one row per optimizer label, value columns the means over seeds (± the sample standard
// deviation when there are several), to-target columns the medians over the seeds that
// reached the target.
//
// Ranks: a finished job's ranks are final; a running job's are computed from the metrics so
// far, so each shows "provisional" (the rank so far on hover); a queued job has no rank column
// (nothing has trained: every label would be rank 1).

import { h } from "./dom.js";
import { dash, fmtNumber, fmtPercent, fmtSeconds, fmtSteps } from "./format.js";
import { FINISHED } from "./widgets.js";

/** The comparison the target is reached by: accuracies and R² at ≥ value, losses and distance at ≤. */
export function targetSign(metric) {
  return /(accuracy|r2)$/.test(metric || "") ? "≥" : "≤";
}

export function targetText(target) {
  return `${target.metric || "?"} ${targetSign(target.metric)} ${target.value ?? "?"}`;
}

const hasValue = (value) => value !== null && value !== undefined;

/** [key, header, format] of the value columns for the task; test columns only when stored. */
function valueColumns(task, rows) {
  const present = (key) => rows.some((row) => hasValue(row[key]));
  if (task === "landscape") {
    // A landscape has no validation set: how far from the minimum, and the function's value.
    return [
      ["final_distance", "Final distance", fmtNumber],
      ["final_train_loss", "Final loss", fmtNumber],
    ];
  }
  const regression = task === "regression";
  const score = regression ? fmtNumber : fmtPercent;
  const columns = [
    ["final_train_loss", "Final train loss", fmtNumber],
    ["best_val_accuracy", regression ? "Best val R²" : "Best val accuracy", score],
  ];
  if (present("test_loss")) columns.push(["test_loss", "Test loss", fmtNumber]);
  if (present("test_accuracy")) columns.push(["test_accuracy", regression ? "Test R²" : "Test accuracy", score]);
  return columns;
}

/** A mean, with "± std" when the seeds give one; the median and count on hover. */
function valueCell(row, key, format) {
  const stat = row.stats && row.stats[key];
  const text = format(row[key]);
  if (!stat || !hasValue(stat.std) || text === dash) return text;
  const hover = `median ${format(stat.median)}, ${stat.n} seeds`;
  return h("span", { title: hover }, `${text} ± ${format(stat.std)}`);
}

function rankCell(row, status) {
  if (FINISHED.has(status)) return String(row.rank ?? dash);
  return h("span", { class: "provisional", title: `rank so far: ${row.rank ?? dash}` }, "provisional");
}

/** The table for `summary` (GET /v1/jobs/{id}/summary) of a job in `status`; with
 * `labelHref` (label → URL) each label links there (the label's history across jobs). */
export function summaryTable(summary, status, labelHref = null) {
  const rows = summary.optimizers || [];
  const target = summary.target || {};
  const finished = FINISHED.has(status);
  const columns = [
    ...valueColumns(summary.task, rows).map(([key, title, format]) => [title, (row) => valueCell(row, key, format)]),
    ["Steps to target", (row) => fmtSteps(row.steps_to_target)],
    ["Time to target", (row) => fmtSeconds(row.seconds_to_target)],
    ["Reached", (row) => row.target_reached ?? dash],
    ["Diverged", (row) => String(row.diverged ?? 0)],
  ];
  const ranked = status !== "queued";
  const caption = [
    h("span", { "data-testid": "summary-target" }, `Target: ${targetText(target)}`),
    finished ? "" : " (so far)",
    finished && summary.best ? ` · best: ${summary.best}` : "",
  ];
  return h(
    "table",
    { class: "summary", "data-testid": "summary-table", "data-ranked": ranked ? (finished ? "final" : "provisional") : "no" },
    h("caption", {}, caption),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ranked ? h("th", { scope: "col", class: "num" }, "Rank") : null,
        h("th", { scope: "col" }, "Optimizer"),
        columns.map(([title]) => h("th", { scope: "col", class: "num" }, title)),
      ),
    ),
    h(
      "tbody",
      {},
      rows.map((row) =>
        h(
          "tr",
          { "data-testid": "summary-row", "data-label": row.label },
          ranked ? h("td", { class: "num", "data-testid": "rank" }, rankCell(row, status)) : null,
          h("th", { scope: "row" }, labelHref ? h("a", { href: labelHref(row.label), title: `${row.label} over your jobs`, "data-testid": "history-link" }, row.label) : row.label),
          columns.map(([, cell]) => h("td", { class: "num" }, cell(row))),
        ),
      ),
    ),
  );
}
