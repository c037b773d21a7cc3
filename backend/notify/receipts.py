"""An order's receipt, as plain text and as HTML, from the order document alone.

Pure functions: the order (from `get_order`), who bought it and what its
products are called go in, the subject and both bodies come out. Product and
customer names and refund reasons are typed by people, so every one of them is
escaped in the HTML; the text body carries them as they are.
"""

import html
from collections.abc import Mapping
from dataclasses import dataclass

from backend.documents import Json, Order, OrderLine, Refund

SHOP = "OrderFlow"

# What each event tells the customer, in the subject and at the top.
HEADLINES = {
    "order.confirmed": "Thank you: your order is confirmed",
    "order.cancelled": "Your order was cancelled",
    "order.expired": "Your order expired before it was paid",
    "order.refunded": "A refund on your order",
}
SUBJECTS = {
    "order.confirmed": "is confirmed",
    "order.cancelled": "was cancelled",
    "order.expired": "expired",
    "order.refunded": "was refunded",
}
STATUS_TEXT = {
    "pending": "awaiting payment",
    "confirmed": "paid",
    "cancelled": "cancelled",
    "expired": "expired",
    "refunded": "refunded",
    "partially_refunded": "partially refunded",
}
CANCEL_REASONS = {
    "payment_declined": "the payment was declined",
    "hold_expired": "it was not paid in time",
    "cancelled_by_customer": "you cancelled it",
    "cancelled_by_staff": "the shop cancelled it",
}


@dataclass(frozen=True)
class Receipt:
    subject: str
    text: str
    html: str


def money(cents: int) -> str:
    """US dollars, as the dashboard shows them: $1,234.50, -$3.00."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}${whole:,}.{part:02d}"


def short_id(order_id: str) -> str:
    return order_id.split("-")[0].upper()


def subject(order: Order, event_type: str) -> str:
    return f"Your {SHOP} order {short_id(order['id'])} {SUBJECTS.get(event_type, 'changed')}"


def render(
    order: Order,
    event_type: str,
    *,
    customer: Json | None = None,
    names: Mapping[str, str] | None = None,
) -> Receipt:
    """The receipt of `order` as it stands, announcing `event_type`.

    `names` maps SKUs to product names (a line whose product is gone shows its SKU).
    """
    names = names or {}
    return Receipt(
        subject=subject(order, event_type),
        text=render_text(order, event_type, customer, names),
        html=render_html(order, event_type, customer, names),
    )


def _status(order: Order) -> str:
    status = STATUS_TEXT.get(order["status"], order["status"])
    reason = order.get("cancel_reason")
    if order["status"] in ("cancelled", "expired") and reason:
        status += f" ({CANCEL_REASONS.get(reason, reason)})"
    return status


def _greeting(customer: Json | None) -> str:
    name = (customer or {}).get("name")
    return f"Hello {name}," if name else "Hello,"


def _line_name(line: OrderLine, names: Mapping[str, str]) -> str:
    name = names.get(line["sku"])
    return f"{name} ({line['sku']})" if name else line["sku"]


def _totals(order: Order) -> list[tuple[str, int]]:
    rows = [
        ("Subtotal", order["subtotal_cents"]),
        ("Fee", order["fee_cents"]),
        ("Total", order["total_cents"]),
    ]
    if order.get("paid_cents"):
        rows.append(("Paid", order["paid_cents"]))
    if order.get("refunded_cents"):
        rows.append(("Refunded", -order["refunded_cents"]))
    return rows


def _refund_items(refund: Refund) -> list[str]:
    return [f"{item['quantity']} x {item['sku']}" for item in refund.get("items", [])]


def render_text(
    order: Order, event_type: str, customer: Json | None, names: Mapping[str, str]
) -> str:
    out = [
        _greeting(customer),
        "",
        f"{HEADLINES.get(event_type, 'Your order')}.",
        "",
        f"Order {order['id']}",
        f"Placed {order['created_at']}",
        f"Status: {_status(order)}",
    ]
    if order.get("payment_method"):
        out.append(f"Payment: {order['payment_method']}")
    out += ["", "Items"]
    for line in order["items"]:
        refunded = line.get("refunded_quantity", 0)
        note = f"  ({refunded} refunded)" if refunded else ""
        out.append(
            f"  {line['quantity']} x {_line_name(line, names)} @ {money(line['unit_price_cents'])}"
            f" = {money(line['line_total_cents'])}{note}"
        )
    out.append("")
    out += [f"{label}: {money(cents)}" for label, cents in _totals(order)]
    refunds = order.get("refunds") or []
    if refunds:
        out += ["", "Refunds"]
    for refund in refunds:
        out.append(
            f"  {refund['created_at']}: {money(refund['total_cents'])}"
            f" (items {money(refund['subtotal_cents'])}, fee {money(refund['fee_cents'])})"
            f" {'restocked' if refund['restock'] else 'not restocked'}; reason: {refund['reason']}"
        )
        if items := _refund_items(refund):
            out.append(f"    {', '.join(items)}")
    out += ["", f"{SHOP}"]
    return "\n".join(out) + "\n"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


_STYLE = (
    "body{font-family:system-ui,sans-serif;color:#222;max-width:40rem}"
    "table{border-collapse:collapse;width:100%}"
    "th,td{padding:.3rem .5rem;border-bottom:1px solid #ddd;text-align:left}"
    "td.n,th.n{text-align:right}"
)


def render_html(
    order: Order, event_type: str, customer: Json | None, names: Mapping[str, str]
) -> str:
    lines = "".join(
        f"<tr><td>{_e(_line_name(line, names))}</td><td class=n>{line['quantity']}</td>"
        f"<td class=n>{money(line['unit_price_cents'])}</td>"
        f"<td class=n>{money(line['line_total_cents'])}</td>"
        f"<td class=n>{line.get('refunded_quantity', 0) or ''}</td></tr>"
        for line in order["items"]
    )
    totals = "".join(
        f"<tr><th colspan=3>{label}</th><td class=n>{money(cents)}</td><td></td></tr>"
        for label, cents in _totals(order)
    )
    payment = (
        f"<p>Payment: {_e(order['payment_method'])}</p>" if order.get("payment_method") else ""
    )
    parts = [
        "<!doctype html><html><head><meta charset=utf-8>",
        f"<title>{_e(subject(order, event_type))}</title><style>{_STYLE}</style></head><body>",
        f"<p>{_e(_greeting(customer))}</p>",
        f"<h1>{_e(HEADLINES.get(event_type, 'Your order'))}</h1>",
        f"<p>Order <code>{_e(order['id'])}</code>, placed {_e(order['created_at'])}</p>",
        f"<p>Status: <strong>{_e(_status(order))}</strong></p>",
        payment,
        "<table><thead><tr><th>Item</th><th class=n>Qty</th><th class=n>Unit price</th>"
        "<th class=n>Line total</th><th class=n>Refunded</th></tr></thead>",
        f"<tbody>{lines}</tbody><tfoot>{totals}</tfoot></table>",
        _refunds_html(order.get("refunds") or []),
        f"<p>{SHOP}</p></body></html>",
    ]
    return "".join(parts) + "\n"


def _refunds_html(refunds: list[Refund]) -> str:
    if not refunds:
        return ""
    rows = "".join(
        f"<tr><td>{_e(refund['created_at'])}</td><td>{_e(', '.join(_refund_items(refund)))}</td>"
        f"<td class=n>{money(refund['subtotal_cents'])}</td>"
        f"<td class=n>{money(refund['fee_cents'])}</td>"
        f"<td class=n>{money(refund['total_cents'])}</td>"
        f"<td>{'yes' if refund['restock'] else 'no'}</td><td>{_e(refund['reason'])}</td></tr>"
        for refund in refunds
    )
    return (
        "<h2>Refunds</h2><table><thead><tr><th>When</th><th>Items</th><th class=n>Items</th>"
        "<th class=n>Fee</th><th class=n>Total</th><th>Restocked</th><th>Reason</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>"
    )
