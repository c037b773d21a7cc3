"""API keys for machines: create (the key is shown once), list, revoke."""

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Path, status
from pydantic import AfterValidator, BaseModel, Field

from backend.auth import keys
from backend.auth.principal import SCOPES
from backend.deps import DatabaseDep
from backend.schemas import BODY, DATABASE, REQUEST, WRITE, Body, Name, errors

router = APIRouter(prefix="/keys", tags=["keys"])


def _known_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ValueError(f"unknown scope; the scopes are {', '.join(SCOPES)}")
    return scope


Scope = Annotated[
    str,
    Field(
        json_schema_extra={"enum": list(SCOPES)},
        description="; ".join(f"`{scope}`: {what}" for scope, what in SCOPES.items()),
    ),
    AfterValidator(_known_scope),
]
KeyId = Annotated[UUID, Path(description="The key's `id`, as `GET /keys` lists it")]


class KeyCreate(Body):
    name: Name = Field(description="Who or what uses the key, e.g. `till-3 Leeds`.")
    scopes: list[Scope] = Field(min_length=1, max_length=len(SCOPES))


class ApiKey(BaseModel):
    id: UUID
    public_id: str = Field(description="The part of the key after `ofk_` that names it.")
    name: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None = Field(description="Updated at most once a minute.")
    revoked_at: datetime | None


class ApiKeyCreated(ApiKey):
    key: str = Field(description="The key itself, shown this once: only its hash is kept.")


class ApiKeyList(BaseModel):
    items: list[ApiKey] = Field(description="Every key, revoked ones too, newest first.")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    responses=errors(*BODY, *WRITE),
)
async def create_key(body: KeyCreate, db: DatabaseDep) -> dict[str, Any]:
    return await keys.create(db, body.name, body.scopes)


@router.get("", response_model=ApiKeyList, responses=errors(*REQUEST, *DATABASE))
async def list_keys(db: DatabaseDep) -> dict[str, Any]:
    return await db.list_api_keys()


@router.delete(
    "/{key_id}", response_model=ApiKey, responses=errors("NOT_FOUND", *REQUEST, *DATABASE)
)
async def revoke_key(key_id: KeyId, db: DatabaseDep) -> dict[str, Any]:
    """Revoke a key: refused from the next request on. Revoking twice is harmless;
    the key stays listed with the time it was first revoked."""
    return await db.revoke_api_key(key_id)
