"""Where the CPU went during a measurement: the machine, each server, the generators.

On two shared cores a figure means little without it: a generator near a full
core, or a machine at 200%, says the server was not the only limit.
"""

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil


def _busy() -> float:
    times = psutil.cpu_times()
    return float(
        times.user
        + times.system
        + getattr(times, "nice", 0.0)
        + getattr(times, "irq", 0.0)
        + getattr(times, "softirq", 0.0)
    )


@dataclass
class Window:
    """CPU from now until `close`, as percent of one core (200% is both cores busy)."""

    servers: Mapping[str, Callable[[], float]]  # name -> its CPU seconds so far
    started: float = field(default_factory=time.monotonic)
    machine_start: float = field(default_factory=_busy)
    server_start: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.server_start = {name: read() for name, read in self.servers.items()}

    def close(self, generators: float) -> dict[str, Any]:
        """`generators`: CPU seconds the load generators used in the window."""
        elapsed = max(time.monotonic() - self.started, 1e-6)
        servers = {
            name: round(100 * (read() - self.server_start[name]) / elapsed, 1)
            for name, read in self.servers.items()
        }
        return {
            "seconds": round(elapsed, 2),
            "machine_pct": round(100 * (_busy() - self.machine_start) / elapsed, 1),
            "servers_pct": servers,
            "generators_pct": round(100 * generators / elapsed, 1),
        }
