"""The documents passed from layer to layer, typed once.

Every SQL function answers one jsonb document; these are their shapes, shared
by the database port, the cache, the sync, the bus and the hub. A `Change` is
one ledger row with its product's state: the Redis message, the WebSocket
`stock` message and a catch-up event alike. Timestamps stay ISO 8601 text, as
JSON carries them.
"""

from typing import Any, NotRequired, TypedDict

Json = dict[str, Any]


class Change(TypedDict):
    sku: str
    product_id: int
    name: str
    price_cents: int
    low_stock_threshold: int
    on_hand: int
    reserved: int
    available: int
    delta_on_hand: int
    delta_reserved: int
    version: int
    seq: int
    reason: str
    order_id: str | None
    node: str
    committed_at: str
    deleted: bool


class Product(TypedDict):
    id: int
    sku: str
    name: str
    price_cents: int
    on_hand: int
    reserved: int
    available: int
    low_stock_threshold: int
    version: int
    updated_at: str
    created_at: NotRequired[str]


class Tombstone(TypedDict):
    """The latest, deleted product of a SKU that has no live one."""

    sku: str
    product_id: int
    version: int


class OrderLine(TypedDict):
    sku: str
    quantity: int
    unit_price_cents: int
    line_total_cents: int
    refunded_quantity: int


class Refund(TypedDict):
    id: str
    order_id: str
    items: list[Json]
    restock: bool
    reason: str
    subtotal_cents: int
    fee_cents: int
    total_cents: int
    created_at: str


class Order(TypedDict):
    id: str
    status: str
    customer_id: str | None
    items: list[OrderLine]
    subtotal_cents: int
    fee_cents: int
    total_cents: int
    node_id: str
    expires_at: str
    created_at: str
    updated_at: str
    payment_method: str | None
    paid_cents: int
    refunded_cents: int
    cancel_reason: str | None
    refunds: list[Refund]


class OrderEvent(TypedDict):
    """One row of the outbox: what happened to an order (or `stock.low` to a product)."""

    event_id: str
    seq: int
    type: str
    order_id: str | None
    sku: str | None
    at: str
    node: str
    body: Json
    webhooks: NotRequired[bool]  # on the stream: an endpoint wanted its type when relayed


class Snapshot(TypedDict):
    """The whole catalog and the ledger cursor it was read at."""

    products: list[Product]
    tombstones: list[Tombstone]
    cursor: str


class ChangePage(TypedDict):
    """Ledger rows after a cursor, for the catch-up."""

    events: list[Change]
    cursor: str
    more: bool


# A ledger row in brief: [sku, product_id, version, order_id or None].
LedgerMark = tuple[str, int, int, str | None]


class MarkPage(TypedDict):
    """The page `ChangePage` would be, each row in brief: enough to tell whether a
    node holds it already."""

    events: list[LedgerMark]
    cursor: str
    more: bool


class ChangeHistory(TypedDict):
    """The ledger for people: newest first; `next` pages back."""

    items: list[Change]
    next: int | None


class Written(TypedDict):
    """What a write answers: the changes it committed, and what it made."""

    changes: list[Change]
    product: NotRequired[Product]
    order: NotRequired[Order]
    refund: NotRequired[Refund]
    replayed: NotRequired[bool]
    duplicate: NotRequired[bool]
    expired: NotRequired[list[str]]


class OrderRequest(TypedDict):
    """One order of a batch: `caller` owns the idempotency key (None: anonymous)."""

    items: list[Json]
    customer_id: str | None
    idempotency_key: str | None
    caller: str | None
    payment_method: NotRequired[str | None]
