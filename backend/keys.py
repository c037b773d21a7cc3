"""Create, list and revoke API keys from a shell: `python -m backend.keys --help`.

It uses the database a node would (DATABASE_URL, or SUPABASE_URL and its
service role key, from the environment or `.env`) and the same SQL functions
as the /keys routes.
"""

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

import pydantic

from backend.app import open_database
from backend.auth import keys
from backend.auth.principal import SCOPES
from backend.errors import AppError
from backend.settings import Settings
from database import Database, Json

EXIT_REFUSED = 1  # the database said no: an unknown id, a name it refuses
EXIT_USAGE = 2  # argparse's own code for a command line it cannot parse
EXIT_UNAVAILABLE = 3  # no database configured, or it did not answer

_EPILOG = "scopes:\n" + "\n".join(f"  {scope:<15} {what}" for scope, what in SCOPES.items())
_EXITS = (
    "exit status: 0 done; 1 refused (unknown id, invalid name); 2 bad command line;"
    " 3 no database configured or it did not answer"
)


def parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    top = argparse.ArgumentParser(
        prog="python -m backend.keys",
        description="API keys for machines (tills, scanners, scripts).",
        epilog=f"{_EPILOG}\n\n{_EXITS}",
        formatter_class=formatter,
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    create = commands.add_parser(
        "create",
        help="make a key and print it, once",
        description="Make a key. It is printed this once: OrderFlow keeps only its hash.",
        epilog=_EPILOG,
        formatter_class=formatter,
    )
    create.add_argument("--name", required=True, help="who or what uses it, e.g. 'till-3 Leeds'")
    create.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        required=True,
        choices=list(SCOPES),
        metavar="SCOPE",
        help="what the key may do; repeat for several (listed below)",
    )
    commands.add_parser("list", help="every key, revoked ones too; never the keys themselves")
    revoke = commands.add_parser("revoke", help="refuse a key from its next request on")
    revoke.add_argument("id", type=_key_id, help="the key's id, as `list` shows it")
    return top


def _key_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a key id (a UUID, as `list` shows it)"
        ) from None


async def run(args: argparse.Namespace, db: Database) -> None:
    if args.command == "create":
        created = await keys.create(db, args.name, args.scopes)
        print(f"created API key {created['id']} {_describe(created)}")
        print(f"key: {created['key']}")
        print(
            "Store the key now: it is not shown again, and OrderFlow keeps only its hash.",
            file=sys.stderr,
        )
    elif args.command == "list":
        print(_table((await db.list_api_keys())["items"]))
    else:
        revoked = await db.revoke_api_key(args.id)
        print(
            f"revoked API key {revoked['id']} {_describe(revoked)}"
            f" (since {_when(revoked['revoked_at'])})"
        )


def _describe(key: Json) -> str:
    return f"{key['name']!r} with scopes {', '.join(key['scopes'])}"


def _when(value: str | None) -> str:
    if value is None:
        return "-"
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _table(items: list[Json]) -> str:
    if not items:
        return "no API keys"
    header = ("ID", "KEY", "NAME", "SCOPES", "CREATED", "LAST USED", "REVOKED")
    rows = [header] + [
        (
            str(key["id"]),
            f"{keys.PREFIX}{key['public_id']}_...",
            str(key["name"]),
            ",".join(key["scopes"]),
            _when(key["created_at"]),
            _when(key["last_used_at"]),
            _when(key["revoked_at"]),
        )
        for key in items
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


async def execute(args: argparse.Namespace) -> int:
    """Run a parsed command line; its exit status."""
    try:
        db = open_database(Settings())
    except pydantic.ValidationError as exc:
        return _fail(EXIT_UNAVAILABLE, f"the settings are invalid: {exc}")
    except RuntimeError as exc:  # no database configured
        return _fail(EXIT_UNAVAILABLE, str(exc))
    try:
        await db.connect()
        await run(args, db)
    except AppError as exc:
        if exc.status >= 500:
            return _fail(EXIT_UNAVAILABLE, f"{exc.code}: {exc.message}")
        return _fail(EXIT_REFUSED, f"{exc.code}: {exc.message}")
    finally:
        await db.close()
    return 0


def _fail(code: int, message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(execute(parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
