"""Liveness, readiness and what a client needs to know about this node."""

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from backend.deps import DatabaseDep, NodeDep, PrincipalDep, SettingsDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(settings: SettingsDep) -> dict[str, Any]:
    """The process is up."""
    return {"status": "ok", "node": settings.node_id}


@router.get("/ready", responses={503: {"description": "Not ready: `problems` says why"}})
async def ready(node: NodeDep) -> JSONResponse:
    """Send this node traffic? The catalog is loaded, the database answers with every
    migration this node knows of, Redis answered once, no background loop is failing
    or stalled, and the node is not shutting down. `problems` lists what is not so."""
    ok, body = await node.readiness()
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/whoami")
async def whoami(principal: PrincipalDep) -> dict[str, object]:
    """Who this node takes the caller to be, and what they may do."""
    return principal.public()


@router.get("/info")
async def info(db: DatabaseDep, settings: SettingsDep) -> dict[str, Any]:
    """What the dashboard needs to preview an order on this node, and how it is paid:
    with the `simulated` provider the order form offers its test methods."""
    return {
        "node": settings.node_id,
        "mode": db.mode,
        "fee_rate": settings.fee_rate,
        "hold_seconds": settings.hold_seconds,
        "max_order_lines": settings.max_order_lines,
        "public_catalog": settings.public_catalog,
        "payment_provider": settings.payment_provider,
        "auth": (
            {"supabase_url": settings.supabase_url, "anon_key": settings.supabase_anon_key}
            if settings.supabase_url and settings.supabase_anon_key
            else None
        ),
    }
