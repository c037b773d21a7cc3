"""Traces: one write on node A is one trace, from A's request to B's push; off, none of it.

Spans go to an in-memory exporter handed to `create_app`, behind the same
batch processor a node uses with OTLP; a test flushes it to read them.
"""

import asyncio
import json
import os
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from subprocess import PIPE

import pytest
import redis.asyncio as redis
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from websockets.asyncio.client import connect

from backend.app import create_app, open_tracing
from backend.bus import CHANNEL
from backend.embedded import EmbeddedRedis
from backend.seal import unseal
from backend.settings import Settings
from backend.tracing import Tracing
from database import Json, PostgresDatabase, TracedDatabase
from tests.support import BUS_KEY, Node, eventually, node_settings, run_node

ROOT = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def traced(settings: Settings) -> AsyncIterator[tuple[Node, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    async with run_node(settings, app=create_app(settings, span_exporter=exporter)) as node:
        yield node, exporter


def spans(node: Node, exporter: InMemorySpanExporter) -> Sequence[ReadableSpan]:
    tracing: Tracing = node.app.state.tracing
    assert tracing.flush()
    return exporter.get_finished_spans()


def named(found: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in found if span.name == name]


def trace_of(span: ReadableSpan) -> int:
    assert span.context is not None
    trace_id: int = span.context.trace_id
    return trace_id


async def write(node: Node, sku: str) -> None:
    body = {"sku": sku, "name": sku, "price_cents": 100, "on_hand": 5}
    created = await node.client.post("/products", json=body)
    assert created.status_code == 201, created.text


async def restock(node: Node, sku: str) -> int:
    adjusted = await node.client.post(
        f"/products/{sku}/adjustments", json={"delta": 3, "reason": "restock"}
    )
    assert adjusted.status_code == 200, adjusted.text
    version: int = adjusted.json()["version"]
    return version


async def test_a_write_on_node_a_is_one_trace_through_node_b_apply_and_push(
    database_url: str, redis_server: EmbeddedRedis
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    sku = "TRACE-1"
    async with AsyncExitStack() as stack:
        a, a_spans = await stack.enter_async_context(
            traced(
                node_settings(
                    database_url, "node-a", redis_url=redis_server.url, channel_prefix=prefix
                )
            )
        )
        b, b_spans = await stack.enter_async_context(
            traced(
                node_settings(
                    database_url, "node-b", redis_url=redis_server.url, channel_prefix=prefix
                )
            )
        )
        await write(a, sku)
        await eventually(lambda: b.state["cache"].version_of(sku) == 1, 5, "B has the product")
        client = await stack.enter_async_context(connect(b.ws_url + f"?skus={sku}"))
        json.loads(await client.recv())  # the snapshot: B's hub has a client to push to
        b_spans.clear()
        a_spans.clear()

        version = await restock(a, sku)
        pushed = json.loads(await client.recv())
        assert (pushed["type"], pushed["sku"], pushed["version"]) == ("stock", sku, version)
        missing = await a.client.post(
            "/products/NO-SUCH/adjustments", json={"delta": 1, "reason": "restock"}
        )
        assert missing.status_code == 404

        on_a, on_b = spans(a, a_spans), spans(b, b_spans)

    [request] = named(on_a, "POST /products/{sku}/adjustments")[:1]
    assert request.kind is SpanKind.SERVER
    assert request.attributes is not None
    assert request.attributes["http.route"] == "/products/{sku}/adjustments"
    assert request.resource.attributes["service.name"] == "orderflow"
    assert request.resource.attributes["service.instance.id"] == "node-a"
    trace = trace_of(request)

    [db] = [span for span in named(on_a, "db adjust_stock") if trace_of(span) == trace]
    assert db.kind is SpanKind.CLIENT
    assert db.parent is not None
    assert request.context is not None
    assert db.parent.span_id == request.context.span_id
    assert db.attributes is not None
    assert dict(db.attributes) == {
        "db.system": "postgresql",
        "db.stored_procedure.name": "adjust_stock",
        "orderflow.db.mode": "postgres",
    }  # the function's name, never its arguments
    [publish] = [
        span for span in named(on_a, f"publish {prefix}{CHANNEL}") if trace_of(span) == trace
    ]
    assert publish.kind is SpanKind.PRODUCER

    [receive] = [
        span for span in named(on_b, f"receive {prefix}{CHANNEL}") if trace_of(span) == trace
    ]
    assert receive.kind is SpanKind.CONSUMER
    assert receive.resource.attributes["service.instance.id"] == "node-b"
    assert receive.parent is not None
    assert publish.context is not None
    assert receive.parent.span_id == publish.context.span_id
    assert receive.parent.is_remote
    [apply] = [span for span in named(on_b, "apply") if trace_of(span) == trace]
    assert apply.attributes is not None
    assert (apply.attributes["orderflow.source"], apply.attributes["orderflow.sku"]) == ("bus", sku)
    [push] = [span for span in named(on_b, "push") if trace_of(span) == trace]
    assert push.attributes is not None
    assert push.attributes["orderflow.clients"] == 1

    [refused] = [s for s in named(on_a, "db adjust_stock") if trace_of(s) != trace]
    assert refused.attributes is not None
    assert refused.attributes["error.type"] == "NOT_FOUND"
    assert refused.status.status_code is StatusCode.UNSET  # an answer, not a failure


async def test_the_trace_context_travels_under_the_seal_and_untraced_nodes_still_agree(
    database_url: str, redis_server: EmbeddedRedis
) -> None:
    """A cluster half way through turning traces on: each node takes the other's messages."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    traced_settings = node_settings(
        database_url, "node-a", redis_url=redis_server.url, channel_prefix=prefix
    )
    plain_settings = node_settings(
        database_url, "node-b", redis_url=redis_server.url, channel_prefix=prefix
    )
    async with (
        redis.Redis.from_url(redis_server.url) as tap_client,
        tap_client.pubsub() as tap,
        traced(traced_settings) as (a, _),
        run_node(plain_settings) as b,
    ):
        await tap.subscribe(prefix + CHANNEL)
        await write(a, "FROM-A")
        await write(b, "FROM-B")
        await eventually(
            lambda: all(
                n.state["cache"].version_of(s) == 1 for n in (a, b) for s in ("FROM-A", "FROM-B")
            ),
            5,
            "both nodes have both products",
        )
        messages: list[bytes] = []
        async with asyncio.timeout(5):
            while len(messages) < 2:
                message = await tap.get_message(timeout=1)
                if message is not None and message["type"] == "message":
                    messages.append(message["data"])

    by_node = {node_of(m): m for m in messages}
    from_a, from_b = by_node["node-a"], by_node["node-b"]
    parent = json.loads(unseal(from_a, BUS_KEY.encode()) or b"{}")["traceparent"]
    assert len(parent) == 55
    assert parent.startswith("00-")
    forged = from_a.replace(parent.encode(), ("00-" + "1" * 32 + parent[35:]).encode())
    assert unseal(forged, BUS_KEY.encode()) is None  # the seal covers the trace context
    assert b"traceparent" not in from_b


def node_of(sealed: bytes) -> str:
    """The node that published a message: one change alone, or `{"changes": [...]}`."""
    message = json.loads(unseal(sealed, BUS_KEY.encode()) or b"null")
    node: str = (message["changes"][0] if "changes" in message else message)["node"]
    return node


# A node in a process of its own, as the environment sets it up: what it imported of
# OpenTelemetry beyond what its libraries import on their own (FastAPI its API,
# redis-py the SDK's metrics when installed), and what its parts are.
NODE = """
import asyncio, json, sys
import fastapi, redis.asyncio
before = {m for m in sys.modules if m.startswith("opentelemetry")}
from tests.support import eventually, node_settings, run_node

async def main(database_url, redis_url, prefix):
    settings = node_settings(database_url, "node-own", redis_url=redis_url, channel_prefix=prefix)
    async with run_node(settings) as node:
        body = {"sku": "OWN-1", "name": "Own", "price_cents": 1, "on_hand": 1}
        assert (await node.client.post("/products", json=body)).status_code == 201
        bus = node.state["bus"]
        await eventually(lambda: bus.stats.published == 1, 5, "published")
        parts = [node.state["db"], bus.tracing, node.app.state.tracing]
    ours = ("opentelemetry.sdk.trace", "opentelemetry.exporter", "backend.tracing")
    added = {m for m in sys.modules if m.startswith("opentelemetry")} - before
    added |= {m for m in sys.modules if m.startswith(ours)}
    print(json.dumps({"added": sorted(added), "parts": [type(p).__name__ for p in parts]}))

asyncio.run(main(*sys.argv[1:]))
"""


async def own_process(database_url: str, redis_url: str, **otel: str) -> Json:
    """Run NODE with the OTEL_* variables given (and no others); its report."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | otel
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    child = await asyncio.create_subprocess_exec(
        *[sys.executable, "-c", NODE, database_url, redis_url, prefix],
        cwd=ROOT,
        env=env,
        stdout=PIPE,
        stderr=PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await child.communicate()
    assert child.returncode == 0, err.decode()
    report: Json = json.loads(out.decode().strip().splitlines()[-1])
    return report


async def test_with_tracing_off_a_node_imports_no_opentelemetry_and_wraps_nothing(
    database_url: str, redis_server: EmbeddedRedis
) -> None:
    report = await own_process(database_url, redis_server.url)
    assert report == {"added": [], "parts": ["PostgresDatabase", "NoneType", "NoneType"]}


class Collector(ThreadingHTTPServer):
    """An OTLP/HTTP receiver of traces, as a collector's port 4318 takes them."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.requests: list[ExportTraceServiceRequest] = []


class _Receive(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf":
            self.server.requests.append(ExportTraceServiceRequest.FromString(body))
            self.send_response(200)
        else:
            self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


async def test_the_endpoint_alone_sends_a_nodes_spans_over_otlp_http(
    database_url: str, redis_server: EmbeddedRedis
) -> None:
    collector = Collector()
    thread = threading.Thread(target=collector.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
        report = await own_process(
            database_url,
            redis_server.url,
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_SERVICE_NAME="shop",
        )
    finally:
        collector.shutdown()
        thread.join()
        collector.server_close()
    assert report["parts"] == ["TracedDatabase", "Tracing", "Tracing"]
    names, resources = set(), set()
    for request in collector.requests:
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            resources.add((attributes["service.name"], attributes["service.instance.id"]))
            for scope_spans in resource_spans.scope_spans:
                names |= {span.name for span in scope_spans.spans}
    assert resources == {("shop", "node-own")}
    assert {"POST /products", "db create_product"} <= names
    assert any(name.startswith("publish ") and name.endswith(CHANNEL) for name in names)


def test_tracing_adds_no_layer_to_the_request_path(database_url: str) -> None:
    """Request spans are FastAPI's own: on or off, the same middleware, nothing more."""
    settings = node_settings(database_url)
    off, on = create_app(settings), create_app(settings, span_exporter=InMemorySpanExporter())
    assert [m.cls for m in off.user_middleware] == [m.cls for m in on.user_middleware]
    assert off.state.tracing is None
    wrapped = on.state.tracing.database(PostgresDatabase(database_url))
    assert isinstance(wrapped, TracedDatabase)
    assert wrapped.mode == "postgres"


def test_the_standard_variables_switch_and_name_it(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = node_settings(database_url, "node-7")
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    assert open_tracing(settings) is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert open_tracing(settings) is None
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    tracing = open_tracing(settings)
    assert tracing is not None
    assert tracing.provider.resource.attributes["service.name"] == "orderflow"
    assert tracing.provider.resource.attributes["service.instance.id"] == "node-7"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "shop")
    renamed = open_tracing(settings)
    assert renamed is not None
    assert renamed.provider.resource.attributes["service.name"] == "shop"


def test_compose_points_every_node_at_the_collector_on_demand() -> None:
    """The nodes take the endpoint from .env (empty: off, without the observability
    profile there is no collector to send to); the collector takes OTLP over HTTP."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    nodes = [name for name in compose["services"] if name.startswith("node-")]
    assert len(nodes) == 3
    for name in nodes:
        environment = compose["services"][name]["environment"]
        assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == "${OTEL_EXPORTER_OTLP_ENDPOINT:-}"
    documented = (ROOT / "deploy" / "compose.env.example").read_text()
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:4318" in documented
    collector = yaml.safe_load((ROOT / "deploy" / "otel" / "collector.yaml").read_text())
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
