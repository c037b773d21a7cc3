"""The caller of a request, whoever vouched for them: a Supabase Auth user, an API key or nobody.

What a caller may do is a set of scopes. Admins and staff get theirs from their
role (`app_metadata.role`, which only the service role can set); an API key
has the scopes it was created with; a customer (any other signed-in user) has
none and may only act on their own orders, which the routes check by `sub`.
"""

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["anonymous", "user", "key"]
Role = Literal["admin", "staff", "customer", "anonymous", "key"]

SCOPES: dict[str, str] = {
    "catalog:write": "create, update and delete products; adjust and set stock",
    "orders:write": "place orders for any customer",
    "orders:read": "read, list and follow every order",
    "orders:manage": "confirm and cancel any order; refunds",
    "ledger:read": "read the stock ledger",
    "keys:manage": "create, list and revoke API keys",
    "events:manage": "register webhooks; list and replay dead letters",
    "metrics:read": "read /metrics",
}

ROLE_SCOPES: dict[str, frozenset[str]] = {
    "admin": frozenset(SCOPES),
    "staff": frozenset(SCOPES) - {"keys:manage", "events:manage"},
}


@dataclass(frozen=True)
class Principal:
    kind: Kind
    id: str  # the user's `sub`, the key's id, or "anonymous"
    role: Role
    scopes: frozenset[str] = field(default_factory=frozenset)
    expires_at: float | None = None  # a token's `exp` (epoch seconds); None: no end
    name: str | None = None  # a key's name or a user's email, for logs and /whoami

    @property
    def signed_in(self) -> bool:
        return self.kind != "anonymous"

    @property
    def caller(self) -> str:
        """Whose idempotency keys these are: one caller never sees another's."""
        return "anonymous" if self.kind == "anonymous" else f"{self.kind}:{self.id}"

    @property
    def customer_id(self) -> str | None:
        """The customer a customer acts as; None for staff, admins and keys."""
        return self.id if self.role == "customer" else None

    def may(self, scope: str) -> bool:
        return scope in self.scopes

    def public(self) -> dict[str, object]:
        """What a caller may be told of themselves: never the credential."""
        return {
            "kind": self.kind,
            "id": self.id,
            "role": self.role,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "expires_at": self.expires_at,
        }


ANONYMOUS = Principal("anonymous", "anonymous", "anonymous")


def user(sub: str, role: str | None, expires_at: float | None, email: str | None) -> Principal:
    """A Supabase Auth user: admin or staff by `app_metadata.role`, else a customer."""
    if role == "admin":
        return Principal("user", sub, "admin", ROLE_SCOPES["admin"], expires_at, email)
    if role == "staff":
        return Principal("user", sub, "staff", ROLE_SCOPES["staff"], expires_at, email)
    return Principal("user", sub, "customer", frozenset(), expires_at, email)


def api_key(key_id: str, name: str, scopes: frozenset[str]) -> Principal:
    return Principal("key", key_id, "key", scopes & frozenset(SCOPES), None, name)
