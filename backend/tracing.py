"""OpenTelemetry traces of one node, when OTEL_EXPORTER_OTLP_ENDPOINT says where to send them.

A trace follows a change across the cluster: the request that made it, each
database function it called, its publish on the bus, and on every other node
the message's receipt, its apply to the cache and its push to the WebSocket
clients. The bus message carries the W3C `traceparent` of its publish span
(inside the sealed text, so the seal covers it).

This module imports the SDK, so a node imports it only when traces are on
(`backend.app.open_tracing`): off, nothing of it is loaded and nothing is wrapped, and the
request path, the database calls and the bus are exactly what they are without
it. Each node has its own tracer provider, never the process's global one, so
that nodes sharing a process (the tests) each keep their `service.instance.id`.

The standard variables are honoured (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER, ...): the exporter is OTLP
over HTTP/protobuf (the collector's port 4318) behind a batch span processor.
"""

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from fastapi.telemetry import TelemetryConfig
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from backend.errors import AppError
from database import Database, TracedDatabase

if TYPE_CHECKING:
    from backend.node import Node

log = logging.getLogger(__name__)

SERVICE_NAME = "orderflow"
SERVICE_KEY = "service.name"
_PROPAGATOR = TraceContextTextMapPropagator()
_HTTP_PROTOBUF = "http/protobuf"

Attributes = Mapping[str, AttributeValue]


def traceparent(span: trace.Span) -> str:
    """The span's W3C trace context, version 00: always 55 characters (`backend.bus`)."""
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


class Tracing:
    """One node's tracer provider and the spans the node's parts make with it."""

    def __init__(self, node_id: str, exporter: SpanExporter | None = None) -> None:
        """`exporter` None: OTLP over HTTP, set by the OTEL_EXPORTER_OTLP_* variables."""
        self.provider = TracerProvider(resource=_resource(node_id))
        self.tracer = self.provider.get_tracer("orderflow")
        self._exporter = exporter

    def start(self) -> None:
        """Begin exporting (the batch processor's thread starts here, not at import)."""
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", _HTTP_PROTOBUF
        )
        if self._exporter is None and protocol != _HTTP_PROTOBUF:
            log.warning("traces go out as OTLP %s (port 4318), not %s", _HTTP_PROTOBUF, protocol)
        exporter = self._exporter or OTLPSpanExporter()
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        log.info("tracing on: OTLP spans of %s", self.provider.resource.attributes[SERVICE_KEY])

    async def stop(self) -> None:
        """Export what is left and stop; in a thread, as the export is blocking I/O."""
        await asyncio.to_thread(self.provider.shutdown)

    def flush(self) -> bool:
        """Export every ended span now (tests read them at once)."""
        return self.provider.force_flush()

    def telemetry(self) -> TelemetryConfig:
        """FastAPI's own request spans, with this provider: one SERVER span per HTTP
        request, named by its route template (`POST /products/{sku}/adjustments`).

        WebSockets are left out (a connection's span would last for hours: its
        pushes are traced instead), and so are FastAPI's metrics and logs
        (`/metrics` and the JSON logs have them) and its per-step spans.
        """
        return {
            "tracer_provider": self.provider,
            "tracing": True,
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            "auto_configure": False,
            "exclude": _websocket,
        }

    def database(self, db: Database) -> Database:
        """The adapter with a span around each function call."""
        system = {"db.system": "postgresql", "orderflow.db.mode": db.mode}
        return TracedDatabase(db, lambda function: self._db_call(function, system))

    def instrument(self, node: "Node") -> None:
        """The bus, the sync and the hub make their spans with this."""
        node.sync.tracing = self
        node.hub.tracing = self
        if node.bus is not None:
            node.bus.tracing = self

    @contextlib.contextmanager
    def _db_call(self, function: str, system: Attributes) -> Iterator[None]:
        """`db <function>`: the function's name, never its arguments (they are customers'
        data). A refusal (a 4xx code) is an answer; the database failing is an error."""
        with self.tracer.start_as_current_span(
            f"db {function}",
            kind=SpanKind.CLIENT,
            attributes={**system, "db.stored_procedure.name": function},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except AppError as exc:
                span.set_attribute("error.type", exc.code)
                if exc.status >= 500:
                    span.set_status(StatusCode.ERROR, exc.code)
                raise

    def published(self, channel: str, changes: int) -> str:
        """A span for one publish of `changes` changes; its traceparent, for the message.

        It ends at once: the outbox sends the message a moment later, so the gap
        before the other nodes' `receive` is the time on the way.
        """
        with self.tracer.start_as_current_span(
            f"publish {channel}",
            kind=SpanKind.PRODUCER,
            attributes=_messaging(channel, "send", changes),
        ) as span:
            return traceparent(span)

    def received(
        self, parent: object, channel: str, changes: int
    ) -> contextlib.AbstractContextManager[object]:
        """A message's receipt as a child of its publish span, current while it is applied;
        nothing for a trace context that is not one."""
        if not isinstance(parent, str):
            return contextlib.nullcontext()
        remote = _PROPAGATOR.extract({"traceparent": parent})
        if not trace.get_current_span(remote).get_span_context().is_valid:
            return contextlib.nullcontext()
        return self.tracer.start_as_current_span(
            f"receive {channel}",
            context=remote,
            kind=SpanKind.CONSUMER,
            attributes=_messaging(channel, "receive", changes),
        )

    def within(
        self, name: str, attributes: Callable[[], Attributes]
    ) -> contextlib.AbstractContextManager[object]:
        """A span `name` if there is a trace to join (a request, a received message);
        else nothing, so that the loops' own work makes no traces of its own."""
        if not trace.get_current_span().get_span_context().is_valid:
            return contextlib.nullcontext()
        return self.tracer.start_as_current_span(name, attributes=attributes())


def _resource(node_id: str) -> Resource:
    """`orderflow` and the node id, unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES
    say otherwise."""
    ours = {SERVICE_KEY: SERVICE_NAME, "service.instance.id": node_id}
    return Resource.create({**ours, **OTELResourceDetector().detect().attributes})


def _messaging(channel: str, operation: str, changes: int) -> Attributes:
    return {
        "messaging.system": "redis",
        "messaging.destination.name": channel,
        "messaging.operation.type": operation,
        "orderflow.changes": changes,
    }


def _websocket(scope: object) -> bool:
    return isinstance(scope, Mapping) and scope.get("type") == "websocket"
