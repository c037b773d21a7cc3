"""The signature a payment service puts on its calls, and its check.

`Payment-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`
under PAYMENT_WEBHOOK_SECRET, as Stripe signs its webhooks. The timestamp is
signed with the body, so a recorded call cannot be replayed once it is older
than the tolerance; several `v1` values may be given (one per secret while a
secret is being rotated) and any one that holds will do.
"""

import hashlib
import hmac
from uuid import UUID, uuid5

from backend.errors import AppError

HEADER = "Payment-Signature"

# A provider's event ids become processed_events ids in this namespace: the same
# provider event is the same event, whatever node it reaches.
PROVIDER_EVENTS = UUID("2bb28f89-76d8-474e-ac27-670e2dc02886")


def provider_event_id(provider_id: str) -> UUID:
    return uuid5(PROVIDER_EVENTS, provider_id)


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The header value a payment service sends with `body` at `timestamp`."""
    return f"t={timestamp},v1={_mac(secret, body, timestamp)}"


def verify(header: str | None, body: bytes, secret: bytes, tolerance: int, now: float) -> None:
    """Refuse (401 INVALID_SIGNATURE) a call whose signature is missing, malformed,
    stale or wrong; the message says which, never what the right one is."""
    if not header:
        raise invalid(f"the call has no {HEADER} header")
    timestamp, signatures = _parse(header)
    if timestamp is None or not signatures:
        raise invalid(f"{HEADER} must be t=<unix seconds>,v1=<hex HMAC-SHA256>")
    if abs(now - timestamp) > tolerance:
        raise invalid(
            f"the signature's timestamp is more than {tolerance} s from this node's clock",
            timestamp=timestamp,
        )
    expected = _mac(secret, body, timestamp)
    if not any(hmac.compare_digest(expected, given) for given in signatures):
        raise invalid("the signature does not match the body")


def invalid(message: str, **details: object) -> AppError:
    return AppError(401, "INVALID_SIGNATURE", message, details)


def _mac(secret: bytes, body: bytes, timestamp: int) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def _parse(header: str) -> tuple[int | None, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif key == "v1" and value and value.isascii():
            signatures.append(value)
    return timestamp, signatures
