"""The run in numbers: one table for people, one JSON file with every figure.

The JSON also names the machine (cores, load average before and after, the
git commit and whether the tree had changes), without which a figure cannot
be compared with another run's.
"""

import json
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


def ms(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds * 1000:.1f} ms"


def rate(value: float | None, unit: str) -> str:
    return "?" if value is None else f"{value:,.0f} {unit}"


def times(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def kib(value: float) -> str:
    return f"{value / 1024:.1f} KiB"


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(what, OrderFlow, anchor, ratio, target) for each scenario that ran."""
    found = []
    if (r := results.get("get")) is not None:
        ours, theirs = r["orderflow"], r["anchor"]
        found.append((
            f"cached GET /products/{{sku}}, {r['connections']} keep-alive connections",
            f"{rate(ours['rate'], 'req/s')}, p50 {ms(ours['p50'])}, p99 {ms(ours['p99'])}",
            f"bare Starlette: {rate(theirs['rate'], 'req/s')}, p50 {ms(theirs['p50'])}",
            times(r["ratio"]),
            "≥ 0.7x",
        ))  # fmt: skip
    if (r := results.get("spread")) is not None:
        ours, theirs = r["orderflow"], r["anchor"]
        found.append((
            f"one node, orders over {r['skus']:,} SKUs, {r['connections']} clients",
            f"{rate(ours['rate'], 'orders/s')}, p50 {ms(ours['p50'])}, p99 {ms(ours['p99'])}"
            f", {ours['non_2xx']} refused",
            f"naive FastAPI + asyncpg: {rate(theirs['rate'], 'orders/s')}, p99 {ms(theirs['p99'])}",
            times(r["ratio"]),
            "≥ 1.0x",
        ))  # fmt: skip
    if (r := results.get("hot")) is not None:
        levels = r["levels"]
        oversold = sum(level["check"]["oversold"] for level in levels)
        oversold += r["sellout"]["oversold"]
        lost = sum(level["check"]["lost"] + level["check"]["unexplained"] for level in levels)
        found.append((
            "one hot SKU, " + " / ".join(str(lv["clients"]) for lv in levels)
            + f" clients over {r['nodes']} nodes",
            " / ".join(f"{lv['rate']:,.0f}" for lv in levels) + " orders/s; p99 "
            + " / ".join(ms(lv["p99"]) for lv in levels)
            + f"; oversold {oversold}, unaccounted {lost}; sell-out of"
            f" {r['sellout']['stock']}: {r['sellout']['acknowledged']} acknowledged,"
            f" {r['sellout']['held_by_database']} held",
            f"pgbench place_order, {r['anchor']['clients']} clients: "
            f"{rate(r['anchor']['tps'], 'tps')}",
            " / ".join(times(lv["ratio"]) for lv in levels),
            "≥ 1.5x; p99 < 100 ms at 64; 0 oversell",
        ))  # fmt: skip
    if (r := results.get("propagation")) is not None:
        w = r["writer"]
        found.append((
            f"propagation, {r['clients'] // r['nodes']} WebSocket clients per node on"
            f" {r['nodes']} nodes, writer aiming at {w['target_rate']:,.0f} changes/s",
            f"{w['achieved_rate']:,.0f} changes/s; p50 {ms(r['p50'])}, p99 {ms(r['p99'])};"
            f" missed {r['missed']:,} ({r['clients_missing_some']} clients),"
            f" stale {r['stale_products']}",
            "—",
            "—",
            "p50 ≤ 3 ms, p99 ≤ 15 ms, nothing missed",
        ))  # fmt: skip
    if (r := results.get("fanout")) is not None:
        ours, theirs = r["orderflow"], r["anchor"]
        found.append((
            f"fan-out: {r['messages']} messages to {r['clients']:,} clients on one node",
            f"{rate(ours['rate'], 'msg/s')} ({ms(ours['span'])}, {ours['received']:,} received)",
            f"bare websockets broadcast: {rate(theirs['rate'], 'msg/s')} ({ms(theirs['span'])})",
            times(r["ratio"]),
            "≥ 0.8x",
        ))  # fmt: skip
    if (r := results.get("memory")) is not None:
        found.append((
            f"memory per idle WebSocket (fresh node, {r['clients']:,} clients)",
            kib(r["orderflow"]["per_client"]),
            f"bare websockets: {kib(r['anchor']['per_client'])}",
            times(r["ratio"]),
            "≤ 30 KB",
        ))  # fmt: skip
    return found


def cpu_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(scenario, load generators, servers, machine), each in % of one core."""
    found = []
    for name, side, usage in _usages(results):
        servers = ", ".join(f"{k} {v:.0f}%" for k, v in usage["servers_pct"].items())
        found.append((
            f"{name} ({side})", f"{usage['generators_pct']:.0f}%", servers,
            f"{usage['machine_pct']:.0f}%",
        ))  # fmt: skip
    return found


def _usages(results: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for name in ("get", "spread", "fanout"):
        if (r := results.get(name)) is not None:
            found.append((name, "OrderFlow", r["orderflow"]["usage"]))
            found.append((name, "anchor", r["anchor"]["usage"]))
    if (r := results.get("hot")) is not None:
        for level in r["levels"]:
            found.append(("hot", f"{level['clients']} clients", level["usage"]))
    if (r := results.get("propagation")) is not None:
        found.append(("propagation", "OrderFlow", r["usage"]))
    return found


def table(headers: tuple[str, ...], body: Sequence[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def render(results: dict[str, Any]) -> str:
    parts = [
        table(("what", "OrderFlow", "anchor", "ratio", "target"), rows(results)),
        "",
        "CPU during each measurement, % of one core (the machine has "
        f"{results['machine']['cores']}):",
        table(("scenario", "load generators", "servers", "machine"), cpu_rows(results)),
    ]
    if results.get("failed"):
        parts += ["", "failed: " + "; ".join(f"{k}: {v}" for k, v in results["failed"].items())]
    return "\n".join(parts)


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
