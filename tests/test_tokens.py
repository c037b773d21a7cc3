"""Supabase Auth JWTs verified locally: signatures, claims, roles and the JWKS cache.

The JWKS is served over real HTTP by `JwksServer`, which counts the fetches; keys
are made here with `cryptography`, as Supabase Auth makes them.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwt.warnings import InsecureKeyLengthWarning

from backend.auth.principal import ROLE_SCOPES, Principal
from backend.auth.tokens import MAX_TOKEN_CHARS, TokenVerifier, looks_like_jwt
from backend.embedded import HOST, free_port
from backend.errors import AppError
from tests.jwks_server import PATH, JwksServer

ISSUER = "https://abcdefghijklmnop.supabase.co/auth/v1"
SECRET = "legacy-jwt-secret-" + "0123456789abcdef" * 4  # long enough to sign HS512 too
SUB = "8d0fd2b3-9ca7-4cb3-a1c9-2e1b39b84c61"
DROP = object()  # a claim to leave out

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
MakeVerifier = Callable[..., TokenVerifier]


class Clock:
    """Monotonic time that tests move on, instead of waiting out a minute."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def jwks() -> AsyncIterator[JwksServer]:
    async with JwksServer() as server:
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def make_verifier(jwks: JwksServer, clock: Clock) -> AsyncIterator[MakeVerifier]:
    made: list[TokenVerifier] = []

    def make(**overrides: Any) -> TokenVerifier:
        options: dict[str, Any] = {"secret": None, "jwks_url": jwks.url, "issuer": ISSUER}
        verifier = TokenVerifier(**{**options, "clock": clock, **overrides})
        made.append(verifier)
        return verifier

    yield make
    for verifier in made:
        await verifier.aclose()


def claims(**changes: Any) -> dict[str, Any]:
    """An access token's claims as Supabase Auth issues them."""
    now = int(time.time())
    issued: dict[str, Any] = {
        "iss": ISSUER,
        "sub": SUB,
        "aud": "authenticated",
        "exp": now + 3600,
        "iat": now,
        "email": "ada@example.com",
        "phone": "",
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {"email_verified": True},
        "role": "authenticated",
        "aal": "aal1",
        "session_id": "0b5c3f0e-64a4-4a3c-9a55-54d9bbd0a7d4",
        "is_anonymous": False,
    }
    issued.update(changes)
    return {name: value for name, value in issued.items() if value is not DROP}


def sign(payload: dict[str, Any], key: PrivateKey | str, alg: str, kid: str | None = None) -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid} if kid else None)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    parts = (json.dumps(header).encode(), json.dumps(payload).encode())
    return ".".join([*(b64(part) for part in parts), b64(signature)])


def hs256_with(secret: bytes, header: dict[str, Any], payload: dict[str, Any]) -> str:
    """HS256 signed with any bytes as the secret, which PyJWT would refuse to do for a PEM."""
    unsigned = forge(header, payload).rsplit(".", 1)[0]
    signature = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
    return f"{unsigned}.{b64(signature)}"


def jwk(key: PrivateKey, kid: str, **fields: Any) -> dict[str, Any]:
    """A public JWK as Supabase publishes it (alg, use, key_ops, kid)."""
    if isinstance(key, rsa.RSAPrivateKey):
        data = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        data["alg"] = "RS256"
    else:
        data = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        data["alg"] = "ES256"
    data.update(kid=kid, use="sig", key_ops=["verify"], ext=True)
    data.update(fields)
    return {name: value for name, value in data.items() if value is not DROP}


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


async def refusal(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(AppError) as caught:
        await verifier.verify(token)
    assert (caught.value.status, caught.value.code) == (401, "UNAUTHENTICATED")
    return caught.value.message


# The shape check that tells a JWT from an API key.


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (jwt.encode({"sub": "x"}, SECRET, algorithm="HS256"), True),
        ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", True),  # no signature: still a JWT, refused later
        ("a.b.c", True),
        ("of_live_4f9c2d7e8a1b3c5d", False),
        ("sb_secret_abc123", False),
        ("a.b", False),
        ("a.b.c.d", False),
        (".b.c", False),
        ("a..c", False),
        ("a+b.c/d.e=", False),
        ("a.b.c\n", False),
        ("", False),
    ],
)
def test_looks_like_jwt_tells_a_jwt_from_an_api_key(token: str, expected: bool) -> None:
    assert looks_like_jwt(token) is expected


# Valid tokens, each kind of key.


async def test_an_hs256_token_signed_with_the_legacy_secret_is_a_user(
    make_verifier: MakeVerifier,
) -> None:
    payload = claims()
    principal = await make_verifier(secret=SECRET, jwks_url=None).verify(
        sign(payload, SECRET, "HS256")
    )
    assert principal == Principal(
        "user", SUB, "customer", frozenset(), float(payload["exp"]), "ada@example.com"
    )
    assert principal.caller == f"user:{SUB}"
    assert principal.customer_id == SUB


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
async def test_es256_and_rs256_tokens_verify_with_the_jwks_fetched_once(
    make_verifier: MakeVerifier,
    jwks: JwksServer,
    ec_key: ec.EllipticCurvePrivateKey,
    rsa_key: rsa.RSAPrivateKey,
    alg: str,
) -> None:
    key: PrivateKey = ec_key if alg == "ES256" else rsa_key
    jwks.keys = [jwk(ec_key, "ec-1"), jwk(rsa_key, "rsa-1")]
    kid = "ec-1" if alg == "ES256" else "rsa-1"
    verifier = make_verifier()
    for user in ("u-1", "u-2", "u-3"):
        principal = await verifier.verify(sign(claims(sub=user), key, alg, kid))
        assert (principal.id, principal.role) == (user, "customer")
    assert jwks.fetches == 1


async def test_a_jwk_without_alg_is_read_by_its_key_type(
    make_verifier: MakeVerifier, jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    jwks.keys = [jwk(ec_key, "ec-1", alg=DROP, use=DROP)]
    principal = await make_verifier().verify(sign(claims(), ec_key, "ES256", "ec-1"))
    assert principal.id == SUB


async def test_a_verified_token_with_the_keys_in_hand_never_suspends(
    make_verifier: MakeVerifier, jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    jwks.keys = [jwk(ec_key, "ec-1")]
    verifier = make_verifier()
    await verifier.refresh()
    for token in (sign(claims(), ec_key, "ES256", "ec-1"), sign(claims(), ec_key, "ES256", "ec-1")):
        verifying = verifier.verify(token)
        with pytest.raises(StopIteration) as done:  # finished at the first step: no await hit I/O
            verifying.send(None)
        assert done.value.value.id == SUB
    assert jwks.fetches == 1


async def test_refresh_warms_the_cache_before_the_first_token(
    make_verifier: MakeVerifier, jwks: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks.keys = [jwk(rsa_key, "rsa-1")]
    verifier = make_verifier()
    await verifier.refresh()
    await verifier.refresh()  # within the minute: no second fetch
    assert jwks.fetches == 1
    await verifier.verify(sign(claims(), rsa_key, "RS256", "rsa-1"))
    assert jwks.fetches == 1


# Time: exp, nbf, iat and the leeway.


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"exp": -60}, "the token has expired"),
        ({"exp": -10}, None),  # within the 30 s leeway
        ({"nbf": 60}, "the token is not valid yet"),
        ({"nbf": 10}, None),
        ({"iat": 60}, "the token is not valid yet"),
        ({"iat": 10}, None),
    ],
)
async def test_exp_nbf_and_iat_are_checked_with_a_leeway(
    make_verifier: MakeVerifier, changes: dict[str, int], reason: str | None
) -> None:
    now = int(time.time())
    token = sign(claims(**{name: now + delta for name, delta in changes.items()}), SECRET, "HS256")
    verifier = make_verifier(secret=SECRET, jwks_url=None)
    if reason is None:
        assert (await verifier.verify(token)).id == SUB
    else:
        assert await refusal(verifier, token) == reason


async def test_the_leeway_is_configurable(make_verifier: MakeVerifier) -> None:
    token = sign(claims(exp=int(time.time()) - 10), SECRET, "HS256")
    assert await refusal(make_verifier(secret=SECRET, leeway=0), token) == "the token has expired"
    assert (await make_verifier(secret=SECRET, leeway=60).verify(token)).id == SUB


# Audience, issuer and the required claims.


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"aud": "anon"}, "the token is not meant for this API"),
        ({"aud": ["anon", "service_role"]}, "the token is not meant for this API"),
        ({"aud": DROP}, "the token lacks the aud claim"),
        (
            {"iss": "https://other-project.supabase.co/auth/v1"},
            "the token comes from another issuer",
        ),
        ({"iss": DROP}, "the token lacks the iss claim"),
        ({"exp": DROP}, "the token lacks the exp claim"),
        ({"sub": DROP}, "the token lacks the sub claim"),
        ({"sub": ""}, "the token names no user"),
        ({"sub": 42}, "the token is malformed"),
        ({"exp": "soon"}, "the token is malformed"),
    ],
)
async def test_claims_that_do_not_fit_are_refused(
    make_verifier: MakeVerifier, changes: dict[str, Any], reason: str
) -> None:
    verifier = make_verifier(secret=SECRET)
    assert await refusal(verifier, sign(claims(**changes), SECRET, "HS256")) == reason


async def test_a_list_audience_naming_authenticated_is_accepted(
    make_verifier: MakeVerifier,
) -> None:
    token = sign(claims(aud=["authenticated", "other"]), SECRET, "HS256")
    assert (await make_verifier(secret=SECRET).verify(token)).id == SUB


async def test_without_a_known_issuer_any_issuer_is_accepted(make_verifier: MakeVerifier) -> None:
    token = sign(claims(iss="supabase"), SECRET, "HS256")
    assert (await make_verifier(secret=SECRET, issuer=None).verify(token)).id == SUB
    assert (
        await refusal(make_verifier(secret=SECRET), token) == "the token comes from another issuer"
    )


async def test_the_supabase_anon_key_is_not_a_user(make_verifier: MakeVerifier) -> None:
    anon_key = sign(
        {"iss": "supabase", "ref": "abcdefghijklmnop", "role": "anon", "iat": 1, "exp": 2**34},
        SECRET,
        "HS256",
    )
    assert await refusal(make_verifier(secret=SECRET, issuer=None), anon_key) == (
        "the token lacks the sub claim"
    )


# Signatures and algorithms.


async def test_a_tampered_payload_is_refused(
    make_verifier: MakeVerifier, jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    jwks.keys = [jwk(ec_key, "ec-1")]
    verifier = make_verifier(secret=SECRET)
    promoted = b64(json.dumps(claims(app_metadata={"role": "admin"})).encode())
    for token in (sign(claims(), SECRET, "HS256"), sign(claims(), ec_key, "ES256", "ec-1")):
        header, _, signature = token.split(".")
        assert (await verifier.verify(token)).role == "customer"
        tampered = f"{header}.{promoted}.{signature}"
        assert await refusal(verifier, tampered) == "the token's signature does not verify"


async def test_a_token_signed_by_another_key_is_refused(
    make_verifier: MakeVerifier, jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    jwks.keys = [jwk(ec_key, "ec-1")]
    stranger = ec.generate_private_key(ec.SECP256R1())
    verifier = make_verifier(secret=SECRET)
    reason = "the token's signature does not verify"
    assert await refusal(verifier, sign(claims(), stranger, "ES256", "ec-1")) == reason
    assert await refusal(verifier, sign(claims(), SECRET[::-1], "HS256")) == reason


@pytest.mark.parametrize("kid", [None, "ec-1"])
async def test_alg_none_is_refused(
    make_verifier: MakeVerifier,
    jwks: JwksServer,
    ec_key: ec.EllipticCurvePrivateKey,
    kid: str | None,
) -> None:
    jwks.keys = [jwk(ec_key, "ec-1")]
    verifier = make_verifier(secret=SECRET)
    header = {"alg": "none", "typ": "JWT", **({"kid": kid} if kid else {})}
    for alg_none in (header, {**header, "alg": "None"}, {**header, "alg": "NONE"}):
        token = forge(alg_none, claims())
        assert await refusal(verifier, token) == "the token's algorithm is not accepted"
    assert await refusal(verifier, forge({**header, "alg": None}, claims())) == (
        "the token's algorithm is not accepted"
    )


@pytest.mark.parametrize("alg", ["HS384", "HS512", "RS384", "RS512", "PS256", "ES384", "EdDSA"])
async def test_algorithms_outside_hs256_rs256_es256_are_refused(
    make_verifier: MakeVerifier, jwks: JwksServer, rsa_key: rsa.RSAPrivateKey, alg: str
) -> None:
    jwks.keys = [jwk(rsa_key, "rsa-1")]
    if alg.startswith("HS"):
        token = sign(claims(), SECRET, alg)
    elif alg.startswith(("RS", "PS")):
        token = sign(claims(), rsa_key, alg, "rsa-1")
    else:
        token = forge({"alg": alg, "kid": "rsa-1"}, claims(), b"\x01" * 64)
    assert await refusal(make_verifier(secret=SECRET), token) == (
        "the token's algorithm is not accepted"
    )
    assert jwks.fetches == 0


@pytest.mark.parametrize("secret", [None, SECRET])
async def test_hs256_signed_with_the_public_key_as_secret_is_refused(
    make_verifier: MakeVerifier,
    jwks: JwksServer,
    ec_key: ec.EllipticCurvePrivateKey,
    rsa_key: rsa.RSAPrivateKey,
    secret: str | None,
) -> None:
    jwks.keys = [jwk(ec_key, "ec-1"), jwk(rsa_key, "rsa-1")]
    verifier = make_verifier(secret=secret)
    assert (await verifier.verify(sign(claims(), rsa_key, "RS256", "rsa-1"))).id == SUB
    expected = (
        "the token's signature does not verify"
        if secret
        else "tokens signed with a shared secret are not accepted here"
    )
    for key, kid in ((rsa_key, "rsa-1"), (ec_key, "ec-1")):
        pem = public_pem(key)
        for as_secret in (pem, pem.strip(), json.dumps(jwk(key, kid)).encode()):
            confused = hs256_with(as_secret, {"alg": "HS256", "typ": "JWT", "kid": kid}, claims())
            assert await refusal(verifier, confused) == expected


@pytest.mark.parametrize(("alg", "kid"), [("RS256", "ec-1"), ("ES256", "rsa-1")])
async def test_an_algorithm_must_match_the_type_of_the_key_it_names(
    make_verifier: MakeVerifier,
    jwks: JwksServer,
    ec_key: ec.EllipticCurvePrivateKey,
    rsa_key: rsa.RSAPrivateKey,
    alg: str,
    kid: str,
) -> None:
    jwks.keys = [jwk(ec_key, "ec-1"), jwk(rsa_key, "rsa-1")]
    token = sign(claims(), rsa_key if alg == "RS256" else ec_key, alg, kid)
    assert await refusal(make_verifier(), token) == "the token's algorithm does not match its key"


async def test_keys_the_jwks_should_not_verify_with_are_left_out(
    make_verifier: MakeVerifier,
    jwks: JwksServer,
    ec_key: ec.EllipticCurvePrivateKey,
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    p384 = ec.generate_private_key(ec.SECP384R1())
    jwks.keys = [
        jwk(rsa_key, "says-rs512", alg="RS512"),
        jwk(ec_key, "says-rs256", alg="RS256"),
        jwk(rsa_key, "for-encryption", use="enc"),
        jwk(weak, "weak"),
        {**ECAlgorithm.to_jwk(p384.public_key(), as_dict=True), "kid": "p384"},
        {"kty": "oct", "kid": "shared", "k": b64(SECRET.encode()), "alg": "HS256"},
        {**jwk(ec_key, "broken"), "x": "not-a-coordinate"},
        {"kty": "RSA", "kid": "empty"},
        "not a key",
        jwk(ec_key, "good"),
    ]
    with warnings.catch_warnings():  # signing with a weak key is the point here
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        weak_token = sign(claims(), weak, "RS256", "weak")
    verifier = make_verifier()
    assert (await verifier.verify(sign(claims(), ec_key, "ES256", "good"))).id == SUB
    attempts = [
        sign(claims(), rsa_key, "RS256", "says-rs512"),
        sign(claims(), ec_key, "ES256", "says-rs256"),
        sign(claims(), rsa_key, "RS256", "for-encryption"),
        weak_token,
        sign(claims(), ec_key, "ES256", "p384"),
        forge({"alg": "RS256", "kid": "shared"}, claims(), b"\x00" * 256),
        sign(claims(), ec_key, "ES256", "broken"),
        sign(claims(), rsa_key, "RS256", "empty"),
    ]
    for token in attempts:
        assert await refusal(verifier, token) == "the token's signing key is unknown"
    assert jwks.fetches == 1


async def test_a_key_pair_token_needs_a_jwks_and_a_kid(
    make_verifier: MakeVerifier, jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    jwks.keys = [jwk(ec_key, "ec-1")]
    token = sign(claims(), ec_key, "ES256", "ec-1")
    assert await refusal(make_verifier(secret=SECRET, jwks_url=None), token) == (
        "tokens signed with a key pair are not accepted here"
    )
    assert await refusal(make_verifier(), sign(claims(), ec_key, "ES256")) == (
        "the token names no signing key"
    )
    assert jwks.fetches == 0


# Malformed tokens and what a refusal may say.

MALFORMED = [
    "",
    "not-a-jwt",
    "a.b.c",
    "eyJhbGciOiJIUzI1NiJ9",
    "eyJhbGciOiJIUzI1NiJ9.",
    "!!!.???.***",
    f"{b64(b'[1, 2]')}.{b64(b'{}')}.",
    f"{b64(b'{not json')}.{b64(b'{}')}.",
    f"{b64(json.dumps({'alg': 'HS256', 'kid': 7}).encode())}.{b64(b'{}')}.",
    f"{b64(json.dumps({'alg': 'HS256'}).encode())}.{b64(b'[]')}.{b64(b'x' * 32)}",
    f"{b64(json.dumps({'alg': 'HS256'}).encode())}.bm90IGpzb24.{b64(b'x' * 32)}",
    "eyJhbGciOiJIUzI1NiJ9." + "A" * 20_000 + ".sig",
]


@pytest.mark.parametrize("token", MALFORMED)
async def test_malformed_tokens_are_refused(make_verifier: MakeVerifier, token: str) -> None:
    reason = await refusal(make_verifier(secret=SECRET), token)
    assert reason in (
        "the token is malformed",
        "the token is too long",
        "the token's signature does not verify",
    )


async def test_an_oversized_token_is_refused_before_any_work(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(secret=SECRET)
    padded = sign(claims(user_metadata={"bio": "x" * 11_000}), SECRET, "HS256")
    assert (await verifier.verify(padded)).id == SUB
    oversized = sign(claims(user_metadata={"bio": "x" * 20_000}), SECRET, "HS256")
    assert len(padded) < MAX_TOKEN_CHARS < len(oversized)
    assert await refusal(verifier, oversized) == "the token is too long"


async def test_a_refusal_never_carries_the_token(
    make_verifier: MakeVerifier, jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    jwks.keys = [jwk(ec_key, "ec-1")]
    verifier = make_verifier(secret=SECRET)
    now = int(time.time())
    tokens = [
        *MALFORMED,
        sign(claims(exp=now - 600), SECRET, "HS256"),
        sign(claims(aud="anon"), SECRET, "HS256"),
        sign(claims(iss="https://evil.example/auth/v1"), SECRET, "HS256"),
        sign(claims(), ec_key, "ES256", "unknown-kid-" + "k" * 40),
        sign(claims(), SECRET[::-1], "HS256"),
        forge({"alg": "none", "kid": "ec-1"}, claims()),
        forge({"alg": "HS256" * 10}, claims()),
    ]
    for token in tokens:
        with pytest.raises(AppError) as caught:
            await verifier.verify(token)
        error = caught.value
        said = " ".join([error.message, str(error), json.dumps(error.body())])
        for part in (token, *token.split(".")):
            assert len(part) < 8 or part not in said
        assert error.__cause__ is None
        assert error.__suppress_context__ or error.__context__ is None


def test_a_secret_that_cannot_be_an_hmac_key_is_refused_at_start(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        TokenVerifier(secret="short", jwks_url=None, issuer=None)
    with pytest.raises(ValueError, match="not a key pair"):
        TokenVerifier(secret=public_pem(rsa_key).decode(), jwks_url=None, issuer=None)


# Roles come from app_metadata only.


@pytest.mark.parametrize(
    ("changes", "role"),
    [
        ({"app_metadata": {"provider": "email", "role": "admin"}}, "admin"),
        ({"app_metadata": {"provider": "email", "role": "staff"}}, "staff"),
        ({"user_metadata": {"role": "admin"}}, "customer"),
        ({"user_metadata": {"role": "staff"}, "app_metadata": {}}, "customer"),
        ({"role": "service_role"}, "customer"),  # the Postgres role claim names no OrderFlow role
        ({"app_metadata": {"role": "superuser"}}, "customer"),
        ({"app_metadata": {"role": ["admin"]}}, "customer"),
        ({"app_metadata": "admin"}, "customer"),
        ({"app_metadata": DROP}, "customer"),
    ],
)
async def test_the_role_comes_from_app_metadata_only(
    make_verifier: MakeVerifier, changes: dict[str, Any], role: str
) -> None:
    principal = await make_verifier(secret=SECRET).verify(sign(claims(**changes), SECRET, "HS256"))
    assert principal.role == role
    assert principal.scopes == ROLE_SCOPES.get(role, frozenset())
    assert principal.customer_id == (SUB if role == "customer" else None)


async def test_a_token_without_an_email_has_no_name(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(secret=SECRET)
    for email in (DROP, "", None, 7):
        assert (await verifier.verify(sign(claims(email=email), SECRET, "HS256"))).name is None


# The JWKS cache: refetching, rotation and failures.


async def test_an_unknown_kid_refetches_at_most_once_a_minute(
    make_verifier: MakeVerifier,
    jwks: JwksServer,
    clock: Clock,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    jwks.keys = [jwk(ec_key, "ec-1")]
    verifier = make_verifier()
    await verifier.verify(sign(claims(), ec_key, "ES256", "ec-1"))
    clock.advance(61)
    unknown = "the token's signing key is unknown"
    assert await refusal(verifier, sign(claims(), ec_key, "ES256", "kid-a")) == unknown
    assert jwks.fetches == 2
    clock.advance(59)
    assert await refusal(verifier, sign(claims(), ec_key, "ES256", "kid-b")) == unknown
    assert await refusal(verifier, sign(claims(), ec_key, "ES256", "kid-a")) == unknown
    assert jwks.fetches == 2
    clock.advance(1)
    assert await refusal(verifier, sign(claims(), ec_key, "ES256", "kid-b")) == unknown
    assert jwks.fetches == 3


async def test_a_flood_of_unknown_kids_costs_one_fetch(
    make_verifier: MakeVerifier, jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    jwks.keys = [jwk(ec_key, "ec-1")]
    verifier = make_verifier()
    flood = [sign(claims(), ec_key, "ES256", f"made-up-{n}") for n in range(50)]
    known = sign(claims(), ec_key, "ES256", "ec-1")
    outcomes = await asyncio.gather(
        *(verifier.verify(token) for token in [*flood, known]), return_exceptions=True
    )
    assert all(isinstance(outcome, AppError) and outcome.status == 401 for outcome in outcomes[:-1])
    assert isinstance(outcomes[-1], Principal)
    assert jwks.fetches == 1


async def test_a_rotated_in_key_is_picked_up_and_a_removed_one_stops_verifying(
    make_verifier: MakeVerifier,
    jwks: JwksServer,
    clock: Clock,
    ec_key: ec.EllipticCurvePrivateKey,
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    jwks.keys = [jwk(ec_key, "old")]
    verifier = make_verifier()
    old_token = sign(claims(), ec_key, "ES256", "old")
    await verifier.verify(old_token)
    clock.advance(120)
    jwks.keys = [jwk(ec_key, "old"), jwk(rsa_key, "new")]
    assert (await verifier.verify(sign(claims(), rsa_key, "RS256", "new"))).id == SUB
    assert jwks.fetches == 2
    jwks.keys = [jwk(rsa_key, "new")]  # the old key is revoked
    assert (await verifier.verify(old_token)).id == SUB  # until the next refetch
    clock.advance(61)
    await refusal(verifier, sign(claims(), ec_key, "ES256", "another"))
    assert jwks.fetches == 3
    assert await refusal(verifier, old_token) == "the token's signing key is unknown"
    assert (await verifier.verify(sign(claims(), rsa_key, "RS256", "new"))).id == SUB
    assert jwks.fetches == 3


async def test_keys_older_than_max_age_are_refreshed_in_the_background(
    make_verifier: MakeVerifier,
    jwks: JwksServer,
    clock: Clock,
    ec_key: ec.EllipticCurvePrivateKey,
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    jwks.keys = [jwk(ec_key, "old")]
    verifier = make_verifier(max_age=600)
    old_token = sign(claims(), ec_key, "ES256", "old")
    await verifier.verify(old_token)
    jwks.keys = [jwk(rsa_key, "new")]
    clock.advance(599)
    await verifier.verify(old_token)
    assert jwks.fetches == 1
    clock.advance(1)
    assert (await verifier.verify(old_token)).id == SUB  # served from the cache, not held up
    await jwks.wait_for_fetches(2)
    await verifier.refresh()  # waits for the fetch under way, fetches nothing more
    assert await refusal(verifier, old_token) == "the token's signing key is unknown"
    assert jwks.fetches == 2


async def test_stale_keys_with_the_jwks_failing_start_one_refresh_a_minute(
    make_verifier: MakeVerifier,
    jwks: JwksServer,
    clock: Clock,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    jwks.keys = [jwk(ec_key, "ec-1")]
    verifier = make_verifier(max_age=600)
    token = sign(claims(), ec_key, "ES256", "ec-1")
    await verifier.verify(token)
    jwks.status = 503
    clock.advance(600)
    await verifier.verify(token)
    await jwks.wait_for_fetches(2)
    await verifier.refresh()
    tasks = len(asyncio.all_tasks())
    for _ in range(20):
        assert (await verifier.verify(token)).id == SUB  # the keys held still verify
    assert len(asyncio.all_tasks()) == tasks  # and no request started another refresh
    clock.advance(60)
    await verifier.verify(token)
    await jwks.wait_for_fetches(3)
    await verifier.refresh()
    assert jwks.fetches == 3


@pytest.mark.parametrize(
    "failure",
    [
        {"status": 500},
        {"status": 404},
        {"body": b"<html>upstream error</html>"},
        {"body": b'{"keys": "none"}'},
        {"body": b"[]"},
    ],
)
async def test_a_failed_refetch_keeps_the_keys_held_and_lets_nothing_through(
    make_verifier: MakeVerifier,
    jwks: JwksServer,
    clock: Clock,
    ec_key: ec.EllipticCurvePrivateKey,
    caplog: pytest.LogCaptureFixture,
    failure: dict[str, Any],
) -> None:
    jwks.keys = [jwk(ec_key, "ec-1")]
    verifier = make_verifier()
    token = sign(claims(), ec_key, "ES256", "ec-1")
    await verifier.verify(token)
    jwks.status = failure.get("status", 200)
    jwks.body = failure.get("body")
    clock.advance(61)
    with caplog.at_level(logging.WARNING, logger="backend.auth.tokens"):
        reason = await refusal(verifier, sign(claims(), ec_key, "ES256", "ec-2"))
    assert reason == "the token's signing key is unknown; the signing keys could not be fetched"
    assert any("cannot fetch the JWKS" in record.getMessage() for record in caplog.records)
    assert jwks.fetches == 2
    assert (await verifier.verify(token)).id == SUB


async def test_with_the_jwks_server_down_tokens_are_refused_with_a_401(
    make_verifier: MakeVerifier,
    ec_key: ec.EllipticCurvePrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    verifier = make_verifier(jwks_url=f"http://{HOST}:{free_port()}{PATH}")
    token = sign(claims(), ec_key, "ES256", "ec-1")
    with caplog.at_level(logging.WARNING, logger="backend.auth.tokens"):
        reason = await refusal(verifier, token)
        assert await refusal(verifier, token) == reason  # and no second attempt this minute
    assert reason == "the token's signing key is unknown; the signing keys could not be fetched"
    warnings = [record for record in caplog.records if "cannot fetch the JWKS" in record.message]
    assert len(warnings) == 1
    assert token not in caplog.text


async def test_a_jwks_server_that_never_answers_costs_one_timeout(
    make_verifier: MakeVerifier, jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    jwks.hang = True
    async with httpx.AsyncClient(timeout=0.2) as http:
        verifier = make_verifier(http=http)
        tokens = [sign(claims(), ec_key, "ES256", f"kid-{n}") for n in range(5)]
        started = time.monotonic()
        outcomes = await asyncio.gather(
            *(verifier.verify(token) for token in tokens), return_exceptions=True
        )
        assert time.monotonic() - started < 2
    assert all(isinstance(outcome, AppError) and outcome.status == 401 for outcome in outcomes)
    assert jwks.fetches == 1


async def test_an_invalid_jwks_url_is_a_refusal_too(
    make_verifier: MakeVerifier, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    for url in ("not a url", "ftp://example.com/jwks.json", "http://"):
        verifier = make_verifier(jwks_url=url)
        assert await refusal(verifier, sign(claims(), ec_key, "ES256", "ec-1")) == (
            "the token's signing key is unknown; the signing keys could not be fetched"
        )


# Verified tokens remembered: a repeated token is a lookup, never past its exp.


async def test_a_remembered_token_is_refused_from_its_exp(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(secret=SECRET, jwks_url=None, leeway=0)
    exp = int(time.time()) + 2
    token = sign(claims(exp=exp), SECRET, "HS256")
    assert (await verifier.verify(token)).id == SUB
    assert (await verifier.verify(token)).id == SUB
    await asyncio.sleep(exp - time.time() + 0.05)  # the event awaited is the clock passing exp
    assert await refusal(verifier, token) == "the token has expired"
    assert await refusal(verifier, token) == "the token has expired"


async def test_a_bad_token_is_refused_while_a_good_one_is_remembered(
    make_verifier: MakeVerifier,
) -> None:
    verifier = make_verifier(secret=SECRET, jwks_url=None)
    good = sign(claims(), SECRET, "HS256")
    assert (await verifier.verify(good)).role == "customer"
    header, payload, signature = good.split(".")
    promoted = b64(json.dumps(claims(app_metadata={"role": "admin"})).encode())
    other_signature = sign(claims(sub="someone-else"), SECRET, "HS256").rsplit(".", 1)[1]
    for bad in (f"{header}.{promoted}.{signature}", f"{header}.{payload}.{other_signature}"):
        for _ in range(2):
            assert await refusal(verifier, bad) == "the token's signature does not verify"
    assert (await verifier.verify(good)).role == "customer"


async def test_each_token_is_remembered_as_the_user_it_names(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(secret=SECRET, jwks_url=None)
    tokens = {
        ("u-1", "customer"): sign(claims(sub="u-1"), SECRET, "HS256"),
        ("u-1", "admin"): sign(claims(sub="u-1", app_metadata={"role": "admin"}), SECRET, "HS256"),
        ("u-2", "staff"): sign(claims(sub="u-2", app_metadata={"role": "staff"}), SECRET, "HS256"),
    }
    for _ in range(2):
        for (sub, role), token in tokens.items():
            principal = await verifier.verify(token)
            assert (principal.id, principal.role) == (sub, role)
            assert principal.scopes == ROLE_SCOPES.get(role, frozenset())


async def test_a_refusal_is_not_remembered(
    make_verifier: MakeVerifier,
    jwks: JwksServer,
    clock: Clock,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    jwks.keys = []
    verifier = make_verifier()
    token = sign(claims(), ec_key, "ES256", "ec-1")
    assert await refusal(verifier, token) == "the token's signing key is unknown"
    jwks.keys = [jwk(ec_key, "ec-1")]  # published after the first try
    clock.advance(61)
    assert (await verifier.verify(token)).id == SUB
