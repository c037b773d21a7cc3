"""Orders: placing one reserves stock; confirming sells it; cancelling releases it."""

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Query, Response, status

from backend import schemas
from backend.auth.policy import forbidden
from backend.deps import DatabaseDep, PrincipalDep, StoreDep
from backend.documents import Json, Order
from backend.schemas import BODY, DATABASE, REQUEST, WRITE, errors

router = APIRouter(prefix="/orders", tags=["orders"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Retry with the same key (on any node) to get the first result back.",
    ),
]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.Order,
    responses=errors(
        "OUT_OF_STOCK",
        "IDEMPOTENCY_MISMATCH",
        "UNKNOWN_SKU",
        "TOO_MANY_LINES",
        *BODY,
        *WRITE,
    ),
)
async def place_order(
    body: schemas.OrderCreate,
    store: StoreDep,
    principal: PrincipalDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> Order:
    """Reserve every line or none; the hold lasts HOLD_SECONDS unless confirmed.

    A customer orders as themselves (`customer_id` is their own or left out);
    staff and keys with `orders:write` order for any customer. The idempotency
    key is the caller's own: another caller's same key is another order."""
    customer_id = body.customer_id
    if principal.customer_id is not None:
        if customer_id not in (None, principal.customer_id):
            raise forbidden("customers place orders as themselves")
        customer_id = principal.customer_id
    items = [line.model_dump() for line in body.items]
    result = await store.place_order(
        items, customer_id, idempotency_key, principal.caller, body.payment_method
    )
    if principal.role == "customer":
        await store.customers.remember(principal.id, principal.name)
    if result["replayed"]:
        response.headers["Idempotent-Replayed"] = "true"
    order: Order = result["order"]
    return order


@router.get(
    "", response_model=schemas.OrderPage, responses=errors("INVALID_CURSOR", *REQUEST, *DATABASE)
)
async def list_orders(
    db: DatabaseDep,
    principal: PrincipalDep,
    customer_id: Annotated[str | None, Query(max_length=100, pattern=schemas.PRINTABLE)] = None,
    status: schemas.OrderStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            pattern=schemas.PRINTABLE,
            description="A `next` from the last page.",
        ),
    ] = None,
) -> dict[str, Any]:
    """Newest first. Customers see their own orders only."""
    if principal.customer_id is not None:
        if customer_id not in (None, principal.customer_id):
            raise forbidden("customers list their own orders only")
        customer_id = principal.customer_id
    page: dict[str, Any] = await db.list_orders(customer_id, status, limit, cursor)
    return page


@router.get(
    "/{order_id}", response_model=schemas.Order, responses=errors("NOT_FOUND", *REQUEST, *DATABASE)
)
async def get_order(order_id: UUID, db: DatabaseDep, principal: PrincipalDep) -> Order:
    """A customer's own order; another customer's is NOT_FOUND, like a missing one."""
    return await db.get_order(order_id, customer_id=principal.customer_id)


@router.get(
    "/{order_id}/events",
    response_model=schemas.OrderTimeline,
    responses=errors("NOT_FOUND", *REQUEST, *DATABASE),
)
async def order_timeline(order_id: UUID, db: DatabaseDep, principal: PrincipalDep) -> Json:
    """What happened to the order, oldest first: placed, paid, confirmed, refunded...
    A customer's own order only; another customer's is NOT_FOUND."""
    items = await db.order_timeline(order_id, customer_id=principal.customer_id)
    return {"items": items}


@router.post(
    "/{order_id}/confirm",
    response_model=schemas.Order,
    responses=errors("NOT_FOUND", "INVALID_TRANSITION", *REQUEST, *WRITE),
)
async def confirm_order(order_id: UUID, store: StoreDep) -> Order:
    """Payment captured: the held units are sold."""
    result = await store.confirm_order(order_id)
    order: Order = result["order"]
    return order


@router.post(
    "/{order_id}/cancel",
    response_model=schemas.Order,
    responses=errors("NOT_FOUND", "INVALID_TRANSITION", *REQUEST, *WRITE),
)
async def cancel_order(order_id: UUID, store: StoreDep, principal: PrincipalDep) -> Order:
    """The held units go back on sale. Customers cancel their own orders only."""
    result = await store.cancel_order(order_id, principal.customer_id)
    order: Order = result["order"]
    return order
