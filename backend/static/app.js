// Wiring: fetch the node's info, open the live socket and hand each message
// to the panel it is for.

import { Admin } from "./admin.js";
import { api } from "./api.js";
import { Checkout } from "./checkout.js";
import { EventFeed } from "./feed.js";
import { countdown, h } from "./format.js";
import { LiveClient } from "./live.js";
import { OrderPanel } from "./order.js";
import { StockTable } from "./table.js";

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);

function toast(text, tone = "ok") {
  const region = $("toasts");
  const item = h("div", { class: `toast toast-${tone}` }, text);
  region.append(item);
  setTimeout(() => item.remove(), 4000);
}

function showStatus({ state, attempt }) {
  const pill = $("connection-status");
  pill.dataset.state = state;
  const text = {
    connecting: "Connecting\u2026",
    live: "Live",
    reconnecting: attempt > 0 ? `Reconnecting \u00b7 attempt ${attempt}` : "Reconnecting\u2026",
    offline: "Offline",
  }[state];
  pill.querySelector(".pill-text").textContent = text;
  pill.title = state === "offline" ? "No connection; still retrying in the background" : "";
}

function showNode(node, mode) {
  if (node) $("node-name").textContent = node;
  if (mode) $("node-mode").textContent = mode;
  document.title = `OrderFlow \u00b7 ${node ?? $("node-name").textContent}`;
}

async function loadEvents(feed) {
  try {
    const page = await api.events(30);
    feed.add(page.items);
  } catch {
    // The live messages still fill the feed; the next snapshot tries again.
  }
}

function main() {
  const live = new LiveClient();
  let admin = null;
  const table = new StockTable({
    body: $("stock-body"),
    summary: $("stock-summary"),
    filter: $("stock-filter"),
    onManage: (sku) => admin?.openManage(sku),
  });
  const feed = new EventFeed($("event-feed"));
  const orders = new OrderPanel({ root: $("order-panel"), live, toast });
  const checkout = new Checkout({
    form: $("checkout-form"),
    info: null,
    table,
    onOrder: (order) => orders.show(order),
  });
  admin = new Admin({
    newDialog: $("new-product-dialog"),
    manageDialog: $("manage-dialog"),
    table,
    toast,
  });
  $("admin-new-product").addEventListener("click", () => admin.openNew());

  live.addEventListener("status", (event) => showStatus(event.detail));
  live.addEventListener("message", ({ detail: { message } }) => {
    switch (message.type) {
      case "snapshot":
        showNode(message.node);
        table.replace(message.products);
        loadEvents(feed);
        break;
      case "stock":
        table.apply(message);
        feed.add([message], { live: true });
        break;
      case "order":
        orders.update(message.order);
        break;
      case "error":
        toast(`${message.code}: ${message.message}`, "error");
        break;
      default:
        break;
    }
  });

  api
    .info()
    .then((info) => {
      showNode(info.node, info.mode);
      checkout.setInfo(info);
      $("hold-note").textContent = `holds for ${countdown(info.hold_seconds)}`;
    })
    .catch(() =>
      toast("Could not load this node's settings; fees show as 0 until reload.", "error"),
    );
  live.start();
}

main();
