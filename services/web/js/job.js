// #/jobs/<id> one job: header (status, cancel, times, progress), the report link, the charts
// (drawn by charts.js from GET /v1/jobs/{id}/charts), the summary and the runs. Polls the job
// every second until it has finished; the last poll draws the final state.

import { api, poller } from "./api.js";
import { mountJobCharts } from "./charts.js";
import { announce, focusHeading, h, main, show } from "./dom.js";
import { dash, fmtDuration, fmtTime, progressText } from "./format.js";
import { datasetKey, historyHref } from "./history.js";
import { runsRenderer } from "./runs.js";
import { studyProgressText } from "./series.js";
import { summaryTable } from "./summary.js";
import { FINISHED, problemBox, progressBar, statusBadge } from "./widgets.js";

const REFRESH_MS = 1000;

function apiLink(href, filename, text, attrs = {}) {
  // data-api-link: with a stored key main.js fetches it with the key and saves it (a plain
  // navigation sends no Authorization header).
  return h("a", { href, "data-api-link": filename, ...attrs }, text);
}

export function jobView(id) {
  document.title = "Job · optbench";
  let lastStatus = null;
  let summaryData = null;
  let charts = null; // the chart module's {update, destroy} once the first data came

  const heading = h("h1", { "data-testid": "job-name" }, "Job");
  const statusSlot = h("span", { class: "status-slot", "aria-live": "polite" });
  const cancelButton = h(
    "button",
    { type: "button", class: "button", "data-testid": "cancel-job", hidden: true, onclick: cancelJob },
    "Cancel job",
  );
  const meta = h("dl", { class: "meta", "data-testid": "job-meta" });
  const errorSlot = h("div");
  const progressSlot = h("div", { class: "job-progress" });
  // A tuning study's phase and trials (from the chart data's study block).
  const studySlot = h("p", { class: "study-progress", "data-testid": "study-progress", "aria-live": "polite", hidden: true });
  const chartsBox = h("section", { class: "charts-box", "data-testid": "charts", "aria-label": "Charts", "aria-busy": "true" });
  const summarySlot = h("div", { class: "table-wrap", "data-testid": "summary" });
  const runsSlot = h("div", { class: "table-wrap" });
  const renderRuns = runsRenderer(runsSlot);
  const specSlot = h("pre", { class: "spec", "data-testid": "job-spec" });
  const links = h(
    "p",
    { class: "links" },
    apiLink(`/v1/jobs/${id}/report`, `report-${id}.html`, "HTML report", { class: "button", "data-testid": "report-link" }),
    apiLink(`/v1/jobs/${id}/summary`, `summary-${id}.json`, "summary (JSON)", { "data-testid": "summary-json" }),
    apiLink(`/v1/jobs/${id}/metrics?granularity=step`, `steps-${id}.json`, "step metrics (JSON)", {
      "data-testid": "metrics-json",
    }),
    apiLink(`/v1/jobs/${id}/metrics?granularity=epoch`, `epochs-${id}.json`, "epoch metrics (JSON)"),
  );

  show(
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "← Jobs")),
    h("div", { class: "title-row" }, heading, statusSlot, cancelButton),
    meta,
    errorSlot,
    progressSlot,
    studySlot,
    links,
    chartsBox,
    h("section", { "aria-labelledby": "summary-heading" }, h("h2", { id: "summary-heading" }, "Summary"), summarySlot),
    h("section", { "aria-labelledby": "runs-heading" }, h("h2", { id: "runs-heading" }, "Runs"), runsSlot),
    h("details", { class: "spec-details" }, h("summary", {}, "Job spec"), specSlot),
  );
  focusHeading();

  // Stored steps stay; the workers stop at their next metric flush.
  async function cancelJob() {
    cancelButton.disabled = true;
    const result = await api(`/v1/jobs/${id}/cancel`, { method: "POST" });
    if (result.ok) {
      renderHeader(result.body);
      announce("Job cancelled");
    } else {
      errorSlot.replaceChildren(problemBox(result, "cancel-problem"));
      cancelButton.disabled = false;
    }
  }

  function renderHeader(job) {
    cancelButton.hidden = !["queued", "running"].includes(job.status);
    heading.textContent = job.name || job.id;
    document.title = `${job.name || job.id} · optbench`;
    if (statusSlot.textContent !== job.status) statusSlot.replaceChildren(statusBadge(job.status));
    const spec = job.spec || {};
    const items = [
      ["Job id", h("code", { text: job.id })],
      ["Data set", (spec.dataset && spec.dataset.name) || dash],
      ["Model", (spec.model && spec.model.name) || dash],
      ["Submitted", fmtTime(job.created_at)],
      ["Started", fmtTime(job.started_at)],
      ["Finished", fmtTime(job.finished_at)],
      ["Duration", fmtDuration(job)],
      ["Device", job.device || dash],
    ];
    meta.replaceChildren(...items.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))));
    errorSlot.replaceChildren(
      job.error
        ? h("div", { class: "problem", role: "alert", "data-testid": "job-error" }, h("strong", {}, "Error: "), job.error)
        : "",
    );
    const bar = progressBar(job.progress, "job progress", "job-progress");
    bar.id = "job-progress-bar";
    progressSlot.replaceChildren(
      h("label", { for: "job-progress-bar" }, "Progress "),
      bar,
      h("span", { class: "progress-text", "data-testid": "job-progress-text" }, progressText(job.progress)),
    );
    if (!specSlot.textContent) specSlot.textContent = JSON.stringify(job.spec, null, 2);
  }

  // A failing chart module must not take the summary and runs with it: its error is logged
  // (a console error) and the rest of the page goes on.
  function drawCharts(data) {
    try {
      if (charts) charts.update(data);
      else {
        charts = mountJobCharts(chartsBox, data);
        chartsBox.removeAttribute("aria-busy");
      }
    } catch (error) {
      console.error("optbench: the charts failed", error);
    }
  }

  function renderSummary(status, spec) {
    // Each label links to its history over the caller's jobs on this data set.
    const dataset = datasetKey(spec && spec.dataset);
    const href = dataset ? (label) => historyHref(label, dataset) : null;
    if (summaryData) summarySlot.replaceChildren(summaryTable(summaryData, status, href));
  }

  function notFound(result) {
    if (charts) charts.destroy();
    charts = null;
    show(h("p", { class: "crumbs" }, h("a", { href: "#/" }, "← Jobs")), h("h1", {}, "Job not found"), problemBox(result));
  }

  async function tick(isStopped) {
    const result = await api(`/v1/jobs/${id}`);
    if (isStopped()) return false;
    if (!result.ok) {
      if (result.status === 404) {
        notFound(result);
        return false;
      }
      errorSlot.replaceChildren(problemBox(result));
      return true;
    }
    const job = result.body;
    renderHeader(job);
    renderRuns(job.runs);
    // After the job: a summary and charts at least as new as the status shown.
    const [summary, chartData] = await Promise.all([api(`/v1/jobs/${id}/summary`), api(`/v1/jobs/${id}/charts`)]);
    if (isStopped()) return false;
    if (summary.ok) summaryData = summary.body;
    if (chartData.ok) drawCharts(chartData.body); // a failed request keeps the last charts
    if (chartData.ok && chartData.body.study) {
      studySlot.textContent = studyProgressText(chartData.body.study, job.status);
      studySlot.hidden = false;
    }
    if (lastStatus !== job.status) {
      if (lastStatus !== null) announce(`Job ${job.status}`);
      lastStatus = job.status;
    }
    renderSummary(job.status, job.spec);
    main.dataset.jobStatus = job.status;
    return !FINISHED.has(job.status);
  }

  const handle = poller(tick, REFRESH_MS);
  return {
    stop() {
      handle.stop();
      if (charts) charts.destroy();
      charts = null;
      delete main.dataset.jobStatus;
    },
  };
}
