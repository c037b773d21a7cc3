// Product admin in two dialogs: "New product", and a per-row "Manage"
// dialog to adjust stock with a reason or delete the product.

import { api, describe } from "./api.js";
import { count, h, signed } from "./format.js";

const SKU = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const PRICE = /^\d{1,9}(\.\d{1,2})?$/;

export class Admin {
  constructor({ newDialog, manageDialog, table, toast }) {
    this.table = table;
    this.toast = toast;
    this.newDialog = newDialog;
    this.manageDialog = manageDialog;
    this.newForm = newDialog.querySelector("form");
    this.adjustForm = manageDialog.querySelector("[data-role=adjust]");
    this.deleteButton = manageDialog.querySelector("[data-role=delete]");
    this.sku = null;

    for (const dialog of [newDialog, manageDialog]) {
      for (const button of dialog.querySelectorAll("[data-role=close]")) {
        button.addEventListener("click", () => dialog.close());
      }
      dialog.addEventListener("close", () => hideError(dialog));
    }
    this.newForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.create();
    });
    this.adjustForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.adjust();
    });
    this.deleteButton.addEventListener("click", () => this.remove());
    manageDialog.addEventListener("close", () => {
      this.sku = null;
      this.disarmDelete();
    });
    table.subscribe(() => this.renderManaged());
  }

  /** Signed out, or into a role that may not: whatever was open closes. */
  setAllowed(on) {
    if (on) return;
    if (this.newDialog.open) this.newDialog.close();
    if (this.manageDialog.open) this.manageDialog.close();
  }

  openNew() {
    this.newForm.reset();
    hideError(this.newDialog);
    this.newDialog.showModal();
    this.newForm.elements.sku.focus();
  }

  openManage(sku) {
    this.sku = sku;
    this.adjustForm.reset();
    this.disarmDelete();
    hideError(this.manageDialog);
    this.renderManaged();
    this.manageDialog.showModal();
    this.adjustForm.elements.delta.focus();
  }

  /** The dialog's numbers follow the live table while it is open. */
  renderManaged() {
    if (!this.sku) return;
    const p = this.table.get(this.sku);
    const root = this.manageDialog;
    root.querySelector("[data-role=sku]").textContent = this.sku;
    root.querySelector("[data-role=name]").textContent = p ? p.name : "This product was deleted.";
    root.querySelector("[data-role=stats]").replaceChildren(
      ...(p
        ? [
            ["Available", p.available],
            ["On hand", p.on_hand],
            ["Reserved", p.reserved],
            ["Version", `v${p.version}`],
          ].map(([label, value]) =>
            h(
              "div",
              {},
              h("dt", {}, label),
              h("dd", {}, typeof value === "number" ? count(value) : value),
            ),
          )
        : []),
    );
    for (const control of [...this.adjustForm.elements, this.deleteButton]) control.disabled = !p;
  }

  async create() {
    const f = this.newForm.elements;
    const sku = f.sku.value.trim();
    const name = f.name.value.trim();
    const price = f.price.value.trim().replace(/^\$/, "");
    const onHand = Number(f.on_hand.value || 0);
    const threshold = Number(f.low_stock_threshold.value || 0);
    const problems = [];
    if (!SKU.test(sku))
      problems.push(
        "SKU: letters, digits, dot, dash or underscore; up to 64, starting with a letter or digit.",
      );
    if (!name) problems.push("Name: required.");
    if (!PRICE.test(price)) problems.push("Price: an amount like 19 or 19.90.");
    if (!Number.isInteger(onHand) || onHand < 0)
      problems.push("On hand: a whole number, 0 or more.");
    if (!Number.isInteger(threshold) || threshold < 0)
      problems.push("Low-stock threshold: a whole number, 0 or more.");
    if (problems.length)
      return showError(this.newDialog, { title: "Please check the form", lines: problems });
    const [whole, fraction = ""] = price.split(".");
    const body = {
      sku,
      name,
      price_cents: Number(whole) * 100 + Number(fraction.padEnd(2, "0")),
      on_hand: onHand,
      low_stock_threshold: threshold,
    };
    await this.run(
      this.newDialog,
      () => api.createProduct(body),
      (product) => {
        this.newDialog.close();
        this.toast(`Added ${product.sku}`);
      },
    );
  }

  async adjust() {
    const sku = this.sku;
    const delta = Number(this.adjustForm.elements.delta.value);
    const reason = this.adjustForm.elements.reason.value;
    if (!Number.isInteger(delta) || delta === 0) {
      return showError(this.manageDialog, {
        title: "Nothing to apply",
        lines: ["Enter a whole number of units, like 10 or -2."],
      });
    }
    await this.run(
      this.manageDialog,
      () => api.adjustStock(sku, delta, reason),
      (change) => {
        this.adjustForm.reset();
        this.toast(
          `${sku}: ${reason} ${signed(delta)} \u2192 ${count(change.available)} available`,
        );
      },
    );
  }

  /** First click arms the button, the second deletes. */
  async remove() {
    if (this.deleteButton.dataset.armed !== "true") {
      this.deleteButton.dataset.armed = "true";
      this.deleteButton.textContent = "Click again to delete";
      return;
    }
    const sku = this.sku;
    this.disarmDelete();
    await this.run(
      this.manageDialog,
      () => api.deleteProduct(sku),
      () => {
        this.manageDialog.close();
        this.toast(`Deleted ${sku}`);
      },
    );
  }

  disarmDelete() {
    delete this.deleteButton.dataset.armed;
    this.deleteButton.textContent = "Delete\u2026";
  }

  async run(dialog, call, done) {
    hideError(dialog);
    dialog.setAttribute("aria-busy", "true");
    try {
      done(await call());
    } catch (error) {
      showError(dialog, describe(error));
    } finally {
      dialog.removeAttribute("aria-busy");
    }
  }
}

function showError(dialog, { title, lines }) {
  const box = dialog.querySelector("[data-role=error]");
  box.replaceChildren(
    h("strong", {}, title),
    lines.length
      ? h(
          "ul",
          {},
          lines.map((l) => h("li", {}, l)),
        )
      : null,
  );
  box.hidden = false;
}

function hideError(dialog) {
  const box = dialog.querySelector("[data-role=error]");
  box.hidden = true;
  box.replaceChildren();
}
