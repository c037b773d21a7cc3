"""The supervisor keeps loops alive and tells which one is not (no servers, milliseconds)."""

import asyncio
import logging

import pytest

from backend.errors import AppError
from backend.supervisor import Supervisor


async def test_a_loop_that_raises_is_logged_counted_and_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0
    healthy = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise KeyError("boom")
        healthy.set()
        await asyncio.Event().wait()

    async with Supervisor() as supervisor:
        supervisor.start("flaky", flaky, backoff_most=0.01)
        await asyncio.wait_for(healthy.wait(), 5)
        assert supervisor.loops["flaky"].restarts == 2
        assert supervisor.loops["flaky"].state == "running"
        assert supervisor.problems() == []
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 2
    assert all(r.exc_info is not None for r in failures)


async def test_a_periodic_loop_is_failing_until_it_beats_again() -> None:
    calls = 0
    beat = asyncio.Event()
    retried = asyncio.Event()
    release = asyncio.Event()

    async def periodic() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise AppError(503, "DATABASE_UNAVAILABLE", "the database did not answer")
        retried.set()
        await release.wait()
        supervisor.beat("catch-up")
        beat.set()
        await asyncio.Event().wait()

    async with Supervisor() as supervisor:
        supervisor.start("catch-up", periodic, stall_after=60, backoff_most=0.01)
        await asyncio.wait_for(retried.wait(), 5)
        assert supervisor.problems() == [
            "catch-up is failing: DATABASE_UNAVAILABLE: the database did not answer"
        ]
        release.set()
        await asyncio.wait_for(beat.wait(), 5)
        assert supervisor.problems() == []


async def test_a_loop_that_makes_no_progress_is_stalled() -> None:
    async def hung() -> None:
        await asyncio.Event().wait()

    async with Supervisor() as supervisor:
        supervisor.start("sweeper", hung, stall_after=0.05)
        assert supervisor.problems() == []
        await asyncio.sleep(0.1)
        [problem] = supervisor.problems()
        assert problem.startswith("sweeper has stalled: no progress for")


async def test_a_one_off_step_is_retried_until_it_succeeds_and_then_done() -> None:
    attempts = 0
    connected = asyncio.Event()

    async def connect() -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise AppError(503, "DATABASE_UNAVAILABLE", "cannot connect")
        connected.set()

    async with Supervisor() as supervisor:
        supervisor.start("startup", connect, once=True, backoff_most=0.01)
        await asyncio.wait_for(connected.wait(), 5)
        await asyncio.sleep(0)  # the supervisor marks it done after the step returns
        assert supervisor.loops["startup"].state == "done"
        assert attempts == 3
        assert supervisor.problems() == []
