"""`/ws`: a snapshot of the subscribed products, then every change as it is applied here.

Messages to the client: `snapshot`, `stock` (the Redis message shape), `order`
and `order_event` (for orders the client follows: the order as it is now, and
each event of its lifecycle off the events stream), `ping`, `pong`,
`reconnect`, `error`.
Messages from the client (JSON text): `{"type": "auth", "token": "..."}`,
`{"type": "subscribe", "skus": [...] | null}`, `{"type": "follow", "order_id": "..."}`,
`{"type": "unfollow", "order_id": "..."}`, `{"type": "ping"}`.

Who is calling: the token of an `auth` message (send it first; a later one
replaces it, as a renewed token does), the `access_token` query parameter, or
the handshake's `Authorization: Bearer` header where the client can set one.
The stock stream follows the catalog's rule (anonymous callers too, unless
PUBLIC_CATALOG=false: then the first message must be `auth`); following an
order needs a caller who may read it. A connection ends when its token does
(`reconnect`, reason `token_expired`). A browser's `Origin` must be the node's
own or one of ALLOWED_ORIGINS.

A connection costs one task (the server's own, which receives), a second one
only while there is news to send, two timers and a few objects, so that
thousands of idle clients cost little. Input is
untrusted: a bad message gets an `error`; binary data, an oversized message or
a flood gets an `error` and a close (1003, 1009, 1008), logged once at info.
A client whose socket takes nothing for two heartbeats is dropped.
"""

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit
from uuid import UUID

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnected

from backend.auth.gate import Gate
from backend.auth.principal import Principal
from backend.errors import AppError
from backend.hub import PING, PONG, SERVICE_RESTART, Hub, Mailbox, encode, error, reconnect
from backend.settings import Settings

if TYPE_CHECKING:
    from backend.node import Node

log = logging.getLogger(__name__)

router = APIRouter(tags=["live"])

UNSUPPORTED_DATA = 1003
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009

MAX_SKUS = 1000
MAX_SKU_CHARS = 64
MAX_MESSAGE_CHARS = 128 * 1024  # a subscribe to MAX_SKUS of the longest SKUs fits
BURST = 200  # messages a client may send at once (a reconnect re-follows its orders)...
RATE = 20.0  # ...and per second, sustained
STALLED_BEATS = 2  # heartbeats a send may stay blocked before the client is dropped

_LIFETIME = reconnect("lifetime")
_TOKEN_EXPIRED = reconnect("token_expired")
AUTH_WAIT = 10.0  # seconds a closed catalog waits for the first `auth`
_SHUTDOWN = reconnect("shutdown")
_GONE = (WebSocketDisconnect, WebSocketDisconnected, OSError)


def _skus(value: Any) -> frozenset[str] | None:
    if value is None or value == "":
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or len(items) > MAX_SKUS:
        raise ValueError(f"skus must be a list of at most {MAX_SKUS} SKUs")
    if not all(isinstance(sku, str) and len(sku) <= MAX_SKU_CHARS for sku in items):
        raise ValueError(f"each SKU must be a string of at most {MAX_SKU_CHARS} characters")
    return frozenset(sku.strip() for sku in items if sku.strip())


async def live(websocket: WebSocket) -> None:
    hub = cast(Hub, websocket.state.hub)
    node = cast("Node", websocket.state.node)
    settings = cast(Settings, websocket.app.state.settings)
    address = websocket.client.host if websocket.client else None
    if not _origin_allowed(websocket, settings):
        await _deny(websocket, 403, "FORBIDDEN", "this origin may not open a WebSocket here")
        return
    if address is not None and not hub.admits(address, settings.ws_max_per_address):
        most = settings.ws_max_per_address
        await _deny(
            websocket,
            429,
            "TOO_MANY_CONNECTIONS",
            f"at most {most} WebSocket connections per address",
        )
        return
    await websocket.accept()
    if hub.closing:
        await _refuse(websocket, SERVICE_RESTART, _SHUTDOWN)
        return
    try:
        skus = _skus(websocket.query_params.get("skus"))
        principal = await _first_principal(websocket, node, settings)
    except ValueError as exc:
        await _refuse(websocket, POLICY_VIOLATION, error("INVALID_INPUT", str(exc)))
        return
    except AppError as exc:
        await _refuse(websocket, POLICY_VIOLATION, error(exc.code, exc.message))
        return
    except TimeoutError:
        await _refuse(websocket, POLICY_VIOLATION, error("UNAUTHENTICATED", "no auth in time"))
        return
    except _GONE:
        return
    mailbox = hub.join(skus, address)
    try:
        await _Conversation(websocket, hub, mailbox, settings, node.gate, principal).run()
    finally:
        hub.leave(mailbox)


def _origin_allowed(websocket: WebSocket, settings: Settings) -> bool:
    """No Origin (not a browser), the node's own, or one of ALLOWED_ORIGINS."""
    origin = websocket.headers.get("origin")
    if origin is None or origin in settings.origins:
        return True
    return urlsplit(origin).netloc == websocket.headers.get("host")


async def _first_principal(websocket: WebSocket, node: "Node", settings: Settings) -> Principal:
    """Who opens the socket: by the query's token or the Authorization header, else
    anonymous; with a closed catalog an anonymous client must send `auth` first,
    within AUTH_WAIT seconds."""
    token = websocket.query_params.get("access_token")
    if token:
        principal = await node.gate.bearer(token)
    else:  # clients that can set headers may authenticate the handshake as any request
        principal = await node.gate.principal(websocket.headers.get("authorization"))
    if principal.signed_in or settings.public_catalog:
        return principal
    async with asyncio.timeout(AUTH_WAIT):
        message = await websocket.receive()
    text = message.get("text")
    request = _json(text) if text else None
    if (
        request is None
        or request.get("type") != "auth"
        or not isinstance(request.get("token"), str)
    ):
        raise AppError(401, "UNAUTHENTICATED", 'send {"type": "auth", "token"} first')
    principal = await node.gate.bearer(request["token"])
    await websocket.send_text(_welcome(principal))
    return principal


def _json(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _welcome(principal: Principal) -> str:
    return encode({"type": "auth", "principal": principal.public()})


# A plain Starlette route: FastAPI's dependency machinery held ~4 KiB per connection
# for nothing, since a socket authenticates with its messages, not its handshake.
router.add_websocket_route("/ws", live)


async def _deny(websocket: WebSocket, status: int, code: str, message: str) -> None:
    """Refuse the handshake itself: an address past its share or a foreign origin
    costs no socket."""
    log.debug("refused a WebSocket from %s: %s", _who(websocket), code)
    body = {"code": code, "message": message, "details": {}}
    try:
        await websocket.send_denial_response(JSONResponse(body, status_code=status))
    except RuntimeError:  # a server without the denial extension: a plain refusal
        await websocket.close(POLICY_VIOLATION)


async def _refuse(websocket: WebSocket, code: int, farewell: str) -> None:
    try:
        await websocket.send_text(farewell)
        await websocket.close(code)
    except _GONE:
        pass


class _Conversation:
    """One client in the server's own task, which receives; a sender task runs only
    while the mailbox has news, so an idle client costs one task and a few timers."""

    __slots__ = (
        "beat",
        "ended",
        "expiry",
        "gate",
        "gone",
        "heartbeat",
        "hub",
        "lifetime",
        "mailbox",
        "max_follows",
        "principal",
        "refilled",
        "sender",
        "sending_since",
        "stall",
        "tokens",
        "websocket",
    )

    def __init__(
        self,
        websocket: WebSocket,
        hub: Hub,
        mailbox: Mailbox,
        settings: Settings,
        gate: Gate,
        principal: Principal,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.gate = gate
        self.principal = principal
        self.expiry: asyncio.TimerHandle | None = None
        self.websocket = websocket
        self.hub = hub
        self.mailbox = mailbox
        self.heartbeat = settings.ws_heartbeat_seconds
        self.max_follows = settings.ws_max_follows
        self.beat = loop.call_later(self.heartbeat, self._beat)
        self.lifetime = loop.call_later(
            settings.ws_max_lifetime_seconds, mailbox.finish, SERVICE_RESTART, _LIFETIME
        )
        self.sender: asyncio.Task[None] | None = None  # while there is news to send
        self.sending_since: float | None = None  # while a send is under way
        self.gone = False  # the client hung up
        self.ended = False  # the last message is sent: stop receiving
        self.stall: asyncio.Timeout | None = None
        self.tokens = float(BURST)
        self.refilled = loop.time()
        self._expire_with(principal)

    async def run(self) -> None:
        self.mailbox.on_news(self._news)
        try:
            async with asyncio.timeout(None) as self.stall:
                await self._receive()
        except TimeoutError:
            if not self.ended:
                log.info(
                    "WebSocket client %s took nothing for too long: dropped", _who(self.websocket)
                )
        except _GONE:
            pass
        finally:
            self.stall = None
            self.ended = True
            self.beat.cancel()
            self.lifetime.cancel()
            if self.expiry is not None:
                self.expiry.cancel()
            if (sender := self.sender) is not None:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)

    def _news(self) -> None:
        if self.sender is None and not (self.gone or self.ended):
            self.sender = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        """Send whatever the mailbox holds; after the last message, end the conversation."""
        websocket, mailbox = self.websocket, self.mailbox
        loop = asyncio.get_running_loop()
        over = False
        try:
            while mailbox.has_news:
                snapshot, texts = mailbox.take_now()
                if snapshot:
                    texts.insert(0, self.hub.snapshot(mailbox))
                for text in texts:
                    self.sending_since = loop.time()
                    await websocket.send_text(text)
                self.sending_since = None
                if mailbox.closing:
                    self.ended = over = True
                    if mailbox.close_code is not None:
                        await websocket.close(mailbox.close_code)
                    break
        except _GONE:
            over = True
        except Exception:
            log.exception("WebSocket sender failed")
            over = True
        finally:
            self.sender = None
        if over:
            self._stop()

    def _stop(self) -> None:
        """End the receiving task: the conversation is over."""
        self.ended = True
        if self.stall is not None:
            self.stall.reschedule(asyncio.get_running_loop().time())

    def _beat(self) -> None:
        """Ping; or, if a send has been blocked for STALLED_BEATS heartbeats, give up."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        since = self.sending_since
        if since is not None and now - since >= STALLED_BEATS * self.heartbeat:
            assert self.stall is not None
            self.stall.reschedule(now)  # the receiver ends in TimeoutError, the sender is cancelled
            return
        self.mailbox.say(PING)
        self.beat = loop.call_later(self.heartbeat, self._beat)

    async def _receive(self) -> None:
        """Read until the client hangs up (or the conversation ends); ignore what comes
        after the last message."""
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                self.gone = True
                self.mailbox.finish()
                return
            if not self.mailbox.closing:
                await self._on_message(message.get("text"))

    async def _on_message(self, text: str | None) -> None:
        if text is None:
            self._end(UNSUPPORTED_DATA, "UNSUPPORTED_DATA", "send JSON text, not binary data")
        elif len(text) > MAX_MESSAGE_CHARS:
            self._end(MESSAGE_TOO_BIG, "MESSAGE_TOO_BIG", f"at most {MAX_MESSAGE_CHARS} characters")
        elif not self._allowed():
            self._end(POLICY_VIOLATION, "TOO_MANY_MESSAGES", f"at most {RATE:g} messages a second")
        else:
            await self._handle(text)

    def _allowed(self) -> bool:
        """A token bucket: BURST messages at once, RATE a second after that."""
        now = asyncio.get_running_loop().time()
        self.tokens = min(BURST, self.tokens + (now - self.refilled) * RATE)
        self.refilled = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def _end(self, close_code: int, code: str, message: str) -> None:
        log.info("closing WebSocket client %s (%d): %s", _who(self.websocket), close_code, code)
        self.mailbox.finish(close_code, error(code, message))

    async def _handle(self, text: str) -> None:
        """One message from the client; a malformed one gets an `error` and nothing else."""
        hub, mailbox = self.hub, self.mailbox
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):
            mailbox.say(error("INVALID_INPUT", "a message must be a JSON object"))
            return
        kind = message.get("type") if isinstance(message, dict) else None
        try:
            if kind == "ping":
                mailbox.say(PONG)
            elif kind == "subscribe":
                mailbox.skus = _skus(message.get("skus"))
                mailbox.resnapshot()
            elif kind == "auth":
                await self._authenticate(message.get("token"))
            elif kind == "follow":
                await self._follow(_order_id(message))
            elif kind == "unfollow":
                hub.unfollow(mailbox, _order_id(message))
            else:
                raise ValueError("type must be one of auth, ping, subscribe, follow, unfollow")
        except ValueError as exc:
            mailbox.say(error("INVALID_INPUT", str(exc)))

    async def _authenticate(self, token: Any) -> None:
        """A (renewed) token: it replaces the caller, and the time the socket may live."""
        if not isinstance(token, str) or not token:
            raise ValueError("auth needs a token")
        try:
            principal = await self.gate.bearer(token)
        except AppError as exc:
            self.mailbox.say(error(exc.code, exc.message))
            return
        self.principal = principal
        self._expire_with(principal)
        self.mailbox.say(_welcome(principal))

    def _expire_with(self, principal: Principal) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        if principal.expires_at is not None:
            loop = asyncio.get_running_loop()
            left = max(0.0, principal.expires_at - time.time())
            self.expiry = loop.call_later(
                left, self.mailbox.finish, POLICY_VIOLATION, _TOKEN_EXPIRED
            )

    async def _follow(self, order_id: UUID) -> None:
        """Customers follow their own orders; staff and keys need `orders:read`."""
        principal = self.principal
        if not principal.signed_in:
            self.mailbox.say(error("UNAUTHENTICATED", "sign in to follow orders"))
        elif principal.customer_id is None and not principal.may("orders:read"):
            self.mailbox.say(error("FORBIDDEN", "following orders needs the scope orders:read"))
        else:
            await self.hub.follow(self.mailbox, order_id, self.max_follows, principal.customer_id)


def _order_id(message: dict[str, Any]) -> UUID:
    value = message.get("order_id")
    if isinstance(value, str) and len(value) <= 64:
        with contextlib.suppress(ValueError):
            return UUID(value)
    raise ValueError("order_id must be a UUID")


def _who(websocket: WebSocket) -> str:
    client = websocket.client
    return f"{client.host}:{client.port}" if client else "?"
