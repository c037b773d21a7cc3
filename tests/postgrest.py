"""PostgREST's `/rpc`, stood in for with respx, so the Supabase adapter meets real SQL.

PostgREST cannot run here. respx answers `POST <SUPABASE_URL>/rest/v1/rpc/<fn>`
the way PostgREST (behind Supabase's API gateway) does, following its
documentation and query builder:

* the request: `apikey` must be a project key (else the gateway's 401),
  `Authorization: Bearer <key>` picks the role (else PGRST301),
  `Content-Profile` must name an exposed schema (else PGRST106), the body must
  be a JSON object whose keys are the function's argument names, every
  argument without a default included (else PGRST202, 404);
* the transaction: READ COMMITTED, READ ONLY for a STABLE or IMMUTABLE
  function, `role`, `search_path` and `request.*` set locally, the arguments
  parsed with `json_to_record` into the function's types and passed by name;
* the response: 200 with the function's JSON value, or PostgREST's error body
  `{"code", "details", "hint", "message"}` with its SQLSTATE-to-HTTP status
  table (https://docs.postgrest.org/en/stable/references/errors.html).

Anything else the adapter might send (a query string, a GET) is not modelled
and fails the test with an AssertionError instead of being answered.
"""

import json
import re
import tomllib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import respx

SUPABASE_URL = "https://orderflow-test.supabase.co"
SERVICE_ROLE_KEY = "test-service-role-key"
ANON_KEY = "test-anon-key"
KEYS = {SERVICE_ROLE_KEY: "service_role", ANON_KEY: "anon"}
CONFIG = Path(__file__).resolve().parent.parent / "supabase" / "config.toml"
EXPOSED_SCHEMAS = tuple(tomllib.loads(CONFIG.read_text())["api"]["schemas"])
ANON_ROLE = "anon"

_JSON = {"Content-Type": "application/json; charset=utf-8"}

_EXACT_STATUS = {
    "23503": 409,
    "23505": 409,
    "25006": 405,
    "53400": 500,
    "P0001": 400,
    "42883": 404,
    "42P01": 404,
    "42P17": 500,
}
_CLASS_STATUS = {
    "08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500,
    "38": 500, "39": 500, "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500,
    "57": 500, "58": 500, "F0": 500, "HV": 500, "P0": 500, "XX": 500,
}  # fmt: skip


def http_status(sqlstate: str, authenticated: bool) -> int:
    """PostgREST's HTTP status for a SQLSTATE: PTxyz is xyz, then its table, else 400."""
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        return int(sqlstate[2:])
    if sqlstate == "42501":
        return 403 if authenticated else 401
    if sqlstate in _EXACT_STATUS:
        return _EXACT_STATUS[sqlstate]
    return _CLASS_STATUS.get(sqlstate[:2], 400)


def error(
    status: int,
    code: str,
    message: str,
    details: str | None = None,
    hint: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """PostgREST's error response."""
    body = {"code": code, "details": details, "hint": hint, "message": message}
    return _json(status, body, headers)


def gateway_error(status: int, message: str, hint: str) -> httpx.Response:
    """Supabase's API gateway refusing a request before PostgREST sees it: no code."""
    return _json(status, {"message": message, "hint": hint})


def _json(
    status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(
        status, content=json.dumps(body).encode(), headers={**_JSON, **(headers or {})}
    )


@dataclass(frozen=True)
class Routine:
    """A function as PostgREST's schema cache knows it."""

    schema: str
    name: str
    params: tuple[tuple[str, str], ...]  # (name, type), in order
    required: frozenset[str]
    volatile: bool

    def accepts(self, keys: set[str]) -> bool:
        return keys <= {name for name, _ in self.params} and self.required <= keys

    def query(self, keys: set[str]) -> str:
        """PostgREST's call of a scalar function with key params, and its body aggregate."""
        function = f'"{self.schema}"."{self.name}"'
        params = [(name, kind) for name, kind in self.params if name in keys]
        if params:
            columns = ", ".join(f'"{name}"' for name, _ in params)
            typed = ", ".join(f'"{name}" {kind}' for name, kind in params)
            arguments = ", ".join(f'"{name}" := pgrst_body."{name}"' for name, _ in params)
            source = (
                "SELECT pgrst_call.pgrst_scalar"
                " FROM (SELECT $1::json AS json_data) pgrst_payload,"
                f" LATERAL (SELECT {columns} FROM json_to_record(pgrst_payload.json_data)"
                f" AS _({typed}) LIMIT 1) pgrst_body,"
                f" LATERAL (SELECT {function}({arguments}) pgrst_scalar) pgrst_call"
            )
        else:
            source = (
                f"SELECT pgrst_call.pgrst_scalar FROM (SELECT {function}() pgrst_scalar) pgrst_call"
            )
        return (
            "SELECT coalesce((json_agg(_postgrest_t.pgrst_scalar) -> 0)::text, 'null')"
            f" FROM ({source}) _postgrest_t"
        )


_SCHEMA_CACHE = """
select n.nspname as schema, p.proname as name, p.provolatile = 'v' as volatile,
       p.pronargdefaults as defaults,
       array(select a.name from unnest(p.proargnames) with ordinality a(name, i) order by i)
         as names,
       array(select format_type(t.oid, null)
               from unnest(p.proargtypes::oid[]) with ordinality t(oid, i) order by i) as types
  from pg_proc p join pg_namespace n on n.oid = p.pronamespace
 where n.nspname = any($1::text[]) and p.prokind = 'f'
"""

_SETTINGS = """
select set_config('search_path', $1, true), set_config('role', $2, true),
       set_config('request.jwt.claims', $3, true), set_config('request.method', 'POST', true),
       set_config('request.path', $4, true), set_config('request.headers', $5, true)
"""


class PostgREST:
    """Answers `/rpc` calls by running the function on `database_url`."""

    def __init__(self, database_url: str, keys: Mapping[str, str] = KEYS) -> None:
        self.database_url = database_url
        self.keys = dict(keys)
        self.routines: dict[tuple[str, str], list[Routine]] = {}
        self.route: respx.Route | None = None
        self._pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=10)
        for row in await self._pool.fetch(_SCHEMA_CACHE, list(EXPOSED_SCHEMAS)):
            names, types = list(row["names"]), list(row["types"])
            if len(names) != len(types):
                continue  # unnamed arguments: not callable with key params
            routine = Routine(
                row["schema"],
                row["name"],
                tuple(zip(names, types, strict=True)),
                frozenset(names[: len(names) - row["defaults"]]),
                row["volatile"],
            )
            self.routines.setdefault((routine.schema, routine.name), []).append(routine)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    def mount(self, router: respx.MockRouter) -> respx.Route:
        """Route `POST <SUPABASE_URL>/rest/v1/rpc/<fn>` on `router` to this stand-in."""
        pattern = rf"^{re.escape(SUPABASE_URL)}/rest/v1/rpc/(?P<function>[^/?]+)"
        self.route = router.post(url__regex=pattern).mock(side_effect=self.handle)
        return self.route

    @property
    def calls(self) -> respx.models.CallList:
        assert self.route is not None, "PostgREST stand-in not mounted"
        return self.route.calls

    async def handle(self, request: httpx.Request, function: str) -> httpx.Response:
        assert not request.url.query, f"query strings are not modelled: {request.url}"
        assert "prefer" not in request.headers, "Prefer headers are not modelled"
        apikey = request.headers.get("apikey")
        if apikey is None:
            return gateway_error(401, "No API key found in request", "No `apikey` request header")
        if apikey not in self.keys:
            return gateway_error(401, "Invalid API key", "Double check your Supabase API key.")
        authorization = request.headers.get("authorization")
        role = ANON_ROLE
        if authorization is not None:
            token = authorization.removeprefix("Bearer ")
            if token == authorization or token not in self.keys:
                bearer = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
                return error(401, "PGRST301", "JWSError JWSInvalidSignature", headers=bearer)
            role = self.keys[token]
        schema = request.headers.get("content-profile", EXPOSED_SCHEMAS[0])
        if schema not in EXPOSED_SCHEMAS:
            message = f"The schema must be one of the following: {', '.join(EXPOSED_SCHEMAS)}"
            return error(406, "PGRST106", message)
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip() != "application/json":
            return error(
                415, "PGRST107", f"The request's Content-Type '{content_type}' is not supported"
            )
        try:
            arguments = json.loads(request.content)
        except ValueError:
            return error(400, "PGRST102", "Empty or invalid json")
        assert isinstance(arguments, dict), "only a JSON object of named arguments is modelled"
        routine = self._find(schema, function, set(arguments))
        if routine is None:
            return self._not_found(schema, function, sorted(arguments))
        return await self._run(routine, role, request, set(arguments))

    def _find(self, schema: str, function: str, keys: set[str]) -> Routine | None:
        matches = [r for r in self.routines.get((schema, function), []) if r.accepts(keys)]
        assert len(matches) <= 1, "overloaded functions (PGRST203) are not modelled"
        return matches[0] if matches else None

    def _not_found(self, schema: str, function: str, keys: list[str]) -> httpx.Response:
        qualified = f"{schema}.{function}"
        no_match = "but no matches were found in the schema cache."
        if keys:
            names = ", ".join(keys)
            message = f"Could not find the function {qualified}({names}) in the schema cache"
            details = (
                f"Searched for the function {qualified} with parameters {names} or with"
                f" a single unnamed json/jsonb parameter, {no_match}"
            )
        else:
            message = (
                f"Could not find the function {qualified} without parameters in the schema cache"
            )
            details = f"Searched for the function {qualified} without parameters, {no_match}"
        hint = None
        for known in self.routines.get((schema, function), []):
            names = ", ".join(sorted(name for name, _ in known.params))
            hint = f"Perhaps you meant to call the function {qualified}({names})"
        return error(404, "PGRST202", message, details, hint)

    async def _run(
        self, routine: Routine, role: str, request: httpx.Request, keys: set[str]
    ) -> httpx.Response:
        assert self._pool is not None, "PostgREST stand-in not started"
        claims = json.dumps({"role": role})
        headers = json.dumps({name.lower(): value for name, value in request.headers.items()})
        search_path = ", ".join(f'"{schema}"' for schema in EXPOSED_SCHEMAS) + ', "extensions"'
        path = f"/rpc/{routine.name}"  # as PostgREST sees it, behind the gateway's /rest/v1
        query = routine.query(keys)
        async with self._pool.acquire() as conn:
            try:
                async with conn.transaction(
                    isolation="read_committed", readonly=not routine.volatile
                ):
                    await conn.execute(_SETTINGS, search_path, role, claims, path, headers)
                    body = await conn.fetchval(query, *([request.content.decode()] if keys else []))
            except asyncpg.PostgresError as exc:
                sqlstate = exc.sqlstate or "XX000"
                status = http_status(sqlstate, authenticated=role != ANON_ROLE)
                challenge = {"WWW-Authenticate": "Bearer"} if status == 401 else None
                return error(status, sqlstate, exc.message, exc.detail, exc.hint, challenge)
        return httpx.Response(200, content=str(body).encode(), headers=_JSON)


@asynccontextmanager
async def supabase_api(database_url: str) -> AsyncIterator[PostgREST]:
    """Serve `SUPABASE_URL` with the stand-in until the block ends.

    respx patches every httpx client of this process, the adapter's own too;
    requests to 127.0.0.1 (the tests' nodes) pass through, any other one fails.
    """
    api = PostgREST(database_url)
    await api.start()
    try:
        with respx.mock(assert_all_called=False) as router:
            router.route(host="127.0.0.1").pass_through()
            # Supabase Auth's key set, as a project with only the legacy HS256 secret serves it.
            router.get(f"{SUPABASE_URL}/auth/v1/.well-known/jwks.json").respond(json={"keys": []})
            api.mount(router)
            yield api
    finally:
        await api.close()
