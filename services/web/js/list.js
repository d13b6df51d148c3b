// #/ the job list: name, data set, model, best optimizer, status, progress, duration, created.
//
// Filters (name substring, data set, model, status, best optimizer) are kept in the hash
// (#/?name=..&dataset=..) so that a reload or a shared link shows the same list; the API
// filters (GET /v1/jobs). A checkbox per row picks jobs; "Compare" opens #/compare?jobs=..
// (compare.js) with the picked ones, in the order they were picked.

import { api, poller } from "./api.js";
import { announce, focusHeading, h, show } from "./dom.js";
import { dash, fmtDuration, fmtTime, progressText } from "./format.js";
import { STATUSES, problemBox, setProgress, statusBadge } from "./widgets.js";

const REFRESH_MS = 2000;
const TYPING_MS = 250; // wait this long after the last key before asking the API
export const FILTERS = ["name", "dataset", "model", "status", "best"];
const MAX_PICKED = 8; // what GET /v1/compare takes

let catalogNames = null; // {datasets: [...], models: [...]} once the catalog has loaded

async function loadCatalogNames() {
  if (catalogNames) return catalogNames;
  const result = await api("/v1/catalog");
  if (!result.ok) return { datasets: [], models: [] };
  catalogNames = {
    datasets: (result.body.datasets || []).map((d) => d.name),
    models: (result.body.models || []).map((m) => m.name),
  };
  return catalogNames;
}

/** A <select> of "all" and `names`, showing `value` even if it is not one of them. */
function fillSelect(select, names, value) {
  const all = value && !names.includes(value) ? [...names, value] : names;
  select.replaceChildren(
    h("option", { value: "" }, "all"),
    ...all.map((name) => h("option", { value: name }, name)),
  );
  select.value = value || "";
}

/** The list view; `params` the hash's query (URLSearchParams). */
export function listView(params) {
  document.title = "Jobs · optbench";
  const filters = Object.fromEntries(FILTERS.map((key) => [key, params.get(key) || ""]));
  const paging = { offset: 0, limit: 25 };
  const rows = new Map();
  let latest = 0; // the newest request: an older answer that lands later is dropped
  let typing = null;
  let typingBest = null;
  const picked = new Set(); // job ids, in the order picked; kept across pages and refreshes

  const tbody = h("tbody");
  const count = h("p", { class: "muted", "data-testid": "jobs-count", "aria-live": "polite" });
  const empty = h(
    "p",
    { class: "empty", "data-testid": "jobs-empty", hidden: true },
    "No jobs yet. ",
    h("a", { href: "#/new" }, "Submit one"),
    " — the lecture preset compares eight optimizers in a few seconds.",
  );
  const noMatch = h(
    "p",
    { class: "empty", "data-testid": "jobs-no-match", hidden: true },
    "No job matches these filters. ",
    h("button", { type: "button", class: "secondary", onclick: clearFilters }, "Clear the filters"),
  );
  const problemSlot = h("div");

  const nameInput = h("input", {
    id: "name-filter",
    type: "search",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "part of a name",
    "data-testid": "name-filter",
    oninput: () => {
      clearTimeout(typing);
      typing = setTimeout(() => changed("name", nameInput.value.trim()), TYPING_MS);
    },
  });
  nameInput.value = filters.name;
  const bestInput = h("input", {
    id: "best-filter",
    type: "search",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "label, e.g. adam",
    "data-testid": "best-filter",
    oninput: () => {
      clearTimeout(typingBest);
      typingBest = setTimeout(() => changed("best", bestInput.value.trim()), TYPING_MS);
    },
  });
  bestInput.value = filters.best;
  const compareButton = h(
    "button",
    { type: "button", class: "button secondary", "data-testid": "compare-picked", disabled: true, onclick: openComparison },
    "Compare",
  );
  const select = (key) =>
    h("select", { id: `${key}-filter`, "data-testid": `${key}-filter`, onchange: (e) => changed(key, e.target.value) });
  const datasetSelect = select("dataset");
  const modelSelect = select("model");
  const statusSelect = select("status");
  fillSelect(datasetSelect, [], filters.dataset);
  fillSelect(modelSelect, [], filters.model);
  fillSelect(statusSelect, STATUSES, filters.status);
  loadCatalogNames().then((names) => {
    fillSelect(datasetSelect, names.datasets, filters.dataset);
    fillSelect(modelSelect, names.models, filters.model);
  });

  const prev = h(
    "button",
    { type: "button", class: "secondary", "data-testid": "page-prev", onclick: () => page(-1) },
    "← Newer",
  );
  const next = h(
    "button",
    { type: "button", class: "secondary", "data-testid": "page-next", onclick: () => page(1) },
    "Older →",
  );
  const pager = h("div", { class: "pager" }, prev, next);
  const headers = ["Name", "Data set", "Model", "Best optimizer", "Status", "Progress", "Duration", "Submitted"];
  const table = h(
    "table",
    { class: "jobs", "data-testid": "jobs-table" },
    h("caption", { class: "visually-hidden" }, "Jobs, newest first"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Pick to compare")), headers.map((t) => h("th", { scope: "col" }, t)))),
    tbody,
  );
  const field = (id, label, control) =>
    h("div", { class: "filter" }, h("label", { for: id }, label), control);

  show(
    h(
      "div",
      { class: "title-row" },
      h("h1", {}, "Jobs"),
      compareButton,
      h("a", { class: "button", href: "#/new", "data-testid": "new-job" }, "New job"),
    ),
    h(
      "form",
      { class: "toolbar filters", role: "search", "aria-label": "Filter the jobs", onsubmit: (e) => e.preventDefault() },
      field("name-filter", "Name", nameInput),
      field("dataset-filter", "Data set", datasetSelect),
      field("model-filter", "Model", modelSelect),
      field("status-filter", "Status", statusSelect),
      field("best-filter", "Best optimizer", bestInput),
      count,
    ),
    problemSlot,
    empty,
    noMatch,
    h("div", { class: "table-wrap" }, table),
    pager,
  );
  focusHeading();

  function changed(key, value) {
    if (filters[key] === value) return;
    filters[key] = value;
    paging.offset = 0;
    keepInHash();
    refresh();
  }

  function clearFilters() {
    for (const key of FILTERS) filters[key] = "";
    nameInput.value = "";
    bestInput.value = "";
    for (const s of [datasetSelect, modelSelect, statusSelect]) s.value = "";
    paging.offset = 0;
    keepInHash();
    refresh();
  }

  // replaceState, not location.hash: the URL changes without a hashchange re-rendering the view.
  function keepInHash() {
    const query = new URLSearchParams(FILTERS.filter((k) => filters[k]).map((k) => [k, filters[k]]));
    const hash = query.toString() ? `#/?${query}` : "#/";
    if (location.hash !== hash) history.replaceState(null, "", hash);
  }

  function page(direction) {
    paging.offset = Math.max(0, paging.offset + direction * paging.limit);
    refresh();
  }

  function pickedChanged() {
    compareButton.disabled = picked.size < 2;
    compareButton.textContent = picked.size ? `Compare (${picked.size})` : "Compare";
    compareButton.title = picked.size < 2 ? "pick two jobs or more with the checkboxes" : `compare the ${picked.size} picked jobs`;
  }

  function openComparison() {
    if (picked.size >= 2) location.hash = `#/compare?jobs=${[...picked].join(",")}`;
  }

  function pickBox(job) {
    const box = h("input", { type: "checkbox", "data-testid": "job-pick", "aria-label": `pick ${job.name || job.id} to compare` });
    box.checked = picked.has(job.id);
    box.addEventListener("change", () => {
      if (box.checked && picked.size >= MAX_PICKED) {
        box.checked = false;
        announce(`At most ${MAX_PICKED} jobs can be compared at once`);
      } else if (box.checked) picked.add(job.id);
      else picked.delete(job.id);
      pickedChanged();
    });
    return box;
  }

  function rowFor(job) {
    let row = rows.get(job.id);
    if (!row) {
      const cells = {
        link: h("a", { href: `#/jobs/${job.id}`, "data-testid": "job-link" }),
        id: h("code", { class: "job-id muted", title: job.id }, job.id.slice(0, 8)),
        dataset: h("td", { "data-testid": "job-dataset" }),
        model: h("td", { "data-testid": "job-model" }),
        best: h("td", { "data-testid": "job-best" }),
        status: h("td"),
        bar: h("progress", { max: "1", "data-testid": "job-progress" }),
        text: h("span", { class: "progress-text" }),
        duration: h("td", { class: "num", "data-testid": "job-duration" }),
        created: h("td"),
      };
      const tr = h(
        "tr",
        { "data-testid": "job-row", "data-job-id": job.id },
        h("td", { class: "pick" }, pickBox(job)),
        h("th", { scope: "row" }, cells.link, " ", cells.id),
        cells.dataset,
        cells.model,
        cells.best,
        cells.status,
        h("td", { class: "progress-cell" }, cells.bar, cells.text),
        cells.duration,
        cells.created,
      );
      row = { tr, cells, last: "" };
      rows.set(job.id, row);
    }
    const duration = fmtDuration(job);
    const key = JSON.stringify([job.name, job.status, job.progress, job.best_label, duration]);
    if (key !== row.last) {
      row.last = key;
      const { cells } = row;
      const spec = job.spec || {};
      cells.link.textContent = job.name || job.id;
      cells.dataset.textContent = (spec.dataset && spec.dataset.name) || dash;
      cells.model.textContent = (spec.model && spec.model.name) || dash;
      cells.best.textContent = job.best_label || dash;
      cells.status.replaceChildren(statusBadge(job.status));
      setProgress(cells.bar, job.progress);
      cells.bar.setAttribute("aria-label", `progress of ${job.name || job.id}`);
      cells.text.textContent = progressText(job.progress);
      cells.duration.textContent = duration;
      cells.created.textContent = fmtTime(job.created_at);
    }
    return row.tr;
  }

  async function refresh(isStopped = () => false) {
    const mine = ++latest;
    const query = new URLSearchParams({ limit: paging.limit, offset: paging.offset });
    for (const key of FILTERS) if (filters[key]) query.set(key, filters[key]);
    const result = await api(`/v1/jobs?${query}`);
    if (isStopped()) return false;
    if (mine !== latest) return true;
    if (!result.ok) {
      problemSlot.replaceChildren(problemBox(result));
      return true;
    }
    problemSlot.replaceChildren();
    const { items, total } = result.body;
    const wanted = items.map(rowFor);
    const ids = new Set(items.map((job) => job.id));
    for (const [id, row] of rows) {
      if (!ids.has(id)) {
        row.tr.remove();
        rows.delete(id);
      }
    }
    const same = wanted.length === tbody.children.length && wanted.every((tr, i) => tbody.children[i] === tr);
    if (!same) tbody.replaceChildren(...wanted);
    const filtered = FILTERS.some((key) => filters[key]);
    empty.hidden = total !== 0 || filtered;
    noMatch.hidden = total !== 0 || !filtered;
    table.hidden = items.length === 0;
    const shown = items.length ? `${paging.offset + 1}–${paging.offset + items.length} of ${total}` : `0 of ${total}`;
    const countText = `${shown} job${total === 1 ? "" : "s"}${filtered ? " matching" : ""}`;
    if (count.textContent !== countText) count.textContent = countText;
    prev.disabled = paging.offset === 0;
    next.disabled = paging.offset + items.length >= total;
    pager.hidden = prev.disabled && next.disabled;
    return true;
  }

  const handle = poller(refresh, REFRESH_MS);
  return {
    stop() {
      clearTimeout(typing);
      clearTimeout(typingBest);
      handle.stop();
    },
  };
}
