// The live stock table: one row per SKU, sorted by SKU, replaced by each
// snapshot and patched by each newer stock change.

import { count, flash, h, money } from "./format.js";

export class StockTable {
  constructor({ body, summary, filter, onManage }) {
    this.body = body;
    this.summary = summary;
    this.onManage = onManage;
    this.rows = new Map(); // sku -> { product, origin, tr }
    this.gone = new Map(); // sku -> { id, version } of deleted products, so late news cannot revive them
    this.listeners = new Set();
    this.query = "";
    this.loaded = false;
    filter.addEventListener("input", () => {
      this.query = filter.value.trim().toLowerCase();
      for (const row of this.rows.values()) this.applyFilter(row);
      this.renderEmpty();
    });
  }

  /** Rows offer "Manage" only to callers who may change the catalog. */
  setManageable(on) {
    this.body.closest("table").dataset.manage = on ? "on" : "off";
  }

  /** Call fn(products) now and after every change of the catalog. */
  subscribe(fn) {
    this.listeners.add(fn);
    fn(this.products());
  }

  products() {
    return [...this.rows.values()].map((row) => row.product).sort(bySku);
  }

  get(sku) {
    return this.rows.get(sku)?.product;
  }

  /** A snapshot is the whole truth: rows not in it go, the rest are replaced. */
  replace(products) {
    const fresh = new Map(products.map((p) => [p.sku, p]));
    for (const [sku, row] of this.rows) {
      if (!fresh.has(sku)) {
        row.tr.remove();
        this.rows.delete(sku);
      }
    }
    this.gone.clear();
    for (const product of [...fresh.values()].sort(bySku)) {
      const row = this.rows.get(product.sku);
      const same = row && row.product.id === product.id && row.product.version === product.version;
      const updated = this.put(product, same ? row.origin : null);
      // After a reconnect, what changed while we were away flashes too (its origin is unknown).
      if (this.loaded && !same) flash(updated.tr);
    }
    this.loaded = true;
    this.changed();
  }

  /** Apply a stock message if it is newer than what the row shows; true if it was. */
  apply(change) {
    const current = this.rows.get(change.sku)?.product ?? this.gone.get(change.sku);
    if (current && !isNewer(change, current)) return false;
    const origin = { node: change.node, reason: change.reason };
    if (change.deleted) {
      this.gone.set(change.sku, { id: change.product_id, version: change.version });
      const row = this.rows.get(change.sku);
      if (row) {
        row.tr.remove();
        this.rows.delete(change.sku);
      }
    } else {
      this.gone.delete(change.sku);
      const row = this.put(productFrom(change), origin);
      flash(row.tr);
    }
    this.changed();
    return true;
  }

  put(product, origin) {
    let row = this.rows.get(product.sku);
    if (!row) {
      row = { tr: this.createRow(product.sku) };
      this.rows.set(product.sku, row);
      this.insertSorted(row.tr, product.sku);
    }
    row.product = product;
    row.origin = origin;
    this.fillRow(row);
    this.applyFilter(row);
    return row;
  }

  createRow(sku) {
    const tr = h("tr", { testid: `stock-row-${sku}`, dataset: { sku } });
    tr.addEventListener("animationend", () => tr.classList.remove("is-flashing"));
    return tr;
  }

  insertSorted(tr, sku) {
    const next = [...this.body.querySelectorAll("tr[data-sku]")].find(
      (other) => other.dataset.sku > sku,
    );
    this.body.insertBefore(tr, next ?? null);
  }

  fillRow({ tr, product: p, origin }) {
    const soldOut = p.available <= 0;
    const low = !soldOut && p.available <= p.low_stock_threshold;
    tr.dataset.version = String(p.version);
    tr.dataset.available = String(p.available);
    tr.classList.toggle("is-low", low);
    tr.classList.toggle("is-sold-out", soldOut);
    const level = soldOut
      ? h("span", { class: "chip chip-danger" }, "Sold out")
      : low
        ? h(
            "span",
            { class: "chip chip-warn", title: `At or below ${p.low_stock_threshold}` },
            "Low",
          )
        : null;
    tr.replaceChildren(
      h(
        "td",
        { class: "sku" },
        h("span", { class: "mono" }, p.sku),
        h("span", { class: "sku-name" }, p.name),
      ),
      h("td", { class: "name", title: p.name }, p.name),
      h("td", { class: "num" }, money(p.price_cents)),
      h(
        "td",
        { class: "num available" },
        h("span", { class: "available-cell" }, level, h("strong", {}, count(p.available))),
      ),
      h("td", { class: "num muted-num" }, count(p.on_hand)),
      h("td", { class: "num muted-num" }, count(p.reserved)),
      h("td", { class: "num version" }, `v${p.version}`),
      h(
        "td",
        { class: "origin" },
        origin
          ? h(
              "span",
              { class: `origin-badge reason-${origin.reason}`, testid: `row-origin-${p.sku}` },
              h("span", { class: "origin-node" }, origin.node),
              h("span", { class: "origin-sep", "aria-hidden": "true" }, "\u00b7"),
              origin.reason,
            )
          : h("span", { class: "faint", testid: `row-origin-${p.sku}` }, "\u2014"),
      ),
      h(
        "td",
        { class: "actions" },
        h(
          "button",
          {
            type: "button",
            class: "icon-button",
            title: `Manage ${p.sku}`,
            "aria-label": `Manage ${p.sku}`,
            testid: `manage-${p.sku}`,
            onclick: () => this.onManage(p.sku),
          },
          "\u22ef",
        ),
      ),
    );
  }

  applyFilter(row) {
    const q = this.query;
    const p = row.product;
    row.tr.hidden =
      Boolean(q) && !p.sku.toLowerCase().includes(q) && !p.name.toLowerCase().includes(q);
  }

  renderEmpty() {
    this.body.querySelector("tr.empty")?.remove();
    const visible = [...this.rows.values()].some((row) => !row.tr.hidden);
    if (visible) return;
    let text = "Waiting for the first snapshot\u2026";
    if (this.loaded)
      text = this.rows.size
        ? "No product matches the filter."
        : "No products yet. Add one to get started.";
    this.body.append(h("tr", { class: "empty" }, h("td", { colspan: "9" }, text)));
  }

  renderSummary() {
    const products = this.products();
    const soldOut = products.filter((p) => p.available <= 0).length;
    const low = products.filter(
      (p) => p.available > 0 && p.available <= p.low_stock_threshold,
    ).length;
    const units = products.reduce((sum, p) => sum + p.available, 0);
    const reserved = products.reduce((sum, p) => sum + p.reserved, 0);
    this.summary.replaceChildren(
      stat("Products", count(products.length)),
      stat("Units available", count(units)),
      stat("Held by orders", count(reserved)),
      stat("Low stock", count(low), low ? "warn" : ""),
      stat("Sold out", count(soldOut), soldOut ? "danger" : ""),
    );
  }

  changed() {
    this.renderEmpty();
    this.renderSummary();
    const products = this.products();
    for (const fn of this.listeners) fn(products);
  }
}

function stat(label, value, tone = "") {
  return h(
    "div",
    { class: `stat ${tone ? `stat-${tone}` : ""}` },
    h("dt", {}, label),
    h("dd", {}, value),
  );
}

function bySku(a, b) {
  return a.sku < b.sku ? -1 : a.sku > b.sku ? 1 : 0;
}

/** The higher product id wins (a SKU re-created after a delete); then the higher version. */
function isNewer(change, current) {
  if (change.product_id !== current.id) return change.product_id > current.id;
  return change.version > current.version;
}

function productFrom(change) {
  return {
    id: change.product_id,
    sku: change.sku,
    name: change.name,
    price_cents: change.price_cents,
    on_hand: change.on_hand,
    reserved: change.reserved,
    available: change.available,
    low_stock_threshold: change.low_stock_threshold,
    version: change.version,
    updated_at: change.committed_at,
  };
}
