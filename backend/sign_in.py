"""What the launcher tells its operator about signing in to the embedded cluster.

These texts are the only place a generated secret is ever printed: the admin
key once, on the first start, and everything on `--show-credentials`. Log
lines name the credentials file, never what it holds.
"""

import logging
import sys
from dataclasses import replace
from pathlib import Path

from backend.credentials import Credentials, CredentialsError, file_path, load, node_secrets, save
from backend.embedded import redis_url
from backend.settings import Settings

log = logging.getLogger("backend.cluster")

MINT = ".venv/bin/python -m backend.auth.mint"
_FROM_SETTINGS = "(set in the environment or .env)"


def shown(path: Path) -> str:
    """`path` as typed from the working directory, where the commands are run."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def first_start(credentials: Credentials, node_url: str, data_dir: Path, settings: Settings) -> str:
    """How to sign in, printed once: the admin key, a request with it, a customer's token."""
    key = credentials.admin_key
    lines = [
        "sign in (shown this once; `scripts/run --show-credentials` shows it again):",
        f"  admin API key, every scope: {key}",
        f'    curl -H "Authorization: Bearer {key}" {node_url}/whoami',
        *_minting(credentials, data_dir, settings),
        f"  kept in {shown(file_path(data_dir))}, readable by its owner only",
    ]
    return "\n".join(lines) + "\n"


def _minting(credentials: Credentials, data_dir: Path, settings: Settings) -> list[str]:
    """The embedded cluster's nodes verify tokens with the generated secret, unless
    the environment or `.env` gives one; the tool signs with the same."""
    generated = "SUPABASE_JWT_SECRET" in node_secrets(settings, credentials)
    where = f" --data-dir {shown(data_dir)}" if generated else ""
    return [
        "  a customer's token (--role staff|admin for staff), from the repository root:",
        f"    {MINT}{where} --sub <user id>",
    ]


def announce(
    credentials: Credentials, node_url: str, data_dir: Path, settings: Settings
) -> Credentials:
    """Print how to sign in; the credentials, marked as shown in the file too."""
    sys.stdout.write(first_start(credentials, node_url, data_dir, settings))
    sys.stdout.flush()
    credentials = replace(credentials, shown=True)
    save(data_dir, credentials)
    return credentials


def later_start(data_dir: Path) -> str:
    return (
        f"credentials: {shown(file_path(data_dir))} (`scripts/run --show-credentials` shows them)"
    )


def every_credential(
    credentials: Credentials,
    data_dir: Path,
    settings: Settings,
    *,
    redis_port: int,
    embedded_postgres: bool,
) -> str:
    """Everything, for `--show-credentials`: the admin key, and what another node
    needs to join this cluster's servers."""
    if embedded_postgres:
        admin = f"  admin API key, every scope: {credentials.admin_key}"
    else:
        admin = "  admin API key: none, the database is external (python -m backend.keys create)"
    generated = node_secrets(settings, credentials)
    if not settings.redis_url:
        generated["REDIS_URL"] = redis_url(redis_port, credentials.redis_password)
    lines = [
        f"credentials of the embedded cluster, from {shown(file_path(data_dir))}:",
        admin,
        "  for one more node against this cluster's servers:",
    ]
    for name in ("BUS_KEY", "SUPABASE_JWT_SECRET", "REDIS_URL"):
        if name in generated:
            lines.append(f"    {name}={generated[name]}")
        elif name == "SUPABASE_JWT_SECRET" and not settings.supabase_jwt_secret:
            lines.append(f"    {name}: none, the Supabase project's Auth signs the tokens")
        else:
            lines.append(f"    {name} {_FROM_SETTINGS}")
    return "\n".join(lines) + "\n"


def show(data_dir: Path, settings: Settings, *, redis_port: int) -> int:
    """`--show-credentials`: print them all; the exit status."""
    try:
        found = load(data_dir)
    except CredentialsError as exc:
        log.error("%s", exc)
        return 1
    if found is None:
        log.error("no credentials in %s yet: the first start makes them", shown(data_dir))
        return 1
    configured = settings.database_url and settings.database_url.get_secret_value()
    embedded_postgres = not configured and not settings.supabase_url
    sys.stdout.write(
        every_credential(
            found, data_dir, settings, redis_port=redis_port, embedded_postgres=embedded_postgres
        )
    )
    return 0
