"""The embedded cluster's secrets: made on its first start, kept in its data directory.

`scripts/run` must be secure with no set-up, so it cannot wait for someone to
choose a bus key, a JWT secret and a Redis password: it generates them, with an
admin API key, the first time it runs on a data directory, and reuses them
ever after. The file is readable by its owner only and lives in the data
directory, which git ignores; the database holds only the admin key's hash.

What the environment or `.env` sets wins over the file, so that a cluster can
join servers and nodes configured elsewhere; servers given by URL are never
touched.
"""

import json
import logging
import os
import secrets
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Literal

from pydantic import SecretStr

from backend.auth import keys
from backend.auth.principal import SCOPES
from backend.errors import AppError
from backend.settings import Settings
from database import Database, PostgresDatabase

log = logging.getLogger(__name__)

FILE_NAME = "credentials.json"
ADMIN_KEY_NAME = "embedded-admin"
_MODE = 0o600

AdminKeyFate = Literal["kept", "registered", "replaced"]


class CredentialsError(Exception):
    """The credentials file cannot be read or written; the message says what to do."""


@dataclass(frozen=True)
class Credentials:
    bus_key: str
    jwt_secret: str
    redis_password: str
    admin_key: str
    shown: bool = False  # the admin key has been printed once


def file_path(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def generate() -> Credentials:
    return Credentials(
        bus_key=secrets.token_urlsafe(32),
        jwt_secret=secrets.token_urlsafe(48),
        redis_password=secrets.token_urlsafe(32),
        admin_key=keys.generate(),
    )


def load(data_dir: Path) -> Credentials | None:
    """The credentials kept in `data_dir`, or None if there are none yet."""
    path = file_path(data_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialsError(f"cannot read {path}: {exc.strerror}") from None
    _keep_private(path)
    try:
        found = _parse(json.loads(text))
    except (ValueError, TypeError):
        found = None
    if found is None:
        raise CredentialsError(f"{path} is damaged; delete it and new credentials are made")
    return found


def _parse(data: object) -> Credentials | None:
    if not isinstance(data, dict):
        return None
    names = {field.name for field in fields(Credentials)} - {"shown"}
    values = {name: value for name in names if isinstance(value := data.get(name), str) and value}
    if values.keys() != names or keys.parse(values["admin_key"]) is None:
        return None
    return Credentials(**values, shown=data.get("shown") is True)


def _keep_private(path: Path) -> None:
    if path.stat().st_mode & 0o077:
        log.warning("%s was readable by others; it is now its owner's only", path)
        path.chmod(_MODE)


def save(data_dir: Path, credentials: Credentials) -> None:
    """Replace the file at once: a crash leaves the old one or the new one, never half."""
    path = file_path(data_dir)
    partial = path.with_name(f".{FILE_NAME}.{os.getpid()}")
    try:
        partial.unlink(missing_ok=True)
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _MODE)
        with os.fdopen(descriptor, "w") as out:
            json.dump(asdict(credentials), out, indent=2)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise CredentialsError(f"cannot write {path}: {exc.strerror}") from None


def load_or_create(data_dir: Path) -> Credentials:
    found = load(data_dir)
    if found is not None:
        return found
    made = generate()
    save(data_dir, made)
    log.info("new credentials generated in %s", file_path(data_dir))
    return made


def node_secrets(settings: Settings, credentials: Credentials) -> dict[str, str]:
    """The generated secrets the nodes need, as environment variables: only those
    the environment or `.env` does not set.

    With SUPABASE_URL the nodes verify the project's own tokens; a local HS256
    secret would let anyone holding this file sign in to that project's nodes.
    """
    env = {}
    if not _is_set(settings.bus_key):
        env["BUS_KEY"] = credentials.bus_key
    if not _is_set(settings.supabase_jwt_secret) and not settings.supabase_url:
        env["SUPABASE_JWT_SECRET"] = credentials.jwt_secret
    return env


def _is_set(secret: SecretStr | None) -> bool:
    return secret is not None and bool(secret.get_secret_value())


async def ensure_admin_key(
    db: Database, data_dir: Path, credentials: Credentials
) -> tuple[Credentials, AdminKeyFate]:
    """Make the admin key in the file one that `db` accepts.

    A database made anew (the data directory's Postgres was reset) gets the
    same key again, so what was printed still works. A key someone revoked is
    not brought back: a new one replaces it, to be printed like a first one.
    """
    try:
        await keys.authenticate(db, credentials.admin_key)
        return credentials, "kept"
    except AppError as exc:
        if exc.code != "UNAUTHENTICATED":
            raise
    public_id = keys.parse(credentials.admin_key)
    listed = (await db.list_api_keys())["items"]
    fate: AdminKeyFate = "registered"
    if any(key["public_id"] == public_id for key in listed):
        credentials = replace(credentials, admin_key=keys.generate(), shown=False)
        save(data_dir, credentials)
        fate = "replaced"
    await register_admin_key(db, credentials.admin_key)
    return credentials, fate


async def store_admin_key(url: str, data_dir: Path, credentials: Credentials) -> Credentials:
    """`ensure_admin_key` in the Postgres at `url`, saying what it did."""
    db = PostgresDatabase(url, min_size=1, max_size=1, application_name="orderflow-cluster")
    try:
        await db.connect()
        credentials, fate = await ensure_admin_key(db, data_dir, credentials)
    except AppError as exc:
        raise CredentialsError(
            f"cannot store the admin API key: {exc.code}: {exc.message}"
        ) from exc
    finally:
        await db.close()
    if fate == "registered":
        log.info("admin API key %r stored in the database (its hash only)", ADMIN_KEY_NAME)
    elif fate == "replaced":
        log.warning("the admin API key was revoked; a new one replaces it")
    return credentials


async def register_admin_key(db: Database, token: str) -> None:
    """Store the hash of a key made earlier, with every scope."""
    public_id = keys.parse(token)
    assert public_id is not None
    await db.create_api_key(public_id, keys.hash_key(token), ADMIN_KEY_NAME, sorted(SCOPES))
