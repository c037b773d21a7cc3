// Formatting and DOM helpers shared by every panel. Data only ever reaches the
// page as text nodes or attribute values, never as HTML.

const CURRENCY = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });
const NUMBER = new Intl.NumberFormat("en-US");
const TIME = new Intl.DateTimeFormat("en-GB", {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});

export function money(cents) {
  return CURRENCY.format(Number(cents) / 100);
}

export function count(n) {
  return NUMBER.format(n);
}

export function signed(n) {
  if (n > 0) return `+${count(n)}`;
  if (n < 0) return `\u2212${count(-n)}`;
  return "0";
}

export function clock(iso) {
  const date = iso ? new Date(iso) : new Date();
  return Number.isNaN(date.getTime()) ? "" : TIME.format(date);
}

/** "4:05" for a number of seconds; "0:00" once it is over. */
export function countdown(seconds) {
  const s = Math.max(0, Math.ceil(seconds));
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  if (hours > 0) return `${hours}:${String(minutes).padStart(2, "0")}:${rest}`;
  return `${minutes}:${rest}`;
}

/** The fee exactly as the server rounds it: integer basis points, half away from zero. */
export function feeCents(subtotal, feeRate) {
  const bps = Math.round(feeRate * 10000);
  return Math.floor((subtotal * bps + 5000) / 10000);
}

/**
 * Build an element: h("td", { class: "num", dataset: { sku } }, "text", child).
 * Strings become text nodes; null, undefined and false children are skipped.
 */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "testid") node.dataset.testid = value;
    else if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : String(child));
  }
}

/** Restart a one-shot CSS animation class, even if it is still running. */
export function flash(node, className = "is-flashing") {
  node.classList.remove(className);
  void node.offsetWidth;
  node.classList.add(className);
}
