"""Request and response bodies of the REST API, and the errors each route declares.

The request schemas are the contract: what they accept, the server accepts
(short of a rule only the data can decide, like an unknown SKU), and what they
refuse never reaches SQL.
"""

from datetime import datetime
from typing import Annotated, Any, Literal, Self
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
INT32_MAX = 2_147_483_647
# Versions and ledger seqs are Postgres bigints, bounded here by the largest integer a
# JSON number holds exactly (2^53 - 1): past it JavaScript clients, and JSON Schema
# validators comparing as doubles, cannot tell one bigint from the next.
MAX_SAFE_INTEGER = 9_007_199_254_740_991

PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # no control characters (Postgres refuses NUL outright)
# Printable, and neither starting nor ending with a control or space character: a name
# is stored as sent. The spaces are spelled out, as regex engines disagree on `\s`
# (U+0085 and U+FEFF): pydantic's, JSON Schema's and every client's must agree here.
_BLANK = r"\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
NAME_PATTERN = rf"^[^{_BLANK}](?:[^\x00-\x1f\x7f]*[^{_BLANK}])?$"


def _whole_number(value: object) -> object:
    """JSON Schema's `integer` includes 5.0 (draft 2020-12): take it as 5. Strings,
    booleans and fractions stay refused by the strict check that follows."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _not_zero(value: int) -> int:
    if value == 0:
        raise ValueError("must not be zero")
    return value


# Field before BeforeValidator: the other order loses minimum/maximum in the JSON schema.
WholeNumber = BeforeValidator(_whole_number)

Sku = Annotated[str, StringConstraints(pattern=SKU_PATTERN)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NAME_PATTERN)]
CustomerId = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=PRINTABLE)]
Cents = Annotated[int, Field(strict=True, ge=0, le=100_000_000_000), WholeNumber]
Units = Annotated[int, Field(strict=True, ge=0, le=INT32_MAX), WholeNumber]
Quantity = Annotated[int, Field(strict=True, ge=1, le=INT32_MAX), WholeNumber]
Delta = Annotated[
    int,
    Field(strict=True, ge=-INT32_MAX, le=INT32_MAX, json_schema_extra={"not": {"const": 0}}),
    WholeNumber,
    AfterValidator(_not_zero),
]
Version = Annotated[int, Field(strict=True, ge=1, le=MAX_SAFE_INTEGER), WholeNumber]
AdjustReason = Literal["restock", "damage", "count", "return", "correction"]
OrderStatus = Literal[
    "pending", "confirmed", "cancelled", "expired", "refunded", "partially_refunded"
]
PaymentMethod = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_]{0,31}$",
        description="How the customer pays: `test_ok`, `test_decline` or `test_flaky` with the"
        " simulated provider; the provider's own method name (e.g. `card`) with webhooks.",
    ),
]


class Body(BaseModel):
    """Request bodies refuse unknown fields, so a typo is an error, not a no-op."""

    model_config = ConfigDict(extra="forbid")


class ProductCreate(Body):
    sku: Sku
    name: Name
    price_cents: Cents
    on_hand: Units = 0
    low_stock_threshold: Units = 5


_PATCHABLE = ("name", "price_cents", "low_stock_threshold")


class ProductPatch(Body):
    """At least one of name, price_cents and low_stock_threshold; null leaves a field as is."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": [field], "properties": {field: {"not": {"type": "null"}}}}
                for field in _PATCHABLE
            ]
        },
    )

    name: Name | None = None
    price_cents: Cents | None = None
    low_stock_threshold: Units | None = None
    expected_version: Version | None = Field(
        default=None, description="Refuse with VERSION_CONFLICT if the product moved on."
    )

    @model_validator(mode="after")
    def _changes_something(self) -> Self:
        if all(getattr(self, field) is None for field in _PATCHABLE):
            raise ValueError(f"give at least one of {', '.join(_PATCHABLE)}")
        return self


class Adjustment(Body):
    delta: Delta = Field(
        description="Units to add (restock, return) or remove (damage, count); not zero."
    )
    reason: AdjustReason


class StockSet(Body):
    on_hand: Units
    expected_version: Version | None = Field(
        default=None, description="Compare-and-set: refuse with VERSION_CONFLICT if it moved on."
    )


class AvailabilityQuery(Body):
    skus: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        min_length=1, max_length=1000
    )


class OrderLine(Body):
    sku: Sku
    quantity: Quantity


class OrderCreate(Body):
    # 1000 is the most any node may allow; the OpenAPI document states this node's
    # MAX_ORDER_LINES, which place_order enforces (TOO_MANY_LINES).
    items: list[OrderLine] = Field(min_length=1, max_length=1000)
    customer_id: CustomerId | None = None
    payment_method: PaymentMethod | None = None


class Product(BaseModel):
    id: int
    sku: str
    name: str
    price_cents: int
    on_hand: int
    reserved: int
    available: int
    low_stock_threshold: int
    version: int
    updated_at: datetime | None = None


class ProductPage(BaseModel):
    items: list[Product]
    next: str | None = Field(description="Pass as `after` for the next page.")


class Availability(BaseModel):
    sku: str
    available: int
    on_hand: int
    reserved: int
    version: int


class AvailabilityResult(BaseModel):
    node: str
    items: list[Availability]
    missing: list[str]


class StockChange(BaseModel):
    """One committed change of one product: the Redis and WebSocket message too."""

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
    order_id: UUID | None
    node: str
    committed_at: datetime
    deleted: bool


class StockChangePage(BaseModel):
    items: list[StockChange]
    next: int | None = Field(description="Pass as `before` for the next (older) page.")


class OrderItem(BaseModel):
    sku: str
    quantity: int
    unit_price_cents: int
    line_total_cents: int
    refunded_quantity: int = 0


class RefundItem(BaseModel):
    sku: str
    quantity: int
    unit_price_cents: int
    amount_cents: int


class Refund(BaseModel):
    id: UUID
    order_id: UUID
    items: list[RefundItem]
    restock: bool
    reason: str
    subtotal_cents: int
    fee_cents: int
    total_cents: int
    created_at: datetime


class RefundCreate(Body):
    items: list[OrderLine] | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="The units to refund; left out, everything not yet refunded.",
    )
    restock: bool = Field(default=False, description="Put the units back on hand (`return`).")
    reason: str = Field(min_length=1, max_length=500, pattern=PRINTABLE)


class Order(BaseModel):
    id: UUID
    status: OrderStatus
    customer_id: str | None
    items: list[OrderItem]
    subtotal_cents: int
    fee_cents: int
    total_cents: int
    node_id: str
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
    payment_method: str | None = None
    paid_cents: int = 0
    refunded_cents: int = 0
    cancel_reason: str | None = Field(
        default=None, description="Why it was cancelled or expired: e.g. `payment_declined`."
    )
    refunds: list[Refund] = []


class RefundResult(BaseModel):
    refund: Refund
    order: Order


EventType = Literal[
    "order.placed",
    "payment.succeeded",
    "payment.failed",
    "order.confirmed",
    "order.cancelled",
    "order.expired",
    "order.refunded",
    "notification.sent",
    "stock.low",
]


class OrderEvent(BaseModel):
    event_id: UUID
    seq: int
    type: EventType
    order_id: UUID | None
    sku: str | None
    at: datetime
    node: str
    body: dict[str, object]


class OrderTimeline(BaseModel):
    items: list[OrderEvent]


class DeadLetter(BaseModel):
    id: int
    consumer: str = Field(description="The consumer group that failed it.")
    event_id: UUID | None
    stream_id: str = Field(
        description="Its entry on the events stream; `replay` if a replay could not add it."
    )
    payload: dict[str, object] = Field(description="The event, as the consumer was given it.")
    error: str = Field(description="The last attempt's error.")
    attempts: int
    created_at: datetime
    replayed_at: datetime | None


class DeadLetterList(BaseModel):
    items: list[DeadLetter] = Field(description="Oldest first.")


class ReplayedDeadLetter(BaseModel):
    id: int
    consumer: str
    event_id: UUID | None


class DeadLetterReplay(BaseModel):
    items: list[ReplayedDeadLetter] = Field(
        description="Back on the stream, each for the group that failed it (the others"
        " ack it unseen); marked replayed."
    )


class StreamGroup(BaseModel):
    name: str = Field(description="The consumer group (one per consumer).")
    consumers: int = Field(description="Nodes that have read as this group.")
    pending: int = Field(description="Delivered and not yet acked: in hand or to be retried.")
    lag: int = Field(description="Entries not yet delivered to the group.")
    lag_capped: bool = Field(description="`lag` was counted up to its cap: at least that many.")
    last_delivered_id: str


class LifecycleStatus(BaseModel):
    outbox_pending: int = Field(description="Events committed and not yet on the stream.")
    outbox_oldest_seconds: float = Field(description="Age of the oldest of them.")
    dead_letters: int = Field(description="Dead letters waiting for a replay.")
    stream: str | None = Field(description="The stream's key; null without Redis.")
    stream_length: int | None
    groups: list[StreamGroup]
    problem: str | None = Field(description="Why the stream's figures are missing, if they are.")


class OrderPage(BaseModel):
    items: list[Order]
    next: str | None = Field(description="Pass as `cursor` for the next page.")


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, object]


# Every machine code the API answers with, and its status.
ERROR_STATUS: dict[str, int] = {
    "UNAUTHENTICATED": 401,
    "INVALID_SIGNATURE": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "PAYMENT_WEBHOOK_DISABLED": 404,
    "PAYLOAD_TOO_LARGE": 413,
    "RATE_LIMITED": 429,
    "OUT_OF_STOCK": 409,
    "VERSION_CONFLICT": 409,
    "INVALID_TRANSITION": 409,
    "IDEMPOTENCY_MISMATCH": 409,
    "SKU_EXISTS": 409,
    "HAS_HOLDS": 409,
    "CONFLICT": 409,
    "VALIDATION_ERROR": 422,
    "INVALID_JSON": 422,
    "INVALID_INPUT": 422,
    "UNKNOWN_SKU": 422,
    "TOO_MANY_LINES": 422,
    "REFUND_TOO_LARGE": 422,
    "INVALID_CURSOR": 422,
    "INTERNAL": 500,
    "DATABASE_ERROR": 500,
    "DATABASE_UNAVAILABLE": 503,
    "DATABASE_TIMEOUT": 503,
    "RETRY": 503,
    "SCHEMA_OUT_OF_DATE": 503,
    "DATABASE_FORBIDDEN": 503,
    "NOT_READY": 503,
    "STORAGE_UNAVAILABLE": 503,
    "STREAM_UNAVAILABLE": 503,
    "STREAM_OFF": 409,
}
_STATUS_TEXT = {
    401: "No credentials, or ones that do not hold (expired, revoked, forged)",
    403: "The caller may not do this",
    404: "Not found",
    413: "The request body is too large",
    429: "Too many writes by this caller; retry after Retry-After seconds",
    409: "Conflicts with the current state",
    422: "Invalid request",
    500: "Unexpected error (INTERNAL carries the request id to find it in the logs)",
    503: "The database is unavailable, this node is set up wrong, or still starting",
}

# Codes that routes of one kind share.
REQUEST = ("VALIDATION_ERROR",)  # path, query or header parameters
BODY = (*REQUEST, "INVALID_JSON")
# What any call of a SQL function can end in, besides its own codes (backend.errors).
DATABASE = (
    "INVALID_INPUT",
    "DATABASE_ERROR",
    "DATABASE_UNAVAILABLE",
    "DATABASE_TIMEOUT",
    "RETRY",
    "SCHEMA_OUT_OF_DATE",
    "DATABASE_FORBIDDEN",
)
WRITE = (*DATABASE, "CONFLICT")
CACHE = ("NOT_READY",)  # reads from this node's cache, before it has loaded the catalog


def errors(*codes: str) -> dict[int | str, dict[str, Any]]:
    """A route's error responses: per status, the codes it can carry (an enum in
    its schema) in the one error shape. Any route can fail unexpectedly: 500 INTERNAL."""
    by_status: dict[int, list[str]] = {}
    for code in sorted({*codes, "INTERNAL"}):
        by_status.setdefault(ERROR_STATUS[code], []).append(code)
    return {status: _error_response(status, found) for status, found in sorted(by_status.items())}


def _error_response(status: int, codes: list[str]) -> dict[str, Any]:
    schema = ErrorBody.model_json_schema()
    schema["properties"]["code"] = {"type": "string", "enum": codes}
    return {
        "description": f"{_STATUS_TEXT[status]}: {', '.join(codes)}",
        "content": {"application/json": {"schema": schema}},
    }
