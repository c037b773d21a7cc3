// The order just placed (or picked from the list): its state followed live over
// the WebSocket, a countdown to the end of its hold, Confirm / Cancel, its
// timeline as it happens, and its receipt once sent.

import { api, describe } from "./api.js";
import { clock, countdown, h, money } from "./format.js";
import { Timeline } from "./timeline.js";

const LABELS = {
  pending: "Pending \u00b7 stock held",
  confirmed: "Confirmed \u00b7 sold",
  cancelled: "Cancelled \u00b7 released",
  expired: "Expired \u00b7 released",
  refunded: "Refunded",
  partially_refunded: "Partly refunded",
};

export class OrderPanel {
  constructor({ root, live, toast, receiptDialog }) {
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
      receipt: root.querySelector("[data-role=order-receipt]"),
    };
    this.timeline = new Timeline({
      root: root.querySelector("[data-role=order-timeline]"),
      onReceipt: () => {
        this.el.receipt.hidden = false;
      },
    });
    this.receipt = new ReceiptDialog(receiptDialog);
    this.el.confirm.addEventListener("click", () => this.act("confirm"));
    this.el.cancel.addEventListener("click", () => this.act("cancel"));
    this.el.receipt.addEventListener("click", () => {
      if (this.order) this.receipt.open(this.order.id);
    });
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
    this.timeline.clear();
    this.root.hidden = true;
  }

  /** A new order to show and follow: its status and its timeline, live, for as long as
   *  it is shown (a confirmed order still gets its receipt, and maybe refunds). */
  show(order) {
    const same = this.order?.id === order.id;
    if (this.order && !same) this.live.unfollow(this.order.id);
    this.order = null;
    if (!same) this.el.receipt.hidden = true;
    this.update(order);
    this.root.hidden = false;
    this.live.follow(order.id);
    this.timeline.load(order.id);
    this.root.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  /** An `order_event` off the socket. */
  event(event) {
    this.timeline.add(event);
  }

  /** After a reconnect: events may have gone by meanwhile. */
  reload() {
    if (this.order) this.timeline.load(this.order.id);
  }

  /** News about an order (from the socket or an action's answer); older news is ignored. */
  update(order) {
    if (this.order) {
      if (order.id !== this.order.id) return;
      if (Date.parse(order.updated_at) < Date.parse(this.order.updated_at)) return;
    }
    this.order = order;
    this.render();
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

/** The receipt as the customer was mailed it, in plain text (the node serves it only
 *  with the caller's credential, so it is fetched, not linked). */
class ReceiptDialog {
  constructor(dialog) {
    this.dialog = dialog;
    this.text = dialog.querySelector("[data-role=text]");
    this.error = dialog.querySelector("[data-role=error]");
    for (const close of dialog.querySelectorAll("[data-role=close]"))
      close.addEventListener("click", () => dialog.close());
  }

  async open(orderId) {
    this.text.textContent = "Loading\u2026";
    this.error.hidden = true;
    if (!this.dialog.open) this.dialog.showModal();
    try {
      this.text.textContent = await api.receipt(orderId);
    } catch (error) {
      const { title, lines } = describe(error);
      this.text.textContent = "";
      this.error.replaceChildren(h("strong", {}, title), " ", lines.join(" "));
      this.error.hidden = false;
    }
  }
}
