"""The verdict: pure functions from what clients were told, what the database holds,
what the views showed and when faults were on, to a list of violations.

A client's acknowledgement is a promise: every order answered 201 exists once,
in the status the client last saw or a later one; every stock change answered
200 is in the ledger once. An answer that never came (a timeout, a 503) may or
may not have taken effect, so it allows a row but never demands one.
"""

from collections import Counter, defaultdict
from collections.abc import Iterable

from tools.chaos.ledger import check_ledger, check_order_effects
from tools.chaos.model import (
    FINAL_STATUSES,
    Attempt,
    Convergence,
    DbState,
    EventRow,
    FaultWindow,
    Operation,
    OrderRow,
    Records,
    Sighting,
    View,
    Violation,
)

ADJUST_REASONS = frozenset({"restock", "damage", "count", "return", "correction"})


def verdict(
    records: Records, db: DbState, views: list[Convergence], limit: float
) -> list[Violation]:
    """Every violation of the run, database invariants first."""
    ops = records.operations
    return [
        *check_ledger(db),
        *check_order_effects(db),
        *check_orders(ops, records.sightings, db),
        *check_stock_writes(ops, db),
        *check_catalog_writes(ops, db),
        *check_http(ops, records.windows, records.origin),
        *records.incidents,
        *check_convergence(views, limit),
    ]


def check_orders(ops: list[Operation], sightings: list[Sighting], db: DbState) -> list[Violation]:
    by_key: dict[str, list[OrderRow]] = defaultdict(list)
    for order in db.orders:
        if order.key is not None:
            by_key[order.key].append(order)
    found = [
        Violation("duplicated", f"key {key} has {len(rows)} orders: {[r.id for r in rows]}")
        for key, rows in by_key.items()
        if len(rows) > 1
    ]
    placed = [op for op in ops if op.kind == "order"]
    for op in placed:
        found += _check_placed(op, by_key.get(op.key or "", []))
    for key in by_key.keys() - {op.key for op in placed}:
        found.append(Violation("phantom", f"order {by_key[key][0].id}: no client used key {key}"))
    orders = {order.id: order for order in db.orders}
    return found + _check_statuses([*sightings, *sightings_of(ops)], orders)


def sightings_of(ops: Iterable[Operation]) -> list[Sighting]:
    """The order statuses the HTTP answers showed."""
    seen = []
    for op in ops:
        for attempt in op.attempts:
            if attempt.ok and attempt.body and op.kind in ("order", "confirm", "cancel", "drain"):
                seen.append(Sighting(str(attempt.body["id"]), str(attempt.body["status"]), op.kind))
    return seen


def _check_placed(op: Operation, rows: list[OrderRow]) -> list[Violation]:
    ids = sorted({str(a.body["id"]) for a in op.attempts if a.ok and a.body})
    found = []
    if len(ids) > 1:
        found.append(Violation("duplicated", f"key {op.key} was answered with orders {ids}"))
    if op.outcome == "acked" and not rows:
        found.append(Violation("lost", f"order {ids[-1]} (key {op.key}) was answered 201, is gone"))
    elif op.outcome == "acked" and rows[0].id not in ids:
        message = f"key {op.key}: the client got order {ids[-1]}, the database has {rows[0].id}"
        found.append(Violation("duplicated", message))
    elif op.outcome == "refused" and rows:
        code = op.attempts[-1].code
        message = f"key {op.key} was refused ({code}) yet order {rows[0].id} exists"
        found.append(Violation("phantom", message))
    return found


def _check_statuses(sightings: list[Sighting], orders: dict[str, OrderRow]) -> list[Violation]:
    """A final status a client saw is the order's status for good."""
    seen: dict[str, set[str]] = defaultdict(set)
    for sighting in sightings:
        seen[sighting.order_id].add(sighting.status)
    found = []
    for order_id, statuses in sorted(seen.items()):
        finals = sorted(statuses.intersection(FINAL_STATUSES))
        order = orders.get(order_id)
        if order is None:
            continue  # reported as lost by its placement
        if len(finals) > 1 or (finals and order.status != finals[0]):
            message = (
                f"order {order_id} was seen {'/'.join(finals)}, the database says {order.status}"
            )
            found.append(Violation("status", message))
    return found


def check_stock_writes(ops: list[Operation], db: DbState) -> list[Violation]:
    """Acknowledged adjustments and sets are in the ledger, and each at most once."""
    by_seq = {event.seq: event for event in db.events}
    found = []
    writes = [op for op in ops if op.kind in ("adjust", "set_stock")]
    for op in writes:
        change = op.result
        if op.outcome != "acked" or change is None:
            continue
        event = by_seq.get(int(change["seq"]))
        if event is None or not _records(op, event, int(change["product_id"])):
            what = f"seq {event.seq}: {event.reason} {event.delta_on_hand}" if event else "nothing"
            message = (
                f"{_describe(op)} was answered with seq {change['seq']}; the ledger has {what}"
            )
            found.append(Violation("lost", message))
    allowed = Counter(_write_signature(op) for op in writes if op.outcome != "refused")
    actual = Counter(
        _event_signature(event)
        for event in db.events
        if event.reason in ADJUST_REASONS or event.reason == "set"
    )
    for signature, count in sorted(actual.items()):
        if count > allowed[signature]:
            message = (
                f"{count} ledger rows {signature}, but only {allowed[signature]} request(s) "
                "were acknowledged or left unanswered"
            )
            found.append(Violation("duplicated", message))
    return found


def _records(op: Operation, event: EventRow, product_id: int) -> bool:
    if event.sku != op.target or event.product_id != product_id:
        return False
    if op.kind == "adjust":
        return bool(
            event.reason == op.request["reason"] and event.delta_on_hand == op.request["delta"]
        )
    return event.reason == "set" and event.on_hand == op.request["on_hand"]


def _write_signature(op: Operation) -> tuple[str, str, int]:
    if op.kind == "adjust":
        return (op.target, str(op.request["reason"]), int(op.request["delta"]))
    return (op.target, "set", int(op.request["on_hand"]))


def _event_signature(event: EventRow) -> tuple[str, str, int]:
    if event.reason == "set":
        return (event.sku, "set", event.on_hand)
    return (event.sku, event.reason, event.delta_on_hand)


def _describe(op: Operation) -> str:
    if op.kind == "adjust":
        return f"adjustment of {op.target} by {op.request['delta']} ({op.request['reason']})"
    return f"set of {op.target} to {op.request['on_hand']}"


def check_catalog_writes(ops: list[Operation], db: DbState) -> list[Violation]:
    """Acknowledged creates made their product, acknowledged deletes deleted theirs, and
    no SKU was created or deleted more often than requests could have done it."""
    products = {product.id: product for product in db.products}
    found = []
    for op in ops:
        if op.kind not in ("create", "delete") or op.outcome != "acked" or op.result is None:
            continue
        product = products.get(int(op.result["id"]))
        if product is None or product.sku != op.target:
            message = f"{op.kind} of {op.target} was acknowledged, product {op.result['id']} is not"
            found.append(Violation("lost", message))
        elif op.kind == "delete" and not product.deleted:
            message = f"delete of {op.target} was acknowledged, product {product.id} is live"
            found.append(Violation("lost", message))
    for reason, kind in (("created", "create"), ("deleted", "delete")):
        allowed = Counter(op.target for op in ops if op.kind == kind and op.outcome != "refused")
        actual = Counter(event.sku for event in db.events if event.reason == reason)
        for sku, count in sorted(actual.items()):
            if count > allowed[sku]:
                message = f"{sku} was {reason} {count} times, {allowed[sku]} requests could do it"
                found.append(Violation("duplicated", message))
    return found


def check_http(ops: list[Operation], windows: list[FaultWindow], origin: float) -> list[Violation]:
    """No 5xx but 503, and a 503 or a refused connection only while a fault is on."""
    found = []
    for op in ops:
        for attempt in op.attempts:
            problem = _http_problem(attempt, windows)
            if problem:
                when = f"+{attempt.started - origin:.2f}s"
                message = f"{problem}: {op.kind} {op.target} on {attempt.node} at {when}"
                evidence = (f"request id {attempt.request_id}",) if attempt.request_id else ()
                found.append(Violation("http", message, evidence))
    return found


def _http_problem(attempt: Attempt, windows: list[FaultWindow]) -> str | None:
    during = [w for w in windows if w.overlaps(attempt.started, attempt.ended)]
    if attempt.status is not None and attempt.status >= 500:
        if attempt.status != 503:
            return f"{attempt.status} {attempt.code or ''}".strip()
        if not during:
            return f"503 {attempt.code or ''} with no fault on".strip()
    if attempt.error == "refused":
        killed = [w for w in during if w.kind == "node_kill" and w.target == attempt.node]
        if not killed:
            return "connection refused by a node nobody killed"
    return None


def check_convergence(views: list[Convergence], limit: float) -> list[Violation]:
    found = []
    for view in views:
        category = "divergent" if view.aspect == "catalog" else "followers"
        what = f"{view.name}'s {'catalog' if view.aspect == 'catalog' else 'followed orders'}"
        if view.seconds is None:
            found.append(Violation(category, f"{what} never matched the database", view.diff))
        elif view.seconds > limit:
            message = f"{what} matched the database after {view.seconds:.2f}s (limit {limit}s)"
            found.append(Violation(category, message, view.diff))
    return found


def compare_catalog(view: View, db: DbState) -> list[str]:
    """How a view differs from the live products, one line per SKU, as (product id,
    version, on_hand, reserved)."""
    truth = db.live()
    lines = []
    for sku in sorted(view.products.keys() | truth.keys()):
        have, want = view.products.get(sku), truth.get(sku)
        if have != want:
            lines.append(f"{sku}: view {have or 'absent'}, database {want or 'absent'}")
    return lines


def compare_followed(view: View, db: DbState) -> list[str]:
    """The followed orders whose last status seen is not the database's."""
    statuses = {order.id: order.status for order in db.orders}
    return [
        f"order {order_id}: last seen {status or 'never'}, database {statuses.get(order_id)}"
        for order_id, status in sorted((view.followed or {}).items())
        if status != statuses.get(order_id)
    ]
