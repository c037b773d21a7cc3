"""Liveness, readiness and what a client needs to know about this node."""

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from backend.deps import CacheDep, DatabaseDep, SettingsDep
from backend.errors import AppError
from backend.migrate import load_migrations

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(settings: SettingsDep) -> dict[str, Any]:
    """The process is up."""
    return {"status": "ok", "node": settings.node_id}


@router.get("/ready", responses={503: {"description": "Not ready"}})
async def ready(db: DatabaseDep, cache: CacheDep, settings: SettingsDep) -> JSONResponse:
    """The database answers and has every migration this node knows of."""
    body: dict[str, Any] = {"node": settings.node_id, "mode": db.mode, "products": len(cache)}
    try:
        applied = set(await db.schema_versions())
    except AppError as exc:
        body |= {"ready": False, "problem": exc.message}
        return JSONResponse(body, status_code=503)
    missing = [m.version for m in load_migrations() if m.version not in applied]
    body |= {"ready": not missing, "missing_migrations": missing}
    return JSONResponse(body, status_code=503 if missing else 200)


@router.get("/info")
async def info(db: DatabaseDep, settings: SettingsDep) -> dict[str, Any]:
    """What the dashboard needs to preview an order on this node."""
    return {
        "node": settings.node_id,
        "mode": db.mode,
        "fee_rate": settings.fee_rate,
        "hold_seconds": settings.hold_seconds,
        "max_order_lines": settings.max_order_lines,
    }
