"""API keys for machines: `ofk_<public id>_<secret>`, shown once, stored as a hash.

The public id finds the key's row through an index; the secret proves the
caller holds the key. The secret is 32 random bytes, so one SHA-256 of the
whole key is as strong as a slow password hash and costs a request nothing.
Only that hash reaches the database, which compares it; the key never leaves
this module except to the person who created it.
"""

import hashlib
import re
import secrets
from collections.abc import Iterable

from backend.auth.principal import Principal, api_key
from backend.errors import AppError
from database import Database, Json

PREFIX = "ofk_"
_PUBLIC_ID_BYTES = 8  # 16 hex digits
_SECRET_BYTES = 32  # 43 URL-safe base64 characters
_SHAPE = re.compile(r"ofk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
LENGTH = len(PREFIX) + 16 + 1 + 43


def generate() -> str:
    return f"{PREFIX}{secrets.token_hex(_PUBLIC_ID_BYTES)}_{secrets.token_urlsafe(_SECRET_BYTES)}"


def is_api_key(token: str) -> bool:
    """Whether a bearer token is meant as an API key (a JWT starts with `eyJ`):
    such a token is answered by `authenticate`, well-formed or not."""
    return token.startswith(PREFIX)


def parse(token: str) -> str | None:
    """The key's public id, or None for anything that is not a well-formed key."""
    if len(token) != LENGTH:
        return None
    match = _SHAPE.fullmatch(token)
    return match[1] if match else None


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create(db: Database, name: str, scopes: Iterable[str]) -> Json:
    """A new key's record with the key itself under `key`: the one time anyone sees it."""
    token = generate()
    public_id = parse(token)
    assert public_id is not None
    record = await db.create_api_key(public_id, hash_key(token), name, sorted(set(scopes)))
    return {**record, "key": token}


async def authenticate(db: Database, token: str) -> Principal:
    """The key's principal; 401 UNAUTHENTICATED for a malformed, unknown or revoked key.

    A malformed key is refused without a database call. The refusals never
    quote the token: it may be a real key pasted into the wrong place.
    """
    public_id = parse(token)
    if public_id is None:
        raise refused("this is not a well-formed OrderFlow API key")
    try:
        found = await db.authenticate_api_key(public_id, hash_key(token))
    except AppError as exc:
        if exc.code == "UNAUTHENTICATED":
            raise refused("the API key is unknown or revoked") from None
        raise
    return api_key(str(found["id"]), str(found["name"]), frozenset(found["scopes"]))


def refused(message: str) -> AppError:
    return AppError(401, "UNAUTHENTICATED", message)
