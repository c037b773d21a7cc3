"""`/metrics` in the Prometheus text format."""

from typing import cast

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from backend.metrics import Metrics
from backend.schemas import errors

router = APIRouter(tags=["health"])

_TEXT = {
    "description": "The Prometheus text format",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}


@router.get("/metrics", response_class=Response, responses={200: _TEXT, **errors()})
async def metrics(request: Request) -> Response:
    registry = cast(Metrics, request.state.metrics).registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
