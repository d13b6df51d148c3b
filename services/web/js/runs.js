// The job page's runs table: one row per optimizer label with its seeds folded (status and
// progress over the seeds), a <details> in the row to unfold them one by one.

import { h } from "./dom.js";
import { progressText } from "./format.js";
import { progressBar, statusBadge } from "./widgets.js";

/** The runs by label, in the job's order (a label's first run decides its place). */
export function byLabel(runs) {
  const groups = new Map();
  for (const run of runs) {
    if (!groups.has(run.label)) groups.set(run.label, []);
    groups.get(run.label).push(run);
  }
  return groups;
}

/** One status for the seeds of a label: theirs if they agree, else "running" while any is
 * still to train, else the worst ending (failed, then cancelled). */
export function groupStatus(runs) {
  const statuses = new Set(runs.map((run) => run.status));
  if (statuses.size === 1) return runs[0].status;
  if (statuses.has("running") || statuses.has("queued")) return "running";
  if (statuses.has("failed")) return "failed";
  return statuses.has("cancelled") ? "cancelled" : "succeeded";
}

function progressOf(runs) {
  const done = runs.reduce((sum, run) => sum + run.steps_done, 0);
  const known = runs.every((run) => run.total_steps);
  const total = known ? runs.reduce((sum, run) => sum + run.total_steps, 0) : null;
  return { steps_done: done, total_steps: total, fraction: total ? Math.min(1, done / total) : null };
}

function diverged(runs) {
  const count = runs.filter((run) => run.diverged).length;
  if (!count) return "no";
  const text = runs.length > 1 ? `${count}/${runs.length} diverged` : "diverged";
  return h("span", { class: "status status-failed" }, text);
}

function seedsTable(label, runs) {
  return h(
    "table",
    { class: "seeds" },
    h("caption", { class: "visually-hidden" }, `Runs of ${label}, one per seed`),
    h(
      "thead",
      {},
      h("tr", {}, ["Seed", "Status", "Progress", "Diverged"].map((t) => h("th", { scope: "col" }, t))),
    ),
    h(
      "tbody",
      {},
      runs.map((run) => {
        const progress = progressOf([run]);
        return h(
          "tr",
          { "data-testid": "run-row", "data-label": run.label, "data-seed": run.seed },
          h("th", { scope: "row", class: "num" }, String(run.seed)),
          h(
            "td",
            {},
            statusBadge(run.status, "run-status"),
            run.error ? h("div", { class: "run-error" }, run.error) : null,
          ),
          h(
            "td",
            { class: "progress-cell" },
            progressBar(progress, `progress of ${label} seed ${run.seed}`, "run-progress"),
            h("span", { class: "progress-text" }, progressText(progress)),
          ),
          h("td", {}, diverged([run])),
        );
      }),
    ),
  );
}

/** The runs table in `slot`, redrawn only when a run changed; unfolded labels stay unfolded
 * and a focused fold keeps the focus across a redraw. */
export function runsRenderer(slot) {
  const open = new Set();
  let last = "";
  return function render(runs) {
    const key = JSON.stringify(runs);
    if (key === last) return;
    last = key;
    const focused = slot.contains(document.activeElement) ? document.activeElement.closest("[data-label]") : null;
    const groups = byLabel(runs);
    const body = [...groups].map(([label, seeds]) => {
      const status = groupStatus(seeds);
      const progress = progressOf(seeds);
      const succeeded = seeds.filter((run) => run.status === "succeeded").length;
      const errors = [...new Set(seeds.map((run) => run.error).filter(Boolean))];
      const fold = h(
        "details",
        {
          "data-testid": "run-seeds",
          "data-label": label,
          open: open.has(label),
          ontoggle: (event) => (event.target.open ? open.add(label) : open.delete(label)),
        },
        h("summary", {}, `${seeds.length} seed${seeds.length === 1 ? "" : "s"}`),
        seedsTable(label, seeds),
      );
      return h(
        "tr",
        { "data-testid": "run-group", "data-label": label, "data-status": status },
        h("th", { scope: "row" }, label),
        h(
          "td",
          {},
          statusBadge(status, "run-group-status"),
          seeds.length > 1 ? h("span", { class: "muted seed-count" }, ` ${succeeded}/${seeds.length} succeeded`) : null,
          errors.map((error) => h("div", { class: "run-error" }, error)),
        ),
        h(
          "td",
          { class: "progress-cell" },
          progressBar(progress, `progress of ${label}`, "run-group-progress"),
          h("span", { class: "progress-text" }, progressText(progress)),
        ),
        h("td", {}, diverged(seeds)),
        h("td", {}, fold),
      );
    });
    slot.replaceChildren(
      h(
        "table",
        { class: "runs", "data-testid": "runs-table" },
        h("caption", { class: "visually-hidden" }, "Runs: one row per optimizer entry, its seeds folded"),
        h(
          "thead",
          {},
          h("tr", {}, ["Optimizer", "Status", "Progress", "Diverged", "Seeds"].map((t) => h("th", { scope: "col" }, t))),
        ),
        h("tbody", {}, body),
      ),
    );
    if (focused) {
      const again = slot.querySelector(`details[data-label="${CSS.escape(focused.dataset.label)}"] summary`);
      if (again) again.focus();
    }
  };
}
