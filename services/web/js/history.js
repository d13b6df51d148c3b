// #/history/<label>?dataset=<name or upload id>&model=<name> one optimizer label over the
// caller's succeeded jobs on a data set (GET /v1/optimizers/{label}/history): how often it
// ranked first, the median, min and max of its key metrics, and a row per job, newest first,
// with the hyperparameters that differ between them as columns (the others once above).
// Reached from a summary row's label (job page, comparison).

import { api } from "./api.js";
import { focusHeading, h, show } from "./dom.js";
import { dash, fmtNumber, fmtPercent, fmtSteps, fmtTime } from "./format.js";
import { problemBox } from "./widgets.js";

/** The history route of a label on a data set (its catalog name or an upload's id). */
export function historyHref(label, dataset, model = "") {
  const query = new URLSearchParams({ dataset });
  if (model) query.set("model", model);
  return `#/history/${encodeURIComponent(label)}?${query}`;
}

/** The data set key the history route takes: an upload's id, else the catalog name. */
export function datasetKey(dataset) {
  if (!dataset) return "";
  return dataset.name === "upload" ? dataset.id : dataset.name;
}

const METRIC_NAMES = {
  best_val_accuracy: "Best val accuracy (R² for regression)",
  final_train_loss: "Final train loss",
  steps_to_target: "Steps to target",
  seconds_to_target: "Time to target (s)",
  test_accuracy: "Test accuracy",
  final_distance: "Final distance",
};

const compact = (value) => (value !== null && typeof value === "object" ? JSON.stringify(value) : String(value ?? dash));

function scoreOf(row, task) {
  if (task === "landscape") return fmtNumber(row.final_distance);
  return task === "regression" ? fmtNumber(row.best_val_accuracy) : fmtPercent(row.best_val_accuracy);
}

function metricsTable(aggregate, task) {
  const rows = Object.entries(aggregate.metrics).filter(([, stat]) => stat.n > 0);
  if (!rows.length) return null;
  const score = task === "classification" ? fmtPercent : fmtNumber; // R² for regression
  const format = (name, value) => (name === "best_val_accuracy" || name === "test_accuracy" ? score(value) : name === "steps_to_target" ? fmtSteps(value) : fmtNumber(value));
  return h(
    "table",
    { class: "summary", "data-testid": "history-aggregate" },
    h("caption", {}, "Over the jobs (each metric over the jobs that have a value)"),
    h("thead", {}, h("tr", {}, ["Metric", "Median", "Min", "Max", "Jobs"].map((t, i) => h("th", { scope: "col", class: i ? "num" : null }, t)))),
    h("tbody", {}, rows.map(([name, stat]) => h("tr", { "data-metric": name }, h("th", { scope: "row" }, METRIC_NAMES[name] || name), ...["median", "min", "max"].map((k) => h("td", { class: "num" }, format(name, stat[k]))), h("td", { class: "num" }, String(stat.n))))),
  );
}

function itemsTable(body) {
  const settings = body.items.map((item) => item.hyperparameters || {});
  const names = [...new Set(settings.flatMap((s) => Object.keys(s)))].sort();
  const varying = names.filter((n) => new Set(settings.map((s) => compact(s[n]))).size > 1);
  const fixed = names.filter((n) => !varying.includes(n));
  const headers = ["Job", "Submitted", "Model", "Epochs", ...varying, "Score", "Final train loss", "Steps to target", "Reached", "Rank"];
  const table = h(
    "table",
    { class: "summary", "data-testid": "history-table" },
    h("caption", {}, "Newest first; score: best validation accuracy (R² for regression, final distance for landscapes)"),
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      body.items.map((item, i) =>
        h(
          "tr",
          { "data-testid": "history-row", "data-job-id": item.job_id },
          h("th", { scope: "row" }, h("a", { href: `#/jobs/${item.job_id}` }, item.job_name || item.job_id)),
          h("td", {}, fmtTime(item.created_at)),
          h("td", {}, item.model.hidden ? `${item.model.name} ${JSON.stringify(item.model.hidden)}` : item.model.name),
          h("td", { class: "num" }, String(item.epochs)),
          varying.map((n) => h("td", { class: "num" }, compact(settings[i][n]))),
          h("td", { class: "num" }, scoreOf(item.row, item.task)),
          h("td", { class: "num" }, fmtNumber(item.row.final_train_loss)),
          h("td", { class: "num" }, fmtSteps(item.row.steps_to_target)),
          h("td", { class: "num" }, item.row.target_reached ?? dash),
          h("td", { class: "num", "data-testid": "history-rank" }, item.row.rank === null || item.row.rank === undefined ? dash : `${item.row.rank} of ${item.labels}`),
        ),
      ),
    ),
  );
  const same = fixed.length > 0 && settings.length > 0 ? h("p", { class: "muted", "data-testid": "history-fixed" }, `The same in every job: ${fixed.map((n) => `${n} = ${compact(settings[0][n])}`).join(", ")}`) : null;
  return [same, table];
}

export function historyView(label, params) {
  const dataset = params.get("dataset") || "";
  const model = params.get("model") || "";
  document.title = `${label} history · optbench`;
  const slot = h("div", { "data-testid": "history" });
  const where = `${dataset}${model ? `, model ${model}` : ""}`;
  // The model filter: a new route (the URL says what is shown), models from the catalog.
  const modelSelect = h("select", {
    id: "history-model",
    "data-testid": "history-model",
    onchange: (e) => { location.hash = historyHref(label, dataset, e.target.value); },
  });
  const fillModels = (names) => {
    const all = model && !names.includes(model) ? [...names, model] : names;
    modelSelect.replaceChildren(h("option", { value: "" }, "all"), ...all.map((n) => h("option", { value: n }, n)));
    modelSelect.value = model;
  };
  fillModels([]);
  show(
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "← Jobs")),
    h("h1", {}, `${label} on ${where || "?"}`),
    h("form", { class: "toolbar filters", onsubmit: (e) => e.preventDefault() }, h("div", { class: "filter" }, h("label", { for: "history-model" }, "Model"), modelSelect)),
    slot,
  );
  focusHeading();
  let stopped = false;
  api("/v1/catalog").then((result) => {
    if (!stopped && result.ok) fillModels((result.body.models || []).map((m) => m.name));
  });

  (async () => {
    const query = new URLSearchParams({ dataset });
    if (model) query.set("model", model);
    const result = await api(`/v1/optimizers/${encodeURIComponent(label)}/history?${query}`);
    if (stopped) return;
    if (!result.ok) {
      slot.replaceChildren(problemBox(result, "history-problem"));
      return;
    }
    const body = result.body;
    const a = body.aggregate;
    if (!body.items.length) {
      slot.replaceChildren(h("p", { class: "empty", "data-testid": "history-empty" }, `None of your succeeded jobs on ${where} trained ${label}.`));
      return;
    }
    const share = a.first_share === null ? "" : ` (${Math.round(a.first_share * 100)} %)`;
    const parts = [
      h("p", { "data-testid": "history-headline" }, `${a.jobs} succeeded job${a.jobs === 1 ? "" : "s"}; ranked first in ${a.ranked_first} of ${a.ranked}${share}; mean success rate ${a.mean_success_rate === null ? dash : fmtPercent(a.mean_success_rate)}.`),
      body.truncated ? h("p", { class: "muted" }, "Only the newest jobs are shown.") : null,
      h("div", { class: "table-wrap" }, metricsTable(a, body.items[0].task)),
      h("div", { class: "table-wrap" }, itemsTable(body)),
    ];
    slot.replaceChildren(...parts.filter(Boolean));
  })();
  return {
    stop() {
      stopped = true;
    },
  };
}
