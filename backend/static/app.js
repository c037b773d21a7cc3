// Wiring: fetch the node's info, restore the session, open the live socket
// and hand each message to the panel it is for; every panel shows what the
// signed-in caller may use, and nothing else.

import { access } from "./access.js";
import { Admin } from "./admin.js";
import { api, useAuth } from "./api.js";
import { Checkout } from "./checkout.js";
import { EventFeed } from "./feed.js";
import { countdown, h } from "./format.js";
import { OrderHistory } from "./history.js";
import { LifecyclePanel } from "./lifecycle.js";
import { LiveClient } from "./live.js";
import { OrderPanel } from "./order.js";
import { Session } from "./session.js";
import { SignIn } from "./signin.js";
import { StockTable } from "./table.js";

const PRIVATE = "This node shows its catalog to signed-in callers only: sign in to see it.";

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

function panels(live, session) {
  const table = new StockTable({
    body: $("stock-body"),
    summary: $("stock-summary"),
    filter: $("stock-filter"),
    onManage: (sku) => admin.openManage(sku),
  });
  const orders = new OrderPanel({
    root: $("order-panel"),
    live,
    toast,
    receiptDialog: $("receipt-dialog"),
  });
  const history = new OrderHistory({ root: $("orders-card"), onOpen: (o) => orders.show(o) });
  const checkout = new Checkout({
    form: $("checkout-form"),
    gate: $("checkout-gate"),
    info: null,
    table,
    onOrder: (order) => {
      orders.show(order);
      history.update(order);
    },
  });
  const admin = new Admin({
    newDialog: $("new-product-dialog"),
    manageDialog: $("manage-dialog"),
    table,
    toast,
  });
  const signIn = new SignIn({
    session,
    dialog: $("sign-in-dialog"),
    account: $("account"),
    notice: $("session-notice"),
  });
  $("admin-new-product").addEventListener("click", () => admin.openNew());
  $("checkout-sign-in").addEventListener("click", () => signIn.open());
  const feed = new EventFeed($("event-feed"));
  const lifecycle = new LifecyclePanel({ root: $("lifecycle-card"), toast });
  return { table, orders, history, checkout, admin, signIn, feed, lifecycle };
}

/** Show each panel as this caller may use it. */
function applyAccess(p, principal) {
  const can = access(principal);
  $("admin-new-product").hidden = !can.catalog;
  p.table.setManageable(can.catalog);
  p.admin.setAllowed(can.catalog);
  p.checkout.setAccess(principal, can);
  p.orders.setAccess(can);
  p.history.setAccess(can);
  p.lifecycle.setAccess(can);
  $("feed-note").textContent = can.ledger ? "newest first" : "live changes, newest first";
  return can;
}

async function loadEvents(feed, can) {
  if (!can.ledger) return; // the ledger's history needs ledger:read; live changes still come
  try {
    const page = await api.events(30);
    feed.add(page.items);
  } catch {
    // The live messages still fill the feed; the next snapshot tries again.
  }
}

function main() {
  const info = api.info();
  const session = new Session({ authConfig: info.then((i) => i.auth ?? null) });
  useAuth({
    bearer: () => session.bearer(),
    refused: (error, bearer) => session.refused(error, bearer),
  });
  const live = new LiveClient({ credential: ({ renew }) => session.bearer({ renew }) });
  const p = panels(live, session);
  let can = applyAccess(p, session.principal);

  session.addEventListener("change", ({ detail: { principal } }) => {
    const was = can;
    can = applyAccess(p, principal);
    if (!principal) {
      p.orders.clear();
      live.restart(); // a new socket, anonymous: the old one kept the principal
    } else if (!was.signedIn) {
      live.authenticate();
    }
    if (can.ledger && !was.ledger) loadEvents(p.feed, can);
  });
  session.addEventListener("token", () => live.authenticate({ refollow: false }));

  live.addEventListener("status", (event) => showStatus(event.detail));
  live.addEventListener("auth", ({ detail: { error } }) => {
    if (error) session.refused(error, session.credential?.token);
  });
  live.addEventListener("message", ({ detail: { message } }) => {
    switch (message.type) {
      case "snapshot":
        showNode(message.node);
        p.table.replace(message.products);
        loadEvents(p.feed, can);
        p.orders.reload(); // events may have gone by while the socket was down
        break;
      case "stock":
        p.table.apply(message);
        p.feed.add([message], { live: true });
        break;
      case "order":
        p.orders.update(message.order);
        p.history.update(message.order);
        break;
      case "order_event":
        p.orders.event(message.event);
        break;
      case "error":
        if (message.code === "UNAUTHENTICATED" && !session.signedIn) p.signIn.showNotice(PRIVATE);
        else toast(`${message.code}: ${message.message}`, "error");
        break;
      default:
        break;
    }
  });

  info
    .then((i) => {
      showNode(i.node, i.mode);
      p.checkout.setInfo(i);
      p.signIn.setAuth(i.auth ?? null);
      if (i.public_catalog === false && !session.signedIn) p.signIn.showNotice(PRIVATE);
      $("hold-note").textContent = `holds for ${countdown(i.hold_seconds)}`;
    })
    .catch(() =>
      toast("Could not load this node's settings; fees show as 0 until reload.", "error"),
    );
  live.start();
  session.verify();
}

main();
