// Building the page: h() makes an element, show() puts a view in <main>, announce() speaks
// to screen readers through the polite live region of index.html.

export const main = document.getElementById("main");
const announcer = document.getElementById("announce");

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

/** An element: h("a", {href: "#/", onclick: f, text: "x"}, ...children). Null children are skipped. */
export function h(tag, attrs, ...children) {
  return append(setAttrs(document.createElement(tag), attrs), children);
}

export function announce(message) {
  announcer.textContent = message;
}

export function show(...nodes) {
  main.replaceChildren(...nodes.filter(Boolean));
}

/** Move focus to the view's heading, so that a screen reader reads where a route went. */
export function focusHeading() {
  const heading = main.querySelector("h1");
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: true });
  }
}
