"""Drain before the server stops: SIGTERM and SIGINT run the node's drain first.

uvicorn stops accepting connections and closes WebSockets as soon as it gets
the signal, before the app hears of it. A node wants to go first: stop being
ready and tell its WebSocket clients to reconnect elsewhere, then let the
server finish the in-flight requests and stop. A second signal during the
drain stops at once.
"""

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def drain_first(drain: Callable[[], Awaitable[None]]) -> Iterator[None]:
    """While the block runs, a stop signal awaits `drain()` before the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only; an embedding server handles them
        return
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in SIGNALS}
    asked: list[int] = []
    tasks: set[asyncio.Task[None]] = set()  # holds the drain task until it is done

    async def drain_then_stop(sig: int, frame: FrameType | None) -> None:
        try:
            await drain()
        except Exception:
            log.exception("draining failed; stopping anyway")
        finally:
            _pass_on(previous[sig], sig, frame)

    def start(sig: int, frame: FrameType | None) -> None:
        tasks.add(loop.create_task(drain_then_stop(sig, frame)))

    def handler(sig: int, frame: FrameType | None) -> None:
        if asked:  # asked twice: no more waiting
            _pass_on(previous[sig], sig, frame)
            return
        asked.append(sig)
        log.info("%s: draining before stopping", signal.Signals(sig).name)
        # A signal handler runs between two bytecodes of the loop's thread, maybe
        # while it sleeps in select(): the thread-safe call wakes it up.
        loop.call_soon_threadsafe(start, sig, frame)

    for sig in SIGNALS:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for number, original in previous.items():
            if signal.getsignal(number) is handler:
                signal.signal(number, original)


def _pass_on(original: Any, sig: int, frame: FrameType | None) -> None:
    """Hand the signal to whoever had it before (uvicorn's own handler, normally)."""
    if callable(original):
        original(sig, frame)
    elif original == signal.SIG_DFL:
        signal.signal(sig, signal.SIG_DFL)
        signal.raise_signal(sig)
