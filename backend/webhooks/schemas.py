"""The webhook admin API's bodies."""

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, Field, StringConstraints

from backend.schemas import PRINTABLE, Body, EventType

# Printable ASCII without spaces: Python's, JSON Schema's and Postgres's regexes
# agree on it, so what the schema lets through the database accepts.
URL_PATTERN = r"^https?://[!-~]+$"
HTTPS_PATTERN = r"^https://[!-~]+$"

Url = Annotated[
    str,
    StringConstraints(min_length=10, max_length=2000, pattern=URL_PATTERN),
    Field(
        description="Where deliveries are POSTed: https:// (http:// only with WEBHOOK_ALLOW_HTTP)."
    ),
]


class WebhookCreate(Body):
    url: Url
    event_types: list[EventType] = Field(min_length=1, max_length=20)
    description: Annotated[str, StringConstraints(max_length=200, pattern=PRINTABLE)] | None = None


class WebhookEndpoint(BaseModel):
    id: UUID
    url: str
    event_types: list[EventType]
    description: str | None
    created_at: datetime
    disabled_at: datetime | None = Field(description="Set once disabled: no more deliveries.")


class WebhookEndpointCreated(WebhookEndpoint):
    secret: str = Field(
        description="Signs every delivery (OrderFlow-Signature). Shown only this once: keep it."
    )


class WebhookEndpointList(BaseModel):
    items: list[WebhookEndpoint]


class WebhookDelivery(BaseModel):
    id: UUID
    endpoint_id: UUID
    event_id: UUID
    event_type: EventType
    status: Literal["pending", "delivered", "dead"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class WebhookDeliveryList(BaseModel):
    items: list[WebhookDelivery]
