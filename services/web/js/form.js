// #/new the job form: a JSON spec (kept as a draft in this tab), the presets, and what a
// spec can use (GET /v1/catalog). A refused spec shows the problem's field errors.

import { api } from "./api.js";
import { announce, focusHeading, h, show } from "./dom.js";
import { lectureSuiteButton } from "./suites.js";
import { problemBox } from "./widgets.js";

const DRAFT_KEY = "optbench.draft";
const PRESET_TITLES = {
  lecture: "Lecture: 8 optimizers on digits",
  "lecture-tuned": "Lecture, tuned: 16 learning rates each, best rerun on 5 seeds",
  modern: "Modern optimizers on MNIST-1D, tuned (those the workers have)",
};

function draft() {
  try {
    return sessionStorage.getItem(DRAFT_KEY) || "";
  } catch (error) {
    return "";
  }
}

function keepDraft(text) {
  try {
    sessionStorage.setItem(DRAFT_KEY, text);
  } catch (error) {
    /* private mode: no draft */
  }
}

export function formView() {
  document.title = "New job · optbench";
  let stopped = false;
  const textarea = h("textarea", {
    id: "spec",
    name: "spec",
    rows: "24",
    spellcheck: "false",
    autocomplete: "off",
    autocapitalize: "off",
    "aria-describedby": "spec-help",
    "data-testid": "spec-input",
    placeholder:
      '{"name": "...", "dataset": {"name": "digits"}, "model": {"name": "mlp"}, "optimizers": [{"name": "adam"}], "epochs": 5}',
    oninput: () => keepDraft(textarea.value),
  });
  textarea.value = draft();
  const presetBox = h(
    "div",
    { class: "presets", role: "group", "aria-label": "Presets" },
    h("span", { class: "muted" }, "Loading presets…"),
  );
  const errors = h("div", { "data-testid": "form-errors", "aria-live": "assertive" });
  const submit = h("button", { type: "submit", "data-testid": "submit" }, "Submit job");
  const catalogBox = h("div", { class: "catalog", "data-testid": "catalog" });
  const catalogDetails = h(
    "details",
    {
      class: "catalog-details",
      ontoggle: () => {
        if (catalogDetails.open && !catalogBox.childElementCount) loadCatalog(catalogBox);
      },
    },
    h("summary", {}, "What can a spec use? Data sets, models, optimizers and schedules"),
    catalogBox,
  );

  const form = h(
    "form",
    { "data-testid": "job-form", novalidate: true, onsubmit: (event) => send(event) },
    presetBox,
    suiteBox(),
    h("label", { for: "spec", class: "field-label" }, "Job spec (JSON)"),
    h(
      "p",
      { id: "spec-help", class: "muted" },
      "One run per optimizer entry and seed; all runs of a seed start from the same weights and see the same batches. ",
      "Errors name the field to change.",
    ),
    textarea,
    errors,
    h("div", { class: "actions" }, submit),
  );
  show(h("h1", {}, "New job"), form, catalogDetails);
  focusHeading();

  (async () => {
    const result = await api("/v1/presets");
    if (stopped) return;
    if (!result.ok) {
      presetBox.replaceChildren(h("span", { class: "muted" }, "No presets available."));
      return;
    }
    presetBox.replaceChildren(
      h("span", { class: "muted" }, "Preset: "),
      ...Object.entries(result.body).map(([name, spec]) =>
        h(
          "button",
          {
            type: "button",
            class: "secondary",
            "data-testid": `preset-${name}`,
            onclick: () => {
              textarea.value = JSON.stringify(spec, null, 2);
              textarea.dispatchEvent(new Event("input"));
              errors.replaceChildren();
              textarea.focus();
            },
          },
          PRESET_TITLES[name] || name,
        ),
      ),
    );
  })();

  async function send(event) {
    event.preventDefault();
    errors.replaceChildren();
    let spec;
    try {
      spec = JSON.parse(textarea.value);
    } catch (error) {
      errors.replaceChildren(
        problemBox({ status: 0, body: { title: "The spec is not valid JSON", detail: error.message } }, "json-error"),
      );
      textarea.setAttribute("aria-invalid", "true");
      return;
    }
    textarea.removeAttribute("aria-invalid");
    submit.disabled = true;
    submit.textContent = "Submitting…";
    const result = await api("/v1/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(spec),
    });
    submit.disabled = false;
    submit.textContent = "Submit job";
    if (stopped) return;
    if (result.ok && result.body && result.body.id) {
      announce("Job submitted");
      location.hash = `#/jobs/${result.body.id}`;
      return;
    }
    textarea.setAttribute("aria-invalid", "true");
    errors.replaceChildren(problemBox(result));
  }

  return {
    stop() {
      stopped = true;
    },
  };
}

// The built-in suite: many workloads, one job each per study, so it is submitted on its own
// route (POST /v1/suites) and opens its suite's page, not the job spec above.
function suiteBox() {
  const errors = h("div", { "aria-live": "assertive" });
  return h(
    "div",
    { class: "presets", role: "group", "aria-label": "Suites" },
    h("span", { class: "muted" }, "Or a suite: "),
    lectureSuiteButton(errors),
    errors,
  );
}

async function loadCatalog(box) {
  box.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  const result = await api("/v1/catalog");
  if (!result.ok) {
    box.replaceChildren(problemBox(result));
    return;
  }
  const params = (entry) =>
    Object.entries(entry.parameters || {}).map(([name, p]) =>
      h("code", { title: p.description || "" }, p.default === undefined ? name : `${name}=${JSON.stringify(p.default)}`),
    );
  const section = (title, entries) =>
    h(
      "section",
      {},
      h("h3", {}, title),
      h(
        "dl",
        {},
        entries.flatMap((entry) => [
          h("dt", {}, h("code", {}, entry.name)),
          h("dd", {}, entry.description || "", " ", h("span", { class: "params" }, params(entry))),
        ]),
      ),
    );
  const c = result.body;
  box.replaceChildren(
    section("Data sets", c.datasets || []),
    section("Models", c.models || []),
    section("Optimizers", c.optimizers || []),
    section("Schedules", c.schedules || []),
  );
}
