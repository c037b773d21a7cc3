"""What the nodes' logs say about a failed run: the lines of a 5xx's request id, and
every error a node logged (or printed outside its JSON logs, as a dying process does)."""

import contextlib
import json

from tools.chaos.cluster import NodeProcess
from tools.chaos.report import Report


def attach_request_logs(report: Report, nodes: list[NodeProcess]) -> None:
    """Add to each violation that names a request id the log lines carrying that id."""
    logs = [_lines(node) for node in nodes]
    for violation in report.violations:
        for evidence in list(violation["evidence"]):
            if evidence.startswith("request id "):
                request_id = evidence.removeprefix("request id ")
                hits = [line for lines in logs for line in lines if request_id in line]
                violation["evidence"] = (*violation["evidence"], *hits[:5])


def node_errors(nodes: list[NodeProcess]) -> dict[str, list[str]]:
    found = {}
    for node in nodes:
        errors = [line for line in _lines(node) if _is_error(line)]
        if errors:
            found[node.name] = errors
    return found


def _lines(node: NodeProcess) -> list[str]:
    with contextlib.suppress(OSError):
        return node.log.read_text(errors="replace").splitlines()
    return []


def _is_error(line: str) -> bool:
    if line.startswith("--- chaos:"):
        return False
    try:
        entry = json.loads(line)
    except ValueError:
        return bool(line.strip())
    return isinstance(entry, dict) and entry.get("level") in ("error", "critical")
