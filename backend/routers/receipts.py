"""An order's receipt, as the customer was (or would have been) mailed it."""

from typing import Annotated, Literal, cast
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from backend.deps import DatabaseDep, PrincipalDep
from backend.errors import not_found
from backend.notify.storage import ReceiptStore
from backend.schemas import DATABASE, REQUEST, errors

router = APIRouter(prefix="/orders", tags=["orders"])


async def _receipts(request: Request) -> ReceiptStore:
    return cast(ReceiptStore, request.app.state.receipts)


ReceiptsDep = Annotated[ReceiptStore, Depends(_receipts)]

_BODIES = {
    "content": {kind: {"schema": {"type": "string"}} for kind in ("text/html", "text/plain")}
}


@router.get(
    "/{order_id}/receipt",
    response_class=HTMLResponse,
    responses={
        200: {**_BODIES, "description": "The latest receipt: HTML, or text with format=text"},
        **errors("NOT_FOUND", "STORAGE_UNAVAILABLE", *REQUEST, *DATABASE),
    },
)
async def get_receipt(
    order_id: UUID,
    db: DatabaseDep,
    receipts: ReceiptsDep,
    principal: PrincipalDep,
    format: Annotated[Literal["html", "text"], Query(description="html or text")] = "html",
) -> Response:
    """The order's latest receipt, kept when its confirmation, cancellation, expiry or
    refund was notified. Customers read their own only; NOT_FOUND before the first."""
    await db.get_order(order_id, customer_id=principal.customer_id)  # may they read it?
    body = await receipts.get(order_id, format)
    if body is None:
        raise not_found("this order has no receipt yet", order_id=str(order_id))
    if format == "text":
        return PlainTextResponse(body)
    return HTMLResponse(body)
