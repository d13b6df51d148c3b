// optbench web page: a single-page app over the HTTP API, ES modules, no build step.
//
// Hash routes: #/ the jobs (#/?name=..&dataset=..&model=..&status=.. filtered), #/jobs/<id>
// one job, #/new the form, #/key the API key, #/compare?jobs=<id>,<id> jobs side by side,
// #/history/<label>?dataset=.. one optimizer label over the jobs, #/suites the caller's
// suites, #/suites/<id> one suite. Every request goes to this origin's /v1 API (api.js);
// views that show something running poll it. Each view returns {stop()}, called when the
// route changes.

import { keyHeaders, storedKey } from "./api.js";
import { compareView } from "./compare.js";
import { announce, focusHeading, h, main, show } from "./dom.js";
import { formView } from "./form.js";
import { historyView } from "./history.js";
import { jobView } from "./job.js";
import { keyView } from "./key.js";
import { listView } from "./list.js";
import { suiteView } from "./suite.js";
import { suitesView } from "./suites.js";

let current = null; // the view on screen

function notFoundView(path) {
  document.title = "Not found · optbench";
  show(
    h("h1", {}, "Page not found"),
    h("p", {}, "Nothing at ", h("code", {}, path), ". ", h("a", { href: "#/" }, "See the jobs"), "."),
  );
  focusHeading();
  return { stop() {} };
}

/** "#/jobs/x?a=1" → {path: "/jobs/x", params: URLSearchParams("a=1")}. */
function parseHash(hash) {
  const raw = hash.replace(/^#/, "");
  const at = raw.indexOf("?");
  const path = decodeURIComponent(at < 0 ? raw : raw.slice(0, at)) || "/";
  return { path, params: new URLSearchParams(at < 0 ? "" : raw.slice(at + 1)) };
}

function route() {
  if (current) current.stop();
  current = null;
  const { path, params } = parseHash(location.hash);
  const jobMatch = path.match(/^\/jobs\/([0-9a-fA-F-]{32,36})\/?$/);
  const suiteMatch = path.match(/^\/suites\/([0-9a-fA-F-]{32,36})\/?$/);
  const section = path === "/new" || path === "/key" ? `#${path}` : path.startsWith("/suites") ? "#/suites" : "#/";
  for (const link of document.querySelectorAll("header nav a")) {
    if (link.getAttribute("href") === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (path === "/") current = listView(params);
  else if (path === "/new") current = formView();
  else if (path === "/key") current = keyView();
  else if (jobMatch) current = jobView(jobMatch[1]);
  else if (path === "/suites") current = suitesView();
  else if (suiteMatch) current = suiteView(suiteMatch[1]);
  else if (path === "/compare") current = compareView(params);
  else if (path.startsWith("/history/")) current = historyView(path.slice("/history/".length), params);
  else current = notFoundView(path);
}

// Links to API documents (report, JSON): a navigation sends no Authorization header, so with
// a stored key they are fetched with it and saved as files instead.
document.addEventListener("click", async (event) => {
  const link = event.target instanceof Element ? event.target.closest("a[data-api-link]") : null;
  if (!link || !storedKey()) return;
  event.preventDefault();
  const response = await fetch(link.getAttribute("href"), { headers: keyHeaders() });
  if (!response.ok) {
    announce(`HTTP ${response.status}`);
    return;
  }
  const saving = h("a", { href: URL.createObjectURL(await response.blob()), download: link.dataset.apiLink });
  saving.click();
  setTimeout(() => URL.revokeObjectURL(saving.href), 10000);
});

document.querySelector("[data-skip]").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});
window.addEventListener("hashchange", route);
route();
