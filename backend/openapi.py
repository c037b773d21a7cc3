"""The OpenAPI document: FastAPI's, plus what this node's settings and the access
policy decide, so the document says what the node does.

- MAX_ORDER_LINES is the most lines an order may have (place_order refuses
  more with TOO_MANY_LINES).
- A webhook URL is https:// unless WEBHOOK_ALLOW_HTTP.
- Each operation names the bearer scheme when the policy wants credentials,
  and declares the refusals the policy, the body limit and the rate limit can
  answer with (401, 403, 413, 429).
"""

from typing import Any

from fastapi import FastAPI

from backend import schemas
from backend.auth.policy import OPEN, POLICY, is_write
from backend.settings import Settings
from backend.webhooks.schemas import HTTPS_PATTERN

BEARER = "bearer"


def install(app: FastAPI, settings: Settings) -> None:
    generate = app.openapi

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            items = schema["components"]["schemas"]["OrderCreate"]["properties"]["items"]
            items["maxItems"] = settings.max_order_lines
            if not settings.webhook_allow_http:
                hook = schema["components"]["schemas"]["WebhookCreate"]["properties"]["url"]
                hook["pattern"] = HTTPS_PATTERN
            _declare_access(schema, settings)
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]


def _declare_access(schema: dict[str, Any], settings: Settings) -> None:
    schema["components"].setdefault("securitySchemes", {})[BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An OrderFlow API key (`ofk_...`) or a Supabase Auth access token.",
    }
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            rule = POLICY.get((method.upper(), path))
            if rule is None or rule is OPEN:
                continue
            codes: list[str] = ["UNAUTHENTICATED"]
            anonymous = rule.anonymous is True or (
                rule.anonymous == "catalog" and settings.public_catalog
            )
            if not anonymous:
                codes.append("FORBIDDEN")
            if "requestBody" in operation:
                codes.append("PAYLOAD_TOO_LARGE")
            if is_write(method.upper(), path):
                codes.append("RATE_LIMITED")
            operation["security"] = [{BEARER: []}, *([{}] if anonymous else [])]
            responses = operation.setdefault("responses", {})
            for status, response in schemas.errors(*codes).items():
                responses.setdefault(str(status), response)
