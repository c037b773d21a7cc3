"""Group commit: the requests that queue while a call is in flight go in the next call.

An idle node sends a request at once (a batch of one); under load, each call
carries whatever arrived during the previous one, up to `max_size`, so one
transaction and one round trip serve many requests. At most `calls` batches
are in flight at a time. Each request still gets its own outcome: the batch
function answers one result or one `AppError` per request, in order.

A request that shares a key (for orders, a SKU) with a batch in flight waits
for that batch to come back rather than go in another call beside it: the
two calls would only queue on the same row locks in the database, and the
waiting request goes, with the others that arrived meanwhile, in one larger
batch. Requests with no key in common with what is in flight go at once, in
their order of arrival; requests sharing keys keep theirs.
"""

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from backend.errors import AppError

log = logging.getLogger(__name__)

Request = TypeVar("Request")
Result = TypeVar("Result")

BatchCall = Callable[[Sequence[Request]], Awaitable[Sequence[Result | AppError]]]
Keys = Callable[[Request], Collection[Hashable]]


@dataclass
class BatchStats:
    calls: int = 0
    requests: int = 0
    largest: int = 0
    split: int = 0  # batches that failed as a whole and were placed one by one
    deferred: int = 0  # times a request waited for a batch in flight that shared a key


@dataclass
class _Waiting(Generic[Request, Result]):
    request: Request
    answer: "asyncio.Future[Result]" = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


# A failure that says nothing of any one request: every request of the batch
# gets it. Other failures of a whole batch (a deadlock broken, a value the
# database refused) are retried one request per call, so only the request at
# fault fails.
SHARED_FAILURES = frozenset(
    {"DATABASE_UNAVAILABLE", "DATABASE_TIMEOUT", "DATABASE_FORBIDDEN", "SCHEMA_OUT_OF_DATE"}
)


class Batcher(Generic[Request, Result]):
    def __init__(
        self,
        call: BatchCall[Request, Result],
        max_size: int,
        calls: int,
        keys: Keys[Request] | None = None,
    ) -> None:
        self._call = call
        self._max_size = max_size
        self._calls = calls
        self._keys = keys
        self._queue: list[_Waiting[Request, Result]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._busy: Counter[Hashable] = Counter()  # keys of the batches in flight
        self.stats = BatchStats()

    async def submit(self, request: Request) -> Result:
        """The request's own result; raises its own `AppError`."""
        waiting: _Waiting[Request, Result] = _Waiting(request)
        self._queue.append(waiting)
        if len(self._running) < self._calls:
            task = asyncio.create_task(self._send_queued())
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return await waiting.answer

    async def _send_queued(self) -> None:
        while batch := self._take():
            keys = {key for waiting in batch for key in self._keys_of(waiting.request)}
            self._busy.update(keys)
            try:
                await self._send(batch)
            finally:
                self._busy -= Counter(keys)  # keys no batch holds any more are dropped

    def _keys_of(self, request: Request) -> Collection[Hashable]:
        return () if self._keys is None else self._keys(request)

    def _take(self) -> "list[_Waiting[Request, Result]]":
        """The next batch: queued requests in order, up to `max_size`, leaving queued
        those that share a key with a batch in flight or with a request left queued
        before them (their turn comes when that batch is back). A request whose
        caller went away before it was sent is dropped."""
        queue = [waiting for waiting in self._queue if not waiting.answer.done()]
        if self._keys is None or (not self._busy and len(queue) <= self._max_size):
            self._queue = queue[self._max_size :]
            return queue[: self._max_size]
        batch: list[_Waiting[Request, Result]] = []
        left: list[_Waiting[Request, Result]] = []
        blocked: set[Hashable] = set()
        for waiting in queue:
            keys = self._keys_of(waiting.request)
            if len(batch) < self._max_size and not any(
                key in self._busy or key in blocked for key in keys
            ):
                batch.append(waiting)
                continue
            if len(batch) < self._max_size:
                self.stats.deferred += 1
            left.append(waiting)
            blocked.update(keys)
        self._queue = left
        return batch

    async def _send(self, batch: list[_Waiting[Request, Result]]) -> None:
        self.stats.calls += 1
        self.stats.requests += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        try:
            outcomes = await self._call([waiting.request for waiting in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{len(outcomes)} outcomes for {len(batch)} requests")
        except AppError as exc:
            if len(batch) > 1 and exc.code not in SHARED_FAILURES:
                self.stats.split += 1
                log.warning("a batch of %d failed as a whole (%s): one by one", len(batch), exc)
                for waiting in batch:
                    await self._send([waiting])
                return
            outcomes = [exc] * len(batch)
        except BaseException as exc:  # cancelled, or a bug: nobody may wait forever
            for waiting in batch:
                if not waiting.answer.done():
                    waiting.answer.set_exception(
                        AppError(503, "DATABASE_UNAVAILABLE", "the order could not be placed")
                    )
            if isinstance(exc, Exception):
                log.exception("a batch call failed")
                return
            raise
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if waiting.answer.done():
                continue
            if isinstance(outcome, AppError):
                waiting.answer.set_exception(outcome)
            else:
                waiting.answer.set_result(outcome)
