// optbench web page: a single-page app over the HTTP API, no library, no build step.
//
// Hash routes: #/ the jobs, #/jobs/<id> one job (curves, summary, runs), #/new the form,
// #/key the API key. Every request goes to this origin's /v1 API, with the API key stored in
// this browser if there is one (none is needed on the API's own machine under
// OPTBENCH_AUTH=loopback); pages that show a running job poll it.
"use strict";

(() => {
  const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
  const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
  const LIST_REFRESH_MS = 2000;
  const JOB_REFRESH_MS = 1000;
  const MAX_POINTS = 500;
  // Tableau 10: distinguishable, and readable on light and dark backgrounds.
  const PALETTE = [
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
  ];
  const DASHES = ["", "6 3", "2 3", "8 3 2 3"];
  const PRESET_TITLES = { lecture: "Lecture: 8 optimizers on digits" };
  const SVG_NS = "http://www.w3.org/2000/svg";
  const KEY_STORE = "optbench.apiKey";

  const main = document.getElementById("main");
  const announcer = document.getElementById("announce");
  let current = null; // the view on screen: {stop()}

  // ---------------------------------------------------------------- DOM helpers

  function append(parent, children) {
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      if (Array.isArray(child)) append(parent, child);
      else parent.append(child instanceof Node ? child : String(child));
    }
    return parent;
  }

  function setAttrs(node, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    return node;
  }

  function h(tag, attrs, ...children) {
    return append(setAttrs(document.createElement(tag), attrs), children);
  }

  function s(tag, attrs, ...children) {
    return append(setAttrs(document.createElementNS(SVG_NS, tag), attrs), children);
  }

  function announce(message) {
    announcer.textContent = message;
  }

  function show(...nodes) {
    main.replaceChildren(...nodes.filter(Boolean));
  }

  // ---------------------------------------------------------------- formatting

  const dash = "—";

  function fmtNumber(value, digits = 4) {
    if (value === null || value === undefined || !Number.isFinite(value)) return dash;
    const abs = Math.abs(value);
    if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(2);
    return value.toFixed(digits);
  }

  function fmtPercent(value) {
    if (value === null || value === undefined || !Number.isFinite(value)) return dash;
    return `${(value * 100).toFixed(2)}%`;
  }

  function fmtSteps(value) {
    if (value === null || value === undefined) return dash;
    return Number.isInteger(value) ? value.toLocaleString("en") : value.toFixed(1);
  }

  function fmtSeconds(value) {
    if (value === null || value === undefined || !Number.isFinite(value)) return dash;
    if (value < 10) return `${value.toFixed(2)} s`;
    if (value < 120) return `${value.toFixed(1)} s`;
    const minutes = Math.floor(value / 60);
    return `${minutes} min ${Math.round(value - minutes * 60)} s`;
  }

  function parseTime(iso) {
    if (!iso) return null;
    // The API's timestamps are UTC; one without an offset is read as UTC, not local time.
    const hasZone = /[zZ]|[+-]\d\d:?\d\d$/.test(iso);
    const date = new Date(hasZone ? iso : `${iso}Z`);
    return Number.isNaN(date.getTime()) ? null : date;
  }

  function fmtTime(iso) {
    const date = parseTime(iso);
    return date ? date.toLocaleString() : dash;
  }

  function fmtDuration(job) {
    const start = parseTime(job.started_at);
    if (!start) return dash;
    const end = parseTime(job.finished_at) || new Date();
    return fmtSeconds(Math.max(0, (end - start) / 1000));
  }

  function progressText(progress) {
    const done = (progress.steps_done || 0).toLocaleString("en");
    if (!progress.total_steps) return `${done} steps`;
    const pct = progress.fraction === null ? "" : ` (${Math.floor(progress.fraction * 100)}%)`;
    return `${done} / ${progress.total_steps.toLocaleString("en")} steps${pct}`;
  }

  // ---------------------------------------------------------------- HTTP

  function storedKey() {
    try {
      return localStorage.getItem(KEY_STORE) || "";
    } catch (error) {
      return "";
    }
  }

  function keyHeaders() {
    const key = storedKey();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  async function api(path, options = {}) {
    let response;
    try {
      response = await fetch(path, {
        ...options,
        headers: { Accept: "application/json", ...keyHeaders(), ...(options.headers || {}) },
      });
    } catch (error) {
      return { ok: false, status: 0, body: { title: "The API cannot be reached", detail: String(error) } };
    }
    const type = response.headers.get("content-type") || "";
    let body = null;
    if (type.includes("json")) {
      try {
        body = await response.json();
      } catch (error) {
        body = null;
      }
    } else {
      body = { detail: await response.text() };
    }
    return { ok: response.ok, status: response.status, body };
  }

  function problemBox(result, testid = "problem") {
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

  // ---------------------------------------------------------------- small widgets

  function statusBadge(status, testid = "job-status") {
    return h("span", {
      class: `status status-${status}`,
      "data-testid": testid,
      "data-status": status,
      text: status,
    });
  }

  /** Set a <progress>: the fraction when known, indeterminate while steps run toward an unknown total. */
  function setProgress(bar, progress) {
    if (progress.fraction !== null && progress.fraction !== undefined) bar.value = progress.fraction;
    else if (progress.steps_done) bar.removeAttribute("value");
    else bar.value = 0;
  }

  function progressBar(progress, label, testid) {
    const bar = h("progress", { max: "1", "aria-label": label, "data-testid": testid });
    setProgress(bar, progress);
    return bar;
  }

  function colourFor(labels) {
    const map = new Map();
    labels.forEach((label, i) => {
      map.set(label, {
        colour: PALETTE[i % PALETTE.length],
        dash: DASHES[Math.floor(i / PALETTE.length) % DASHES.length],
      });
    });
    return map;
  }

  function swatch(style) {
    return s(
      "svg",
      {
        class: "swatch",
        viewBox: "0 0 24 10",
        width: "24",
        height: "10",
        "aria-hidden": "true",
        focusable: "false",
      },
      s("line", {
        x1: "1",
        y1: "5",
        x2: "23",
        y2: "5",
        stroke: style.colour,
        "stroke-width": "3",
        "stroke-dasharray": style.dash || null,
        "stroke-linecap": "round",
      }),
    );
  }

  // ---------------------------------------------------------------- charts (inline SVG)

  const CHART = { width: 640, height: 340, left: 64, right: 18, top: 16, bottom: 46 };

  function niceStep(span, count) {
    const raw = span / Math.max(1, count);
    const power = 10 ** Math.floor(Math.log10(raw));
    const unit = raw / power;
    return (unit <= 1 ? 1 : unit <= 2 ? 2 : unit <= 5 ? 5 : 10) * power;
  }

  function linearTicks(lo, hi, count = 5, integer = false) {
    if (lo === hi) {
      lo -= 0.5;
      hi += 0.5;
    }
    const step = integer ? Math.max(1, niceStep(hi - lo, count)) : niceStep(hi - lo, count);
    const start = Math.floor(lo / step) * step;
    const end = Math.ceil(hi / step) * step;
    const ticks = [];
    for (let v = start; v <= end + step / 2; v += step) ticks.push(Number(v.toPrecision(12)));
    return { lo: start, hi: end, ticks };
  }

  function logTicks(lo, hi) {
    const a = Math.floor(Math.log10(lo));
    let b = Math.ceil(Math.log10(hi));
    if (a === b) b += 1;
    const span = b - a;
    // 1-2-5 ticks over a narrow range, every decade (or every other one) over a wide one.
    const multipliers = span <= 2 ? [1, 2, 5] : [1];
    const every = span > 8 ? 2 : 1;
    const candidates = [];
    for (let p = a; p <= b; p += 1) {
      for (const m of multipliers) candidates.push(Number((m * 10 ** p).toPrecision(12)));
    }
    const lower = Math.max(...candidates.filter((v) => v <= lo));
    let upper = Math.min(...candidates.filter((v) => v >= hi));
    if (upper <= lower) upper = lower * 10;
    const ticks = candidates.filter(
      (v) => v >= lower && v <= upper && (every === 1 || Math.round(Math.log10(v)) % every === 0),
    );
    return { lo: lower, hi: upper, ticks };
  }

  function tickLabel(value, log) {
    if (value === 0) return "0";
    const abs = Math.abs(value);
    if (log && (abs < 1e-3 || abs >= 1e4)) {
      const exponent = Math.round(Math.log10(abs));
      const mantissa = value / 10 ** exponent;
      return `${Math.abs(mantissa - 1) < 1e-9 ? "" : `${Math.round(mantissa)}×`}1e${exponent}`;
    }
    if (abs >= 1e4) return value.toExponential(0);
    return String(Number(value.toPrecision(6)));
  }

  function downsample(xs, ys, limit) {
    if (xs.length <= limit) return [xs, ys];
    const stride = xs.length / limit;
    const ox = [];
    const oy = [];
    for (let i = 0; i < limit; i += 1) {
      const j = Math.floor(i * stride);
      ox.push(xs[j]);
      oy.push(ys[j]);
    }
    ox.push(xs[xs.length - 1]);
    oy.push(ys[ys.length - 1]);
    return [ox, oy];
  }

  /**
   * A line chart: series [{label, seed, style, x: [...], y: [...], lo?, hi?}].
   * log: logarithmic y axis (non-positive values are gaps). markers: dots at each point.
   * reference: {value} a dashed horizontal line (the target). integerX: whole-number x ticks.
   */
  function lineChart({
    title,
    xLabel,
    yLabel,
    series,
    log = false,
    markers = false,
    reference = null,
    integerX = false,
    testid,
  }) {
    const { width, height, left, right, top, bottom } = CHART;
    const plotW = width - left - right;
    const plotH = height - top - bottom;
    const usable = (v) => v !== null && v !== undefined && Number.isFinite(v) && (!log || v > 0);

    let xmin = Infinity;
    let xmax = -Infinity;
    let ymin = Infinity;
    let ymax = -Infinity;
    for (const line of series) {
      line.x.forEach((x, i) => {
        const y = line.y[i];
        if (!usable(y) || !Number.isFinite(x)) return;
        xmin = Math.min(xmin, x);
        xmax = Math.max(xmax, x);
        ymin = Math.min(ymin, y);
        ymax = Math.max(ymax, y);
      });
    }
    if (reference && usable(reference.value) && Number.isFinite(ymin)) {
      ymin = Math.min(ymin, reference.value);
      ymax = Math.max(ymax, reference.value);
    }

    const svg = s("svg", {
      class: "chart",
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-labelledby": `${testid}-title`,
      "data-testid": testid,
      preserveAspectRatio: "xMidYMid meet",
    });
    svg.append(s("title", { id: `${testid}-title` }, title));

    if (!Number.isFinite(xmin)) {
      svg.append(
        s("rect", { x: left, y: top, width: plotW, height: plotH, class: "plot-area" }),
        s(
          "text",
          { x: left + plotW / 2, y: top + plotH / 2, class: "chart-empty", "text-anchor": "middle" },
          "waiting for data…",
        ),
      );
      svg.dataset.points = "0";
      return svg;
    }

    const xs = linearTicks(xmin, xmax === xmin ? xmin + 1 : xmax, 6, integerX);
    const ys = log ? logTicks(ymin, ymax) : linearTicks(ymin, ymax, 5);
    const ty = log
      ? (v) =>
          top +
          plotH -
          ((Math.log10(v) - Math.log10(ys.lo)) / (Math.log10(ys.hi) - Math.log10(ys.lo))) * plotH
      : (v) => top + plotH - ((v - ys.lo) / (ys.hi - ys.lo)) * plotH;
    const tx = (v) => left + ((v - xs.lo) / (xs.hi - xs.lo)) * plotW;
    const r = (v) => Math.round(v * 10) / 10;

    const grid = s("g", { class: "grid", "aria-hidden": "true" });
    for (const v of ys.ticks) {
      const y = r(ty(v));
      grid.append(
        s("line", { x1: left, x2: left + plotW, y1: y, y2: y }),
        s("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, tickLabel(v, log)),
      );
    }
    for (const v of xs.ticks) {
      const x = r(tx(v));
      grid.append(
        s("line", { x1: x, x2: x, y1: top, y2: top + plotH }),
        s("text", { x, y: top + plotH + 16, "text-anchor": "middle" }, tickLabel(v, false)),
      );
    }
    svg.append(
      s("rect", { x: left, y: top, width: plotW, height: plotH, class: "plot-area" }),
      grid,
      s("text", { class: "axis-label", x: left + plotW / 2, y: height - 6, "text-anchor": "middle" }, xLabel),
      s(
        "text",
        {
          class: "axis-label",
          x: 14,
          y: top + plotH / 2,
          "text-anchor": "middle",
          transform: `rotate(-90 14 ${top + plotH / 2})`,
        },
        yLabel,
      ),
    );

    const clipId = `${testid}-clip`;
    svg.append(
      s(
        "defs",
        {},
        s("clipPath", { id: clipId }, s("rect", { x: left, y: top - 2, width: plotW, height: plotH + 4 })),
      ),
    );
    const plot = s("g", { "clip-path": `url(#${clipId})` });

    if (reference && usable(reference.value)) {
      const y = r(ty(reference.value));
      plot.append(s("line", { class: "reference", x1: left, x2: left + plotW, y1: y, y2: y }));
    }

    let points = 0;
    for (const line of series) {
      // A min/max band (from a downsampling server) under the line.
      if (line.lo && line.hi) {
        const upper = [];
        const lower = [];
        line.x.forEach((x, i) => {
          if (usable(line.hi[i]) && usable(line.lo[i])) {
            upper.push(`${r(tx(x))},${r(ty(line.hi[i]))}`);
            lower.push(`${r(tx(x))},${r(ty(line.lo[i]))}`);
          }
        });
        if (upper.length > 1) {
          plot.append(
            s("path", {
              class: "band",
              "data-role": "band",
              "data-label": line.label,
              d: `M${upper.join("L")}L${lower.reverse().join("L")}Z`,
              fill: line.style.colour,
            }),
          );
        }
      }
      let d = "";
      let pen = false;
      const dots = [];
      line.x.forEach((x, i) => {
        const y = line.y[i];
        if (!usable(y) || !Number.isFinite(x)) {
          pen = false;
          return;
        }
        const px = r(tx(x));
        const py = r(ty(y));
        d += `${pen ? "L" : "M"}${px},${py}`;
        pen = true;
        points += 1;
        if (markers) dots.push(s("circle", { cx: px, cy: py, r: "3", fill: line.style.colour }));
      });
      const name = line.seeds > 1 ? `${line.label} (seed ${line.seed})` : line.label;
      const path = s(
        "path",
        {
          class: "series",
          d: d || "M0,0",
          stroke: line.style.colour,
          "stroke-dasharray": line.style.dash || null,
          "data-testid": "series-path",
          "data-label": line.label,
          "data-seed": line.seed,
        },
        s("title", {}, name),
      );
      plot.append(path);
      if (dots.length)
        plot.append(s("g", { class: "markers", "data-label": line.label, "aria-hidden": "true" }, dots));
    }
    svg.append(plot);
    svg.dataset.points = String(points);
    return svg;
  }

  // ---------------------------------------------------------------- router

  function route() {
    if (current) current.stop();
    current = null;
    const hash = decodeURIComponent(location.hash.replace(/^#/, "")) || "/";
    const jobMatch = hash.match(/^\/jobs\/([0-9a-fA-F-]{32,36})\/?$/);
    const section = hash === "/new" || hash === "/key" ? `#${hash}` : "#/";
    for (const link of document.querySelectorAll("header nav a")) {
      if (link.getAttribute("href") === section) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    if (hash === "/" || hash === "") current = listView();
    else if (hash === "/new") current = formView();
    else if (hash === "/key") current = keyView();
    else if (jobMatch) current = jobView(jobMatch[1]);
    else current = notFoundView(hash);
  }

  function focusHeading() {
    const heading = main.querySelector("h1");
    if (heading) {
      heading.setAttribute("tabindex", "-1");
      heading.focus({ preventScroll: true });
    }
  }

  /** Call tick() now and again `every` ms after each one ends, until stop() or it returns false. */
  function poller(tick, every) {
    let stopped = false;
    let timer = null;
    const loop = async () => {
      if (stopped) return;
      let again = true;
      if (!document.hidden) {
        try {
          again = (await tick(() => stopped)) !== false;
        } catch (error) {
          console.warn("optbench: refresh failed", error);
        }
      }
      if (!stopped && again) timer = setTimeout(loop, every);
    };
    loop();
    return {
      stop() {
        stopped = true;
        clearTimeout(timer);
      },
    };
  }

  // ---------------------------------------------------------------- #/  jobs

  function listView() {
    document.title = "Jobs · optbench";
    const state = { status: "", offset: 0, limit: 25 };
    const rows = new Map();
    const tbody = h("tbody");
    const count = h("p", { class: "muted", "data-testid": "jobs-count", "aria-live": "polite" });
    const empty = h(
      "p",
      { class: "empty", "data-testid": "jobs-empty", hidden: true },
      "No jobs yet. ",
      h("a", { href: "#/new" }, "Submit one"),
      " — the lecture preset compares eight optimizers in a few seconds.",
    );
    const problemSlot = h("div");
    const filter = h(
      "select",
      {
        id: "status-filter",
        "data-testid": "status-filter",
        onchange: () => {
          state.status = filter.value;
          state.offset = 0;
          refresh();
        },
      },
      h("option", { value: "" }, "all"),
      STATUSES.map((st) => h("option", { value: st }, st)),
    );
    const pager = h("div", { class: "pager" });
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
    const table = h(
      "table",
      { class: "jobs", "data-testid": "jobs-table" },
      h("caption", { class: "visually-hidden" }, "Jobs, newest first"),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Name", "Status", "Progress", "Runs", "Submitted"].map((t) => h("th", { scope: "col" }, t)),
        ),
      ),
      tbody,
    );

    show(
      h(
        "div",
        { class: "title-row" },
        h("h1", {}, "Jobs"),
        h("a", { class: "button", href: "#/new", "data-testid": "new-job" }, "New job"),
      ),
      h("div", { class: "toolbar" }, h("label", { for: "status-filter" }, "Status "), filter, count),
      problemSlot,
      empty,
      h("div", { class: "table-wrap" }, table),
      append(pager, [prev, next]),
    );
    focusHeading();

    let total = 0;
    function page(direction) {
      state.offset = Math.max(0, state.offset + direction * state.limit);
      refresh();
    }

    function rowFor(job) {
      let row = rows.get(job.id);
      if (!row) {
        const link = h("a", { href: `#/jobs/${job.id}`, "data-testid": "job-link" });
        const status = h("td");
        const bar = h("progress", { max: "1", "data-testid": "job-progress" });
        const text = h("span", { class: "progress-text" });
        const runs = h("td", { class: "num" });
        const created = h("td");
        const tr = h(
          "tr",
          { "data-testid": "job-row", "data-job-id": job.id },
          h("td", {}, link),
          status,
          h("td", { class: "progress-cell" }, bar, text),
          runs,
          created,
        );
        row = { tr, link, status, bar, text, runs, created, last: "" };
        rows.set(job.id, row);
      }
      const key = JSON.stringify([job.name, job.status, job.progress, job.runs.length]);
      if (key !== row.last) {
        row.last = key;
        row.link.textContent = job.name || job.id;
        row.status.replaceChildren(statusBadge(job.status));
        setProgress(row.bar, job.progress);
        row.bar.setAttribute("aria-label", `progress of ${job.name || job.id}`);
        row.text.textContent = progressText(job.progress);
        row.runs.textContent = String(job.runs.length);
        row.created.textContent = fmtTime(job.created_at);
      }
      return row.tr;
    }

    async function refresh(isStopped = () => false) {
      const params = new URLSearchParams({ limit: state.limit, offset: state.offset });
      if (state.status) params.set("status", state.status);
      const result = await api(`/v1/jobs?${params}`);
      if (isStopped()) return false;
      if (!result.ok) {
        problemSlot.replaceChildren(problemBox(result));
        return true;
      }
      problemSlot.replaceChildren();
      const { items } = result.body;
      total = result.body.total;
      const wanted = items.map(rowFor);
      const ids = new Set(items.map((job) => job.id));
      for (const [id, row] of rows) {
        if (!ids.has(id)) {
          row.tr.remove();
          rows.delete(id);
        }
      }
      const same =
        wanted.length === tbody.children.length && wanted.every((tr, i) => tbody.children[i] === tr);
      if (!same) tbody.replaceChildren(...wanted);
      empty.hidden = total !== 0 || state.status !== "";
      table.hidden = items.length === 0;
      const shown = items.length
        ? `${state.offset + 1}–${state.offset + items.length} of ${total}`
        : `0 of ${total}`;
      const countText = `${shown} job${total === 1 ? "" : "s"}`;
      if (count.textContent !== countText) count.textContent = countText;
      prev.disabled = state.offset === 0;
      next.disabled = state.offset + items.length >= total;
      pager.hidden = prev.disabled && next.disabled;
      return true;
    }

    return poller(refresh, LIST_REFRESH_MS);
  }

  // ---------------------------------------------------------------- #/jobs/<id>

  function jobView(id) {
    document.title = "Job · optbench";
    const hidden = new Set(); // labels switched off in the legend
    let labels = [];
    let styles = new Map();
    let lastStatus = null;
    let stepData = null;
    let epochData = null;
    let summaryData = null;
    let serverDownsamples = true;

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
    const legend = h("ul", {
      class: "legend",
      "data-testid": "legend",
      "aria-label": "Optimizers (select to hide or show a curve)",
    });
    const lossSlot = h("div", { class: "chart-slot" });
    const accSlot = h("div", { class: "chart-slot" });
    const accCaption = h("figcaption", { class: "muted", "data-testid": "accuracy-caption" });
    const accHeading = h("h2", { id: "acc-heading" }, "Validation accuracy per epoch");
    const summarySlot = h("div", { class: "table-wrap" });
    const runsSlot = h("div", { class: "table-wrap" });
    const specSlot = h("pre", { class: "spec", "data-testid": "job-spec" });
    const links = h(
      "p",
      { class: "links" },
      h(
        "a",
        {
          class: "button",
          href: `/v1/jobs/${id}/report`,
          "data-testid": "report-link",
          "data-api-link": `report-${id}.html`,
        },
        "HTML report",
      ),
      h(
        "a",
        { href: `/v1/jobs/${id}/summary`, "data-testid": "summary-json", "data-api-link": `summary-${id}.json` },
        "summary (JSON)",
      ),
      h(
        "a",
        {
          href: `/v1/jobs/${id}/metrics?granularity=step`,
          "data-testid": "metrics-json",
          "data-api-link": `steps-${id}.json`,
        },
        "step metrics (JSON)",
      ),
      h(
        "a",
        { href: `/v1/jobs/${id}/metrics?granularity=epoch`, "data-api-link": `epochs-${id}.json` },
        "epoch metrics (JSON)",
      ),
    );

    show(
      h("p", { class: "crumbs" }, h("a", { href: "#/" }, "← Jobs")),
      h("div", { class: "title-row" }, heading, statusSlot, cancelButton),
      meta,
      errorSlot,
      progressSlot,
      links,
      h(
        "section",
        { "aria-labelledby": "curves-heading", class: "curves" },
        h("h2", { id: "curves-heading", class: "visually-hidden" }, "Curves"),
        legend,
        h(
          "div",
          { class: "charts" },
          h(
            "figure",
            { "aria-labelledby": "loss-heading" },
            h("h2", { id: "loss-heading" }, "Training loss per step (log scale)"),
            lossSlot,
          ),
          h("figure", { "aria-labelledby": "acc-heading" }, accHeading, accSlot, accCaption),
        ),
      ),
      h(
        "section",
        { "aria-labelledby": "summary-heading" },
        h("h2", { id: "summary-heading" }, "Summary"),
        summarySlot,
      ),
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
      const items = [
        ["Job id", h("code", { text: job.id })],
        ["Submitted", fmtTime(job.created_at)],
        ["Started", fmtTime(job.started_at)],
        ["Finished", fmtTime(job.finished_at)],
        ["Duration", fmtDuration(job)],
        ["Device", job.device || dash],
      ];
      meta.replaceChildren(...items.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))));
      errorSlot.replaceChildren(
        job.error
          ? h(
              "div",
              { class: "problem", role: "alert", "data-testid": "job-error" },
              h("strong", {}, "Error: "),
              job.error,
            )
          : "",
      );
      progressSlot.replaceChildren(
        h("label", { for: "job-progress-bar" }, "Progress "),
        (() => {
          const bar = progressBar(job.progress, "job progress", "job-progress");
          bar.id = "job-progress-bar";
          return bar;
        })(),
        h("span", { class: "progress-text", "data-testid": "job-progress-text" }, progressText(job.progress)),
      );
      if (!specSlot.textContent) specSlot.textContent = JSON.stringify(job.spec, null, 2);
    }

    function renderLegend() {
      legend.replaceChildren(
        ...labels.map((label) => {
          const on = !hidden.has(label);
          return h(
            "li",
            { "data-testid": "legend-item", "data-label": label },
            h(
              "button",
              {
                type: "button",
                class: "legend-button",
                "aria-pressed": on ? "true" : "false",
                title: on ? `hide ${label}` : `show ${label}`,
                onclick: () => {
                  if (hidden.has(label)) hidden.delete(label);
                  else hidden.add(label);
                  renderLegend();
                  renderCharts();
                },
              },
              swatch(styles.get(label)),
              h("span", { class: "legend-label" }, label),
            ),
          );
        }),
      );
    }

    function seriesOf(data, xKey, yKey) {
      if (!data) return [];
      const seeds = new Map();
      for (const run of data.runs) seeds.set(run.label, (seeds.get(run.label) || 0) + 1);
      return data.runs
        .filter((run) => !hidden.has(run.label))
        .map((run) => {
          const col = run.series || {};
          let x = col[xKey] || (col[yKey] || []).map((_, i) => i + 1);
          let y = col[yKey] || [];
          if (!serverDownsamples) [x, y] = downsample(x, y, MAX_POINTS * 2);
          const band = serverDownsamples && col[`${yKey}_min`] && col[`${yKey}_max`];
          return {
            label: run.label,
            seed: run.seed,
            seeds: seeds.get(run.label),
            style: styles.get(run.label) || { colour: PALETTE[0], dash: "" },
            x,
            y,
            lo: band ? col[`${yKey}_min`] : null,
            hi: band ? col[`${yKey}_max`] : null,
          };
        });
    }

    function renderCharts() {
      const task = (summaryData && summaryData.task) || "classification";
      const metricName = task === "regression" ? "validation R²" : "validation accuracy";
      accHeading.textContent = `${metricName[0].toUpperCase()}${metricName.slice(1)} per epoch`;
      const target = summaryData && summaryData.target;
      const reference =
        target && (target.metric === "val_accuracy" || target.metric === "val_r2")
          ? { value: target.value }
          : null;
      accCaption.textContent = reference
        ? `Dashed line: the target, ${target.metric} ≥ ${target.value}.`
        : "";
      lossSlot.replaceChildren(
        lineChart({
          title: "Training loss per step, logarithmic scale, one line per optimizer",
          xLabel: "step",
          yLabel: "training loss",
          series: seriesOf(stepData, "step", "loss"),
          log: true,
          testid: "loss-chart",
        }),
      );
      accSlot.replaceChildren(
        lineChart({
          title: `${metricName} per epoch, one line per optimizer`,
          xLabel: "epoch",
          yLabel: metricName,
          series: seriesOf(epochData, "epoch", "val_accuracy"),
          markers: true,
          integerX: true,
          reference,
          testid: "accuracy-chart",
        }),
      );
    }

    function renderSummary() {
      if (!summaryData) return;
      const rows = summaryData.optimizers || [];
      const regression = summaryData.task === "regression";
      const hasRank = rows.some((row) => row.rank !== undefined && row.rank !== null);
      const target = summaryData.target || {};
      const columns = [
        [
          "Optimizer",
          (row) =>
            h(
              "span",
              { class: "label-cell" },
              swatch(styles.get(row.label) || { colour: PALETTE[0] }),
              row.label,
            ),
        ],
        ["Final train loss", (row) => fmtNumber(row.final_train_loss), "num"],
        [
          regression ? "Best val R²" : "Best val accuracy",
          (row) => (regression ? fmtNumber(row.best_val_accuracy) : fmtPercent(row.best_val_accuracy)),
          "num",
        ],
        ["Steps to target", (row) => fmtSteps(row.steps_to_target), "num"],
        ["Time to target", (row) => fmtSeconds(row.seconds_to_target), "num"],
        ["Reached", (row) => row.target_reached ?? dash, "num"],
        ["Diverged", (row) => String(row.diverged ?? 0), "num"],
      ];
      if (hasRank) columns.unshift(["Rank", (row) => row.rank ?? dash, "num"]);
      summarySlot.replaceChildren(
        h(
          "table",
          { class: "summary", "data-testid": "summary-table" },
          h(
            "caption",
            {},
            `Target: ${target.metric || "?"} ≥ ${target.value ?? "?"}`,
            FINISHED.has(lastStatus) ? "" : " (so far)",
          ),
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              columns.map(([title, , cls]) => h("th", { scope: "col", class: cls || null }, title)),
            ),
          ),
          h(
            "tbody",
            {},
            rows.map((row) =>
              h(
                "tr",
                { "data-testid": "summary-row", "data-label": row.label },
                columns.map(([, cell, cls], i) =>
                  i === (hasRank ? 1 : 0)
                    ? h("th", { scope: "row" }, cell(row))
                    : h("td", { class: cls || null }, cell(row)),
                ),
              ),
            ),
          ),
        ),
      );
    }

    function renderRuns(job) {
      runsSlot.replaceChildren(
        h(
          "table",
          { class: "runs", "data-testid": "runs-table" },
          h("caption", { class: "visually-hidden" }, "Runs: one per optimizer entry and seed"),
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ["Optimizer", "Seed", "Status", "Progress", "Diverged"].map((t) =>
                h("th", { scope: "col", class: t === "Seed" ? "num" : null }, t),
              ),
            ),
          ),
          h(
            "tbody",
            {},
            job.runs.map((run) => {
              const total = run.total_steps;
              const progress = {
                steps_done: run.steps_done,
                total_steps: total,
                fraction: total ? Math.min(1, run.steps_done / total) : null,
              };
              return h(
                "tr",
                { "data-testid": "run-row", "data-label": run.label, "data-seed": run.seed },
                h(
                  "th",
                  { scope: "row" },
                  h(
                    "span",
                    { class: "label-cell" },
                    swatch(styles.get(run.label) || { colour: PALETTE[0] }),
                    run.label,
                  ),
                ),
                h("td", { class: "num" }, String(run.seed)),
                h(
                  "td",
                  {},
                  statusBadge(run.status, "run-status"),
                  run.error ? h("div", { class: "run-error" }, run.error) : null,
                ),
                h(
                  "td",
                  { class: "progress-cell" },
                  progressBar(progress, `progress of ${run.label} seed ${run.seed}`, "run-progress"),
                  h("span", { class: "progress-text" }, progressText(progress)),
                ),
                h("td", {}, run.diverged ? h("span", { class: "status status-failed" }, "diverged") : "no"),
              );
            }),
          ),
        ),
      );
    }

    async function stepMetrics(isStopped) {
      const base = `/v1/jobs/${id}/metrics?granularity=step`;
      if (serverDownsamples) {
        const result = await api(`${base}&max_points=${MAX_POINTS}&fields=loss`);
        if (isStopped()) return null;
        if (result.ok) {
          const longest = Math.max(0, ...result.body.runs.map((run) => (run.series.step || []).length));
          if (longest > MAX_POINTS + 1) serverDownsamples = false; // the server ignored max_points
          return result.body;
        }
        if (result.status !== 422 && result.status !== 400) return stepData;
        serverDownsamples = false; // this server does not take the parameters
      }
      const result = await api(base);
      return result.ok ? result.body : stepData;
    }

    async function tick(isStopped) {
      const result = await api(`/v1/jobs/${id}`);
      if (isStopped()) return false;
      if (!result.ok) {
        if (result.status === 404) {
          show(
            h("p", { class: "crumbs" }, h("a", { href: "#/" }, "← Jobs")),
            h("h1", {}, "Job not found"),
            problemBox(result),
          );
          return false;
        }
        errorSlot.replaceChildren(problemBox(result));
        return true;
      }
      const job = result.body;
      const runLabels = [...new Set(job.runs.map((run) => run.label))];
      if (runLabels.join("\n") !== labels.join("\n")) {
        labels = runLabels;
        styles = colourFor(labels);
        renderLegend();
      }
      renderHeader(job);
      renderRuns(job);
      const started = job.status !== "queued";
      const [steps, epochs, summary] = await Promise.all([
        started ? stepMetrics(isStopped) : null,
        started ? api(`/v1/jobs/${id}/metrics?granularity=epoch`) : null,
        api(`/v1/jobs/${id}/summary`),
      ]);
      if (isStopped()) return false;
      if (steps) stepData = steps;
      if (epochs && epochs.ok) epochData = epochs.body;
      if (summary && summary.ok) summaryData = summary.body;
      if (lastStatus !== job.status) {
        if (lastStatus !== null) announce(`Job ${job.status}`);
        lastStatus = job.status;
      }
      renderCharts();
      renderSummary();
      main.dataset.jobStatus = job.status;
      return !FINISHED.has(job.status);
    }

    renderCharts();
    const handle = poller(tick, JOB_REFRESH_MS);
    return {
      stop() {
        handle.stop();
        delete main.dataset.jobStatus;
      },
    };
  }

  // ---------------------------------------------------------------- #/new

  const DRAFT_KEY = "optbench.draft";

  function formView() {
    document.title = "New job · optbench";
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
    });
    try {
      textarea.value = sessionStorage.getItem(DRAFT_KEY) || "";
    } catch (error) {
      textarea.value = "";
    }
    textarea.addEventListener("input", () => {
      try {
        sessionStorage.setItem(DRAFT_KEY, textarea.value);
      } catch (error) {
        /* private mode: no draft */
      }
    });
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

    let stopped = false;
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
          problemBox(
            { status: 0, body: { title: "The spec is not valid JSON", detail: error.message } },
            "json-error",
          ),
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

  async function loadCatalog(box) {
    box.replaceChildren(h("p", { class: "muted" }, "Loading…"));
    const result = await api("/v1/catalog");
    if (!result.ok) {
      box.replaceChildren(problemBox(result));
      return;
    }
    const params = (entry) =>
      Object.entries(entry.parameters || {}).map(([name, p]) =>
        h(
          "code",
          { title: p.description || "" },
          p.default === undefined ? name : `${name}=${JSON.stringify(p.default)}`,
        ),
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

  function keyView() {
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
      try {
        if (value) localStorage.setItem(KEY_STORE, value);
        else localStorage.removeItem(KEY_STORE);
      } catch (error) {
        /* storage disabled: nothing kept */
      }
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

  function notFoundView(hash) {
    document.title = "Not found · optbench";
    show(
      h("h1", {}, "Page not found"),
      h("p", {}, "Nothing at ", h("code", {}, hash), ". ", h("a", { href: "#/" }, "See the jobs"), "."),
    );
    focusHeading();
    return { stop() {} };
  }

  // ---------------------------------------------------------------- start

  document.querySelector("[data-skip]").addEventListener("click", (event) => {
    event.preventDefault();
    main.focus();
  });
  window.addEventListener("hashchange", route);
  route();
})();
