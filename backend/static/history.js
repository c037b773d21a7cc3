// The caller's recent orders, newest first: a customer's own, every order for
// staff and keys that may read them (the node scopes the list). A click shows
// the order in the order panel, where it is followed live.

import { api, describe } from "./api.js";
import { clock, h, money } from "./format.js";

const LIMIT = 10;

export class OrderHistory {
  constructor({ root, onOpen }) {
    this.root = root;
    this.list = root.querySelector("[data-role=list]");
    this.title = root.querySelector("[data-role=title]");
    this.onOpen = onOpen;
    this.enabled = false;
    this.orders = new Map(); // id -> order
    this.generation = 0; // a list loaded for an earlier caller is not shown to this one
    root.querySelector("[data-role=refresh]").addEventListener("click", () => this.load());
  }

  setAccess(can) {
    this.enabled = can.orders;
    this.generation += 1;
    this.root.hidden = !can.orders;
    this.title.textContent = can.customer ? "Your orders" : "Recent orders";
    this.orders.clear();
    this.list.replaceChildren();
    if (can.orders) this.load();
  }

  async load() {
    if (!this.enabled) return;
    const generation = this.generation;
    try {
      const page = await api.orders(LIMIT);
      if (generation !== this.generation) return;
      this.orders = new Map(page.items.map((order) => [order.id, order]));
      this.render();
    } catch (error) {
      if (generation !== this.generation) return;
      const { title, lines } = describe(error);
      this.list.replaceChildren(h("li", { class: "order-list-note" }, title, ": ", lines.join(" ")));
    }
  }

  /** News of one order: placed here, or followed live. */
  update(order) {
    if (!this.enabled) return;
    const known = this.orders.get(order.id);
    if (known && Date.parse(order.updated_at) < Date.parse(known.updated_at)) return;
    this.orders.set(order.id, order);
    this.render();
  }

  render() {
    const newest = [...this.orders.values()]
      .sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at))
      .slice(0, LIMIT);
    this.orders = new Map(newest.map((order) => [order.id, order]));
    this.list.replaceChildren(
      ...(newest.length
        ? newest.map((order) => this.item(order))
        : [h("li", { class: "order-list-note" }, "No orders yet.")]),
    );
  }

  item(o) {
    return h(
      "li",
      {},
      h(
        "button",
        {
          type: "button",
          class: "order-row",
          title: `Show order ${o.id}`,
          testid: `orders-item-${o.id}`,
          dataset: { status: o.status },
          onclick: () => this.onOpen(o),
        },
        h("span", { class: "mono" }, o.id.slice(0, 8)),
        h("span", { class: `status status-${o.status}` }, o.status),
        h("span", { class: "num" }, money(o.total_cents)),
        h("time", { class: "faint", datetime: o.created_at }, clock(o.created_at)),
      ),
    );
  }
}
