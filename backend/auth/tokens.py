"""Supabase Auth access tokens, verified on the node: no call to Supabase per request.

Supabase signs with the project's asymmetric keys (ES256, RS256), published as a
JWKS, or with the legacy shared secret (HS256). The JWKS is fetched once and kept
as parsed keys, so a request only checks a signature and a few claims. A token
naming a key we do not hold makes us fetch the JWKS again, but at most once every
`refetch_every` seconds: a flood of made-up `kid`s costs one fetch a minute. Keys
older than `max_age` (Supabase serves the JWKS with a ten-minute cache) are
refreshed in the background, so a revoked key stops verifying without waiting
for an unknown `kid` to come along.

Which algorithm verifies a token is decided by our configuration, never by the
token: HS256 only with a configured secret, RS256 and ES256 only with a JWKS key
of the matching type. That is what defeats `alg: none` and HS/RS confusion.

A signed-in client sends the same token with every request for as long as it
lives, and checking its signature costs far more than the read it authorises.
So each verified token is remembered, by its exact text, with the user it
names: the next request with it costs one dictionary lookup. Verifying depends
on the token, the keys held and the time, and time changes the answer only
once, at `exp`; so a remembered token is served until its `exp` and no longer
(then it is verified again, leeway and all), and every fetch of the JWKS
forgets them all, so a revoked key stops verifying as soon as it would
without the memory. Refusals are never remembered. The memory is bounded:
past `remember_at_most` tokens the oldest is forgotten first.
"""

import asyncio
import base64
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import HMACAlgorithm

from backend.auth.principal import Principal, user
from backend.errors import AppError

log = logging.getLogger(__name__)

AUDIENCE = "authenticated"  # Supabase's audience for signed-in users
MIN_SECRET_BYTES = 32  # what Supabase asks of a JWT secret, and RFC 7518's minimum for HS256
MIN_RSA_BITS = 2048
MAX_TOKEN_CHARS = 16_384  # far above a Supabase token; bounds the work a stranger can cause
REMEMBER_AT_MOST = 8_192  # verified tokens held (a few MB at most)
KEY_PAIR_ALGORITHMS = {"RSA": "RS256", "EC": "ES256"}  # a JWK's kty: the one alg we accept
JWKS_TIMEOUT = httpx.Timeout(5.0, connect=2.0)

_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

# PyJWT's errors, most specific first, as reasons a caller may read.
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet"),
    (jwt.InvalidAudienceError, "the token is not meant for this API"),
    (jwt.InvalidIssuerError, "the token comes from another issuer"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.InvalidAlgorithmError, "the token's algorithm does not match its key"),
)


def looks_like_jwt(token: str) -> bool:
    """Three base64url parts: tells a JWT from an API key without decoding anything."""
    return _JWT_SHAPE.fullmatch(token) is not None


def refused(reason: str) -> AppError:
    return AppError(401, "UNAUTHENTICATED", reason)


class TokenVerifier:
    """One per node, built at start-up and closed at shutdown.

    `http` lets the app share its client (the verifier closes only one it made);
    `clock` is monotonic time, there so that tests can let a minute pass."""

    def __init__(
        self,
        *,
        secret: str | None,
        jwks_url: str | None,
        issuer: str | None,
        audience: str = AUDIENCE,
        leeway: float = 30.0,
        refetch_every: float = 60.0,
        max_age: float = 600.0,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        remember_at_most: int = REMEMBER_AT_MOST,
    ) -> None:
        self._secret = _hmac_secret(secret) if secret is not None else None
        self._jwks_url = jwks_url
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._refetch_every = refetch_every
        self._max_age = max_age
        self._clock = clock
        self._owns_http = http is None and jwks_url is not None
        self._http = http if http is not None or jwks_url is None else _jwks_client()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._loaded_at: float | None = None  # when the keys we hold were fetched
        self._tried_at = float("-inf")  # the last fetch, failed or not
        self._last_fetch_failed = False
        self._fetching = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
        # Verified tokens, oldest first: their user, and whether a JWKS key signed them.
        self._verified: dict[str, tuple[Principal, bool]] = {}
        self._remember_at_most = remember_at_most

    async def verify(self, token: str) -> Principal:
        """The token's user, or `AppError(401, "UNAUTHENTICATED")` saying why not.

        With the keys in hand this does no I/O and never suspends."""
        principal = self.remembered(token)
        if principal is not None:
            return principal
        principal, by_key_pair = await self._verify(token)
        if len(self._verified) >= self._remember_at_most:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (principal, by_key_pair)
        return principal

    def remembered(self, token: str) -> Principal | None:
        """The user of `token` if it was verified before and has not expired since;
        None says nothing about the token, only that it must be verified."""
        held = self._verified.get(token)
        if held is None:
            return None
        principal, by_key_pair = held
        assert principal.expires_at is not None  # `exp` is a required claim
        if time.time() >= principal.expires_at:
            del self._verified[token]
            return None
        if by_key_pair:
            self._refresh_if_stale()  # as verifying it would
        return principal

    async def _verify(self, token: str) -> tuple[Principal, bool]:
        header = _header(token)
        alg = header.get("alg")
        if alg == "HS256":
            if self._secret is None:
                raise refused("tokens signed with a shared secret are not accepted here")
            key: bytes | jwt.PyJWK = self._secret
        elif alg in ("RS256", "ES256"):
            key = await self._public_key(header.get("kid"), alg)
        else:
            raise refused("the token's algorithm is not accepted")
        return _principal(self._claims(token, key, alg)), alg != "HS256"

    async def refresh(self) -> None:
        """Fetch the JWKS now, unless it was fetched less than `refetch_every` ago;
        returns once any fetch under way has finished. Warms the cache at start-up."""
        if self._jwks_url is None:
            return
        async with self._fetching:
            if self._clock() - self._tried_at >= self._refetch_every:
                await self._fetch(self._jwks_url)

    async def aclose(self) -> None:
        if self._background is not None:
            self._background.cancel()
            await asyncio.gather(self._background, return_exceptions=True)
        if self._owns_http and self._http is not None:
            await self._http.aclose()

    async def _public_key(self, kid: Any, alg: str) -> jwt.PyJWK:
        if self._jwks_url is None:
            raise refused("tokens signed with a key pair are not accepted here")
        if not isinstance(kid, str):
            raise refused("the token names no signing key")
        key = self._keys.get(kid)
        if key is None:
            await self.refresh()
            key = self._keys.get(kid)
        else:
            self._refresh_if_stale()
        if key is None:
            failed = "; the signing keys could not be fetched" if self._last_fetch_failed else ""
            raise refused(f"the token's signing key is unknown{failed}")
        if key.algorithm_name != alg:
            raise refused("the token's algorithm does not match its key")
        return key

    def _refresh_if_stale(self) -> None:
        """Refresh old keys in the background: the request in hand goes on with them."""
        now = self._clock()
        if (
            self._background is None
            and self._loaded_at is not None
            and now - self._loaded_at >= self._max_age
            and now - self._tried_at >= self._refetch_every
        ):
            self._background = asyncio.create_task(self._refresh_in_background())

    async def _refresh_in_background(self) -> None:
        try:
            await self.refresh()
        finally:
            self._background = None

    async def _fetch(self, url: str) -> None:
        """Replace the keys with the JWKS's; on any failure keep the ones we had."""
        assert self._http is not None  # a JWKS URL comes with a client
        self._tried_at = self._clock()
        try:
            response = await self._http.get(url)
            response.raise_for_status()
            keys = signing_keys(response.json())
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as error:
            self._last_fetch_failed = True
            log.warning(
                "auth: cannot fetch the JWKS from %s (%s: %s); keeping the %d keys held",
                url,
                type(error).__name__,
                error,
                len(self._keys),
            )
            return
        self._verified.clear()  # what the old keys verified, the new ones must verify again
        self._keys, self._loaded_at, self._last_fetch_failed = keys, self._tried_at, False
        log.info("auth: %d signing keys from %s", len(keys), url)

    def _claims(self, token: str, key: bytes | jwt.PyJWK, alg: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "sub"], "enforce_minimum_key_length": True},
            )
        except jwt.MissingRequiredClaimError as error:
            raise refused(f"the token lacks the {error.claim} claim") from None
        except (jwt.PyJWTError, ValueError, TypeError, OverflowError) as error:
            raise refused(_reason(error)) from None


def signing_keys(jwks: object) -> dict[str, jwt.PyJWK]:
    """The keys of a JWKS document we may verify with, by `kid`; any other key is left
    out, so that no token can choose how a key is read."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ValueError("the document is not a JWKS")
    keys = {}
    for jwk in jwks["keys"]:
        key = _signing_key(jwk)
        if key is not None and key.key_id is not None:
            keys[key.key_id] = key
    return keys


def _signing_key(jwk: object) -> jwt.PyJWK | None:
    """An RSA (RS256) or P-256 (ES256) public key for signatures, or None."""
    if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str):
        return None
    alg = KEY_PAIR_ALGORITHMS.get(str(jwk.get("kty")))
    if alg is None or jwk.get("alg", alg) != alg or jwk.get("use", "sig") != "sig":
        return None
    try:
        key = jwt.PyJWK(jwk, alg)
    except Exception:  # whatever a malformed JWK makes the parser raise: not a key of ours
        return None
    if isinstance(key.key, RSAPublicKey) and key.key.key_size >= MIN_RSA_BITS:
        return key
    if isinstance(key.key, EllipticCurvePublicKey) and isinstance(key.key.curve, SECP256R1):
        return key
    return None


def _hmac_secret(secret: str) -> bytes:
    """The legacy JWT secret as HMAC key bytes, refused at start-up if it cannot be one."""
    key = secret.encode()
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"SUPABASE_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes long")
    try:
        HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(key)
    except jwt.InvalidKeyError:
        raise ValueError("SUPABASE_JWT_SECRET must be a shared secret, not a key pair") from None
    return key


def _jwks_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=JWKS_TIMEOUT, headers={"User-Agent": "orderflow-node"})


def _header(token: str) -> dict[str, Any]:
    """The header alone: PyJWT's own reading decodes all three parts, and `jwt.decode`
    reads them again; this halves the work of a token. Nothing here is trusted yet."""
    if len(token) > MAX_TOKEN_CHARS:
        raise refused("the token is too long")
    if not looks_like_jwt(token):
        raise refused("the token is malformed")
    segment = token[: token.index(".")]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, RecursionError):
        raise refused("the token is malformed") from None
    if not isinstance(header, dict):
        raise refused("the token is malformed")
    return header


def _reason(error: Exception) -> str:
    for kind, reason in _REASONS:
        if isinstance(error, kind):
            return reason
    return "the token is malformed"


def _principal(claims: dict[str, Any]) -> Principal:
    """Only `app_metadata` names a role: users can edit their own `user_metadata`."""
    if not claims["sub"]:
        raise refused("the token names no user")
    try:
        expires_at = float(claims["exp"])
    except (ValueError, OverflowError):
        raise refused("the token is malformed") from None
    app_metadata = claims.get("app_metadata")
    role = app_metadata.get("role") if isinstance(app_metadata, dict) else None
    email = claims.get("email")
    return user(
        claims["sub"],
        role if isinstance(role, str) else None,
        expires_at,
        email if isinstance(email, str) and email else None,
    )
