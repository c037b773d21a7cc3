"""Receipts: the order's lines, fee, total, payment and refunds, as text and escaped HTML."""

import html
import re
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from backend.documents import Order
from backend.notify.receipts import money, render
from backend.notify.storage import FileReceipts

ORDER_ID = "3f1c2a9e-0000-4000-8000-000000000001"


def order(**changes: Any) -> Order:
    made: dict[str, Any] = {
        "id": ORDER_ID,
        "status": "confirmed",
        "customer_id": "cust-1",
        "items": [
            {
                "sku": "TEE-M",
                "quantity": 2,
                "unit_price_cents": 1500,
                "line_total_cents": 3000,
                "refunded_quantity": 0,
            },
            {
                "sku": "MUG",
                "quantity": 1,
                "unit_price_cents": 999,
                "line_total_cents": 999,
                "refunded_quantity": 0,
            },
        ],
        "subtotal_cents": 3999,
        "fee_cents": 800,
        "total_cents": 4799,
        "node_id": "node-1",
        "expires_at": "2026-01-01T00:15:00+00:00",
        "created_at": "2026-01-01T00:00:00+00:00",
        "updated_at": "2026-01-01T00:00:05+00:00",
        "payment_method": "test_ok",
        "paid_cents": 4799,
        "refunded_cents": 0,
        "cancel_reason": None,
        "refunds": [],
    }
    made.update(changes)
    return cast(Order, made)


REFUND = {
    "id": "5b2e0000-0000-4000-8000-000000000002",
    "order_id": ORDER_ID,
    "items": [{"sku": "TEE-M", "quantity": 1, "unit_price_cents": 1500, "amount_cents": 1500}],
    "restock": True,
    "reason": 'too <small> & "tight"',
    "subtotal_cents": 1500,
    "fee_cents": 300,
    "total_cents": 1800,
    "created_at": "2026-01-02T10:00:00+00:00",
}


def cells(document: str) -> list[list[str]]:
    """The HTML's table rows as lists of cell texts (unescaped)."""
    rows = re.findall(r"<tr>(.*?)</tr>", document)
    return [[html.unescape(c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r)] for r in rows]


def test_money_is_dollars_and_cents() -> None:
    assert [money(0), money(5), money(123456), money(-1800)] == [
        "$0.00",
        "$0.05",
        "$1,234.56",
        "-$18.00",
    ]


def test_a_confirmed_receipt_lists_lines_fee_total_and_payment() -> None:
    receipt = render(order(), "order.confirmed", names={"TEE-M": "Tee, M"})
    assert receipt.subject == "Your OrderFlow order 3F1C2A9E is confirmed"
    text = receipt.text
    assert "2 x Tee, M (TEE-M) @ $15.00 = $30.00" in text
    assert "1 x MUG @ $9.99 = $9.99" in text  # a product not in the catalog: its SKU
    for line in ("Subtotal: $39.99", "Fee: $8.00", "Total: $47.99", "Paid: $47.99"):
        assert line in text.splitlines()
    assert "Status: paid" in text
    assert "Payment: test_ok" in text
    rows = cells(receipt.html)
    assert ["Tee, M (TEE-M)", "2", "$15.00", "$30.00", ""] in rows
    assert ["MUG", "1", "$9.99", "$9.99", ""] in rows
    assert ["Subtotal", "$39.99", ""] in rows
    assert ["Fee", "$8.00", ""] in rows
    assert ["Total", "$47.99", ""] in rows


def test_refunds_are_listed_with_their_amounts() -> None:
    items = order()["items"]
    items[0]["refunded_quantity"] = 1
    refunded = order(
        status="partially_refunded", items=items, refunded_cents=1800, refunds=[REFUND]
    )
    receipt = render(refunded, "order.refunded")
    assert receipt.subject.endswith("was refunded")
    assert "Refunded: -$18.00" in receipt.text.splitlines()
    assert "Status: partially refunded" in receipt.text
    assert "(1 refunded)" in receipt.text
    assert "$18.00 (items $15.00, fee $3.00) restocked" in receipt.text
    assert "1 x TEE-M" in receipt.text
    rows = cells(receipt.html)
    assert [
        "2026-01-02T10:00:00+00:00",
        "1 x TEE-M",
        "$15.00",
        "$3.00",
        "$18.00",
        "yes",
        'too <small> & "tight"',
    ] in rows


def test_a_cancelled_receipt_says_why() -> None:
    cancelled = order(status="cancelled", cancel_reason="payment_declined", paid_cents=0)
    receipt = render(cancelled, "order.cancelled")
    assert "Status: cancelled (the payment was declined)" in receipt.text
    assert "Paid:" not in receipt.text
    assert receipt.subject.endswith("was cancelled")


def test_names_people_typed_are_escaped_in_the_html() -> None:
    evil = '<script>alert("x")</script>'
    customer = {"id": "cust-1", "email": "a@example.com", "name": f"Eve {evil}"}
    refund = {**REFUND, "reason": evil}
    receipt = render(
        order(refunds=[refund]),
        "order.refunded",
        customer=customer,
        names={"TEE-M": f"Tee {evil} & co"},
    )
    assert "<script>" not in receipt.html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in receipt.html
    assert "Tee &lt;script&gt;" in receipt.html
    assert "&amp; co" in receipt.html
    assert f"Hello Eve {evil}," in receipt.text  # plain text carries them as they are


async def test_file_receipts_keep_the_latest_per_order(tmp_path: Path) -> None:
    store = FileReceipts(tmp_path / "receipts")
    order_id = UUID(ORDER_ID)
    assert await store.get(order_id, "html") is None
    ref = await store.put(order_id, render(order(), "order.confirmed"))
    assert ref == str(tmp_path / "receipts" / ORDER_ID)
    refunded = render(order(refunds=[REFUND], refunded_cents=1800), "order.refunded")
    await store.put(order_id, refunded)
    assert await store.get(order_id, "text") == refunded.text
    assert await store.get(order_id, "html") == refunded.html
    assert sorted(p.name for p in (tmp_path / "receipts" / ORDER_ID).iterdir()) == [
        "receipt.html",
        "receipt.txt",
    ]
