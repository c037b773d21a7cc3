"""Limits and headers every request meets: body size, write rate, CORS, the dashboard's CSP."""

from collections.abc import AsyncIterator

from backend.embedded import EmbeddedRedis
from tests.support import bearer, node_settings, run_node, token


async def test_a_body_over_the_limit_is_413_before_it_is_read(database_url: str) -> None:
    async with run_node(node_settings(database_url, max_body_bytes=2048)) as node:
        big = {"skus": ["A" * 60] * 100}  # about 6 KB
        declared = await node.client.post("/availability", json=big)
        assert declared.status_code == 413
        assert declared.json()["code"] == "PAYLOAD_TOO_LARGE"

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b" " * 1024  # no Content-Length: counted as it streams

        streamed = await node.client.post(
            "/availability", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert (streamed.status_code, streamed.json()["code"]) == (413, "PAYLOAD_TOO_LARGE")
        small = await node.client.post("/availability", json={"skus": ["A"]})
        assert small.status_code == 200


async def test_writes_past_the_rate_limit_are_429_with_retry_after_on_every_node(
    database_url: str, redis_server: EmbeddedRedis
) -> None:
    settings = {"redis_url": redis_server.url, "rate_limit_writes_per_minute": 3}
    customer = bearer(token("limited-customer"))
    body = {"items": [{"sku": "NONE", "quantity": 1}]}
    async with (
        run_node(node_settings(database_url, "node-1", **settings)) as a,
        run_node(node_settings(database_url, "node-2", **settings)) as b,
    ):
        answers = [
            (await node.client.post("/orders", json=body, headers=customer)).status_code
            for node in (a, b, a)
        ]
        assert 429 not in answers  # 422 UNKNOWN_SKU: counted, and let through
        refused = await b.client.post("/orders", json=body, headers=customer)
        assert refused.status_code == 429
        assert refused.json()["code"] == "RATE_LIMITED"
        assert 1 <= int(refused.headers["retry-after"]) <= 61
        # Another caller has their own count, and reads are not counted.
        other = await a.client.post("/orders", json=body, headers=bearer(token("someone")))
        assert other.status_code == 422
        assert (await b.client.get("/products", headers=customer)).status_code == 200


async def test_cors_allows_the_configured_origins_only(database_url: str) -> None:
    settings = node_settings(database_url, allowed_origins="https://shop.example")
    async with run_node(settings) as node:
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        }
        allowed = await node.client.options(
            "/orders", headers={"Origin": "https://shop.example", **preflight}
        )
        assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
        other = await node.client.options(
            "/orders", headers={"Origin": "https://evil.example", **preflight}
        )
        assert "access-control-allow-origin" not in other.headers


async def test_the_dashboard_is_served_with_a_strict_policy(database_url: str) -> None:
    async with run_node(node_settings(database_url)) as node:
        for path in ("/", "/static/app.js"):
            response = await node.client.get(path)
            assert response.status_code == 200
            policy = response.headers["content-security-policy"]
            assert policy.startswith("default-src 'self'")
            assert "frame-ancestors 'none'" in policy
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["referrer-policy"] == "no-referrer"
        api = await node.client.get("/products")
        assert "content-security-policy" not in api.headers
