"""HTTP calls the way a careful client makes them, written down attempt by attempt.

A retry is only made where repeating cannot double the effect: an order keeps
its Idempotency-Key and body, a compare-and-set keeps its expected version, a
confirm or cancel of a settled order is refused. An adjustment is repeated only
when connecting failed, that is when no node ever saw it.
"""

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from tools.chaos.cluster import NodeProcess
from tools.chaos.model import NOT_SENT, Attempt, Json, Operation, Records

MAX_ATTEMPTS = 8
RETRY_BUDGET = 15.0  # seconds one operation may spend retrying


def retry_unless_answered(attempt: Attempt) -> bool:
    """For operations safe to repeat: retry until a node answers anything but 503."""
    return attempt.status is None or attempt.status >= 500


def retry_if_unsent(attempt: Attempt) -> bool:
    """For operations unsafe to repeat: retry only what never reached a node."""
    return attempt.error in NOT_SENT


class Api:
    def __init__(self, http: httpx.AsyncClient, nodes: list[NodeProcess], records: Records) -> None:
        self.http = http
        self.nodes = nodes
        self.records = records

    async def perform(
        self,
        op: Operation,
        method: str,
        path: str,
        rng: random.Random,
        retry: Callable[[Attempt], bool] = retry_unless_answered,
        headers: dict[str, str] | None = None,
    ) -> Operation:
        """Run `op` on random nodes (another each time) until an answer or the budget ends."""
        budget = time.monotonic() + RETRY_BUDGET
        node = rng.choice(self.nodes)
        body = op.request or None
        for number in range(MAX_ATTEMPTS):
            attempt = await self.attempt(node, method, path, body, headers or {})
            op.attempts.append(attempt)
            if not retry(attempt) or time.monotonic() > budget:
                break
            await asyncio.sleep(min(1.0, 0.1 * 2**number) * rng.uniform(0.5, 1.0))
            node = rng.choice([n for n in self.nodes if n is not node] or self.nodes)
        op.settle()
        self.records.operations.append(op)
        return op

    async def attempt(
        self, node: NodeProcess, method: str, path: str, body: Json | None, headers: dict[str, str]
    ) -> Attempt:
        request_id = uuid.uuid4().hex
        attempt = Attempt(node.name, time.monotonic(), 0.0, request_id=request_id)
        try:
            response = await self.http.request(
                method,
                node.url + path,
                json=body,
                headers={"X-Request-ID": request_id, **headers},
            )
        except httpx.ConnectError:
            attempt.error = "refused"
        except httpx.ConnectTimeout:
            attempt.error = "unreachable"
        except httpx.TimeoutException:
            attempt.error = "timeout"
        except httpx.TransportError:
            attempt.error = "disconnected"
        else:
            attempt.status = response.status_code
            _read_body(attempt, response)
        attempt.ended = time.monotonic()
        return attempt


def _read_body(attempt: Attempt, response: httpx.Response) -> None:
    try:
        document: Any = response.json()
    except ValueError:
        return
    if not isinstance(document, dict):
        return
    if attempt.ok:
        attempt.body = document
    elif isinstance(document.get("code"), str):
        attempt.code = document["code"]
