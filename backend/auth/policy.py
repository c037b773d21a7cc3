"""Who may call which route: one table, checked before every handler.

Every route of the API has exactly one rule here, keyed by method and path
template; a route without one is refused (and a test walks the app's routes so
that it cannot happen unnoticed). Routes that act on orders also scope what
they read and change to the caller (a customer sees only their own); the rule
says only whether the caller may call the route at all.
"""

from dataclasses import dataclass

from backend.auth.principal import Principal
from backend.errors import AppError


@dataclass(frozen=True)
class Rule:
    """`anonymous`: callers with no credentials may call it ("catalog": unless
    PUBLIC_CATALOG is off). `customers`: signed-in customers may (acting as
    themselves). `scope`: what staff, admins and API keys need (None: nothing)."""

    anonymous: bool | str = False
    customers: bool = False
    scope: str | None = None

    def check(self, principal: Principal, public_catalog: bool) -> None:
        if principal.kind == "anonymous":
            if self.anonymous is True or (self.anonymous == "catalog" and public_catalog):
                return
            raise unauthenticated("sign in, or send an API key, to call this")
        if self.anonymous is not False or self._allows_signed_in(principal):
            return
        raise forbidden(self._needs(principal))

    def _allows_signed_in(self, principal: Principal) -> bool:
        if principal.role == "customer":
            return self.customers
        return self.scope is None or principal.may(self.scope)

    def _needs(self, principal: Principal) -> str:
        if principal.role == "customer" or self.scope is None:
            return "customers may not call this"
        return f"this needs the scope {self.scope}"


OPEN = Rule(anonymous=True)
CATALOG = Rule(anonymous="catalog")
SIGNED_IN = Rule(customers=True)


def scoped(scope: str, *, customers: bool = False) -> Rule:
    return Rule(customers=customers, scope=scope)


POLICY: dict[tuple[str, str], Rule] = {
    # The node itself, its docs and its dashboard: anyone.
    ("GET", "/health"): OPEN,
    ("GET", "/ready"): OPEN,
    ("GET", "/info"): OPEN,
    ("GET", "/openapi.json"): OPEN,
    ("GET", "/docs"): OPEN,
    ("GET", "/docs/oauth2-redirect"): OPEN,
    ("GET", "/redoc"): OPEN,
    ("GET", "/"): OPEN,
    ("GET", "/metrics"): scoped("metrics:read"),  # or METRICS_TOKEN, see backend.auth.deps
    ("GET", "/whoami"): SIGNED_IN,
    # The catalog and the live stock stream: a storefront's reads.
    ("GET", "/products"): CATALOG,
    ("GET", "/products/{sku}"): CATALOG,
    ("POST", "/availability"): CATALOG,
    ("WEBSOCKET", "/ws"): CATALOG,
    # Running the catalog.
    ("POST", "/products"): scoped("catalog:write"),
    ("PATCH", "/products/{sku}"): scoped("catalog:write"),
    ("DELETE", "/products/{sku}"): scoped("catalog:write"),
    ("POST", "/products/{sku}/adjustments"): scoped("catalog:write"),
    ("PUT", "/products/{sku}/stock"): scoped("catalog:write"),
    ("GET", "/products/{sku}/events"): scoped("ledger:read"),
    ("GET", "/events"): scoped("ledger:read"),
    # Orders: customers their own, staff and keys with the scope any.
    ("POST", "/orders"): scoped("orders:write", customers=True),
    ("GET", "/orders"): scoped("orders:read", customers=True),
    ("GET", "/orders/{order_id}"): scoped("orders:read", customers=True),
    ("POST", "/orders/{order_id}/cancel"): scoped("orders:manage", customers=True),
    ("POST", "/orders/{order_id}/confirm"): scoped("orders:manage"),
    ("POST", "/orders/{order_id}/refunds"): scoped("orders:manage"),
    ("GET", "/orders/{order_id}/events"): scoped("orders:read", customers=True),
    ("GET", "/orders/{order_id}/receipt"): scoped("orders:read", customers=True),
    # The payment service's calls back: the body's signature is the credential.
    ("POST", "/payments/webhook"): OPEN,
    # API keys.
    ("POST", "/keys"): scoped("keys:manage"),
    ("GET", "/keys"): scoped("keys:manage"),
    ("DELETE", "/keys/{key_id}"): scoped("keys:manage"),
    # Outgoing webhooks.
    ("POST", "/admin/webhooks"): scoped("events:manage"),
    ("GET", "/admin/webhooks"): scoped("events:manage"),
    ("GET", "/admin/webhooks/deliveries"): scoped("events:manage"),
    ("DELETE", "/admin/webhooks/{endpoint_id}"): scoped("events:manage"),
    # The events stream: dead letters, their replay, how far behind it is.
    ("GET", "/admin/dead-letters"): scoped("events:manage"),
    ("POST", "/admin/dead-letters/replay"): scoped("events:manage"),
    ("POST", "/admin/dead-letters/{dead_letter_id}/replay"): scoped("events:manage"),
    ("GET", "/admin/lifecycle"): scoped("events:manage"),
}


# Reads that are POSTs only because their question is long: not counted as writes.
READS_BY_POST = {"/availability"}


def is_write(method: str, path: str) -> bool:
    """Counted against a caller's write rate limit."""
    return method in ("POST", "PUT", "PATCH", "DELETE") and path not in READS_BY_POST


def rule_for(method: str, path: str) -> Rule:
    """The route's rule; a route nobody wrote a rule for is refused, never open."""
    rule = POLICY.get(("GET" if method == "HEAD" else method, path))
    if rule is None:
        raise forbidden("this route has no access rule")
    return rule


def unauthenticated(message: str) -> AppError:
    return AppError(401, "UNAUTHENTICATED", message)


def forbidden(message: str) -> AppError:
    return AppError(403, "FORBIDDEN", message)
