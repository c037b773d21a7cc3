"""What the deployment checks share: the repository, the venv's tools, running them."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Setting names that hold secrets: never written as values in a deployment file.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|^KEY$")


def require_tool(path: Path | None, install: str) -> Path:
    """Skip without the tool, except on CI, where a skipped check would hide a gap."""
    if path is not None and path.exists():
        return path
    reason = f"{install} is missing"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def run(*command: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=60
    )
