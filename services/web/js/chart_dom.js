// DOM helpers of the chart modules (charts.js, suite_charts.js): elements, downloads, legend
// swatches and a chart's PNG. Separate from dom.js because the HTML reports inline the
// chart modules alone (services/report/assets.py), without the web page's other modules.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (key === "on") for (const [event, fn] of Object.entries(value)) node.addEventListener(event, fn);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined && child !== false) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

export function download(name, blob) {
  const link = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

export function swatch(colour, dash) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", "26");
  svg.setAttribute("height", "10");
  svg.setAttribute("aria-hidden", "true");
  const line = document.createElementNS(ns, "line");
  for (const [k, v] of Object.entries({ x1: 1, y1: 5, x2: 25, y2: 5, stroke: colour })) {
    line.setAttribute(k, String(v));
  }
  line.setAttribute("stroke-width", "2.5");
  if (dash.length) line.setAttribute("stroke-dasharray", dash.join(" "));
  svg.append(line);
  return svg;
}

/** uPlot `u`'s canvas as a PNG-ready canvas: `title` above, a legend of `legend`
 * ([{label, colour}], the curves shown) below, on white. */
export function pngOf(u, title, legend) {
  const ratio = uPlot.pxRatio;
  const source = u.ctx.canvas;
  const head = 28 * ratio;
  const foot = 24 * ratio;
  const canvas = document.createElement("canvas");
  canvas.width = source.width;
  canvas.height = source.height + head + foot;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#222";
  ctx.font = `600 ${14 * ratio}px system-ui, sans-serif`;
  ctx.fillText(title, 8 * ratio, 19 * ratio);
  ctx.drawImage(source, 0, head);
  let x = 8 * ratio;
  ctx.font = `${11 * ratio}px system-ui, sans-serif`;
  for (const { label, colour } of legend) {
    ctx.fillStyle = colour;
    ctx.fillRect(x, canvas.height - 14 * ratio, 16 * ratio, 3 * ratio);
    ctx.fillStyle = "#222";
    ctx.fillText(label, x + 20 * ratio, canvas.height - 9 * ratio);
    x += (28 + label.length * 7) * ratio;
  }
  return canvas;
}
