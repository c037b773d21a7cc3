"""The events stream for admins: dead letters, their replay, and how far behind it is."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from backend.deps import DatabaseDep, NodeDep
from backend.schemas import (
    DATABASE,
    REQUEST,
    WRITE,
    DeadLetterList,
    DeadLetterReplay,
    LifecycleStatus,
    errors,
)

router = APIRouter(prefix="/admin", tags=["admin"])

DeadLetterId = Annotated[int, Path(ge=1, description="The dead letter's `id`, as listed")]
REPLAY = ("STREAM_UNAVAILABLE", "STREAM_OFF", *WRITE)


@router.get("/dead-letters", response_model=DeadLetterList, responses=errors(*REQUEST, *DATABASE))
async def list_dead_letters(
    db: DatabaseDep,
    include_replayed: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Events a consumer failed WORKER_MAX_ATTEMPTS times: the payload, the last error,
    the attempts. Replayed ones only with `include_replayed`."""
    return await db.list_dead_letters(include_replayed, limit)


@router.post("/dead-letters/replay", response_model=DeadLetterReplay, responses=errors(*REPLAY))
async def replay_all(node: NodeDep) -> dict[str, Any]:
    """Every waiting dead letter back on the stream, for the group that failed it."""
    return {"items": await node.events.replay(None)}


@router.post(
    "/dead-letters/{dead_letter_id}/replay",
    response_model=DeadLetterReplay,
    responses=errors("NOT_FOUND", *REQUEST, *REPLAY),
)
async def replay_one(dead_letter_id: DeadLetterId, node: NodeDep) -> dict[str, Any]:
    """One dead letter back on the stream, once what failed it is fixed. A replayed one
    is NOT_FOUND: it is no longer waiting."""
    return {"items": await node.events.replay(dead_letter_id)}


@router.get("/lifecycle", response_model=LifecycleStatus, responses=errors(*DATABASE))
async def lifecycle(node: NodeDep) -> dict[str, Any]:
    """The outbox (pending events, the oldest's age), the stream's length, each consumer
    group's pending entries and lag, and the dead letters waiting."""
    return (await node.events.read_status()).as_dict()
