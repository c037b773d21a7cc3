"""`POST /payments/webhook` on a real node: a signed call pays or declines an order once;
an unsigned, mis-signed or stale call is 401 and changes nothing."""

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import httpx
import pytest

from backend.payments import signature
from database import PostgresDatabase
from tests.support import make_product, node_settings, serve

SECRET = "whsec-test-secret"
TOLERANCE = 60


@pytest.fixture
async def node(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = node_settings(
        database_url,
        payment_provider="webhook",
        payment_webhook_secret=SECRET,
        payment_webhook_tolerance_seconds=TOLERANCE,
        workers="",
    )
    async with serve(settings) as client:
        yield client


async def place(client: httpx.AsyncClient, db: PostgresDatabase) -> dict[str, Any]:
    product = await make_product(db, on_hand=5)
    response = await client.post(
        "/orders",
        json={"items": [{"sku": product["sku"], "quantity": 2}], "payment_method": "card"},
    )
    assert response.status_code == 201, response.text
    order: dict[str, Any] = response.json()
    return order


def notice(order_id: str, kind: str = "payment.succeeded", **extra: Any) -> bytes:
    body = {"id": f"evt_{uuid.uuid4().hex}", "type": kind, "order_id": order_id, "ref": None}
    return json.dumps(body | extra).encode()


async def call(
    client: httpx.AsyncClient,
    body: bytes,
    *,
    secret: str = SECRET,
    at: float | None = None,
    header: str | None = None,
) -> httpx.Response:
    """The payment service's call, signed (unless `header` says otherwise) with no bearer."""
    stamp = int(time.time() if at is None else at)
    sent = signature.sign(secret.encode(), body, stamp) if header is None else header
    headers = {"Authorization": "", "Content-Type": "application/json"}
    if sent:
        headers[signature.HEADER] = sent
    return await client.post("/payments/webhook", content=body, headers=headers)


async def event_types(db: PostgresDatabase, order_id: str) -> list[str]:
    return [event["type"] for event in await db.order_timeline(UUID(order_id))]


async def test_a_signed_success_confirms_the_order(
    node: httpx.AsyncClient, db: PostgresDatabase
) -> None:
    order = await place(node, db)
    body = notice(order["id"], ref="pi_123")
    response = await call(node, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["duplicate"] is False
    assert answer["event_id"] == str(signature.provider_event_id(json.loads(body)["id"]))
    assert (answer["order"]["status"], answer["order"]["paid_cents"]) == (
        "confirmed",
        order["total_cents"],
    )
    assert await db.order_for_payment_ref("pi_123") == {
        "order_id": order["id"],
        "status": "confirmed",
    }


async def test_the_same_provider_event_twice_has_one_effect(
    node: httpx.AsyncClient, db: PostgresDatabase
) -> None:
    order = await place(node, db)
    body = notice(order["id"])
    first = await call(node, body)
    again = await call(node, body, at=time.time() + 1)  # the provider's retry, signed anew
    assert (first.status_code, again.status_code) == (200, 200)
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    assert again.json()["event_id"] == first.json()["event_id"]
    assert await event_types(db, order["id"]) == [
        "order.placed",
        "payment.succeeded",
        "order.confirmed",
    ]


async def test_a_signed_failure_cancels_the_order(
    node: httpx.AsyncClient, db: PostgresDatabase
) -> None:
    order = await place(node, db)
    response = await call(node, notice(order["id"], "payment.failed"))
    assert response.status_code == 200, response.text
    cancelled = response.json()["order"]
    assert (cancelled["status"], cancelled["cancel_reason"]) == ("cancelled", "payment_declined")
    product = await db.get_product(order["items"][0]["sku"])
    assert (product["on_hand"], product["reserved"]) == (5, 0)


@pytest.mark.parametrize(
    "how",
    ["no header", "wrong secret", "other body", "malformed", "stale", "from the future"],
)
async def test_a_bad_signature_is_401_and_changes_nothing(
    node: httpx.AsyncClient, db: PostgresDatabase, how: str
) -> None:
    order = await place(node, db)
    body = notice(order["id"])
    now = time.time()
    match how:
        case "no header":
            response = await call(node, body, header="")
        case "wrong secret":
            response = await call(node, body, secret="another-secret")
        case "other body":
            signed = signature.sign(SECRET.encode(), notice(order["id"]), int(now))
            response = await call(node, body, header=signed)
        case "malformed":
            response = await call(node, body, header="sha256=abc")
        case "stale":  # a recorded call, played again later
            response = await call(node, body, at=now - TOLERANCE - 5)
        case "from the future":
            response = await call(node, body, at=now + TOLERANCE + 5)
    assert (response.status_code, response.json()["code"]) == (401, "INVALID_SIGNATURE")
    assert (await db.get_order(UUID(order["id"])))["status"] == "pending"
    assert await event_types(db, order["id"]) == ["order.placed"]
    # The same body, rightly signed now, still counts: nothing was used up.
    assert (await call(node, body)).json()["duplicate"] is False


async def test_a_rotated_secret_may_sign_beside_the_old_one(
    node: httpx.AsyncClient, db: PostgresDatabase
) -> None:
    order = await place(node, db)
    body = notice(order["id"])
    stamp = int(time.time())
    old = signature.sign(b"retired-secret", body, stamp)
    new = signature.sign(SECRET.encode(), body, stamp).split(",")[1]
    assert (await call(node, body, header=f"{old},{new}")).status_code == 200


async def test_a_signed_call_with_a_bad_body_is_refused_in_the_error_shape(
    node: httpx.AsyncClient, db: PostgresDatabase
) -> None:
    order = await place(node, db)
    broken = await call(node, b"{not json")
    assert (broken.status_code, broken.json()["code"]) == (422, "INVALID_JSON")
    wrong = await call(node, notice(order["id"], "payment.refunded"))
    assert (wrong.status_code, wrong.json()["code"]) == (422, "VALIDATION_ERROR")
    assert wrong.json()["details"]["errors"][0]["location"] == ["body", "type"]
    unknown = await call(node, notice(str(uuid.uuid4())))
    assert (unknown.status_code, unknown.json()["code"]) == (404, "NOT_FOUND")
    assert await event_types(db, order["id"]) == ["order.placed"]


async def test_a_node_without_the_webhook_provider_refuses_the_call(database_url: str) -> None:
    async with serve(node_settings(database_url, payment_provider="simulated")) as client:
        body = notice(str(uuid.uuid4()))
        response = await call(client, body)
    assert (response.status_code, response.json()["code"]) == (404, "PAYMENT_WEBHOOK_DISABLED")


async def test_the_document_says_how_to_sign(node: httpx.AsyncClient) -> None:
    document = (await node.get("/openapi.json")).json()
    operation = document["paths"]["/payments/webhook"]["post"]
    assert "HMAC-SHA256" in operation["description"]
    assert "security" not in operation  # the signature is the credential, not a bearer
    assert {"200", "401", "404", "422"} <= set(operation["responses"])
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["required"]) == {"id", "type", "order_id"}
    headers = [p["name"] for p in operation["parameters"] if p["in"] == "header"]
    assert headers == [signature.HEADER]
    response = (await node.post("/payments/webhook", headers={"Authorization": ""})).json()
    assert response["code"] == "INVALID_SIGNATURE"
