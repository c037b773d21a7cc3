"""Dead letters: events a consumer failed WORKER_MAX_ATTEMPTS times, kept for a person.

Each is a `dead_letters` row (payload, error, attempts; what the admin API
lists) and an entry on the dead-letter stream (for tools that watch Redis).
A replay takes rows back (`take_dead_letters` marks them replayed) and adds
each payload to the main stream again, addressed to the group that failed it:
the other groups handled it already and ack it at once.
"""

import logging
from uuid import UUID

from redis.exceptions import RedisError

from backend.documents import Json, OrderEvent
from backend.errors import AppError
from backend.events.stream import EventStream
from database import Database

log = logging.getLogger(__name__)


def stream_unavailable(message: str) -> AppError:
    return AppError(503, "STREAM_UNAVAILABLE", message)


class DeadLetters:
    def __init__(self, db: Database, stream: EventStream | None) -> None:
        self._db = db
        self._stream = stream

    async def bury(
        self, group: str, entry_id: str, event: OrderEvent, error: str, attempts: int
    ) -> int:
        """Keep the event as a dead letter (the row first: it is what counts); its id."""
        dead_id = await self._db.add_dead_letter(
            group, UUID(event["event_id"]), entry_id, dict(event), error, attempts
        )
        if self._stream is not None:
            fields = self._stream.encode(event, group)
            fields |= {b"error": error[:2000], b"attempts": attempts, b"dead_letter": dead_id}
            await self._stream.redis.xadd(
                self._stream.dead, fields, maxlen=self._stream.maxlen, approximate=True
            )
        return dead_id

    async def replay(self, dead_id: int | None) -> list[Json]:
        """Put one dead letter (or every waiting one) back on the stream; those taken.

        Rows are marked replayed before their events are added; any that could not
        be added are kept again as new dead letters, so none is lost."""
        if self._stream is None:  # not a passing trouble: how the node is set up
            raise AppError(
                409,
                "STREAM_OFF",
                "this node runs without Redis: there is no events stream to replay onto;"
                " events wait in the outbox",
            )
        try:
            await self._stream.redis.ping()  # refuse before taking rows while Redis is away
        except (RedisError, OSError) as exc:
            raise stream_unavailable(f"Redis is unavailable: {exc}") from exc
        taken = await self._db.take_dead_letters(dead_id)
        added = 0
        try:
            for letter in taken:
                await self._stream.add([letter["payload"]], letter["consumer"])
                added += 1
        except (RedisError, OSError) as exc:
            for letter in taken[added:]:
                await self._keep_again(letter, exc)
            raise stream_unavailable(f"Redis did not take the replay: {exc}") from exc
        log.info("replayed %d dead letters", len(taken))
        return taken

    async def _keep_again(self, letter: Json, exc: BaseException) -> None:
        await self._db.add_dead_letter(
            letter["consumer"],
            letter["event_id"],
            "replay",
            letter["payload"],
            f"replay failed: {type(exc).__name__}: {exc}",
            0,
        )
