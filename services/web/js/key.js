// #/key the API key: kept in this browser's local storage, sent by api.js with every request.

import { storedKey, storeKey } from "./api.js";
import { announce, focusHeading, h, show } from "./dom.js";

export function keyView() {
  document.title = "API key · optbench";
  const input = h("input", {
    id: "api-key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "ob_…",
    "data-testid": "api-key-input",
  });
  const state = h("p", { "data-testid": "api-key-state", "aria-live": "polite" });
  const describe = () => {
    state.textContent = storedKey()
      ? "A key is stored in this browser and sent with every request."
      : "No key is stored: requests go without one, which the API accepts only on its own machine (OPTBENCH_AUTH=loopback).";
  };
  const keep = (value) => {
    storeKey(value);
    input.value = "";
    describe();
    announce(value ? "API key saved" : "API key forgotten");
  };
  const form = h(
    "form",
    {
      class: "key-form",
      onsubmit: (event) => {
        event.preventDefault();
        if (input.value.trim()) keep(input.value.trim());
      },
    },
    h("label", { for: "api-key", class: "field-label" }, "API key"),
    input,
    h(
      "div",
      { class: "actions" },
      h("button", { type: "submit", "data-testid": "api-key-save" }, "Save"),
      h("button", { type: "button", class: "secondary", onclick: () => keep("") }, "Forget"),
    ),
  );
  show(
    h("h1", {}, "API key"),
    h(
      "p",
      {},
      "From another machine, or when the API runs with OPTBENCH_AUTH=required, every /v1 request needs a key: ",
      h("code", {}, "optbench keys create --owner NAME"),
      ". It is kept in this browser's local storage and sent as an Authorization header; you see the jobs of its owner.",
    ),
    state,
    form,
  );
  describe();
  focusHeading();
  return { stop() {} };
}
