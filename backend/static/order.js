// The order just placed: its state followed live over the WebSocket, a
// countdown to the end of its hold, and Confirm / Cancel.

import { api, describe } from "./api.js";
import { clock, countdown, h, money } from "./format.js";

const LABELS = {
  pending: "Pending \u00b7 stock held",
  confirmed: "Confirmed \u00b7 sold",
  cancelled: "Cancelled \u00b7 released",
  expired: "Expired \u00b7 released",
};

export class OrderPanel {
  constructor({ root, live, toast }) {
    this.root = root;
    this.live = live;
    this.toast = toast;
    this.order = null;
    this.timer = null;
    this.el = {
      id: root.querySelector("[data-role=order-id]"),
      status: root.querySelector("[data-role=order-status]"),
      total: root.querySelector("[data-role=order-total]"),
      expires: root.querySelector("[data-role=order-expires]"),
      items: root.querySelector("[data-role=order-items]"),
      confirm: root.querySelector("[data-role=order-confirm]"),
      cancel: root.querySelector("[data-role=order-cancel]"),
      error: root.querySelector("[data-role=order-error]"),
    };
    this.el.confirm.addEventListener("click", () => this.act("confirm"));
    this.el.cancel.addEventListener("click", () => this.act("cancel"));
  }

  /** Confirm is for staff and keys with orders:manage; customers cancel their own. */
  setAccess(can) {
    this.el.confirm.hidden = !can.confirm;
    this.el.cancel.hidden = !can.cancel;
    this.root.querySelector(".order-actions").hidden = !can.confirm && !can.cancel;
  }

  /** Signed out: the order was the last caller's business. */
  clear() {
    if (this.order) this.live.unfollow(this.order.id);
    clearInterval(this.timer);
    this.order = null;
    this.root.hidden = true;
  }

  /** A new order to show and follow. */
  show(order) {
    if (this.order && this.order.id !== order.id) this.live.unfollow(this.order.id);
    this.order = null;
    this.update(order);
    this.root.hidden = false;
    if (order.status === "pending") this.live.follow(order.id);
    this.root.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  /** News about an order (from the socket or an action's answer); older news is ignored. */
  update(order) {
    if (this.order) {
      if (order.id !== this.order.id) return;
      if (Date.parse(order.updated_at) < Date.parse(this.order.updated_at)) return;
    }
    this.order = order;
    this.render();
    if (order.status !== "pending") this.live.unfollow(order.id);
  }

  render() {
    const o = this.order;
    this.root.dataset.status = o.status;
    this.el.id.textContent = o.id.slice(0, 8);
    this.el.id.title = o.id;
    this.el.status.textContent = LABELS[o.status] ?? o.status;
    this.el.status.dataset.status = o.status;
    this.el.status.className = `status status-${o.status}`;
    this.el.total.textContent = money(o.total_cents);
    this.el.items.replaceChildren(
      ...o.items.map((item) =>
        h(
          "li",
          {},
          h("span", { class: "mono" }, item.sku),
          h("span", { class: "faint" }, ` \u00d7 ${item.quantity}`),
          h("span", { class: "num" }, money(item.line_total_cents)),
        ),
      ),
      h(
        "li",
        { class: "order-fee" },
        h("span", {}, "Fee"),
        h("span", {}),
        h("span", { class: "num" }, money(o.fee_cents)),
      ),
    );
    const pending = o.status === "pending";
    this.el.confirm.disabled = !pending;
    this.el.cancel.disabled = !pending;
    clearInterval(this.timer);
    if (pending) {
      this.tick();
      this.timer = setInterval(() => this.tick(), 1000);
    } else {
      this.el.expires.textContent = `${o.status} at ${clock(o.updated_at)}`;
    }
  }

  tick() {
    const left = (Date.parse(this.order.expires_at) - Date.now()) / 1000;
    this.el.expires.textContent =
      left > 0 ? `hold ends in ${countdown(left)}` : "hold ended \u00b7 releasing\u2026";
    this.el.expires.classList.toggle("is-urgent", left < 60);
  }

  async act(action) {
    const order = this.order;
    if (!order) return;
    const button = action === "confirm" ? this.el.confirm : this.el.cancel;
    this.el.error.hidden = true;
    this.el.confirm.disabled = true;
    this.el.cancel.disabled = true;
    button.setAttribute("aria-busy", "true");
    try {
      const updated =
        action === "confirm" ? await api.confirmOrder(order.id) : await api.cancelOrder(order.id);
      this.update(updated);
      this.toast(action === "confirm" ? "Order confirmed" : "Order cancelled");
    } catch (error) {
      const { title, lines } = describe(error);
      this.el.error.replaceChildren(h("strong", {}, title), " ", lines.join(" "));
      this.el.error.hidden = false;
      this.render();
    } finally {
      button.removeAttribute("aria-busy");
    }
  }
}
