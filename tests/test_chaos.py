"""The short chaos schedule end to end: three nodes, every kind of fault, a clean verdict."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUDGET = 85.0  # seconds for the whole run, start-up and clean-up included
pytestmark = pytest.mark.timeout(150)


def run_chaos(report: Path) -> tuple[int, str]:
    command = [sys.executable, "-m", "tools.chaos", "--seconds", "25", "--seed", "1"]
    command += ["--json", str(report)]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output, _ = process.communicate(timeout=BUDGET)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # it stops the servers it started on the way out
        output, _ = process.communicate(timeout=40)
        pytest.fail(f"the chaos run took more than {BUDGET:.0f}s:\n{output[-8000:]}")
    return process.returncode, output


def test_short_chaos_schedule_keeps_every_guarantee(tmp_path: Path) -> None:
    code, output = run_chaos(tmp_path / "report.json")
    assert code == 0, output[-12000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] is True
    kinds = {kind for kind, count in report["faults"].items() if count > 0}
    assert len(kinds) >= 4, report["faults"]
    assert {"node_kill", "postgres_restart", "redis_kill", "bus_drop"} <= kinds, report["faults"]
    acked = {kind: counts["acked"] for kind, counts in report["operations"].items()}
    assert acked["order"] >= 100, acked
    assert min(acked[kind] for kind in ("confirm", "cancel", "adjust", "set_stock")) >= 10, acked
    assert report["longest_convergence"] is not None
    assert report["longest_convergence"] <= 2.0
    assert report["clean_load"] >= 3.0  # load went on after the last fault, unharmed
    assert report["live_clients"]["snapshots"] >= 6
