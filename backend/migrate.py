"""Apply `supabase/migrations/` and `supabase/seed.sql` to a Postgres database.

Versions are recorded in `supabase_migrations.schema_migrations`, the table the
Supabase CLI keeps, so this runner and `supabase db push` agree on what is applied.
An advisory lock makes nodes that start together take turns.
"""

import argparse
import asyncio
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = ROOT / "supabase" / "migrations"
SEED_FILE = ROOT / "supabase" / "seed.sql"
_LOCK_KEY = 7_305_112_001  # any constant shared by every node
_NAME = re.compile(r"^(\d{14})_(\w+)\.sql$")

_BOOKKEEPING = """
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
    version text primary key,
    statements text[],
    name text
);
"""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file name must be YYYYMMDDHHMMSS_name.sql: {path.name}")
        found.append(Migration(match[1], match[2], path.read_text()))
    return found


async def applied_versions(conn: asyncpg.Connection) -> set[str]:
    exists = await conn.fetchval("select to_regclass('supabase_migrations.schema_migrations')")
    if exists is None:
        return set()
    rows = await conn.fetch("select version from supabase_migrations.schema_migrations")
    return {row["version"] for row in rows}


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the pending migrations; return the versions applied now."""
    await conn.execute("select pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(_BOOKKEEPING)
        done = await applied_versions(conn)
        applied = []
        for migration in load_migrations():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "insert into supabase_migrations.schema_migrations (version, name, statements)"
                    " values ($1, $2, array[$3])",
                    migration.version,
                    migration.name,
                    migration.sql,
                )
            applied.append(migration.version)
        return applied
    finally:
        await conn.execute("select pg_advisory_unlock($1)", _LOCK_KEY)


async def seed(conn: asyncpg.Connection) -> None:
    """Load the demo catalog; seed.sql is idempotent, so running it twice adds nothing."""
    async with conn.transaction():
        await conn.execute(SEED_FILE.read_text())


async def _main(dsn: str, with_seed: bool) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        applied = await migrate(conn)
        print(f"migrations applied: {', '.join(applied) or 'none pending'}")
        if with_seed:
            await seed(conn)
            print("seed loaded")
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dsn", help="Postgres connection string")
    parser.add_argument("--seed", action="store_true", help="also load supabase/seed.sql")
    args = parser.parse_args()
    asyncio.run(_main(args.dsn, args.seed))


if __name__ == "__main__":
    main()
