"""`/ws`: a snapshot of the subscribed products, then every change as it is applied here.

Messages to the client: `snapshot`, `stock` (the Redis message shape), `order`
(for orders the client follows), `ping`, `pong`, `reconnect`, `error`.
Messages from the client: `{"type": "subscribe", "skus": [...] | null}`,
`{"type": "follow", "order_id": "..."}`, `{"type": "ping"}`.
"""

import asyncio
import contextlib
import json
from typing import Any, cast
from uuid import UUID

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from backend.hub import Hub, Mailbox
from backend.settings import Settings

router = APIRouter(tags=["live"])

_MAX_SKUS = 1000


def _skus(value: Any) -> frozenset[str] | None:
    if value is None or value == "":
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or len(items) > _MAX_SKUS:
        raise ValueError("skus must be a list of at most 1000 SKUs")
    return frozenset(str(sku).strip() for sku in items if str(sku).strip())


@router.websocket("/ws")
async def live(websocket: WebSocket) -> None:
    hub = cast(Hub, websocket.state.hub)
    settings = cast(Settings, websocket.app.state.settings)
    await websocket.accept()
    try:
        skus = _skus(websocket.query_params.get("skus"))
    except ValueError as exc:
        await websocket.send_json({"type": "error", "code": "INVALID_INPUT", "message": str(exc)})
        await websocket.close(code=1008)
        return
    mailbox = hub.join(skus)
    try:
        await websocket.send_json(hub.snapshot(mailbox))
        async with asyncio.timeout(settings.ws_max_lifetime_seconds):
            await _converse(websocket, hub, mailbox, settings.ws_heartbeat_seconds)
    except TimeoutError:
        await websocket.send_json({"type": "reconnect", "reason": "lifetime"})
        await websocket.close(code=1012)
    except (WebSocketDisconnect, OSError, RuntimeError):
        pass  # the client went away
    finally:
        hub.leave(mailbox)
        if websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
                await websocket.close()


async def _converse(websocket: WebSocket, hub: Hub, mailbox: Mailbox, heartbeat: float) -> None:
    """Send, receive and ping until one of them ends; its error ends the conversation."""

    async def send() -> None:
        while True:
            snapshot, messages = await mailbox.take()
            if snapshot:
                await websocket.send_json(hub.snapshot(mailbox))
            for message in messages:
                await websocket.send_text(json.dumps(message, separators=(",", ":")))

    async def receive() -> None:
        while True:
            await _handle(hub, mailbox, await websocket.receive_text())

    async def ping() -> None:
        while True:
            await asyncio.sleep(heartbeat)
            mailbox.say({"type": "ping"})

    tasks = [asyncio.create_task(job()) for job in (send, receive, ping)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _handle(hub: Hub, mailbox: Mailbox, text: str) -> None:
    try:
        message = json.loads(text)
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "ping":
            mailbox.say({"type": "pong"})
        elif kind == "subscribe":
            mailbox.skus = _skus(message.get("skus"))
            mailbox.resnapshot()
        elif kind == "follow":
            await hub.follow(mailbox, UUID(str(message.get("order_id"))))
        else:
            raise ValueError("type must be one of ping, subscribe, follow")
    except ValueError as exc:
        mailbox.say({"type": "error", "code": "INVALID_INPUT", "message": str(exc)})
