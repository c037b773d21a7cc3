"""Real Postgres and Redis for the whole session; a fresh database for each test,
and an events stream of its own for each test that asks for one.

Each test's database is a copy of a migrated template, which takes milliseconds,
so tests never see each other's rows and never wait for migrations.
"""

import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as redis

from backend.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from backend.events.stream import EventStream
from backend.migrate import migrate
from database import PostgresDatabase
from tests.events_kit import stream_on

TEMPLATE = "orderflow_template"


@pytest.fixture(scope="session")
def servers_dir() -> Iterator[Path]:
    # Not tmp_path_factory: when we are root, Postgres runs as another account that must
    # reach its files, and every pytest session makes pytest's temporary root private again.
    with tempfile.TemporaryDirectory(prefix="orderflow-servers-") as path:
        yield Path(path)


@pytest.fixture(scope="session")
def pg_server(servers_dir: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(servers_dir / "postgres", free_port(), durable=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(servers_dir: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(servers_dir / "redis", free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def stream(redis_server: EmbeddedRedis) -> AsyncIterator[EventStream]:
    """The order events stream under a prefix of this test's own."""
    client = redis.Redis.from_url(redis_server.url)
    yield stream_on(client)
    await client.aclose()


@pytest.fixture(scope="session")
async def pg_template(pg_server: EmbeddedPostgres) -> str:
    """A database with every migration applied and no data, to copy per test."""
    url = await pg_server.create_database(TEMPLATE)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return TEMPLATE


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[PostgresDatabase]:
    """The asyncpg adapter on this test's database, for setting up what a test needs."""
    database = PostgresDatabase(database_url)
    await database.connect()
    yield database
    await database.close()


@pytest.fixture
async def database_url(pg_server: EmbeddedPostgres, pg_template: str) -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex}"
    yield await pg_server.create_database(name, template=pg_template)
    with contextlib.suppress(OSError, asyncpg.PostgresError):
        await pg_server.drop_database(name)
