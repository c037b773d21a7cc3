"""The OpenAPI document: FastAPI's, plus what this node's settings decide."""

from typing import Any

from fastapi import FastAPI

from backend.settings import Settings


def install(app: FastAPI, settings: Settings) -> None:
    """State MAX_ORDER_LINES as the most lines an order may have, so the document
    says what this node does (place_order refuses more with TOO_MANY_LINES)."""
    generate = app.openapi

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            items = schema["components"]["schemas"]["OrderCreate"]["properties"]["items"]
            items["maxItems"] = settings.max_order_lines
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
