// #/suites the caller's suites (GET /v1/suites): name, status, jobs done, submitted; and the
// button that runs the built-in lecture suite (POST /v1/suites {"preset": "lecture"}), which
// the job form offers too. Polls while a suite is queued or running.

import { api, poller } from "./api.js";
import { announce, focusHeading, h, show } from "./dom.js";
import { dash, fmtTime } from "./format.js";
import { listedProgress } from "./suite_series.js";
import { FINISHED, problemBox, statusBadge } from "./widgets.js";

const REFRESH_MS = 2000;
export const LECTURE_SUITE_TITLE = "Lecture suite: the eight optimizers over five small workloads, tuned alike";

/** The button that submits the lecture suite and opens it; a refusal lands in `errors`. */
export function lectureSuiteButton(errors, testid = "submit-lecture-suite") {
  const button = h("button", { type: "button", class: "secondary", "data-testid": testid }, LECTURE_SUITE_TITLE);
  button.addEventListener("click", async () => {
    button.disabled = true;
    errors.replaceChildren();
    const result = await api("/v1/suites", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ preset: "lecture" }),
    });
    button.disabled = false;
    if (result.ok && result.body && (result.body.id || result.body.suite_id)) {
      announce("Suite submitted");
      location.hash = `#/suites/${result.body.id || result.body.suite_id}`;
      return;
    }
    errors.replaceChildren(problemBox(result, "suite-problem"));
  });
  return button;
}

export function suitesView() {
  document.title = "Suites · optbench";
  const tbody = h("tbody");
  const errors = h("div", { "aria-live": "assertive" });
  const problemSlot = h("div");
  const empty = h("p", { class: "empty", "data-testid": "suites-empty", hidden: true }, "No suites yet: run the lecture suite to start one.");
  const table = h(
    "table",
    { class: "jobs", "data-testid": "suites-table" },
    h("caption", { class: "visually-hidden" }, "Suites, newest first"),
    h("thead", {}, h("tr", {}, ["Name", "Status", "Jobs done", "Submitted"].map((t) => h("th", { scope: "col" }, t)))),
    tbody,
  );
  show(
    h("div", { class: "title-row" }, h("h1", {}, "Suites")),
    h(
      "p",
      { class: "muted" },
      "A suite runs one optimizer set over many workloads, one tuning study per workload, and scores it the way AlgoPerf does: ",
      "a performance profile, a score per optimizer and a heat map of each one's time to target against the fastest.",
    ),
    h("div", { class: "presets", role: "group", "aria-label": "Built-in suites" }, h("span", { class: "muted" }, "Run: "), lectureSuiteButton(errors)),
    errors,
    problemSlot,
    empty,
    h("div", { class: "table-wrap" }, table),
  );
  focusHeading();

  function row(suite) {
    const progress = listedProgress(suite);
    return h(
      "tr",
      { "data-testid": "suite-row", "data-suite-id": suite.id },
      h("th", { scope: "row" }, h("a", { href: `#/suites/${suite.id}`, "data-testid": "suite-link" }, suite.name || suite.id), " ",
        h("code", { class: "job-id muted", title: suite.id }, String(suite.id).slice(0, 8))),
      h("td", {}, statusBadge(suite.status, "suite-status")),
      h("td", { class: "num", "data-testid": "suite-jobs" }, progress ? `${progress.done} / ${progress.total}` : dash),
      h("td", {}, fmtTime(suite.created_at)),
    );
  }

  async function refresh(isStopped) {
    const result = await api("/v1/suites");
    if (isStopped()) return false;
    if (!result.ok) {
      problemSlot.replaceChildren(problemBox(result));
      return true;
    }
    problemSlot.replaceChildren();
    const items = Array.isArray(result.body) ? result.body : result.body.items || [];
    tbody.replaceChildren(...items.map(row));
    empty.hidden = items.length > 0;
    table.hidden = items.length === 0;
    return items.some((s) => !FINISHED.has(s.status));
  }

  const handle = poller(refresh, REFRESH_MS);
  return { stop: () => handle.stop() };
}
