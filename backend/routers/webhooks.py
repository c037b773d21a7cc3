"""Outgoing webhooks: admins register endpoints, list them and their deliveries."""

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, status

from backend.deps import DatabaseDep, SettingsDep
from backend.schemas import BODY, DATABASE, REQUEST, WRITE, errors
from backend.webhooks import schemas
from backend.webhooks.endpoints import create_endpoint

router = APIRouter(prefix="/admin/webhooks", tags=["webhooks"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.WebhookEndpointCreated,
    responses=errors(*BODY, *WRITE),
)
async def create_webhook(
    body: schemas.WebhookCreate, db: DatabaseDep, settings: SettingsDep
) -> dict[str, Any]:
    """Deliveries of these event types go to the URL, each signed with the secret
    answered here (once: it is never shown again). See the README for the signature."""
    return await create_endpoint(db, settings, body.url, body.event_types, body.description)


@router.get("", response_model=schemas.WebhookEndpointList, responses=errors(*DATABASE))
async def list_webhooks(db: DatabaseDep) -> dict[str, Any]:
    """Every endpoint, disabled ones too; secrets are not shown."""
    return await db.list_webhook_endpoints()


@router.get(
    "/deliveries",
    response_model=schemas.WebhookDeliveryList,
    responses=errors(*REQUEST, *DATABASE),
)
async def list_deliveries(
    db: DatabaseDep,
    endpoint_id: UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Newest first: each delivery's status (pending, delivered, dead), attempts and last error."""
    return await db.list_webhook_deliveries(endpoint_id, limit)


@router.delete(
    "/{endpoint_id:uuid}",  # only a UUID: DELETE /admin/webhooks/deliveries is a 405
    response_model=schemas.WebhookEndpoint,
    responses=errors("NOT_FOUND", *REQUEST, *WRITE),
)
async def disable_webhook(endpoint_id: UUID, db: DatabaseDep) -> dict[str, Any]:
    """No more deliveries to it; its past deliveries stay listed."""
    return await db.disable_webhook_endpoint(endpoint_id)
