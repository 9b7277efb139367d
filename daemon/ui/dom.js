// Building the page. This module is the only one that creates elements or sets attributes, and
// it never parses HTML: every string becomes a text node (`document.createTextNode`), so data
// from the API (payloads, errors, model outputs) is shown as text whatever it contains. Links
// may point only inside the console (`#/...`) or at this daemon (`/...`); event handlers are
// functions, never attribute strings. The daemon's unit test `scripts_never_parse_data_as_html`
// holds the other modules to this (no HTML-parsing property or call, no attribute set outside
// this file).

/** Attributes `h` may set; anything else is a programming error. */
const ALLOWED_ATTRIBUTES = new Set([
  "class", "id", "href", "title", "type", "name", "value", "for", "placeholder", "colspan",
  "rowspan", "autocomplete", "role", "aria-label", "aria-current", "open", "selected", "required",
  "min", "max", "step", "download", "data-page", "data-state", "data-outcome", "data-step",
  "data-rate", "data-worker", "data-group", "data-file",
]);

/**
 * An element: `h("a", { href: "#/jobs", class: "x", on: { click: f } }, "text", child, [more])`.
 * Children may be strings, numbers, nodes, arrays of them, or null/false/undefined (skipped).
 */
export function h(tag, attributes, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (key === "on") {
      for (const [event, handler] of Object.entries(value)) {
        if (typeof handler !== "function") throw new Error(`handler for ${event} is not a function`);
        element.addEventListener(event, handler);
      }
      continue;
    }
    if (!ALLOWED_ATTRIBUTES.has(key)) throw new Error(`attribute ${key} is not allowed`);
    if (value === null || value === undefined || value === false) continue;
    if (key === "href") {
      element.setAttribute("href", localHref(String(value)));
      continue;
    }
    element.setAttribute(key, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

/** Appends children (see `h`) to a node. */
export function append(parent, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Replaces a node's children. */
export function replace(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

/** A link inside the console: `route(["jobs", id])` is `#/jobs/<id>`, segments encoded. */
export function route(segments, query) {
  const path = segments.map((segment) => encodeURIComponent(String(segment))).join("/");
  const search = query ? queryString(query) : "";
  return `#/${path}${search ? `?${search}` : ""}`;
}

/** `a=1&b=x`, leaving out empty values. */
export function queryString(query) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== null && value !== undefined && value !== "") params.set(key, String(value));
  }
  return params.toString();
}

/** `<a href="#/...">text</a>` from route segments. */
export function link(segments, text, query) {
  return h("a", { href: route(segments, query) }, text);
}

/** Text in a `<code>` element. */
export function code(text) {
  return h("code", {}, text);
}

/** A preformatted block (monospace, kept whitespace). */
export function pre(text, className) {
  return h("pre", { class: className || null }, text);
}

/** A small coloured label (`kind` selects the colour in console.css). */
export function badge(text, kind) {
  return h("span", { class: `badge ${kind ? `badge-${kind}` : ""}`.trim() }, text);
}

/** A table from column titles and rows of cells (each cell anything `append` takes). */
export function table(columns, rows, options) {
  const head = h("thead", {}, h("tr", {}, columns.map((title) => h("th", {}, title))));
  const body = h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell) => h("td", {}, cell)))));
  const element = h("table", { class: (options && options.class) || null }, head, body);
  if (rows.length === 0) {
    body.appendChild(h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, (options && options.empty) || "none")));
  }
  return element;
}

/** A definition list of `[term, value]` pairs; pairs whose value is null are left out. */
export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs
    .filter(([, value]) => value !== null && value !== undefined && value !== "")
    .map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
}

/** A titled section. */
export function section(title, ...children) {
  return h("section", { class: "panel" }, h("h2", {}, title), children);
}

/** A horizontal bar whose width is `fraction` (0..1) of its track. */
export function bar(fraction, kind) {
  const fill = h("span", { class: `bar-fill ${kind ? `bar-${kind}` : ""}`.trim() });
  // Width through the CSSOM: allowed by the page's style-src 'self' policy, unlike a style
  // attribute.
  fill.style.width = `${Math.max(0, Math.min(1, Number(fraction) || 0)) * 100}%`;
  return h("span", { class: "bar" }, fill);
}

/** How long a downloaded file's `blob:` URL (and its bytes) is kept. */
const BLOB_URL_LIFETIME_MS = 60000;

/**
 * Saves `blob` as a file named `filename` (the browser's download), through a `blob:` URL of this
 * page's own making: the one link `h` would refuse, so it is built here and never shown.
 */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const anchor = document.createElement("a");
  anchor.href = url;
  anchor.download = filename;
  document.body.appendChild(anchor);
  anchor.click();
  anchor.remove();
  // Revoked later, not at once: the browser reads the blob after click() returns, and an
  // unrevoked URL would keep the bytes in memory until the tab closes.
  setTimeout(() => URL.revokeObjectURL(url), BLOB_URL_LIFETIME_MS);
}

/** Only links inside the console or to this daemon: `#/...` or `/...` (not `//host`). */
function localHref(value) {
  if (value.startsWith("#") || (value.startsWith("/") && !value.startsWith("//"))) return value;
  throw new Error(`refusing a link outside the console: ${value}`);
}
