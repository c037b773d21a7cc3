"""Request and response bodies of the REST API."""

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
INT32_MAX = 2_147_483_647

PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # no control characters (Postgres refuses NUL outright)

Sku = Annotated[str, StringConstraints(pattern=SKU_PATTERN)]
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=PRINTABLE)
]
CustomerId = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=PRINTABLE)]
Cents = Annotated[int, Field(strict=True, ge=0, le=100_000_000_000)]
Units = Annotated[int, Field(strict=True, ge=0, le=INT32_MAX)]
Version = Annotated[int, Field(strict=True, ge=1)]
AdjustReason = Literal["restock", "damage", "count", "return", "correction"]
OrderStatus = Literal["pending", "confirmed", "cancelled", "expired"]


class Body(BaseModel):
    """Request bodies refuse unknown fields, so a typo is an error, not a no-op."""

    model_config = ConfigDict(extra="forbid")


class ProductCreate(Body):
    sku: Sku
    name: Name
    price_cents: Cents
    on_hand: Units = 0
    low_stock_threshold: Units = 5


class ProductPatch(Body):
    name: Name | None = None
    price_cents: Cents | None = None
    low_stock_threshold: Units | None = None
    expected_version: Version | None = Field(
        default=None, description="Refuse with VERSION_CONFLICT if the product moved on."
    )


class Adjustment(Body):
    delta: Annotated[int, Field(strict=True, ge=-INT32_MAX, le=INT32_MAX)] = Field(
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
    quantity: Annotated[int, Field(strict=True, ge=1, le=INT32_MAX)]


class OrderCreate(Body):
    items: list[OrderLine] = Field(min_length=1, max_length=1000)
    customer_id: CustomerId | None = None


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


class OrderPage(BaseModel):
    items: list[Order]
    next: str | None = Field(description="Pass as `cursor` for the next page.")


class ErrorBody(BaseModel):
    code: str = Field(examples=["OUT_OF_STOCK"])
    message: str
    details: dict[str, object]


ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        404: "Not found (NOT_FOUND)",
        409: "Conflict: OUT_OF_STOCK, VERSION_CONFLICT, INVALID_TRANSITION, ...",
        422: "Invalid request (VALIDATION_ERROR, INVALID_INPUT, ...)",
        503: "Database unavailable",
    }.items()
}
