"""API keys: the SQL functions on real Postgres, `authenticate`, the CLI as a
subprocess and the /keys routes."""

import asyncio
import hashlib
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from backend import handlers
from backend import keys as keys_cli
from backend.auth import keys
from backend.auth.principal import SCOPES
from backend.embedded import free_port
from backend.errors import AppError
from backend.routers import keys as keys_router
from database import Database, Json, PostgresDatabase

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


async def refusal(call: Any) -> tuple[int, str, dict[str, Any]]:
    with pytest.raises(AppError) as refused:
        await call
    return refused.value.status, refused.value.code, refused.value.details


async def refused_key(db: Database, token: str) -> AppError:
    with pytest.raises(AppError) as refused:
        await keys.authenticate(db, token)
    assert (refused.value.status, refused.value.code) == (401, "UNAUTHENTICATED")
    assert token not in str(refused.value)
    assert token not in json.dumps(refused.value.body())
    return refused.value


# The key's shape


def test_a_key_is_a_prefix_a_public_id_and_a_secret() -> None:
    first, second = keys.generate(), keys.generate()
    assert first != second
    assert len(first) == keys.LENGTH
    public_id = keys.parse(first)
    assert public_id is not None
    assert first.startswith(f"ofk_{public_id}_")
    assert keys.is_api_key(first)
    assert keys.hash_key(first) == hashlib.sha256(first.encode()).hexdigest()
    assert keys.hash_key(first) != keys.hash_key(second)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "ofk_",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
        "sb_secret_abcdefghijklmnop",
        "ofk_0123456789abcdef_" + "A" * 42,  # a character short
        "ofk_0123456789abcdef_" + "A" * 44,  # one too many
        "ofk_0123456789ABCDEF_" + "A" * 43,  # the public id is lower-case hex
        "ofk_0123456789abcdef_" + "A" * 42 + "=",  # base64 padding is not URL-safe base64
        "ofk_0123456789abcdef_" + "A" * 42 + "\n",
    ],
)
def test_anything_else_does_not_parse(token: str) -> None:
    assert keys.parse(token) is None


# The SQL functions, through the Database port


async def test_only_a_hash_is_stored_and_listing_never_shows_it(
    db: PostgresDatabase, conn: asyncpg.Connection
) -> None:
    created = await keys.create(db, "till-1", ["orders:write", "catalog:write", "orders:write"])
    token = created.pop("key")
    assert keys.parse(token) == created["public_id"]
    assert (created["name"], created["scopes"]) == ("till-1", ["catalog:write", "orders:write"])
    assert (created["last_used_at"], created["revoked_at"]) == (None, None)

    row = await conn.fetchrow("select * from public.api_keys where id = $1", created["id"])
    assert row is not None
    assert row["key_hash"] == hashlib.sha256(token.encode()).hexdigest()
    stored = json.dumps({name: str(value) for name, value in row.items()})
    secret = token.rsplit("_", 1)[1]
    assert token not in stored
    assert secret not in stored

    listed = await db.list_api_keys()
    assert listed == {"items": [created]}
    shown = json.dumps(listed)
    assert "hash" not in shown
    assert row["key_hash"] not in shown
    assert secret not in shown


async def test_a_key_authenticates_as_its_principal(db: PostgresDatabase) -> None:
    created = await keys.create(db, "scanner", ["orders:read", "ledger:read"])
    principal = await keys.authenticate(db, created["key"])
    assert (principal.kind, principal.role, principal.id, principal.name) == (
        "key",
        "key",
        created["id"],
        "scanner",
    )
    assert principal.scopes == {"orders:read", "ledger:read"}
    assert principal.may("ledger:read")
    assert not principal.may("catalog:write")
    assert principal.caller == f"key:{created['id']}"


async def test_a_revoked_key_is_refused_at_once_and_stays_listed(db: PostgresDatabase) -> None:
    created = await keys.create(db, "old till", ["orders:write"])
    kept = await keys.create(db, "new till", ["orders:write"])
    await keys.authenticate(db, created["key"])

    revoked = await db.revoke_api_key(uuid.UUID(created["id"]))
    assert revoked["revoked_at"] is not None
    await refused_key(db, created["key"])
    assert (await keys.authenticate(db, kept["key"])).id == kept["id"]

    again = await db.revoke_api_key(uuid.UUID(created["id"]))
    assert again["revoked_at"] == revoked["revoked_at"]
    listed = {key["id"]: key for key in (await db.list_api_keys())["items"]}
    assert listed[created["id"]]["revoked_at"] == revoked["revoked_at"]
    assert listed[kept["id"]]["revoked_at"] is None

    missing = uuid.uuid4()
    assert await refusal(db.revoke_api_key(missing)) == (
        404,
        "NOT_FOUND",
        {"key_id": str(missing)},
    )


async def test_unknown_wrong_and_malformed_keys_are_refused_without_the_key(
    db: PostgresDatabase, database_url: str
) -> None:
    created = await keys.create(db, "till", ["orders:write"])
    await refused_key(db, keys.generate())  # well-formed, never created
    forged = f"ofk_{created['public_id']}_{keys.generate()[-43:]}"  # its public id, another secret
    await refused_key(db, forged)
    # A malformed key is refused before any database call: this one is not even open.
    closed = PostgresDatabase(database_url)
    refused = await refused_key(closed, created["key"][:-1])
    assert refused.message == "this is not a well-formed OrderFlow API key"
    assert (await refusal(keys.authenticate(closed, created["key"])))[:2] == (
        503,
        "DATABASE_UNAVAILABLE",
    )


async def test_last_used_at_moves_at_most_once_a_minute(
    db: PostgresDatabase, conn: asyncpg.Connection
) -> None:
    created = await keys.create(db, "busy till", ["orders:write"])
    key_id = uuid.UUID(created["id"])
    read = "select last_used_at, xmin::text as version from public.api_keys where id = $1"

    await keys.authenticate(db, created["key"])
    first = await conn.fetchrow(read, key_id)
    assert first is not None
    assert first["last_used_at"] is not None
    for _ in range(3):
        await keys.authenticate(db, created["key"])
    assert await conn.fetchrow(read, key_id) == first  # no new row version, no write

    await conn.execute(
        "update public.api_keys set last_used_at = last_used_at - interval '61 seconds'"
        " where id = $1",
        key_id,
    )
    await keys.authenticate(db, created["key"])
    moved = await conn.fetchrow(read, key_id)
    assert moved is not None
    assert moved["last_used_at"] >= first["last_used_at"]
    listed = (await db.list_api_keys())["items"][0]
    assert listed["last_used_at"] is not None


async def test_a_key_needs_known_scopes_and_a_name(db: PostgresDatabase) -> None:
    known = sorted(SCOPES)
    public_id, key_hash = uuid.uuid4().hex[:16], hashlib.sha256(b"x").hexdigest()
    create = db.create_api_key
    assert await refusal(create(public_id, key_hash, "x", ["orders:write", "root", "root"])) == (
        422,
        "INVALID_INPUT",
        {"unknown_scopes": ["root"], "known_scopes": known},
    )
    assert await refusal(create(public_id, key_hash, "x", [])) == (
        422,
        "INVALID_INPUT",
        {"known_scopes": known},
    )
    for name in ("", "x" * 201, "tab\there"):
        status, code, _ = await refusal(create(public_id, key_hash, name, ["orders:write"]))
        assert (status, code) == (422, "INVALID_INPUT")
    assert (await db.list_api_keys())["items"] == []


async def test_the_database_knows_the_scopes_the_code_does(conn: asyncpg.Connection) -> None:
    assert await conn.fetchval("select private.api_key_scopes()") == sorted(SCOPES)


async def test_a_key_is_found_by_a_unique_index_on_its_public_id(
    conn: asyncpg.Connection,
) -> None:
    indexed = await conn.fetch(
        "select pg_get_indexdef(i.indexrelid) as definition from pg_index i"
        " where i.indrelid = 'public.api_keys'::regclass and i.indisunique"
    )
    assert any(row["definition"].endswith("(public_id)") for row in indexed)


# The CLI, as a person runs it


@dataclass
class Done:
    status: int
    out: str
    err: str


async def cli(*args: str, database_url: str | None, cwd: Path) -> Done:
    """`python -m backend.keys` in a directory without `.env`, with only this database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "SUPABASE_"))}
    env["PYTHONPATH"] = str(ROOT)
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "backend.keys",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Done(process.returncode, out.decode(), err.decode())


def the_key(done: Done) -> str:
    [line] = [line for line in done.out.splitlines() if line.startswith("key: ")]
    return line.removeprefix("key: ")


async def test_the_cli_makes_a_key_that_works_until_it_revokes_it(
    database_url: str, db: PostgresDatabase, tmp_path: Path
) -> None:
    made = await cli(
        "create", "--name", "till 3", "--scope", "orders:write", "--scope", "catalog:write",
        database_url=database_url, cwd=tmp_path,
    )  # fmt: skip
    assert made.status == 0, made.err
    token = the_key(made)
    principal = await keys.authenticate(db, token)
    assert principal.scopes == {"orders:write", "catalog:write"}
    assert f"created API key {principal.id} 'till 3'" in made.out
    assert "not shown again" in made.err

    revoked = await cli("revoke", principal.id, database_url=database_url, cwd=tmp_path)
    assert (revoked.status, revoked.err) == (0, "")
    assert f"revoked API key {principal.id}" in revoked.out
    await refused_key(db, token)

    listed = await cli("list", database_url=database_url, cwd=tmp_path)
    assert listed.status == 0, listed.err
    header, row = listed.out.splitlines()
    assert header.split() == ["ID", "KEY", "NAME", "SCOPES", "CREATED", "LAST", "USED", "REVOKED"]
    assert row.startswith(f"{principal.id}  ofk_{keys.parse(token)}_...  till 3  ")
    assert row.count("UTC") == 3  # created, last used, revoked
    assert token not in listed.out


async def test_the_cli_exits_1_when_the_database_refuses(database_url: str, tmp_path: Path) -> None:
    done = await cli("revoke", str(uuid.uuid4()), database_url=database_url, cwd=tmp_path)
    assert (done.status, done.out) == (1, "")
    assert done.err == "error: NOT_FOUND: no API key with that id\n"


async def test_the_cli_help_lists_every_scope(tmp_path: Path) -> None:
    done = await cli("--help", database_url=None, cwd=tmp_path)
    assert done.status == 0
    for scope, what in SCOPES.items():
        assert f"{scope:<15} {what}" in done.out
    assert "exit status" in done.out


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[str | None], None]:
    """This process's environment as the CLI reads it: only the given database, no `.env`."""
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"):
        monkeypatch.delenv(name, raising=False)

    def use(database_url: str | None) -> None:
        if database_url is not None:
            monkeypatch.setenv("DATABASE_URL", database_url)

    return use


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["create", "--name", "x", "--scope", "root"], "invalid choice: 'root'"),
        (["create", "--name", "x"], "the following arguments are required: --scope"),
        (["revoke", "not-an-id"], "'not-an-id' is not a key id"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_a_command_line_the_cli_cannot_read_exits_2(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        keys_cli.parser().parse_args(args)
    assert exited.value.code == keys_cli.EXIT_USAGE == 2
    assert says in capsys.readouterr().err


def test_create_help_lists_the_scopes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        keys_cli.parser().parse_args(["create", "--help"])
    shown = capsys.readouterr().out
    assert all(f"{scope:<15} {what}" in shown for scope, what in SCOPES.items())


@pytest.mark.parametrize("name", ["", "x" * 201, "new\nline"])
async def test_the_cli_exits_1_for_a_name_the_database_refuses(
    database_url: str,
    environment: Callable[[str | None], None],
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    environment(database_url)
    args = keys_cli.parser().parse_args(["create", "--name", name, "--scope", "orders:read"])
    assert await keys_cli.execute(args) == keys_cli.EXIT_REFUSED == 1
    shown = capsys.readouterr()
    assert shown.out == ""
    assert shown.err == (
        "error: INVALID_INPUT: a name is 1 to 200 characters, none of them control characters\n"
    )


@pytest.mark.parametrize(
    ("database_url", "says"),
    [
        (None, "error: no database: set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY, or"),
        (f"postgresql://postgres@127.0.0.1:{free_port()}/none", "error: DATABASE_UNAVAILABLE: "),
    ],
    ids=["none", "unreachable"],
)
async def test_the_cli_without_a_database_exits_3(
    environment: Callable[[str | None], None],
    capsys: pytest.CaptureFixture[str],
    database_url: str | None,
    says: str,
) -> None:
    environment(database_url)
    args = keys_cli.parser().parse_args(["list"])
    assert await keys_cli.execute(args) == keys_cli.EXIT_UNAVAILABLE == 3
    assert capsys.readouterr().err.startswith(says)


# The /keys routes, on an app of their own (the node's app wires them with its policy)


@pytest.fixture
async def api(db: PostgresDatabase) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    handlers.install(app)
    app.include_router(keys_router.router)

    async def with_database(scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"] = {"db": db}  # what a node's lifespan state holds
        await app(scope, receive, send)

    transport = httpx.ASGITransport(app=with_database)
    async with httpx.AsyncClient(transport=transport, base_url="http://node.test") as client:
        yield client


async def test_the_routes_create_list_and_revoke(
    api: httpx.AsyncClient, db: PostgresDatabase
) -> None:
    made = await api.post("/keys", json={"name": "scanner 7", "scopes": ["orders:read"]})
    assert made.status_code == 201
    created: Json = made.json()
    token = created.pop("key")
    listed = await api.get("/keys")
    assert (listed.status_code, listed.json()) == (200, {"items": [created]})
    assert (await keys.authenticate(db, token)).id == created["id"]

    revoked = await api.delete(f"/keys/{created['id']}")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    await refused_key(db, token)

    missing = await api.delete(f"/keys/{uuid.uuid4()}")
    assert (missing.status_code, missing.json()["code"]) == (404, "NOT_FOUND")
    malformed = await api.delete("/keys/not-a-uuid")
    assert (malformed.status_code, malformed.json()["code"]) == (422, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "scopes": ["root"]},
        {"name": "x", "scopes": []},
        {"name": "x"},
        {"name": " padded", "scopes": ["orders:read"]},
        {"name": "x", "scopes": ["orders:read"], "owner": "me"},
    ],
)
async def test_the_routes_refuse_what_is_not_a_key(
    api: httpx.AsyncClient, db: PostgresDatabase, body: Json
) -> None:
    refused = await api.post("/keys", json=body)
    assert (refused.status_code, refused.json()["code"]) == (422, "VALIDATION_ERROR")
    assert (await db.list_api_keys())["items"] == []


def test_the_routes_document_the_scopes() -> None:
    app = FastAPI()
    app.include_router(keys_router.router)
    schema = app.openapi()["components"]["schemas"]["KeyCreate"]["properties"]["scopes"]
    assert schema["items"]["enum"] == list(SCOPES)
