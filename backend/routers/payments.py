"""The payment service's calls back: an order paid or declined, signed with a shared secret.

The route is open in the access policy: the signature is the credential. It is
checked on the raw bytes before anything is parsed, so an unsigned call learns
nothing and changes nothing.
"""

import time
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Header, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from backend import schemas
from backend.deps import SettingsDep, StoreDep
from backend.documents import Json
from backend.errors import AppError
from backend.payments import signature
from backend.schemas import BODY, WRITE, errors

router = APIRouter(prefix="/payments", tags=["payments"])

CONSUMER = "payment-webhook"  # its rows in processed_events

ProviderText = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=schemas.PRINTABLE)
]


class PaymentNotice(BaseModel):
    """What the payment service says happened. Fields it adds are ignored."""

    model_config = ConfigDict(extra="ignore")

    id: ProviderText = Field(description="The provider's event id: the same id twice is one call.")
    type: Literal["payment.succeeded", "payment.failed"]
    order_id: UUID
    ref: ProviderText | None = Field(default=None, description="The provider's payment id.")


class PaymentRecorded(BaseModel):
    duplicate: bool = Field(description="The provider's event was recorded before: no change.")
    event_id: UUID = Field(description="The event's id in OrderFlow (from the provider's id).")
    order: schemas.Order


SIGNING = f"""The payment service tells this node that an order was paid or declined.
Only with `PAYMENT_PROVIDER=webhook` (else 404 PAYMENT_WEBHOOK_DISABLED).

**Signing.** Send the header `{signature.HEADER}: t=<unix seconds>,v1=<hex>`, where
`<hex>` is the HMAC-SHA256, under `PAYMENT_WEBHOOK_SECRET`, of the timestamp, a dot
and the raw request body: `HMAC(secret, "<t>." + body)`. Several `v1=` values may be
given (while rotating the secret). A missing or wrong signature, or a timestamp more
than `PAYMENT_WEBHOOK_TOLERANCE_SECONDS` from the node's clock, is 401
INVALID_SIGNATURE and changes nothing.

**Effect.** `payment.succeeded` sells a pending order's held units (`order.confirmed`),
or refunds the payment at once if the hold was released meanwhile;
`payment.failed` cancels a pending order (reason `payment_declined`) and releases its
units. The same provider event `id` twice changes nothing: the answer says
`duplicate`."""


@router.post(
    "/webhook",
    response_model=PaymentRecorded,
    description=SIGNING,
    responses=errors("PAYMENT_WEBHOOK_DISABLED", "INVALID_SIGNATURE", "NOT_FOUND", *BODY, *WRITE),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": PaymentNotice.model_json_schema()}},
        }
    },
)
async def payment_webhook(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    payment_signature: Annotated[
        str | None,
        Header(
            alias=signature.HEADER,
            max_length=1000,
            description='`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`',
        ),
    ] = None,
) -> Json:
    secret = settings.payment_webhook_secret
    if settings.payment_provider != "webhook" or secret is None:
        raise AppError(
            404,
            "PAYMENT_WEBHOOK_DISABLED",
            "this node takes no payment webhooks: PAYMENT_PROVIDER is not webhook",
            {"payment_provider": settings.payment_provider},
        )
    raw = await request.body()
    signature.verify(
        payment_signature,
        raw,
        secret.get_secret_value().encode(),
        settings.payment_webhook_tolerance_seconds,
        time.time(),
    )
    notice = _parse(raw)
    event_id = signature.provider_event_id(notice.id)
    succeeded = notice.type == "payment.succeeded"
    result = await store.record_payment(
        notice.order_id,
        "succeeded" if succeeded else "failed",
        consumer=CONSUMER,
        event_id=event_id,
        ref=notice.ref,
        detail=None if succeeded else "declined by the payment service",
    )
    return {
        "duplicate": bool(result.get("duplicate")),
        "event_id": event_id,
        "order": result["order"],
    }


def _parse(raw: bytes) -> PaymentNotice:
    """The body, refused in the API's one shape (INVALID_JSON, VALIDATION_ERROR)."""
    try:
        return PaymentNotice.model_validate_json(raw)
    except ValidationError as exc:
        problems = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(problems) from None
