// Recent stock events, newest first: the ledger's last page, then live news.

import { clock, count, h, signed } from "./format.js";

const CAP = 50;

export class EventFeed {
  constructor(list) {
    this.list = list;
    this.events = new Map(); // seq -> change
    this.nodes = new Map(); // seq -> its <li>
  }

  /** Merge changes (a page from /events or one live message); duplicates by seq are ignored. */
  add(changes, { live = false } = {}) {
    const fresh = changes.filter((change) => !this.events.has(change.seq));
    if (!fresh.length && this.list.children.length) return;
    for (const change of fresh) this.events.set(change.seq, change);
    const newest = [...this.events.values()].sort((a, b) => b.seq - a.seq).slice(0, CAP);
    this.events = new Map(newest.map((change) => [change.seq, change]));
    this.render(newest, live ? new Set(fresh.map((change) => change.seq)) : new Set());
  }

  /** Insert new lines in place and drop old ones; lines already shown keep their node. */
  render(newest, highlighted) {
    this.list.querySelector(".feed-empty")?.remove();
    let cursor = this.list.firstElementChild;
    for (const change of newest) {
      const node = this.nodes.get(change.seq);
      if (node === cursor) {
        cursor = cursor.nextElementSibling;
        continue;
      }
      if (node) {
        this.list.insertBefore(node, cursor);
        continue;
      }
      const item = this.item(change, highlighted.has(change.seq));
      this.nodes.set(change.seq, item);
      this.list.insertBefore(item, cursor);
    }
    for (const [seq, node] of this.nodes) {
      if (!this.events.has(seq)) {
        node.remove();
        this.nodes.delete(seq);
      }
    }
    if (!newest.length) this.list.append(h("li", { class: "feed-empty" }, "No stock changes yet."));
  }

  item(c, highlighted) {
    const deltas = [];
    if (c.delta_on_hand) deltas.push(delta("on hand", c.delta_on_hand));
    if (c.delta_reserved) deltas.push(delta("held", c.delta_reserved));
    return h(
      "li",
      {
        class: `feed-item${highlighted ? " is-new" : ""}`,
        testid: `feed-${c.seq}`,
        dataset: { seq: String(c.seq) },
      },
      h(
        "time",
        { class: "feed-time", datetime: c.committed_at, title: c.committed_at },
        clock(c.committed_at),
      ),
      h(
        "span",
        { class: "feed-main" },
        h("span", { class: "mono feed-sku" }, c.sku),
        h("span", { class: `reason reason-${c.reason}` }, c.reason),
        deltas,
      ),
      h(
        "span",
        { class: "feed-result" },
        c.deleted ? h("span", { class: "faint" }, "removed") : `${count(c.available)} avail.`,
      ),
      h("span", { class: "feed-node" }, c.node),
    );
  }
}

function delta(label, value) {
  const tone = value > 0 ? "up" : "down";
  return h(
    "span",
    { class: `delta delta-${tone}`, title: `${label} ${signed(value)}` },
    `${label} ${signed(value)}`,
  );
}
