// The checkout form: several lines, a live price preview and an idempotent submit.
// Only for callers who may place orders; others see why, and a way to sign in.

import { lacking } from "./access.js";
import { api, describe } from "./api.js";
import { count, feeCents, h, money } from "./format.js";

export class Checkout {
  constructor({ form, gate, info, table, onOrder }) {
    this.form = form;
    this.gate = gate;
    this.fields = form.querySelector("[data-role=fields]");
    this.customerField = form.querySelector("[data-role=customer-field]");
    this.paymentField = form.querySelector("[data-role=payment-field]");
    this.payment = form.querySelector("[name=payment_method]");
    this.info = info;
    this.table = table;
    this.onOrder = onOrder;
    this.lines = form.querySelector("[data-role=lines]");
    this.addButton = form.querySelector("[data-role=add-line]");
    this.customer = form.querySelector("[name=customer_id]");
    this.submitButton = form.querySelector("[type=submit]");
    this.error = form.querySelector("[data-role=error]");
    this.out = {
      subtotal: form.querySelector("[data-role=subtotal]"),
      feeLabel: form.querySelector("[data-role=fee-label]"),
      fee: form.querySelector("[data-role=fee]"),
      total: form.querySelector("[data-role=total]"),
    };
    this.attempt = null; // { key, json }: reused when retrying the same order after a network error
    this.nextLineId = 0;
    this.products = [];

    this.addButton.addEventListener("click", () => {
      const line = this.addLine();
      line.querySelector("select").focus();
    });
    form.addEventListener("input", () => this.preview());
    form.addEventListener("change", () => this.preview());
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.addLine();
    table.subscribe((products) => {
      this.products = products;
      for (const select of this.lines.querySelectorAll("select")) syncOptions(select, products);
      this.preview();
    });
  }

  /** The simulated provider's test methods are offered only where the node uses it. */
  setInfo(info) {
    this.info = info;
    this.paymentField.hidden = info?.payment_provider !== "simulated";
    this.preview();
  }

  /** Customers order as themselves, so only staff and keys name a customer. */
  setAccess(principal, can) {
    const allowed = can.order;
    this.gate.hidden = allowed;
    this.gate.querySelector("[data-role=reason]").textContent = principal
      ? lacking(principal, "orders:write")
      : "Sign in to place an order.";
    this.gate.querySelector("[data-role=sign-in]").hidden = Boolean(principal);
    this.fields.disabled = !allowed;
    this.customerField.hidden = can.customer;
    if (can.customer) this.customer.value = "";
    if (!allowed) this.clearError();
  }

  addLine() {
    const id = `line-${this.nextLineId++}`;
    const select = h("select", {
      id: `${id}-sku`,
      name: "sku",
    });
    syncOptions(select, this.products);
    const quantity = h("input", {
      id: `${id}-qty`,
      name: "quantity",
      type: "number",
      min: "1",
      step: "1",
      value: "1",
      inputmode: "numeric",
    });
    const line = h(
      "div",
      { class: "line", dataset: { line: id } },
      select,
      quantity,
      h("output", { class: "line-total num", for: `${id}-sku ${id}-qty` }),
      h(
        "button",
        {
          type: "button",
          class: "icon-button",
          title: "Remove line",
          onclick: () => this.removeLine(line),
        },
        "\u00d7",
      ),
      h("p", { class: "line-hint", "aria-live": "polite" }),
    );
    this.lines.append(line);
    this.renumber();
    this.preview();
    return line;
  }

  removeLine(line) {
    if (this.lines.children.length > 1) line.remove();
    else {
      line.querySelector("select").value = "";
      line.querySelector("input").value = "1";
    }
    this.renumber();
    this.preview();
  }

  /** Test ids and labels follow the lines' order, so removing one leaves no gap. */
  renumber() {
    [...this.lines.children].forEach((line, i) => {
      const [select, quantity, total, remove] = line.children;
      select.dataset.testid = `checkout-sku-${i}`;
      select.setAttribute("aria-label", `Product, line ${i + 1}`);
      quantity.dataset.testid = `checkout-qty-${i}`;
      quantity.setAttribute("aria-label", `Quantity, line ${i + 1}`);
      total.dataset.testid = `checkout-line-total-${i}`;
      remove.setAttribute("aria-label", `Remove line ${i + 1}`);
    });
  }

  /** The request body, or null with a reason while the form is incomplete. */
  read() {
    const items = [];
    for (const line of this.lines.children) {
      const sku = line.querySelector("select").value;
      const raw = line.querySelector("input").value;
      if (!sku) continue;
      const quantity = Number(raw);
      if (!Number.isInteger(quantity) || quantity < 1)
        return { problem: `Quantity for ${sku} must be a whole number of at least 1.` };
      items.push({ sku, quantity });
    }
    if (!items.length) return { problem: "Choose at least one product." };
    const body = { items };
    const customer = this.customer.value.trim();
    if (customer) body.customer_id = customer;
    if (!this.paymentField.hidden) body.payment_method = this.payment.value;
    return { body };
  }

  preview() {
    let subtotal = 0;
    const wanted = new Map();
    for (const line of this.lines.children) {
      const sku = line.querySelector("select").value;
      wanted.set(
        sku,
        (wanted.get(sku) ?? 0) +
          Math.max(0, Math.floor(Number(line.querySelector("input").value) || 0)),
      );
    }
    for (const line of this.lines.children) {
      const sku = line.querySelector("select").value;
      const quantity = Math.max(0, Math.floor(Number(line.querySelector("input").value) || 0));
      const product = sku ? this.table.get(sku) : undefined;
      const lineTotal = product ? product.price_cents * quantity : 0;
      subtotal += lineTotal;
      line.querySelector(".line-total").textContent = product ? money(lineTotal) : "\u2014";
      const hint = line.querySelector(".line-hint");
      const short = product && wanted.get(sku) > product.available;
      hint.textContent = short
        ? `Only ${count(product.available)} of ${sku} available right now.`
        : "";
      line.classList.toggle("is-short", Boolean(short));
    }
    const rate = this.info?.fee_rate ?? 0;
    const fee = feeCents(subtotal, rate);
    this.out.subtotal.textContent = money(subtotal);
    this.out.feeLabel.textContent = `Fee (${formatRate(rate)})`;
    this.out.fee.textContent = money(fee);
    this.out.total.textContent = money(subtotal + fee);
    const max = this.info?.max_order_lines ?? Infinity;
    this.addButton.disabled = this.lines.children.length >= max;
  }

  async submit() {
    const { body, problem } = this.read();
    if (!body) {
      this.showError({ title: "Nothing to order yet", lines: [problem] });
      return;
    }
    const json = JSON.stringify(body);
    if (this.attempt?.json !== json) this.attempt = { key: newKey(), json };
    this.clearError();
    this.busy(true);
    try {
      const order = await api.placeOrder(body, this.attempt.key);
      this.attempt = null;
      this.reset();
      this.onOrder(order);
    } catch (error) {
      const text = describe(error);
      if (error.network) {
        text.lines.push(
          "Press \u201cPlace order\u201d again to retry; the order will not be placed twice.",
        );
      } else {
        this.attempt = null;
      }
      this.showError(text);
    } finally {
      this.busy(false);
    }
  }

  reset() {
    this.lines.replaceChildren();
    this.addLine();
  }

  busy(on) {
    this.submitButton.disabled = on;
    this.submitButton.textContent = on ? "Placing\u2026" : "Place order";
    this.form.setAttribute("aria-busy", String(on));
  }

  showError({ title, lines }) {
    this.error.replaceChildren(
      h("strong", {}, title),
      lines.length
        ? h(
            "ul",
            {},
            lines.map((l) => h("li", {}, l)),
          )
        : null,
    );
    this.error.hidden = false;
  }

  clearError() {
    this.error.hidden = true;
    this.error.replaceChildren();
  }
}

/** Keep a product select's options in step with the catalog without closing it. */
function syncOptions(select, products) {
  const chosen = select.value;
  const options = [h("option", { value: "" }, "Choose a product\u2026")];
  for (const p of products) {
    const label =
      p.available > 0
        ? `${p.sku} \u2014 ${p.name} \u00b7 ${money(p.price_cents)} \u00b7 ${count(p.available)} left`
        : `${p.sku} \u2014 ${p.name} \u00b7 sold out`;
    options.push(h("option", { value: p.sku }, label));
  }
  const same =
    select.options.length === options.length &&
    options.every((option, i) => select.options[i].value === option.value);
  if (same) {
    options.forEach((option, i) => {
      if (select.options[i].textContent !== option.textContent)
        select.options[i].textContent = option.textContent;
    });
    return;
  }
  select.replaceChildren(...options);
  select.value = products.some((p) => p.sku === chosen) ? chosen : "";
}

function formatRate(rate) {
  return `${Number((rate * 100).toFixed(2))}%`;
}

/** crypto.randomUUID only exists in secure contexts; a LAN address over http is not one. */
function newKey() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
