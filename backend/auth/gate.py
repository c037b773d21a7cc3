"""From a bearer token to the `Principal` a request acts as.

One bearer scheme carries three kinds of credential, told apart by their
shape: an API key (`ofk_...`, checked against its hash in Postgres, so a
revoked key is refused at once on every node), a Supabase Auth JWT (verified
here, no call to Supabase), or the metrics token. No credential is anonymous.

What each costs per request follows from how each is revoked. An API key is
looked up in Postgres on every request, never remembered by a node: revoking
it must take effect on every node with the next request. A JWT cannot be
revoked before its `exp` (Supabase signs it and forgets it), so the verifier
remembers the user of each token it verified until that `exp`, and a signed-in
client's reads cost a dictionary lookup, not a signature check
(`backend.auth.tokens`).
"""

import hmac

from backend.auth import keys
from backend.auth.principal import ANONYMOUS, Principal
from backend.auth.tokens import TokenVerifier, looks_like_jwt
from backend.errors import AppError
from backend.settings import Settings
from database import Database

METRICS_READER = Principal("key", "metrics-token", "key", frozenset({"metrics:read"}))


def unauthenticated(message: str) -> AppError:
    return AppError(401, "UNAUTHENTICATED", message)


class Gate:
    def __init__(self, settings: Settings, db: Database) -> None:
        self._db = db
        self._metrics_token = (
            settings.metrics_token.get_secret_value().encode() if settings.metrics_token else None
        )
        secret = settings.supabase_jwt_secret
        self._verifier = TokenVerifier(
            secret=secret.get_secret_value() if secret else None,
            jwks_url=settings.jwks_url,
            issuer=settings.jwt_issuer,
        )

    async def warm(self) -> None:
        """Fetch the JWKS at start-up, so the first signed-in request does no I/O."""
        await self._verifier.refresh()

    async def aclose(self) -> None:
        await self._verifier.aclose()

    async def principal(self, authorization: str | None) -> Principal:
        """Who the `Authorization` header says the caller is; anonymous without one."""
        if not authorization:
            return ANONYMOUS
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthenticated("send credentials as Authorization: Bearer <token>")
        return await self.bearer(token)

    async def bearer(self, token: str) -> Principal:
        if (principal := self._verifier.remembered(token)) is not None:
            return principal  # a JWT verified before: the common case, first
        if keys.is_api_key(token):
            return await keys.authenticate(self._db, token)
        if self._metrics_token and hmac.compare_digest(token.encode(), self._metrics_token):
            return METRICS_READER
        if looks_like_jwt(token):
            return await self._verifier.verify(token)
        raise unauthenticated("the token is neither an API key nor a JWT")
