// For admins (events:manage): how far behind the order lifecycle is, and the
// events a consumer gave up on. The outbox (events not yet on the stream and
// the oldest's age), the stream's length, each consumer group's pending
// entries and lag (GET /admin/lifecycle), and the dead letters waiting (GET
// /admin/dead-letters), each with a Replay button, and Replay all. Read again
// every few seconds while shown.

import { api, describe } from "./api.js";
import { clock, count, h } from "./format.js";

const REFRESH_MS = 3000;

export class LifecyclePanel {
  constructor({ root, toast }) {
    this.root = root;
    this.toast = toast;
    this.el = {
      stats: root.querySelector("[data-role=stats]"),
      groups: root.querySelector("[data-role=groups]"),
      problem: root.querySelector("[data-role=problem]"),
      dead: root.querySelector("[data-role=dead]"),
      replayAll: root.querySelector("[data-role=replay-all]"),
      error: root.querySelector("[data-role=error]"),
      updated: root.querySelector("[data-role=updated]"),
    };
    this.enabled = false;
    this.timer = null;
    this.generation = 0; // an answer for an earlier caller is not shown to this one
    this.el.replayAll.addEventListener("click", () => this.replay(null, this.el.replayAll));
  }

  setAccess(can) {
    this.enabled = can.events;
    this.generation += 1;
    this.root.hidden = !can.events;
    clearInterval(this.timer);
    this.timer = null;
    if (!can.events) {
      this.el.dead.replaceChildren();
      return;
    }
    this.refresh();
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  async refresh() {
    if (!this.enabled) return;
    const generation = this.generation;
    try {
      const [status, dead] = await Promise.all([api.lifecycle(), api.deadLetters()]);
      if (generation !== this.generation) return;
      this.renderStatus(status);
      this.renderDead(dead.items);
      this.el.error.hidden = true;
      this.el.updated.textContent = `updated ${clock()}`;
    } catch (error) {
      if (generation !== this.generation) return;
      this.showError(error);
    }
  }

  renderStatus(s) {
    const stat = (label, value, testid) =>
      h("div", {}, h("dt", {}, label), h("dd", { testid }, value));
    this.el.stats.replaceChildren(
      stat("Outbox", count(s.outbox_pending), "lifecycle-outbox"),
      stat("Oldest", `${s.outbox_oldest_seconds.toFixed(1)} s`, "lifecycle-outbox-age"),
      stat("Stream", s.stream_length == null ? "\u2014" : count(s.stream_length), "lifecycle-stream"),
      stat("Dead", count(s.dead_letters), "lifecycle-dead"),
    );
    this.el.groups.replaceChildren(
      ...(s.groups.length
        ? s.groups.map((g) =>
            h(
              "tr",
              { testid: `lifecycle-group-${g.name}` },
              h("td", { class: "mono" }, g.name),
              h("td", { class: "num", dataset: { pending: g.pending } }, count(g.pending)),
              h("td", { class: "num" }, `${count(g.lag)}${g.lag_capped ? "+" : ""}`),
              h("td", { class: "num" }, count(g.consumers)),
            ),
          )
        : [h("tr", {}, h("td", { colspan: "4", class: "faint" }, "No consumer groups yet."))]),
    );
    this.el.problem.textContent = s.problem ?? "";
    this.el.problem.hidden = !s.problem;
  }

  renderDead(items) {
    this.el.replayAll.disabled = items.length === 0;
    this.el.dead.replaceChildren(
      ...(items.length
        ? items.map((letter) => this.letter(letter))
        : [h("li", { class: "order-list-note" }, "No dead letters.")]),
    );
  }

  letter(d) {
    const payload = d.payload ?? {};
    const button = h(
      "button",
      {
        type: "button",
        class: "button small",
        testid: `dead-replay-${d.id}`,
        onclick: () => this.replay(d.id, button),
      },
      "Replay",
    );
    return h(
      "li",
      { class: "dead-letter", testid: `dead-letter-${d.id}`, dataset: { consumer: d.consumer } },
      h(
        "div",
        { class: "dead-what" },
        h("span", { class: "mono" }, d.consumer),
        h("span", {}, ` ${payload.type ?? "event"}`),
        payload.order_id
          ? h("span", { class: "mono faint" }, ` ${String(payload.order_id).slice(0, 8)}`)
          : null,
        h("span", { class: "faint" }, ` \u00b7 ${d.attempts} attempts`),
      ),
      h("div", { class: "dead-error faint", title: d.error }, d.error),
      button,
    );
  }

  async replay(id, button) {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    try {
      const answer = id === null ? await api.replayAllDeadLetters() : await api.replayDeadLetter(id);
      const n = answer.items.length;
      this.toast(`Replayed ${n} dead letter${n === 1 ? "" : "s"}`);
    } catch (error) {
      this.showError(error);
    } finally {
      button.removeAttribute("aria-busy");
      await this.refresh();
    }
  }

  showError(error) {
    const { title, lines } = describe(error);
    this.el.error.replaceChildren(h("strong", {}, title), " ", lines.join(" "));
    this.el.error.hidden = false;
  }
}
