"""Every answer carries a request id: the client's if it is fit to log, else a new one."""

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from backend.logs import MAX_REQUEST_ID, RequestIds
from database import PostgresDatabase
from tests.support import make_product, node_settings, serve

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
async def node(database_url: str, db: PostgresDatabase) -> AsyncIterator[httpx.AsyncClient]:
    await make_product(db, sku="RID-1")
    async with serve(node_settings(database_url)) as client:
        yield client


@pytest.mark.parametrize("path", ["/products/RID-1", "/products/NOPE", "/products", "/health"])
async def test_a_given_id_is_echoed(node: httpx.AsyncClient, path: str) -> None:
    given = "trace-" + "x" * (MAX_REQUEST_ID - 6)
    response = await node.get(path, headers={"X-Request-ID": given})
    assert response.headers["x-request-id"] == given


@pytest.mark.parametrize(
    "given",
    [b"", b"x" * (MAX_REQUEST_ID + 1), b"tab\there", b"nel\x85here"],
    ids=["empty", "too long", "tab", "non-printable"],
)
async def test_an_id_unfit_to_log_is_replaced(node: httpx.AsyncClient, given: bytes) -> None:
    for path in ("/products/RID-1", "/products/NOPE"):
        response = await node.get(path, headers={b"X-Request-ID": given})
        assert GENERATED.fullmatch(response.headers["x-request-id"]), response.headers


async def test_generated_ids_are_unique(node: httpx.AsyncClient) -> None:
    ids = [
        (await node.get(path)).headers["x-request-id"]
        for path in ["/products/RID-1", "/products/NOPE", "/health"] * 20
    ]
    assert all(GENERATED.fullmatch(rid) for rid in ids)
    assert len(set(ids)) == len(ids)


def test_each_process_numbers_its_ids_under_its_own_prefix() -> None:
    one, other = RequestIds(), RequestIds()
    firsts = {one.next(), other.next()}
    assert len(firsts) == 2
    assert len({rid[:16] for rid in firsts}) == 2
