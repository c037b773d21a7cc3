"""The run in numbers, for people (`render`) and for programs (`--json`)."""

import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tools.chaos.model import Convergence, Records, Violation


@dataclass
class Report:
    seed: int
    seconds: float
    faults: dict[str, int]  # injected, by kind
    fault_log: list[str]
    operations: dict[str, dict[str, int]]  # kind -> attempted, acked, refused, unknown
    http: dict[str, Any]  # 5xx by status, 503 by fault, refused, timeouts, disconnects
    convergence: dict[str, float | None]  # "view aspect" -> seconds after the load stopped
    longest_convergence: float | None  # of the catalogs; None if one never converged
    lost: int
    duplicated: int
    divergent: int
    stale_followers: int
    live_clients: dict[str, int]
    violations: list[dict[str, Any]]
    clean_load: float | None = None  # seconds of load after the last fault was over
    phases: dict[str, float] = field(default_factory=dict)  # phase -> seconds it took
    node_errors: dict[str, list[str]] = field(default_factory=dict)
    kept: str | None = None

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")


def build(
    seed: int,
    seconds: float,
    records: Records,
    convergences: list[Convergence],
    violations: list[Violation],
    live_clients: dict[str, int],
    began: float,
) -> Report:
    categories = Counter(violation.category for violation in violations)
    timings = {f"{view.name} {view.aspect}": view.seconds for view in convergences}
    catalogs = [view.seconds for view in convergences if view.aspect == "catalog"]
    reached = [seconds for seconds in catalogs if seconds is not None]
    return Report(
        seed=seed,
        seconds=seconds,
        faults=dict(Counter(window.kind for window in records.windows)),
        fault_log=[
            f"+{w.started - records.origin:6.2f}s {w.kind:<16} {w.target:<8} "
            f"{w.ended - w.started:5.2f}s  {w.detail}"
            for w in sorted(records.windows, key=lambda w: w.started)
        ],
        operations=_operations(records),
        http=_http(records),
        convergence=timings,
        longest_convergence=max(reached) if reached and len(reached) == len(catalogs) else None,
        lost=categories["lost"],
        duplicated=categories["duplicated"],
        divergent=categories["divergent"],
        stale_followers=categories["followers"],
        live_clients=live_clients,
        violations=[asdict(violation) for violation in violations],
        clean_load=_clean_load(records),
        phases=_phases(records, began),
    )


def _clean_load(records: Records) -> float | None:
    loaded, last = records.marks.get("load and faults"), records.last_fault_end
    return None if loaded is None or last is None else round(loaded - last, 2)


def _phases(records: Records, began: float) -> dict[str, float]:
    phases, previous = {}, began
    for phase, ended in sorted(records.marks.items(), key=lambda item: item[1]):
        phases[phase] = round(ended - previous, 2)
        previous = ended
    return phases


def _operations(records: Records) -> dict[str, dict[str, int]]:
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for op in records.operations:
        table[op.kind]["attempted"] += 1
        table[op.kind][op.outcome] += 1
        table[op.kind]["requests"] += len(op.attempts)
    keys = ("attempted", "acked", "refused", "unknown", "requests")
    return {kind: {key: counts[key] for key in keys} for kind, counts in sorted(table.items())}


def _http(records: Records) -> dict[str, Any]:
    errors: Counter[str] = Counter()
    unavailable_during: Counter[str] = Counter()
    transport: Counter[str] = Counter()
    for op in records.operations:
        for attempt in op.attempts:
            if attempt.status is not None and attempt.status >= 500:
                errors[str(attempt.status)] += 1
                for window in records.windows:
                    if window.overlaps(attempt.started, attempt.ended):
                        unavailable_during[window.kind] += 1
            elif attempt.error:
                transport[attempt.error] += 1
    return {
        "5xx_by_status": dict(errors),
        "5xx_by_overlapping_fault": dict(unavailable_during),
        "no_response": dict(transport),
    }


def render(report: Report) -> str:
    lines = [f"chaos run: seed {report.seed}, {report.seconds:g}s of load"]
    clean = "" if report.clean_load is None else f"; then {report.clean_load:g}s of load"
    lines.append("faults injected: " + _pairs(report.faults) + clean)
    lines += [f"  {entry}" for entry in report.fault_log]
    lines.append("operations (attempted / acked / refused / unknown, requests):")
    for kind, counts in report.operations.items():
        lines.append(
            f"  {kind:<10} {counts['attempted']:6} {counts['acked']:6} {counts['refused']:6} "
            f"{counts['unknown']:6}   {counts['requests']}"
        )
    http = report.http
    lines.append(f"5xx by status: {_pairs(http['5xx_by_status'])}")
    lines.append(f"5xx during faults, by fault: {_pairs(http['5xx_by_overlapping_fault'])}")
    lines.append(f"no response (not 5xx): {_pairs(http['no_response'])}")
    lines.append(f"live clients: {_pairs(report.live_clients)}")
    lines.append("seconds: " + ", ".join(f"{k} {v:g}" for k, v in report.phases.items()))
    longest = report.longest_convergence
    lines.append(
        f"lost {report.lost}, duplicated {report.duplicated}, divergent {report.divergent}, "
        f"stale followers {report.stale_followers}; longest catalog convergence "
        f"{'never' if longest is None else f'{longest:.3f}s'}"
    )
    if report.violations:
        lines.append(f"VIOLATIONS ({len(report.violations)}):")
        for violation in report.violations:
            lines.append(f"  [{violation['category']}] {violation['message']}")
            lines += [f"      {line}" for line in violation["evidence"]]
    for node, errors in report.node_errors.items():
        lines.append(f"{node} logged {len(errors)} errors; the last ones:")
        lines += [f"    {line}" for line in errors[-5:]]
    if report.kept:
        lines.append(f"files kept in {report.kept}")
    lines.append("PASS" if report.ok else "FAIL")
    return "\n".join(lines)


def _pairs(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(counts.items())) or "none"
