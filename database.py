"""The database port: one small async interface, one method per SQL function.

All the logic is in the plpgsql functions of `supabase/migrations/`, and each
returns one jsonb document, so an adapter only has to call a function by name
with named arguments (`call`) and map its errors with `backend.errors`.
`PostgresDatabase` speaks asyncpg; `SupabaseDatabase` calls the same
functions over PostgREST's `/rpc` with supabase-py.
"""

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, cast
from urllib.parse import urlsplit
from uuid import UUID

import asyncpg
import httpx
from postgrest.exceptions import APIError
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from backend.documents import (
    ChangeHistory,
    ChangePage,
    Json,
    MarkPage,
    Order,
    OrderEvent,
    OrderRequest,
    Product,
    Snapshot,
    Written,
)
from backend.errors import AppError, from_database, unavailable


class Database(ABC):
    """What a node needs from its database. Every method is one function call."""

    mode: str

    @property
    @abstractmethod
    def target(self) -> str:
        """Where the database is, fit for logs: no password, no key."""

    @abstractmethod
    async def connect(self) -> None:
        """Open the pool or client; a no-op once open. Raises AppError 503 when unreachable."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def call(self, function: str, **arguments: Any) -> Any:
        """Call `public.<function>` with named arguments `p_<name>`; return its jsonb."""

    async def _document(self, function: str, **arguments: Any) -> Json:
        document: Json = await self.call(function, **arguments)
        return document

    # Catalog

    async def create_product(
        self,
        sku: str,
        name: str,
        price_cents: int,
        on_hand: int,
        low_stock_threshold: int,
        node: str,
    ) -> Written:
        return cast(
            Written,
            await self._document(
                "create_product",
                sku=sku,
                name=name,
                price_cents=price_cents,
                on_hand=on_hand,
                low_stock_threshold=low_stock_threshold,
                node=node,
            ),
        )

    async def update_product(
        self,
        sku: str,
        node: str,
        name: str | None = None,
        price_cents: int | None = None,
        low_stock_threshold: int | None = None,
        expected_version: int | None = None,
    ) -> Written:
        return cast(
            Written,
            await self._document(
                "update_product",
                sku=sku,
                name=name,
                price_cents=price_cents,
                low_stock_threshold=low_stock_threshold,
                expected_version=expected_version,
                node=node,
            ),
        )

    async def delete_product(self, sku: str, node: str) -> Written:
        return cast(Written, await self._document("delete_product", sku=sku, node=node))

    async def get_product(self, sku: str) -> Product:
        return cast(Product, await self._document("get_product", sku=sku))

    async def list_products(self, after: str | None, limit: int) -> Json:
        return await self._document("list_products", after=after, limit=limit)

    async def catalog_snapshot(self) -> Snapshot:
        return cast(Snapshot, await self._document("catalog_snapshot"))

    # Stock

    async def adjust_stock(self, sku: str, delta: int, reason: str, node: str) -> Written:
        return cast(
            Written,
            await self._document("adjust_stock", sku=sku, delta=delta, reason=reason, node=node),
        )

    async def set_stock(
        self, sku: str, on_hand: int, expected_version: int | None, node: str
    ) -> Written:
        return cast(
            Written,
            await self._document(
                "set_stock", sku=sku, on_hand=on_hand, expected_version=expected_version, node=node
            ),
        )

    # Orders

    async def place_order(
        self,
        items: Sequence[Json],
        customer_id: str | None,
        idempotency_key: str | None,
        node: str,
        hold_seconds: int,
        fee_bps: int,
        max_lines: int,
        *,
        caller: str | None = None,
        payment_method: str | None = None,
    ) -> Written:
        """`caller` scopes the idempotency key (None: the anonymous caller's)."""
        return cast(
            Written,
            await self._document(
                "place_order",
                items=list(items),
                customer_id=customer_id,
                idempotency_key=idempotency_key,
                node=node,
                hold_seconds=hold_seconds,
                fee_bps=fee_bps,
                max_lines=max_lines,
                **_given(caller=caller, payment_method=payment_method),
            ),
        )

    async def place_orders(
        self,
        orders: Sequence[OrderRequest],
        node: str,
        hold_seconds: int,
        fee_bps: int,
        max_lines: int,
    ) -> list[Written | AppError]:
        """Orders in one transaction, in order; each answers its result or its own error."""
        results: list[Json] = await self.call(
            "place_orders",
            orders=list(orders),
            node=node,
            hold_seconds=hold_seconds,
            fee_bps=fee_bps,
            max_lines=max_lines,
        )
        return [_outcome(result) for result in results]

    async def confirm_order(self, order_id: UUID, node: str) -> Written:
        return cast(
            Written, await self._document("confirm_order", order_id=str(order_id), node=node)
        )

    async def cancel_order(
        self,
        order_id: UUID,
        node: str,
        *,
        customer_id: str | None = None,
        reason: str | None = None,
    ) -> Written:
        """With `customer_id`, another customer's order is NOT_FOUND, like a missing one."""
        return cast(
            Written,
            await self._document(
                "cancel_order",
                order_id=str(order_id),
                node=node,
                **_given(customer_id=customer_id, reason=reason),
            ),
        )

    async def expire_holds(self, batch: int, node: str) -> Written:
        return cast(Written, await self._document("expire_holds", batch=batch, node=node))

    async def get_order(self, order_id: UUID, *, customer_id: str | None = None) -> Order:
        """With `customer_id`, another customer's order is NOT_FOUND, like a missing one."""
        return cast(
            Order,
            await self._document(
                "get_order", order_id=str(order_id), **_given(customer_id=customer_id)
            ),
        )

    async def list_orders(
        self, customer_id: str | None, status: str | None, limit: int, cursor: str | None
    ) -> Json:
        return await self._document(
            "list_orders", customer_id=customer_id, status=status, limit=limit, cursor=cursor
        )

    # Lifecycle: payment, refunds, customers, the outbox and its consumers

    async def record_payment(
        self,
        order_id: UUID,
        outcome: str,
        consumer: str,
        event_id: UUID,
        ref: str | None,
        node: str,
        detail: str | None = None,
    ) -> Written:
        """A payment's outcome, once per (consumer, event): `duplicate` says it was already."""
        return cast(
            Written,
            await self._document(
                "record_payment",
                order_id=str(order_id),
                outcome=outcome,
                consumer=consumer,
                event_id=str(event_id),
                ref=ref,
                node=node,
                detail=detail,
            ),
        )

    async def order_for_payment_ref(self, ref: str) -> Json | None:
        found: Json | None = await self.call("order_for_payment_ref", ref=ref)
        return found

    async def refund_order(
        self,
        order_id: UUID,
        items: Sequence[Json] | None,
        restock: bool,
        reason: str,
        idempotency_key: str | None,
        caller: str | None,
        node: str,
    ) -> Written:
        return cast(
            Written,
            await self._document(
                "refund_order",
                order_id=str(order_id),
                items=None if items is None else list(items),
                restock=restock,
                reason=reason,
                idempotency_key=idempotency_key,
                caller=caller,
                node=node,
            ),
        )

    async def upsert_customer(self, customer_id: str, email: str | None, name: str | None) -> Json:
        return await self._document("upsert_customer", id=customer_id, email=email, name=name)

    async def get_customer(self, customer_id: str) -> Json | None:
        found: Json | None = await self.call("get_customer", id=customer_id)
        return found

    async def order_timeline(
        self, order_id: UUID, *, customer_id: str | None = None
    ) -> list[OrderEvent]:
        """With `customer_id`, another customer's order is NOT_FOUND, like a missing one."""
        timeline = await self._document(
            "order_timeline", order_id=str(order_id), **_given(customer_id=customer_id)
        )
        return cast(list[OrderEvent], timeline["items"])

    async def claim_outbox(self, holder: str, limit: int, lease_seconds: int) -> Json:
        """{"leased": bool, "events": [...]}: the oldest unrelayed events, for the lease holder."""
        return await self._document(
            "claim_outbox", holder=holder, limit=limit, lease_seconds=lease_seconds
        )

    async def mark_relayed(self, holder: str, seqs: Sequence[int]) -> int:
        marked = await self._document("mark_relayed", holder=holder, seqs=list(seqs))
        return int(marked["relayed"])

    async def claim_notification(
        self, event_id: UUID, order_id: UUID, recipient: str | None, subject: str
    ) -> Json:
        return await self._document(
            "claim_notification",
            event_id=str(event_id),
            order_id=str(order_id),
            recipient=recipient,
            subject=subject,
        )

    async def finish_notification(
        self, event_id: UUID, status: str, receipt: str | None, node: str
    ) -> bool:
        finished = await self._document(
            "finish_notification", event_id=str(event_id), status=status, receipt=receipt, node=node
        )
        return bool(finished["finished"])

    async def add_dead_letter(
        self,
        consumer: str,
        event_id: UUID | None,
        stream_id: str,
        payload: Json,
        error: str,
        attempts: int,
    ) -> int:
        added = await self._document(
            "add_dead_letter",
            consumer=consumer,
            event_id=None if event_id is None else str(event_id),
            stream_id=stream_id,
            payload=payload,
            error=error,
            attempts=attempts,
        )
        return int(added["id"])

    async def list_dead_letters(self, include_replayed: bool, limit: int) -> Json:
        return await self._document(
            "list_dead_letters", include_replayed=include_replayed, limit=limit
        )

    async def take_dead_letters(self, dead_letter_id: int | None) -> list[Json]:
        """Marks them replayed and returns them, for the caller to put on the stream again."""
        taken = await self._document("take_dead_letters", id=dead_letter_id)
        return cast(list[Json], taken["items"])

    async def create_webhook_endpoint(
        self, url: str, event_types: Sequence[str], secret: str, description: str | None
    ) -> Json:
        return await self._document(
            "create_webhook_endpoint",
            url=url,
            event_types=list(event_types),
            secret=secret,
            description=description,
        )

    async def list_webhook_endpoints(self) -> Json:
        return await self._document("list_webhook_endpoints")

    async def disable_webhook_endpoint(self, endpoint_id: UUID) -> Json:
        return await self._document("disable_webhook_endpoint", id=str(endpoint_id))

    async def webhook_deliveries_for(self, event_id: UUID, event_type: str) -> list[Json]:
        """The event's pending deliveries (created once per endpoint), with url and secret."""
        owed = await self._document(
            "webhook_deliveries_for", event_id=str(event_id), type=event_type
        )
        return cast(list[Json], owed["items"])

    async def record_webhook_attempt(
        self, delivery_id: UUID, status: str, status_code: int | None, error: str | None
    ) -> bool:
        updated = await self._document(
            "record_webhook_attempt",
            delivery_id=str(delivery_id),
            status=status,
            status_code=status_code,
            error=error,
        )
        return bool(updated["updated"])

    async def list_webhook_deliveries(self, endpoint_id: UUID | None, limit: int) -> Json:
        return await self._document(
            "list_webhook_deliveries",
            endpoint_id=None if endpoint_id is None else str(endpoint_id),
            limit=limit,
        )

    async def lifecycle_stats(self) -> Json:
        """{"outbox_pending", "outbox_oldest_seconds", "dead_letters"}."""
        return await self._document("lifecycle_stats")

    # Ledger

    async def stock_events_since(self, cursor: str | None, limit: int) -> ChangePage:
        return cast(
            ChangePage, await self._document("stock_events_since", cursor=cursor, limit=limit)
        )

    async def stock_marks_since(self, cursor: str | None, limit: int) -> MarkPage:
        """The page `stock_events_since` gives for the same cursor, each row in brief."""
        return cast(
            MarkPage,
            await self._document("stock_events_since", cursor=cursor, limit=limit, compact=True),
        )

    async def list_stock_events(
        self, sku: str | None, before: int | None, limit: int
    ) -> ChangeHistory:
        return cast(
            ChangeHistory,
            await self._document("list_stock_events", sku=sku, before=before, limit=limit),
        )

    async def schema_versions(self) -> list[str]:
        versions: list[str] = await self.call("schema_versions")
        return versions

    # API keys

    async def create_api_key(
        self, public_id: str, key_hash: str, name: str, scopes: Sequence[str]
    ) -> Json:
        return await self._document(
            "create_api_key",
            public_id=public_id,
            key_hash=key_hash,
            name=name,
            scopes=list(scopes),
        )

    async def list_api_keys(self) -> Json:
        return await self._document("list_api_keys")

    async def revoke_api_key(self, key_id: UUID) -> Json:
        return await self._document("revoke_api_key", key_id=str(key_id))

    async def authenticate_api_key(self, public_id: str, key_hash: str) -> Json:
        return await self._document("authenticate_api_key", public_id=public_id, key_hash=key_hash)


def _outcome(result: Json) -> Written | AppError:
    """One element of place_orders' answer: the order, or the error the order alone met."""
    error = result.get("error")
    if error is None:
        return cast(Written, result)
    return AppError(error["status"], error["code"], error["message"], error["details"])


def _given(**arguments: Any) -> dict[str, Any]:
    """The optional arguments that are set. One left out takes its SQL default,
    so a call that sets none is the same call, on the wire too, as before they existed."""
    return {name: value for name, value in arguments.items() if value is not None}


class PostgresDatabase(Database):
    """asyncpg pool against any Postgres: embedded, self-hosted or Supabase's."""

    mode = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        statement_cache_size: int = 100,
        command_timeout: float = 10.0,
        application_name: str = "orderflow",
    ) -> None:
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._statement_cache_size = statement_cache_size
        self._command_timeout = command_timeout
        self._application_name = application_name
        self._pool: asyncpg.Pool | None = None
        self._queries: dict[tuple[str, tuple[str, ...]], str] = {}

    @property
    def target(self) -> str:
        return redact(self._dsn)

    async def connect(self) -> None:
        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                statement_cache_size=self._statement_cache_size,
                command_timeout=self._command_timeout,
                server_settings={"application_name": self._application_name},
                init=_init_connection,
                reset=_keep_session,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise unavailable(f"cannot connect to Postgres: {exc}") from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _query(self, function: str, names: tuple[str, ...]) -> str:
        key = (function, names)
        if key not in self._queries:
            arguments = ", ".join(f"p_{name} => ${i}" for i, name in enumerate(names, start=1))
            self._queries[key] = f"select public.{function}({arguments})"
        return self._queries[key]

    async def call(self, function: str, **arguments: Any) -> Any:
        if self._pool is None:
            raise unavailable("the database pool is not open")
        names = tuple(arguments)
        try:
            return await self._pool.fetchval(self._query(function, names), *arguments.values())
        except asyncpg.PostgresError as exc:
            raise from_database(exc.sqlstate, exc.message, exc.detail, exc.hint) from exc
        except (OSError, TimeoutError, asyncpg.InterfaceError) as exc:
            raise unavailable(f"the database did not answer: {type(exc).__name__}") from exc


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Every call is one statement that leaves no session state behind, so the
    pool's default reset (a query per release) would be a wasted round trip."""


async def _init_connection(connection: asyncpg.Connection) -> None:
    await connection.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )


class SupabaseDatabase(Database):
    """supabase-py against a Supabase project's API, as its service role.

    Each call is `POST /rest/v1/rpc/<function>` with the named arguments as a
    JSON object; PostgREST runs the function in its own transaction. POSTs are
    never retried here: a timeout leaves the outcome unknown, and the caller
    retries (an order safely, with the same idempotency key).
    """

    mode = "supabase"

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout: float = 10.0,
        max_connections: int = 10,
        application_name: str = "orderflow",
    ) -> None:
        self._url = url
        self._key = key
        self._timeout = timeout
        self._max_connections = max_connections
        self._application_name = application_name
        self._http: httpx.AsyncClient | None = None
        self._client: AsyncClient | None = None

    @property
    def target(self) -> str:
        return f"{redact(self._url)} (service role key not shown)"

    async def connect(self) -> None:
        if self._client is not None:
            return
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(self._timeout, connect=min(self._timeout, 5.0)),
            limits=httpx.Limits(
                max_connections=self._max_connections,
                max_keepalive_connections=self._max_connections,
            ),
            headers={"User-Agent": self._application_name},
        )
        options = AsyncClientOptions(
            httpx_client=self._http, auto_refresh_token=False, persist_session=False
        )
        self._client = await acreate_client(self._url, self._key, options=options)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.postgrest.aclose()
            self._client = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def call(self, function: str, **arguments: Any) -> Any:
        if self._client is None:
            raise unavailable("the Supabase client is not open")
        params = {f"p_{name}": value for name, value in arguments.items()}
        try:
            response = await self._client.rpc(function, params).execute()
        except APIError as exc:
            raise _from_api_error(exc) from exc
        except httpx.TimeoutException as exc:
            raise unavailable(
                f"the Supabase API did not answer in time ({type(exc).__name__});"
                " the call may or may not have taken effect"
            ) from exc
        except httpx.TransportError as exc:
            raise unavailable(f"cannot reach the Supabase API: {type(exc).__name__}") from exc
        return response.data


def _from_api_error(exc: APIError) -> AppError:
    """PostgREST's error body carries the SQLSTATE (or a PGRST code) as `code`."""
    code = exc.code or ""
    if not code or (len(code) == 3 and code.isdigit()):
        # Not PostgREST's JSON: the API gateway or a proxy answered (supabase-py
        # then puts the HTTP status in `code`).
        return unavailable(f"the Supabase API answered: {exc.message or code}")
    details = exc.details
    if details is not None and not isinstance(details, str):
        details = json.dumps(details)
    return from_database(code, exc.message or "DATABASE_ERROR", details, exc.hint)


class TracedDatabase(Database):
    """Another adapter whose every function call runs inside `span(function)`.

    A node wraps its adapter in this only when traces are on (`backend.tracing`),
    so that one without them pays nothing for their existence. Every method of
    the interface is one `call`, so this is the only one to wrap.
    """

    def __init__(
        self, inner: Database, span: Callable[[str], AbstractContextManager[object]]
    ) -> None:
        self.inner = inner
        self.mode = inner.mode
        self._span = span

    @property
    def target(self) -> str:
        return self.inner.target

    async def connect(self) -> None:
        await self.inner.connect()

    async def close(self) -> None:
        await self.inner.close()

    async def call(self, function: str, **arguments: Any) -> Any:
        with self._span(function):
            return await self.inner.call(function, **arguments)


def redact(url: str) -> str:
    """The URL without its password (nor a `password=` parameter), fit for printing."""
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    query = "&".join(
        "password=***" if item.lower().startswith("password=") else item
        for item in parts.query.split("&")
        if item
    )
    return parts._replace(netloc=netloc, query=query).geturl()


__all__ = [
    "AppError",
    "Database",
    "Json",
    "PostgresDatabase",
    "SupabaseDatabase",
    "TracedDatabase",
]
