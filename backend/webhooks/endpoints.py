"""Registering a webhook endpoint: its URL checked, its signing secret made here."""

import secrets
from collections.abc import Sequence

from backend.errors import AppError
from backend.settings import Settings
from database import Database, Json


def check_url(url: str, allow_http: bool) -> None:
    """Deliveries carry customers' orders: over TLS, unless WEBHOOK_ALLOW_HTTP (development)."""
    if not url.startswith("https://") and not (allow_http and url.startswith("http://")):
        raise AppError(
            422,
            "INVALID_INPUT",
            "a webhook URL must be https:// (http:// only with WEBHOOK_ALLOW_HTTP=true)",
            {"url": url},
        )


async def create_endpoint(
    db: Database,
    settings: Settings,
    url: str,
    event_types: Sequence[str],
    description: str | None,
) -> Json:
    """The new endpoint with its secret, which is shown this once and never listed."""
    check_url(url, settings.webhook_allow_http)
    secret = secrets.token_urlsafe(32)
    types = list(dict.fromkeys(event_types))  # each once, in the order given
    endpoint = await db.create_webhook_endpoint(url, types, secret, description)
    return {**endpoint, "secret": secret}
