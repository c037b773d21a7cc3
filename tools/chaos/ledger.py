"""What the database's own rows must agree on, whatever happened to the nodes.

Each product equals the sum of its ledger, its versions count 1, 2, 3, ... in
ledger order, its holds are exactly what pending orders hold, and every order
has exactly the ledger rows its status implies: one reservation per product,
then one sale or one release.
"""

from collections import defaultdict
from collections.abc import Callable

from tools.chaos.model import DbState, EventRow, OrderRow, ProductRow, Violation

SETTLE_REASON = {"confirmed": "sold", "cancelled": "released", "expired": "expired"}
# (delta_on_hand, delta_reserved) per unit of a line, for each reason an order causes.
ORDER_DELTAS = {"reserved": (0, 1), "sold": (-1, -1), "released": (0, -1), "expired": (0, -1)}


def check_ledger(db: DbState) -> list[Violation]:
    """Every product against its ledger rows and the pending orders' lines."""
    events = events_by(db.events, lambda event: event.product_id)
    held = pending_units(db.orders)
    found: list[Violation] = []
    for product in db.products:
        rows = events.get(product.id, [])
        if not rows:
            found.append(Violation("ledger", f"{_name(product)} has no ledger rows"))
            continue
        found += _check_versions(product, rows)
        found += _check_running(product, rows)
        found += _check_totals(product, rows, held.get(product.id, 0))
    return found


def check_order_effects(db: DbState) -> list[Violation]:
    """Every order's ledger rows: a reservation per product, then what its status says."""
    events = events_by(db.events, lambda event: event.order_id)
    found: list[Violation] = []
    for order in db.orders:
        found += _check_order(order, events.get(order.id, []))
    return found


def events_by(
    events: tuple[EventRow, ...], key: Callable[[EventRow], object]
) -> dict[object, list[EventRow]]:
    grouped: dict[object, list[EventRow]] = defaultdict(list)
    for event in sorted(events, key=lambda e: e.seq):
        grouped[key(event)].append(event)
    return grouped


def pending_units(orders: tuple[OrderRow, ...]) -> dict[int, int]:
    """Units held per product id by orders still pending."""
    held: dict[int, int] = defaultdict(int)
    for order in orders:
        if order.status == "pending":
            for product_id, quantity in order.lines:
                held[product_id] += quantity
    return held


def _name(product: ProductRow) -> str:
    return f"{product.sku} (product {product.id})"


def _check_versions(product: ProductRow, rows: list[EventRow]) -> list[Violation]:
    previous = 0
    for row in rows:
        if row.version != previous + 1:
            what = "repeats" if row.version == previous else "jumps to"
            return [
                Violation(
                    "version",
                    f"{_name(product)}: after version {previous} the ledger {what} "
                    f"{row.version} (seq {row.seq}, {row.reason})",
                )
            ]
        previous = row.version
    return []


def _check_running(product: ProductRow, rows: list[EventRow]) -> list[Violation]:
    """Each row's resulting stock is the sum of the deltas so far, and never oversold."""
    on_hand = reserved = 0
    for row in rows:
        on_hand, reserved = on_hand + row.delta_on_hand, reserved + row.delta_reserved
        if (row.on_hand, row.reserved) != (on_hand, reserved):
            return [
                Violation(
                    "ledger",
                    f"{_name(product)}: seq {row.seq} says on_hand {row.on_hand} reserved "
                    f"{row.reserved}, its deltas sum to {on_hand} and {reserved}",
                )
            ]
        if reserved < 0 or on_hand - reserved < 0:
            message = (
                f"{_name(product)}: seq {row.seq} leaves on_hand {on_hand} reserved {reserved}"
            )
            return [Violation("oversell", message)]
    return []


def _check_totals(product: ProductRow, rows: list[EventRow], held: int) -> list[Violation]:
    name, last = _name(product), rows[-1]
    on_hand = sum(row.delta_on_hand for row in rows)
    reserved = sum(row.delta_reserved for row in rows)
    found = []
    if (product.on_hand, product.reserved) != (on_hand, reserved):
        found.append(
            Violation(
                "ledger",
                f"{name}: on_hand {product.on_hand} reserved {product.reserved}, "
                f"the ledger sums to {on_hand} and {reserved}",
            )
        )
    if product.version != last.version:
        message = f"{name}: version {product.version}, the ledger's last is {last.version}"
        found.append(Violation("ledger", message))
    if product.reserved != held:
        found.append(
            Violation("ledger", f"{name}: reserved {product.reserved}, pending orders hold {held}")
        )
    if product.reserved < 0 or product.on_hand - product.reserved < 0:
        message = f"{name}: on_hand {product.on_hand} reserved {product.reserved}"
        found.append(Violation("oversell", message))
    if product.deleted != (last.reason == "deleted"):
        state = "deleted" if product.deleted else "live"
        found.append(
            Violation("ledger", f"{name} is {state}; its last ledger row is {last.reason}")
        )
    return found


def _expected_rows(order: OrderRow) -> dict[tuple[str, int], tuple[int, int]]:
    """(reason, product id) -> (delta_on_hand, delta_reserved) of the rows the order implies."""
    units: dict[int, int] = defaultdict(int)
    for product_id, quantity in order.lines:
        units[product_id] += quantity
    reasons = ["reserved"]
    if order.status in SETTLE_REASON:
        reasons.append(SETTLE_REASON[order.status])
    return {
        (reason, product_id): (ORDER_DELTAS[reason][0] * count, ORDER_DELTAS[reason][1] * count)
        for reason in reasons
        for product_id, count in units.items()
    }


def _check_order(order: OrderRow, rows: list[EventRow]) -> list[Violation]:
    expected = _expected_rows(order)
    actual: dict[tuple[str, int], list[EventRow]] = defaultdict(list)
    for row in rows:
        actual[(row.reason, row.product_id)].append(row)
    name = f"order {order.id} ({order.status})"
    found = [
        Violation("lost", f"{name} has no {reason} row for product {product_id}")
        for reason, product_id in expected.keys() - actual.keys()
    ]
    for (reason, product_id), got in sorted(actual.items()):
        want = expected.get((reason, product_id))
        seqs = ", ".join(str(row.seq) for row in got)
        if want is None or len(got) > 1:
            found.append(
                Violation(
                    "duplicated",
                    f"{name} has {len(got)} {reason} row(s) for product {product_id} "
                    f"(seq {seqs}), {1 if want else 0} expected",
                )
            )
        elif (got[0].delta_on_hand, got[0].delta_reserved) != want:
            found.append(
                Violation(
                    "ledger",
                    f"{name}: {reason} row seq {seqs} moves (on_hand, reserved) by "
                    f"{(got[0].delta_on_hand, got[0].delta_reserved)}, its lines say {want}",
                )
            )
    return found
