"""How long to wait before trying again: the same policy for a process and a loop."""

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Waits before restarts: `first`, doubling up to `most`; reset after `stable` s up.

    Each wait is drawn from the top `jitter` fraction of its slot, never above it.
    """

    first: float = 0.5
    most: float = 30.0
    stable: float = 60.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random, repr=False)
    failures: int = 0

    def delay(self, uptime: float) -> float:
        """The wait before the next start of a process that ran for `uptime` seconds."""
        if uptime >= self.stable:
            self.failures = 0
        slot = min(self.most, self.first * 2.0 ** min(self.failures, 64))
        self.failures += 1
        return slot * (1.0 - self.jitter * self.rng.random())
