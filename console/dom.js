// @ts-check
/**
 * Building the page without HTML strings: every value from the server goes in as text,
 * never markup, so nothing a user chose (a handle, a room id) can become script. The
 * page's Trusted Types policy refuses innerHTML anyway.
 */

/**
 * @param {string} tag
 * @param {Record<string, string | boolean | ((ev: Event) => void)>} [props] `on…` handlers, `text`, attributes
 * @param {...(Node | string)} children
 * @returns {HTMLElement}
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (typeof value === "function") node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = String(value);
    else if (value === true) node.setAttribute(name, "");
    else if (value !== false) node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

/** The element with this id; a missing one is a bug in index.html. @param {string} id */
export function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`the page has no #${id}`);
  return node;
}

/** A table body's rows replaced; an empty list shows `empty` across the table. */
export function fillTable(/** @type {string} */ id, /** @type {HTMLElement[]} */ rows, /** @type {string} */ empty) {
  const table = byId(id);
  const body = table.querySelector("tbody") ?? table.appendChild(el("tbody"));
  const columns = table.querySelectorAll("thead th").length || 1;
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: String(columns), text: empty }))]));
}

/** @param {number} ms */
export function when(ms) {
  return new Date(ms).toISOString().replace("T", " ").slice(0, 16);
}

/** A key shown short, in full on hover and in the copyable text. @param {string} hex */
export function keyText(hex) {
  return el("code", { title: hex, text: `${hex.slice(0, 12)}…` });
}

/** Shows one element and hides another (either may be omitted). @param {HTMLElement | null} on @param {HTMLElement | null} [off] */
export function swap(on, off) {
  if (on) on.hidden = false;
  if (off) off.hidden = true;
}
