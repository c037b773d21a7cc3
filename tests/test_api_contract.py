"""The API does what its OpenAPI document says: schemathesis, every check, on a live node.

Every operation in the document is tested, with every check; nothing is excluded.
`/ws` is not in the document (a WebSocket is no OpenAPI operation): tests/test_sync.py
covers it. The node serves from a thread of its own (an anyio blocking portal):
schemathesis calls it with blocking `requests`, which would stall a node in this
test's event loop.
"""

import contextlib
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import schemathesis
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis import BaseSchema, Case, HookContext, Response
from schemathesis.core.failures import Failure
from schemathesis.openapi.checks import RejectedPositiveData

from tests.support import ADMIN, bearer, node_settings, run_node, serve, token

pytestmark = pytest.mark.timeout(90)  # bounded in time as well as in examples

# Every operation is run as an admin (who may do everything) and as a customer (who
# may place and read their own orders and is refused the rest, as documented).
CALLERS = {"admin": ADMIN, "customer": bearer(token("cust-contract", minutes=30))}

MAX_ORDER_LINES = 7  # not the default, so the document must say this node's own
PRODUCTS = [
    {"sku": "TEE-M", "name": "Tee, M", "price_cents": 1500, "on_hand": 40},
    {"sku": "MUG", "name": "Mug", "price_cents": 900, "on_hand": 3},
    {"sku": "GONE", "name": "Sold out", "price_cents": 100, "on_hand": 0},
]

# Rules the schema cannot express, so a schema-valid request may still be refused with
# these 422s (schemathesis's advice for "Schema-valid request rejected", `st explain ST202`).
# Only these: any other refusal of schema-valid data fails the test.
DATA_DECIDES = {
    ("POST /orders", "UNKNOWN_SKU"): "whether a SKU exists is the catalog's to say",
    ("GET /orders", "INVALID_CURSOR"): "a cursor is opaque: only the server knows its own",
    ("POST /products/{sku}/adjustments", "INVALID_INPUT"): "a delta may push on_hand past"
    " 2^31-1, which depends on the stock already there",
}
CONFIG_VALUES: dict[str, Any] = {"generation": {"database": "none"}}
STATEFUL_SECONDS = 8
BOUNDED = settings(
    max_examples=15,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: the server's state moves on
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def live_node(database_url: str) -> Iterator[str]:
    """A node with a few products, so paths with a SKU also reach real rows."""
    node_config = node_settings(database_url, max_order_lines=MAX_ORDER_LINES)
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(run_node(node_config)) as node,
    ):
        for product in PRODUCTS:
            response = portal.call(partial(node.client.post, "/products", json=product))
            assert response.status_code == 201, response.text
        yield str(node.client.base_url)


@pytest.fixture
def found() -> list[str]:
    """Every failure schemathesis kept, as it reported it."""
    return []


@pytest.fixture(params=sorted(CALLERS))
def caller(request: pytest.FixtureRequest) -> dict[str, str]:
    headers: dict[str, str] = CALLERS[request.param]
    return headers


@pytest.fixture
def api_schema(
    live_node: str, found: list[str], caller: dict[str, str], request: pytest.FixtureRequest
) -> BaseSchema:
    # schemathesis 4.32 renames the pytest item through `_nodeid`, which pytest 9.2 no
    # longer has: give it one (reports then name the operation in the subtest instead).
    request.node._nodeid = request.node.nodeid
    config = schemathesis.Config.from_dict({**CONFIG_VALUES, "headers": caller})
    api = schemathesis.openapi.from_url(f"{live_node}/openapi.json", config=config)

    @api.hook
    def filter_failure(
        context: HookContext, failure: Failure, case: Case[Any], response: Response
    ) -> bool:
        if _excused(failure, case, response):
            return False
        found.append(f"{case.operation.label}: {failure.title}\n{failure.message}")
        return True

    return api


def _excused(failure: Failure, case: Case[Any], response: Response) -> bool:
    """A refusal of schema-valid data that only the data decides, or of a request
    schemathesis built wrong: following a link to several values (the `order_id` of
    every ledger row on a page), 4.32 may pick a null one and send `/orders/None`."""
    if not isinstance(failure, RejectedPositiveData):
        return False
    if None in (case.path_parameters or {}).values():
        return True
    return (case.operation.label, response.json().get("code")) in DATA_DECIDES


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@BOUNDED
def test_every_operation_keeps_to_the_document(case: Case[Any]) -> None:
    case.call_and_validate()


def test_sequences_of_calls_keep_to_the_document(api_schema: BaseSchema, found: list[str]) -> None:
    """Links between operations (create, then read, change, delete): the checks that
    need a history, like a deleted product still served, run here.

    Hypothesis replays choices expecting the same draws, but a live server's state has
    moved on (a bundle it filled is empty now): it calls that FlakyStrategyDefinition.
    schemathesis's own runner treats it as the end of a run; so does this test, then
    runs again until its time is spent. A failure is kept when schemathesis finds it
    (`found`), so a replay that cannot reproduce it does not lose it.
    """
    machine = api_schema.as_state_machine()
    runs = settings(BOUNDED, max_examples=25, stateful_step_count=10)
    deadline = time.monotonic() + STATEFUL_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(FlakyStrategyDefinition):
            machine.run(settings=runs)
        assert not found, "\n\n".join(found)


async def test_a_deleted_products_ledger_is_only_in_events(database_url: str) -> None:
    """`/products/{sku}/events` is under the product: gone with it (its SKU may name
    another product next), while the whole ledger keeps its rows."""
    async with serve(node_settings(database_url)) as node:
        assert (await node.post("/products", json=PRODUCTS[1])).status_code == 201
        assert (await node.get("/products/MUG/events")).status_code == 200
        assert (await node.delete("/products/MUG")).status_code == 200
        gone = await node.get("/products/MUG/events")
        assert (gone.status_code, gone.json()["code"]) == (404, "NOT_FOUND")
        ledger = (await node.get("/events")).json()["items"]
        assert [(row["sku"], row["reason"]) for row in ledger] == [
            ("MUG", "deleted"),
            ("MUG", "created"),
        ]
