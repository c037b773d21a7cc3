// Signing in and out: the dialog (an API key, or email and password when the
// node names a Supabase project), the header's "who" with its sign-out, and
// the notice that says why a session ended. A credential typed here is never
// shown again: the fields are cleared whatever the outcome.

import { roleLabel } from "./access.js";
import { describe } from "./api.js";
import { h } from "./format.js";

export class SignIn {
  constructor({ session, dialog, account, notice }) {
    this.session = session;
    this.dialog = dialog;
    this.account = account;
    this.notice = notice;
    this.keyForm = dialog.querySelector("[data-role=key]");
    this.passwordForm = dialog.querySelector("[data-role=password]");
    this.or = dialog.querySelector("[data-role=or]");
    this.error = dialog.querySelector("[data-role=error]");
    this.who = account.querySelector("[data-role=who]");
    this.signInButton = account.querySelector("[data-role=sign-in]");
    this.signOutButton = account.querySelector("[data-role=sign-out]");

    this.signInButton.addEventListener("click", () => this.open());
    this.signOutButton.addEventListener("click", () => session.signOut());
    notice.querySelector("[data-role=sign-in]").addEventListener("click", () => this.open());
    notice.querySelector("[data-role=dismiss]").addEventListener("click", () => this.hideNotice());
    dialog.querySelector("[data-role=close]").addEventListener("click", () => dialog.close());
    dialog.addEventListener("close", () => this.clear());
    this.keyForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const key = this.keyForm.elements.key.value;
      this.run(() => session.signInWithToken(key));
    });
    this.passwordForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const { email, password } = this.passwordForm.elements;
      this.run(() => session.signInWithPassword(email.value, password.value));
    });
    session.addEventListener("change", ({ detail }) => this.render(detail));
    this.render({ principal: session.principal, notice: null });
  }

  /** config: /info's `auth`; email and password only when the node names a Supabase project. */
  setAuth(config) {
    this.passwordForm.hidden = !config;
    this.or.hidden = !config;
    this.keyForm.querySelector("[data-role=key-submit]").classList.toggle("primary", !config);
  }

  open() {
    this.clear();
    this.dialog.showModal();
    const first = this.passwordForm.hidden ? this.keyForm : this.passwordForm;
    first.querySelector("input").focus();
  }

  async run(signIn) {
    this.hideError();
    this.busy(true);
    try {
      await signIn();
      this.dialog.close();
    } catch (error) {
      this.showError(describe(error));
    } finally {
      this.forget();
      this.busy(false);
    }
  }

  render({ principal, notice }) {
    const signedIn = Boolean(principal);
    this.account.dataset.state = signedIn ? "signed-in" : "signed-out";
    this.signInButton.hidden = signedIn;
    this.who.hidden = !signedIn;
    this.signOutButton.hidden = !signedIn;
    if (signedIn) {
      this.account.querySelector("[data-testid=account-role]").textContent = roleLabel(
        principal.role,
      );
      this.account.querySelector("[data-testid=account-name]").textContent =
        principal.name ?? principal.id;
      this.hideNotice();
    } else if (notice) {
      this.showNotice(notice);
    }
  }

  showNotice(text) {
    this.notice.querySelector("[data-role=text]").textContent = text;
    this.notice.hidden = false;
  }

  hideNotice() {
    this.notice.hidden = true;
  }

  busy(on) {
    this.dialog.setAttribute("aria-busy", String(on));
    for (const button of this.dialog.querySelectorAll("[type=submit]")) button.disabled = on;
  }

  /** Secrets leave the page's fields as soon as they have been sent. */
  forget() {
    this.keyForm.elements.key.value = "";
    this.passwordForm.elements.password.value = "";
  }

  clear() {
    this.forget();
    this.hideError();
  }

  showError({ title, lines }) {
    this.error.replaceChildren(h("strong", {}, title), " ", lines.join(" "));
    this.error.hidden = false;
  }

  hideError() {
    this.error.hidden = true;
    this.error.replaceChildren();
  }
}
