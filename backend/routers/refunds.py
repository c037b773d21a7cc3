"""Refunds: money back for a confirmed order, whole or in part, with or without restock."""

from uuid import UUID

from fastapi import APIRouter, Response, status

from backend import schemas
from backend.deps import PrincipalDep, StoreDep
from backend.documents import Json
from backend.routers.orders import IdempotencyKey
from backend.schemas import BODY, WRITE, errors

router = APIRouter(prefix="/orders", tags=["orders"])


@router.post(
    "/{order_id}/refunds",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.RefundResult,
    responses={
        status.HTTP_200_OK: {
            "model": schemas.RefundResult,
            "description": "A retry with the same Idempotency-Key: the first refund.",
        },
        **errors(
            "NOT_FOUND",
            "INVALID_TRANSITION",
            "REFUND_TOO_LARGE",
            "IDEMPOTENCY_MISMATCH",
            *BODY,
            *WRITE,
        ),
    },
)
async def refund_order(
    order_id: UUID,
    body: schemas.RefundCreate,
    store: StoreDep,
    principal: PrincipalDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> Json:
    """Refund the named units (left out: everything not yet refunded) of a confirmed
    or partly refunded order. The amounts come from the order's own prices and fee,
    never more than was paid (REFUND_TOO_LARGE). With `restock`, the units go back
    on hand through the ledger (reason `return`). A retry with the same
    Idempotency-Key answers the first refund (200, `Idempotent-Replayed: true`)."""
    items = None if body.items is None else [line.model_dump() for line in body.items]
    result = await store.refund_order(
        order_id, items, body.restock, body.reason, idempotency_key, principal.caller
    )
    if result.get("replayed"):
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    return {"refund": result["refund"], "order": result["order"]}
