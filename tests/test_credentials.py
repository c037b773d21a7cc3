"""The embedded cluster's credentials: the file, the admin key in real Postgres,
the password of a real Redis, `--show-credentials` and the token minting tool.
The whole launcher is run end to end in tests/test_cluster.py."""

import json
import os
import secrets
import socket
import stat
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import jwt
import pytest
import redis
from pydantic import SecretStr

from backend import credentials, sign_in
from backend.auth import keys, mint
from backend.auth.principal import ROLE_SCOPES, SCOPES
from backend.auth.tokens import TokenVerifier
from backend.credentials import Credentials, CredentialsError
from backend.embedded import HOST, EmbeddedPostgres, EmbeddedRedis, free_port, process_cmdline
from backend.errors import AppError
from backend.settings import Settings
from database import PostgresDatabase

ROOT = Path(__file__).resolve().parent.parent
AUTH_SETTINGS = (
    "SUPABASE_JWT_SECRET",
    "SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "AUTH_ISSUER",
    "AUTH_JWKS_URL",
)
SUB = "5b1f3c2e-7d4a-4e8b-9c1d-2a3b4c5d6e7f"


def secret_values(found: Credentials) -> list[str]:
    return [found.bus_key, found.jwt_secret, found.redis_password, found.admin_key]


# The file


def test_the_first_load_makes_private_credentials_and_later_ones_reuse_them(
    tmp_path: Path,
) -> None:
    made = credentials.load_or_create(tmp_path)
    path = credentials.file_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(set(secret_values(made))) == 4
    assert all(len(value) >= 43 for value in secret_values(made)), "fewer than 256 random bits"
    assert keys.parse(made.admin_key) is not None
    assert not made.shown
    assert credentials.load_or_create(tmp_path) == made
    assert credentials.load_or_create(tmp_path) != credentials.generate()
    assert [entry.name for entry in tmp_path.iterdir()] == [credentials.FILE_NAME]


def test_a_file_others_may_read_is_made_private_and_a_damaged_one_is_refused(
    tmp_path: Path,
) -> None:
    made = credentials.load_or_create(tmp_path)
    path = credentials.file_path(tmp_path)
    path.chmod(0o644)
    assert credentials.load(tmp_path) == made
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    data = json.loads(path.read_text())
    damages: list[object] = [{**data, "admin_key": "ofk_short"}, {**data, "bus_key": ""}, [], None]
    for damage in damages:
        path.write_text(json.dumps(damage))
        with pytest.raises(CredentialsError, match="damaged; delete it"):
            credentials.load(tmp_path)
    path.write_text("{not json")
    with pytest.raises(CredentialsError, match="damaged"):
        credentials.load_or_create(tmp_path)


def test_what_the_environment_or_env_file_sets_wins_over_the_generated_secrets(
    tmp_path: Path,
) -> None:
    made = credentials.generate()
    bare = Settings(_env_file=None)
    assert credentials.node_secrets(bare, made) == {
        "BUS_KEY": made.bus_key,
        "SUPABASE_JWT_SECRET": made.jwt_secret,
    }
    given = Settings(_env_file=None, bus_key="mine", supabase_jwt_secret="x" * 32)
    assert credentials.node_secrets(given, made) == {}
    supabase = Settings(
        _env_file=None,
        supabase_url="https://abcdefghijklmnop.supabase.co",
        supabase_service_role_key=SecretStr("service-role"),
    )
    assert credentials.node_secrets(supabase, made) == {"BUS_KEY": made.bus_key}


# The admin key, in real Postgres


@pytest.fixture
async def other_db(
    pg_server: EmbeddedPostgres, pg_template: str
) -> AsyncIterator[PostgresDatabase]:
    """A second fresh database: the data directory's Postgres, made anew."""
    name = f"t_{uuid.uuid4().hex}"
    database = PostgresDatabase(await pg_server.create_database(name, template=pg_template))
    await database.connect()
    yield database
    await database.close()
    await pg_server.drop_database(name)


async def test_the_admin_key_is_stored_with_every_scope_then_kept(
    db: PostgresDatabase, tmp_path: Path
) -> None:
    made = credentials.load_or_create(tmp_path)
    with pytest.raises(AppError):
        await keys.authenticate(db, made.admin_key)

    stored, fate = await credentials.ensure_admin_key(db, tmp_path, made)
    assert (stored, fate) == (made, "registered")
    principal = await keys.authenticate(db, made.admin_key)
    assert principal.scopes == frozenset(SCOPES)
    assert principal.name == credentials.ADMIN_KEY_NAME
    listed = (await db.list_api_keys())["items"]
    assert [key["name"] for key in listed] == [credentials.ADMIN_KEY_NAME]

    assert await credentials.ensure_admin_key(db, tmp_path, made) == (made, "kept")
    assert len((await db.list_api_keys())["items"]) == 1
    assert credentials.load(tmp_path) == made


async def test_a_new_database_gets_the_same_admin_key_so_the_printed_one_still_works(
    db: PostgresDatabase, other_db: PostgresDatabase, tmp_path: Path
) -> None:
    made = credentials.load_or_create(tmp_path)
    await credentials.ensure_admin_key(db, tmp_path, made)
    shown = credentials.load(tmp_path)
    assert shown is not None

    assert await credentials.ensure_admin_key(other_db, tmp_path, shown) == (shown, "registered")
    await keys.authenticate(other_db, made.admin_key)
    assert credentials.load(tmp_path) == shown


async def test_a_revoked_admin_key_is_not_brought_back_but_replaced(
    db: PostgresDatabase, tmp_path: Path
) -> None:
    made = credentials.load_or_create(tmp_path)
    await credentials.ensure_admin_key(db, tmp_path, made)
    (key,) = (await db.list_api_keys())["items"]
    await db.revoke_api_key(uuid.UUID(key["id"]))

    replaced, fate = await credentials.ensure_admin_key(db, tmp_path, made)
    assert fate == "replaced"
    assert replaced.admin_key != made.admin_key
    assert not replaced.shown, "a new key must be printed like a first one"
    assert replaced.bus_key == made.bus_key
    assert credentials.load(tmp_path) == replaced
    await keys.authenticate(db, replaced.admin_key)
    with pytest.raises(AppError):
        await keys.authenticate(db, made.admin_key)


# The embedded Redis's password


def send(port: int, command: bytes) -> bytes:
    with socket.create_connection((HOST, port), timeout=2.0) as conn:
        conn.sendall(command)
        return conn.recv(200)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[EmbeddedRedis]]:
    """Servers a test starts, stopped (and reaped) newest first."""
    servers: list[EmbeddedRedis] = []
    yield servers
    for server in reversed(servers):
        server.stop()


def start(servers: list[EmbeddedRedis], data_dir: Path, port: int, **options: str) -> EmbeddedRedis:
    server = EmbeddedRedis(data_dir, port, **options)
    servers.append(server)
    server.start()
    return server


def test_an_embedded_redis_with_a_password_refuses_clients_without_it(
    started: list[EmbeddedRedis], tmp_path: Path
) -> None:
    password = secrets.token_urlsafe(32)
    server = start(started, tmp_path, free_port(), password=password)
    assert send(server.port, b"PING\r\n").startswith(b"-NOAUTH Authentication required")
    assert f":{password}@" in server.url
    with redis.Redis.from_url(server.url) as client:
        assert client.ping() is True
    assert server.ready()
    assert server.pid is not None
    assert password not in " ".join(process_cmdline(server.pid)), "visible to every ps"
    assert password not in server.log_file.read_text()


def test_a_left_over_redis_is_reused_only_with_the_same_password(
    started: list[EmbeddedRedis], tmp_path: Path
) -> None:
    port, password = free_port(), secrets.token_urlsafe(32)
    first = start(started, tmp_path, port, password=password)
    again = start(started, tmp_path, port, password=password)  # a launcher after a SIGKILL
    assert again.pid == first.pid

    other = start(started, tmp_path, port, password=secrets.token_urlsafe(32))
    assert other.pid != first.pid
    assert send(port, b"PING\r\n").startswith(b"-NOAUTH")

    bare = start(started, tmp_path, port)  # no password: one that asks for one is not reused
    assert bare.pid not in (first.pid, other.pid)
    assert send(port, b"PING\r\n") == b"+PONG\r\n"
    protected = start(started, tmp_path, port, password=password)  # nor the other way round
    assert protected.pid != bare.pid
    assert send(port, b"PING\r\n").startswith(b"-NOAUTH")


# What the operator is shown


def test_show_credentials_prints_the_key_and_what_another_node_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(_env_file=None)
    assert sign_in.show(tmp_path, settings, redis_port=56379) == 1
    assert f"no credentials in {tmp_path} yet" in caplog.text
    assert capsys.readouterr().out == ""

    made = credentials.load_or_create(tmp_path)
    assert sign_in.show(tmp_path, settings, redis_port=56379) == 0
    out = capsys.readouterr().out
    assert f"admin API key, every scope: {made.admin_key}\n" in out
    assert f"BUS_KEY={made.bus_key}\n" in out
    assert f"SUPABASE_JWT_SECRET={made.jwt_secret}\n" in out
    assert f"REDIS_URL=redis://:{made.redis_password}@127.0.0.1:56379/0\n" in out

    external = Settings(
        _env_file=None,
        database_url=SecretStr("postgresql://postgres@db.example:5432/postgres"),
        redis_url="redis://redis.example:6379/0",
        bus_key=SecretStr("given"),
    )
    assert sign_in.show(tmp_path, external, redis_port=56379) == 0
    out = capsys.readouterr().out
    assert made.admin_key not in out, "a key an external database does not hold"
    assert made.bus_key not in out
    assert made.redis_password not in out
    assert "BUS_KEY (set in the environment or .env)" in out


def test_the_first_start_text_shows_the_key_a_request_and_how_to_mint(tmp_path: Path) -> None:
    made = credentials.generate()
    text = sign_in.first_start(made, "http://127.0.0.1:8001", tmp_path, Settings(_env_file=None))
    assert f'curl -H "Authorization: Bearer {made.admin_key}" http://127.0.0.1:8001/' in text
    assert f"-m backend.auth.mint --data-dir {tmp_path} --sub" in text
    for value in (made.bus_key, made.jwt_secret, made.redis_password):
        assert value not in text


# Minting tokens


@pytest.fixture
def no_auth_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No .env and no auth settings: what the minting tool finds is what a test gives."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for name in AUTH_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    return work


def minted(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert mint.main(list(argv)) == 0, capsys.readouterr().err
    token = capsys.readouterr().out.strip()
    assert "\n" not in token
    return token


@pytest.mark.usefixtures("no_auth_settings")
async def test_a_minted_token_verifies_as_the_user_with_the_role(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = secrets.token_urlsafe(48)
    monkeypatch.setenv("SUPABASE_JWT_SECRET", secret)
    verifier = TokenVerifier(secret=secret, jwks_url=None, issuer=None)

    token = minted(capsys, "--sub", SUB, "--role", "admin", "--email", "ada@example.com")
    admin = await verifier.verify(token)
    assert (admin.kind, admin.id, admin.role, admin.name) == (
        "user",
        SUB,
        "admin",
        "ada@example.com",
    )
    assert admin.scopes == ROLE_SCOPES["admin"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["aud"], claims["role"], claims["app_metadata"]["role"]) == (
        "authenticated",
        "authenticated",
        "admin",
    )
    assert claims["exp"] - claims["iat"] == 3600
    assert "iss" not in claims, "no issuer is expected without SUPABASE_URL"
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}

    staff = await verifier.verify(minted(capsys, "--sub", SUB, "--role", "staff"))
    assert (staff.role, staff.scopes) == ("staff", ROLE_SCOPES["staff"])
    customer = await verifier.verify(minted(capsys, "--sub", SUB, "--minutes", "5"))
    assert (customer.role, customer.scopes, customer.customer_id) == ("customer", frozenset(), SUB)

    other = TokenVerifier(secret=secrets.token_urlsafe(48), jwks_url=None, issuer=None)
    with pytest.raises(AppError, match="signature"):
        await other.verify(token)


@pytest.mark.usefixtures("no_auth_settings")
async def test_a_minted_token_names_the_issuer_the_nodes_expect(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = secrets.token_urlsafe(48)
    project = "https://abcdefghijklmnop.supabase.co"
    monkeypatch.setenv("SUPABASE_JWT_SECRET", secret)
    monkeypatch.setenv("SUPABASE_URL", project)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "service-role")
    token = minted(capsys, "--sub", SUB)
    issuer = Settings().jwt_issuer
    assert issuer == f"{project}/auth/v1"
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == issuer
    await TokenVerifier(secret=secret, jwks_url=None, issuer=issuer).verify(token)
    elsewhere = TokenVerifier(secret=secret, jwks_url=None, issuer="https://other.example/auth/v1")
    with pytest.raises(AppError, match="another issuer"):
        await elsewhere.verify(token)


async def test_with_a_data_dir_it_signs_with_the_embedded_clusters_secret(
    no_auth_settings: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    made = credentials.load_or_create(data_dir)
    token = minted(capsys, "--data-dir", str(data_dir), "--sub", SUB, "--role", "staff")
    staff = await TokenVerifier(secret=made.jwt_secret, jwks_url=None, issuer=None).verify(token)
    assert staff.role == "staff"


def test_it_refuses_clearly_without_a_secret(
    no_auth_settings: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def refusal(*argv: str) -> str:
        assert mint.main(list(argv)) == mint.EXIT_REFUSED
        captured = capsys.readouterr()
        assert captured.out == ""
        return captured.err

    assert "SUPABASE_JWT_SECRET is not set" in refusal("--sub", SUB)
    assert "no credentials in" in refusal("--sub", SUB, "--data-dir", str(tmp_path / "none"))
    assert "--sub is empty" in refusal("--sub", "")
    monkeypatch.setenv("SUPABASE_JWT_SECRET", "too-short")
    assert "SUPABASE_JWT_SECRET must be at least 32 bytes" in refusal("--sub", SUB)


def test_python_dash_m_prints_a_token_and_nothing_else(tmp_path: Path) -> None:
    secret = secrets.token_urlsafe(48)
    env = {k: v for k, v in os.environ.items() if k not in AUTH_SETTINGS}
    env |= {"SUPABASE_JWT_SECRET": secret, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "backend.auth.mint", "--sub", SUB, "--role", "admin"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    claims = jwt.decode(done.stdout.strip(), secret, algorithms=["HS256"], audience="authenticated")
    assert claims["app_metadata"]["role"] == "admin"
