// How numbers, times and progress read on the page ("—" for a value that is not there).

export const dash = "—";

const missing = (value) => value === null || value === undefined || !Number.isFinite(value);

export function fmtNumber(value, digits = 4) {
  if (missing(value)) return dash;
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(2);
  return value.toFixed(digits);
}

export function fmtPercent(value) {
  if (missing(value)) return dash;
  return `${(value * 100).toFixed(2)}%`;
}

export function fmtSteps(value) {
  if (value === null || value === undefined) return dash;
  return Number.isInteger(value) ? value.toLocaleString("en") : value.toFixed(1);
}

export function fmtSeconds(value) {
  if (missing(value)) return dash;
  if (value < 10) return `${value.toFixed(2)} s`;
  if (value < 120) return `${value.toFixed(1)} s`;
  const minutes = Math.floor(value / 60);
  return `${minutes} min ${Math.round(value - minutes * 60)} s`;
}

export function parseTime(iso) {
  if (!iso) return null;
  // The API's timestamps are UTC; one without an offset is read as UTC, not local time.
  const hasZone = /[zZ]|[+-]\d\d:?\d\d$/.test(iso);
  const date = new Date(hasZone ? iso : `${iso}Z`);
  return Number.isNaN(date.getTime()) ? null : date;
}

export function fmtTime(iso) {
  const date = parseTime(iso);
  return date ? date.toLocaleString() : dash;
}

/** Started to finished, or to now while the job runs; a dash before it starts. */
export function fmtDuration(job) {
  const start = parseTime(job.started_at);
  if (!start) return dash;
  const end = parseTime(job.finished_at) || new Date();
  return fmtSeconds(Math.max(0, (end - start) / 1000));
}

export function progressText(progress) {
  const done = (progress.steps_done || 0).toLocaleString("en");
  if (!progress.total_steps) return `${done} steps`;
  const pct = progress.fraction === null ? "" : ` (${Math.floor(progress.fraction * 100)}%)`;
  return `${done} / ${progress.total_steps.toLocaleString("en")} steps${pct}`;
}
