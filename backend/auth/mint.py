"""Sign an access token like Supabase Auth's, locally: `python -m backend.auth.mint --help`.

For development and tests. A node cannot tell such a token from one Supabase
Auth issued, because it has the same claims and the same HS256 signature under
the project's JWT secret: so it is signed only with a secret the nodes already
trust, SUPABASE_JWT_SECRET from the environment or `.env`, or else (with
--data-dir) the one `scripts/run` generated for its embedded cluster.
"""

import argparse
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt
import pydantic

from backend import credentials
from backend.auth.tokens import AUDIENCE, MIN_SECRET_BYTES
from backend.settings import Settings

EXIT_REFUSED = 1  # no secret to sign with, or one the nodes would refuse
ROLES = ("admin", "staff")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m backend.auth.mint",
        description=(
            "Print a Supabase Auth access token (HS256) for a user: a customer, or staff"
            " or an admin with --role. Send it as `Authorization: Bearer <token>`."
        ),
    )
    top.add_argument("--sub", required=True, help="the user's id (Supabase Auth's is a UUID)")
    top.add_argument("--role", choices=ROLES, help="app_metadata.role; without it, a customer")
    top.add_argument("--email", default="", help="the user's email address")
    top.add_argument(
        "--minutes", type=_minutes, default=60, help="how long it is valid (default: 60)"
    )
    top.add_argument(
        "--data-dir",
        type=Path,
        help="sign with the secret scripts/run keeps there, unless SUPABASE_JWT_SECRET is set",
    )
    return top


def _minutes(text: str) -> int:
    try:
        minutes = int(text)
    except ValueError:
        minutes = 0
    if not 1 <= minutes <= 7 * 24 * 60:
        raise argparse.ArgumentTypeError("a whole number of minutes from 1 to 10080 (a week)")
    return minutes


def claims(
    sub: str,
    *,
    role: str | None,
    email: str,
    minutes: int,
    issuer: str | None,
    now: int | None = None,
) -> dict[str, Any]:
    """What Supabase Auth puts in a signed-in user's token. Without an issuer the
    nodes check none (see Settings.jwt_issuer), so the token names none."""
    issued = int(time.time()) if now is None else now
    app_metadata: dict[str, Any] = {"provider": "email", "providers": ["email"]}
    if role is not None:
        app_metadata["role"] = role
    found: dict[str, Any] = {
        "aud": AUDIENCE,
        "exp": issued + minutes * 60,
        "iat": issued,
        "sub": sub,
        "email": email,
        "phone": "",
        "app_metadata": app_metadata,
        "user_metadata": {},
        "role": "authenticated",
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": issued}],
        "session_id": str(uuid.uuid4()),
        "is_anonymous": False,
    }
    if issuer is not None:
        found["iss"] = issuer
    return found


def mint(secret: str, payload: dict[str, Any]) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", headers={"typ": "JWT"})


def secret_for(settings: Settings, data_dir: Path | None) -> str:
    """The secret the nodes verify with; CredentialsError saying why there is none."""
    if settings.supabase_jwt_secret and settings.supabase_jwt_secret.get_secret_value():
        secret = settings.supabase_jwt_secret.get_secret_value()
    elif data_dir is None:
        raise credentials.CredentialsError(
            "SUPABASE_JWT_SECRET is not set (in the environment or .env); for the cluster"
            " scripts/run started, pass its --data-dir (.data by default)"
        )
    else:
        found = credentials.load(data_dir)
        if found is None:
            raise credentials.CredentialsError(
                f"no credentials in {data_dir}: scripts/run makes them on its first start there"
            )
        generated = credentials.node_secrets(settings, found).get("SUPABASE_JWT_SECRET")
        if generated is None:
            raise credentials.CredentialsError(
                "SUPABASE_URL is set, so the nodes accept only the project's own tokens:"
                " sign in through its Auth, or set SUPABASE_JWT_SECRET"
            )
        secret = generated
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise credentials.CredentialsError(
            f"SUPABASE_JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes: the nodes refuse it"
        )
    return secret


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.sub:
        return _fail("--sub is empty: a token must name its user")
    try:
        settings = Settings()
        secret = secret_for(settings, args.data_dir)
    except pydantic.ValidationError as exc:
        return _fail(f"the settings are invalid: {exc}")
    except credentials.CredentialsError as exc:
        return _fail(str(exc))
    payload = claims(
        args.sub,
        role=args.role,
        email=args.email,
        minutes=args.minutes,
        issuer=settings.jwt_issuer,
    )
    print(mint(secret, payload))
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
