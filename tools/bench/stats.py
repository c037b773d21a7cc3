"""Figures from raw samples: percentiles, merged distributions, missed changes.

wrk reports a distribution as quantiles (percent -> latency), one per process;
several processes against several nodes are merged by weighting each one's
quantiles by its request count, which is exact at the quantiles it printed and
a step function between them.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

Quantiles = list[tuple[float, float]]  # (percent, value), percent ascending


def percentile(values: Sequence[float], percent: float) -> float | None:
    """Nearest-rank percentile: the smallest value with `percent`% of values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * percent // 100))  # ceil, at least the first
    return ordered[min(len(ordered), int(rank)) - 1]


def quantiles(values: Sequence[float], percents: Iterable[float]) -> Quantiles:
    """The same percentiles of one sample, sorted once."""
    if not values:
        return []
    ordered = sorted(values)
    found = []
    for percent in percents:
        rank = max(1, int(-(-len(ordered) * percent // 100)))
        found.append((percent, ordered[min(len(ordered), rank) - 1]))
    return found


def at(table: Quantiles, percent: float) -> float | None:
    """The value a quantile table gives for `percent` (the first entry at or past it)."""
    for entry_percent, value in table:
        if entry_percent >= percent:
            return value
    return table[-1][1] if table else None


def merge(parts: Sequence[tuple[int, Quantiles]], percents: Iterable[float]) -> Quantiles:
    """Quantiles of the union of several distributions, each given as (count, quantiles)."""
    parts = [(count, table) for count, table in parts if count > 0 and table]
    total = sum(count for count, _ in parts)
    if total == 0:
        return []
    candidates = sorted({value for _, table in parts for _, value in table})
    below = [
        sum(count * _share_at_or_below(table, v) for count, table in parts) for v in candidates
    ]
    merged = []
    for percent in percents:
        wanted = total * percent / 100 - 1e-9
        index = next((i for i, count in enumerate(below) if count >= wanted), len(below) - 1)
        merged.append((percent, candidates[index]))
    return merged


def _share_at_or_below(table: Quantiles, value: float) -> float:
    """The fraction of one distribution at or below `value`, read off its quantiles."""
    share = 0.0
    for percent, entry in table:
        if entry > value:
            break
        share = percent / 100
    return share


@dataclass(frozen=True)
class Missed:
    """What one client did not see of the changes it should have.

    `missed`: ledger changes it never received as a change. `stale`: products
    whose latest version it never learned, by a change or a snapshot, so its
    picture is wrong, not only incomplete."""

    missed: int
    stale: int


def missed_changes(
    ledger: Mapping[int, tuple[str, int]],
    seen_seqs: Iterable[int],
    latest_seen: Mapping[str, int],
) -> Missed:
    """Compare a client's record with the ledger rows (seq -> (sku, version)) it should
    have received; `latest_seen` is the newest version it learned per SKU."""
    seen = set(seen_seqs)
    missed = sum(1 for seq in ledger if seq not in seen)
    final: dict[str, int] = {}
    for sku, version in ledger.values():
        final[sku] = max(version, final.get(sku, 0))
    stale = sum(1 for sku, version in final.items() if latest_seen.get(sku, 0) < version)
    return Missed(missed, stale)


CDF_PERCENTS = [
    *(float(p) for p in range(1, 100)),
    99.5,
    99.9,
    99.99,
    100.0,
]
