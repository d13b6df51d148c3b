// #/suites/<id> one suite: its name, status and jobs done (a progress bar), the report link,
// and its results drawn by suite_charts.js from GET /v1/suites/{id}/scores, the same module
// and data as the suite's HTML report. Polls the scores every two seconds until the suite has
// finished; the last poll draws the final state. Each workload's header links to its jobs'
// pages here (their summaries) and to their reports.

import { api, poller } from "./api.js";
import { announce, focusHeading, h, main, show } from "./dom.js";
import { mountSuiteCharts } from "./suite_charts.js";
import { suiteProgress } from "./suite_series.js";
import { FINISHED, problemBox, statusBadge } from "./widgets.js";

const REFRESH_MS = 2000;

function apiLink(href, filename, text, attrs = {}) {
  // data-api-link: with a stored key main.js fetches it with the key and saves it.
  return h("a", { href, "data-api-link": filename, ...attrs }, text);
}

/** A workload header's links per job: its page here (summary, charts) and its report. */
function jobLinks(job, workload) {
  const name = workload.jobs.length > 1 ? `study ${job.study}` : "job";
  return [
    h("a", { href: `#/jobs/${job.job_id}`, class: "ob-job-link", "data-testid": "workload-job", "data-job-id": job.job_id, title: `${workload.name}: the job's summary (${job.status})` }, name),
    apiLink(`/v1/jobs/${job.job_id}/report`, `report-${job.job_id}.html`, "report", { class: "ob-job-link", "data-testid": "workload-report", "data-job-id": job.job_id }),
  ];
}

export function suiteView(id) {
  document.title = "Suite · optbench";
  let view = null; // the suite module's {update, destroy} once the first scores came
  let lastStatus = null;
  const heading = h("h1", { "data-testid": "suite-name" }, "Suite");
  const statusSlot = h("span", { class: "status-slot", "aria-live": "polite" });
  const bar = h("progress", { max: "1", value: "0", id: "suite-progress-bar", "aria-label": "suite progress", "data-testid": "suite-progress-bar" });
  const progressText = h("span", { class: "progress-text", "data-testid": "suite-progress-text" });
  const errorSlot = h("div");
  const box = h("section", { class: "charts-box", "data-testid": "suite-charts", "aria-label": "Suite results", "aria-busy": "true" });
  show(
    h("p", { class: "crumbs" }, h("a", { href: "#/suites" }, "← Suites")),
    h("div", { class: "title-row" }, heading, statusSlot),
    h("div", { class: "job-progress" }, h("label", { for: "suite-progress-bar" }, "Jobs done "), bar, progressText),
    errorSlot,
    h(
      "p",
      { class: "links" },
      apiLink(`/v1/suites/${id}/report`, `suite-report-${id}.html`, "HTML report", { class: "button", "data-testid": "suite-report-link" }),
      apiLink(`/v1/suites/${id}/scores`, `suite-scores-${id}.json`, "scores (JSON)", { "data-testid": "suite-scores-json" }),
    ),
    box,
  );
  focusHeading();

  function draw(scores) {
    try {
      if (view) view.update(scores);
      else {
        view = mountSuiteCharts(box, scores, { jobLinks });
        box.removeAttribute("aria-busy");
      }
    } catch (error) {
      console.error("optbench: the suite's charts failed", error); // the header goes on
    }
  }

  async function tick(isStopped) {
    const result = await api(`/v1/suites/${id}/scores`);
    if (isStopped()) return false;
    if (!result.ok) {
      if (result.status === 404) {
        if (view) view.destroy();
        view = null;
        show(h("p", { class: "crumbs" }, h("a", { href: "#/suites" }, "← Suites")), h("h1", {}, "Suite not found"), problemBox(result));
        return false;
      }
      errorSlot.replaceChildren(problemBox(result));
      return true;
    }
    errorSlot.replaceChildren();
    const scores = result.body;
    heading.textContent = scores.name || id;
    document.title = `${scores.name || id} · optbench`;
    if (statusSlot.textContent !== scores.status) statusSlot.replaceChildren(statusBadge(scores.status, "suite-status"));
    const progress = suiteProgress(scores);
    if (progress.fraction !== null) bar.value = progress.fraction;
    progressText.textContent = progress.text;
    draw(scores);
    if (lastStatus !== scores.status) {
      if (lastStatus !== null) announce(`Suite ${scores.status}`);
      lastStatus = scores.status;
    }
    main.dataset.suiteStatus = scores.status;
    return !FINISHED.has(scores.status);
  }

  const handle = poller(tick, REFRESH_MS);
  return {
    stop() {
      handle.stop();
      if (view) view.destroy();
      view = null;
      delete main.dataset.suiteStatus;
    },
  };
}
