// An order's timeline: what happened to it, oldest first (placed, paid,
// confirmed, receipt sent, refunded...), with times and reasons. Loaded from
// GET /orders/{id}/events, then kept up to date by the socket's `order_event`
// messages; an event seen both ways shows once (by event_id), in `seq` order.

import { api, describe } from "./api.js";
import { clock, h, money } from "./format.js";

const LABELS = {
  "order.placed": "Placed",
  "payment.succeeded": "Paid",
  "payment.failed": "Payment failed",
  "order.confirmed": "Confirmed",
  "order.cancelled": "Cancelled",
  "order.expired": "Expired",
  "order.refunded": "Refunded",
  "notification.sent": "Receipt sent",
};

const REASONS = {
  payment_declined: "payment declined",
  hold_expired: "hold expired",
  paid_after_hold_released: "paid after the hold ended",
  duplicate_payment: "paid twice",
};

const TONES = {
  "payment.failed": "bad",
  "order.cancelled": "bad",
  "order.expired": "bad",
  "order.refunded": "warn",
};

export class Timeline {
  /** onReceipt(): called once the order's receipt has been sent. */
  constructor({ root, onReceipt }) {
    this.root = root;
    this.list = root.querySelector("[data-role=events]");
    this.note = root.querySelector("[data-role=note]");
    this.onReceipt = onReceipt;
    this.orderId = null;
    this.events = new Map(); // event_id -> event
  }

  /** Show this order's timeline: what the node has so far, then what comes live. */
  async load(orderId) {
    this.orderId = orderId;
    this.events = new Map();
    this.render();
    try {
      const page = await api.timeline(orderId);
      if (orderId !== this.orderId) return;
      for (const event of page.items) this.events.set(event.event_id, event);
      this.note.hidden = true;
    } catch (error) {
      if (orderId !== this.orderId) return;
      const { title, lines } = describe(error);
      this.note.textContent = `${title}: ${lines.join(" ")}`;
      this.note.hidden = false;
    }
    this.render();
  }

  clear() {
    this.orderId = null;
    this.events = new Map();
    this.render();
  }

  /** An `order_event` off the socket; others' orders are not this panel's. */
  add(event) {
    if (!this.orderId || event.order_id !== this.orderId) return;
    if (this.events.has(event.event_id)) return;
    this.events.set(event.event_id, event);
    this.render();
  }

  render() {
    const events = [...this.events.values()].sort((a, b) => a.seq - b.seq);
    this.root.hidden = !this.orderId;
    this.list.replaceChildren(...events.map((event) => item(event)));
    const last = events.at(-1);
    this.root.dataset.last = last ? last.type : "";
    if (events.some((event) => event.type === "notification.sent")) this.onReceipt();
  }
}

function item(event) {
  const label = LABELS[event.type] ?? event.type;
  return h(
    "li",
    {
      class: `timeline-item tone-${TONES[event.type] ?? "ok"}`,
      testid: `timeline-${event.type}`,
      dataset: { type: event.type },
    },
    h("span", { class: "timeline-dot", "aria-hidden": "true" }),
    h("span", { class: "timeline-label" }, label),
    h("span", { class: "timeline-detail faint" }, detail(event)),
    h("time", { class: "timeline-time faint num", datetime: event.at }, clock(event.at)),
  );
}

/** The part of an event's body worth a glance: an amount, a reason, where it went. */
function detail(event) {
  const body = event.body ?? {};
  const parts = [];
  if (typeof body.amount_cents === "number") parts.push(money(body.amount_cents));
  if (typeof body.total_cents === "number" && event.type === "order.refunded")
    parts.push(money(body.total_cents));
  if (typeof body.reason === "string") parts.push(REASONS[body.reason] ?? body.reason);
  if (typeof body.detail === "string" && body.detail) parts.push(body.detail);
  if (event.type === "notification.sent" && typeof body.channel === "string")
    parts.push(`by ${body.channel}`);
  if (event.type === "order.refunded" && body.restock === true) parts.push("restocked");
  if (body.duplicate === true) parts.push("duplicate");
  parts.push(`on ${event.node}`);
  return parts.join(" \u00b7 ");
}
