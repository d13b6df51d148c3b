// Small pieces several views show: a problem+json box, status badges, progress bars.

import { h } from "./dom.js";

export const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
export const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];

/** A problem (RFC 9457) as an alert: title, detail or the field errors, a key link on 401. */
export function problemBox(result, testid = "problem") {
  const body = result.body || {};
  const title = body.title || `HTTP ${result.status}`;
  const errors = Array.isArray(body.errors) ? body.errors : [];
  return h(
    "div",
    { class: "problem", role: "alert", "data-testid": testid },
    h("p", { class: "problem-title" }, h("strong", { text: title })),
    body.detail && !errors.length ? h("p", { text: body.detail }) : null,
    result.status === 401 ? h("p", {}, h("a", { href: "#/key" }, "Set an API key")) : null,
    errors.length
      ? h(
          "ul",
          { class: "field-errors" },
          errors.map((e) =>
            h(
              "li",
              { "data-testid": "form-error", "data-field": e.field },
              h("code", { text: e.field || "(spec)" }),
              ": ",
              e.message,
            ),
          ),
        )
      : null,
  );
}

export function statusBadge(status, testid = "job-status") {
  return h("span", {
    class: `status status-${status}`,
    "data-testid": testid,
    "data-status": status,
    text: status,
  });
}

/** Set a <progress>: the fraction when known, indeterminate while steps run toward an unknown total. */
export function setProgress(bar, progress) {
  if (progress.fraction !== null && progress.fraction !== undefined) bar.value = progress.fraction;
  else if (progress.steps_done) bar.removeAttribute("value");
  else bar.value = 0;
}

export function progressBar(progress, label, testid) {
  const bar = h("progress", { max: "1", "aria-label": label, "data-testid": testid });
  setProgress(bar, progress);
  return bar;
}
