"""Errors are values with a stable machine code and the HTTP status that fits.

This is the core's error type: the database layer, the sync and the hub raise
it and know nothing of the web framework; `backend.handlers` turns it (and
every other exception) into the one error body.

The SQL functions raise SQLSTATE `PT<status>` with the code as message, JSON
details as detail and a sentence as hint. asyncpg (`.sqlstate`) and PostgREST
(`APIError.code`) both expose the SQLSTATE, so `from_database` serves both;
PostgREST's own `PGRST...` codes go through the same table.
"""

import json
from typing import Any

# SQLSTATEs that are not ours but can still reach a node.
_SQLSTATE_ERRORS: dict[str, tuple[int, str, str]] = {
    "23505": (409, "CONFLICT", "the change conflicts with existing data"),
    "23514": (422, "INVALID_INPUT", "a value is outside what the catalog accepts"),
    "23502": (422, "INVALID_INPUT", "a required value is missing"),
    "22001": (422, "INVALID_INPUT", "a value is too long"),
    "22003": (422, "INVALID_INPUT", "a number is out of range"),
    "22P02": (422, "INVALID_INPUT", "a value has the wrong form"),
    "22023": (422, "INVALID_INPUT", "a value is invalid"),
    "22021": (422, "INVALID_INPUT", "a text value has a character the database refuses"),
    "22P05": (422, "INVALID_INPUT", "a text value has a character the database refuses"),
    "40001": (503, "RETRY", "the database asked to retry the transaction"),
    "40P01": (503, "RETRY", "the database broke a deadlock; retry"),
    "57014": (503, "DATABASE_TIMEOUT", "the database took too long"),
    # The node's own set-up is wrong: its role may not call the functions, or
    # the migrations are not applied. PGRST codes are PostgREST's own.
    "42501": (503, "DATABASE_FORBIDDEN", "the database refused this node's role"),
    "PGRST301": (503, "DATABASE_FORBIDDEN", "the Supabase API refused the key"),
    "PGRST302": (503, "DATABASE_FORBIDDEN", "the Supabase API refused the key"),
    "42883": (503, "SCHEMA_OUT_OF_DATE", "the database lacks a function; apply the migrations"),
    "PGRST202": (503, "SCHEMA_OUT_OF_DATE", "the database lacks a function; apply the migrations"),
    "PGRST000": (503, "DATABASE_UNAVAILABLE", "the Supabase API cannot reach its database"),
    "PGRST001": (503, "DATABASE_UNAVAILABLE", "the Supabase API cannot reach its database"),
    "PGRST002": (503, "DATABASE_UNAVAILABLE", "the Supabase API cannot reach its database"),
    "PGRST003": (503, "DATABASE_TIMEOUT", "the Supabase API had no free database connection"),
}


class AppError(Exception):
    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


def not_found(message: str, **details: Any) -> AppError:
    return AppError(404, "NOT_FOUND", message, details)


def unavailable(message: str) -> AppError:
    return AppError(503, "DATABASE_UNAVAILABLE", message)


def _parse_details(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {"detail": raw}
    return parsed if isinstance(parsed, dict) else {"detail": parsed}


def from_database(
    sqlstate: str | None, message: str, detail: str | None, hint: str | None
) -> AppError:
    """The one mapping from a database error to the API's error."""
    state = sqlstate or ""
    if state.startswith("PT") and state[2:].isdigit():
        return AppError(int(state[2:]), message, hint or message, _parse_details(detail))
    if state in _SQLSTATE_ERRORS:
        status, code, text = _SQLSTATE_ERRORS[state]
        return AppError(status, code, text, {"reason": message})
    if state.startswith("08") or state.startswith("57P"):
        return unavailable("the database is not reachable")
    return AppError(500, "DATABASE_ERROR", "the database failed", {"sqlstate": state})
