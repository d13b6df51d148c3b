// Placeholder with the contract's export until the chart module lands (same commit series).
export function mountJobCharts(container, data) {
  container.textContent = "charts: not built yet";
  return { update() {}, destroy() { container.replaceChildren(); } };
}
