"""Group commit: what queues during a call goes in the next; each request keeps its outcome.

The batch call here is a plain function the test controls (the database's own
batching is covered by the contract suite and the concurrency tests).
"""

import asyncio
from collections.abc import Sequence

import pytest

from backend.batches import Batcher
from backend.errors import AppError


class Calls:
    """A batch call that records each batch and can be held open."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.open = asyncio.Event()
        self.open.set()
        self.started = asyncio.Event()
        self.fail_whole: AppError | None = None

    async def __call__(self, requests: Sequence[int]) -> list[int | AppError]:
        self.batches.append(list(requests))
        self.started.set()
        await self.open.wait()
        if self.fail_whole is not None and len(requests) > 1:
            raise self.fail_whole
        if self.fail_whole is not None and requests[0] < 0:
            raise self.fail_whole
        return [AppError(409, "OUT_OF_STOCK", "none left") if r < 0 else r * 10 for r in requests]


async def hold_first_call(calls: Calls, batcher: Batcher[int, int]) -> asyncio.Task[int]:
    calls.open.clear()
    first = asyncio.create_task(batcher.submit(1))
    await calls.started.wait()
    return first


async def test_an_idle_batcher_sends_at_once_a_batch_of_one() -> None:
    calls = Calls()
    batcher = Batcher(calls, max_size=50, calls=1)
    assert await batcher.submit(4) == 40
    assert calls.batches == [[4]]


async def test_what_queues_during_a_call_goes_in_the_next_call_up_to_the_bound() -> None:
    calls = Calls()
    batcher = Batcher(calls, max_size=3, calls=1)
    first = await hold_first_call(calls, batcher)
    later = [asyncio.create_task(batcher.submit(n)) for n in range(2, 7)]
    await asyncio.sleep(0)  # every later request is queued behind the call in flight
    calls.open.set()
    assert await first == 10
    assert await asyncio.gather(*later) == [20, 30, 40, 50, 60]
    assert calls.batches == [[1], [2, 3, 4], [5, 6]]
    assert (batcher.stats.calls, batcher.stats.requests, batcher.stats.largest) == (3, 6, 3)


async def test_a_failing_request_fails_alone() -> None:
    calls = Calls()
    batcher = Batcher(calls, max_size=10, calls=1)
    first = await hold_first_call(calls, batcher)
    good, bad = asyncio.create_task(batcher.submit(2)), asyncio.create_task(batcher.submit(-1))
    await asyncio.sleep(0)
    calls.open.set()
    await first
    assert await good == 20
    with pytest.raises(AppError) as refused:
        await bad
    assert refused.value.code == "OUT_OF_STOCK"
    assert calls.batches == [[1], [2, -1]]


async def test_a_batch_refused_as_a_whole_is_placed_one_by_one() -> None:
    calls = Calls()
    batcher = Batcher(calls, max_size=10, calls=1)
    first = await hold_first_call(calls, batcher)
    good, bad = asyncio.create_task(batcher.submit(2)), asyncio.create_task(batcher.submit(-1))
    await asyncio.sleep(0)
    calls.fail_whole = AppError(422, "INVALID_INPUT", "a number is out of range")
    calls.open.set()
    assert await first == 10
    assert await good == 20
    with pytest.raises(AppError) as refused:
        await bad
    assert refused.value.code == "INVALID_INPUT"
    assert calls.batches == [[1], [2, -1], [2], [-1]]
    assert batcher.stats.split == 1


async def test_an_unavailable_database_fails_the_whole_batch_without_retrying() -> None:
    calls = Calls()
    batcher = Batcher(calls, max_size=10, calls=1)
    first = await hold_first_call(calls, batcher)
    waiting = [asyncio.create_task(batcher.submit(n)) for n in (2, 3)]
    await asyncio.sleep(0)
    calls.fail_whole = AppError(503, "DATABASE_UNAVAILABLE", "the database is not reachable")
    calls.open.set()
    assert await first == 10
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert [getattr(o, "code", o) for o in outcomes] == ["DATABASE_UNAVAILABLE"] * 2
    assert calls.batches == [[1], [2, 3]]


async def test_a_request_whose_caller_left_before_it_was_sent_is_not_sent() -> None:
    calls = Calls()
    batcher = Batcher(calls, max_size=10, calls=1)
    first = await hold_first_call(calls, batcher)
    gone, kept = asyncio.create_task(batcher.submit(2)), asyncio.create_task(batcher.submit(3))
    await asyncio.sleep(0)
    gone.cancel()
    calls.open.set()
    await first
    assert await kept == 30
    assert calls.batches == [[1], [3]]


async def test_several_calls_may_be_in_flight() -> None:
    calls = Calls()
    batcher = Batcher(calls, max_size=10, calls=2)
    first = await hold_first_call(calls, batcher)
    second = asyncio.create_task(batcher.submit(2))
    third = asyncio.create_task(batcher.submit(3))
    for _ in range(5):  # a few turns of the loop: the second call starts
        await asyncio.sleep(0)
    assert calls.batches == [[1], [2, 3]]  # the second call did not wait for the first
    calls.open.set()
    assert list(await asyncio.gather(first, second, third)) == [10, 20, 30]


async def test_a_request_sharing_a_key_with_a_batch_in_flight_waits_for_it() -> None:
    """Odd and even requests stand for orders of two SKUs: the even one goes beside the
    odd batch in flight; the odd ones wait for it, then go together, in their order."""
    calls = Calls()
    batcher = Batcher(calls, max_size=50, calls=2, keys=lambda r: {r % 2})
    first = await hold_first_call(calls, batcher)
    calls.started.clear()
    odd = [asyncio.create_task(batcher.submit(n)) for n in (3, 5)]
    for _ in range(3):  # the call they started finds nothing it may send, and ends
        await asyncio.sleep(0)
    even = asyncio.create_task(batcher.submit(2))
    await calls.started.wait()  # the even request's own call, while the odd one is held
    assert calls.batches == [[1], [2]]
    assert batcher.stats.deferred >= 2
    calls.open.set()
    assert (await first, await even, *(await asyncio.gather(*odd))) == (10, 20, 30, 50)
    assert calls.batches == [[1], [2], [3, 5]]


async def test_without_a_key_in_flight_requests_go_as_they_came() -> None:
    calls = Calls()
    batcher = Batcher(calls, max_size=2, calls=1, keys=lambda r: {r % 2})
    first = await hold_first_call(calls, batcher)
    later = [asyncio.create_task(batcher.submit(n)) for n in (2, 4, 6)]
    await asyncio.sleep(0)
    calls.open.set()
    assert (await first, *(await asyncio.gather(*later))) == (10, 20, 40, 60)
    assert calls.batches == [[1], [2, 4], [6]]
