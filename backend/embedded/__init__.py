"""Real Postgres and Redis servers from pip wheels, for `scripts/run` and the tests.

The servers outlive the process that started them on purpose: a launcher killed
with SIGKILL leaves them running, and the next `start()` on the same data
directory finds them (pg_ctl status, Redis's pid file) and reuses or restarts
them instead of tripping over a busy port or a stale pid file.
"""

from backend.embedded.postgres import EmbeddedPostgres
from backend.embedded.processes import (
    HOST,
    EmbeddedServerError,
    PortInUseError,
    exit_reason,
    free_port,
    port_is_free,
    process_cmdline,
    process_running,
    require_free_port,
    terminate,
)
from backend.embedded.redis import EmbeddedRedis, redis_url

__all__ = [
    "HOST",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "EmbeddedServerError",
    "PortInUseError",
    "exit_reason",
    "free_port",
    "port_is_free",
    "process_cmdline",
    "process_running",
    "redis_url",
    "require_free_port",
    "terminate",
]
