"""A store node as the launcher sees it: one uvicorn process on a fixed port.

It can be started again on the same port with the same NODE_ID, which is what
makes a restarted node the same node to its clients and in the logs.
"""

import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from backend.embedded import exit_reason, require_free_port

ROOT = Path(__file__).resolve().parent.parent
APP = "backend.main:app"
# permessage-deflate costs ~46 KiB per WebSocket and a share of every send; uvicorn
# negotiates it before the app runs, so only its flags can turn it off. Client
# messages are small (the largest, a subscribe to 1,000 SKUs, is under 128 KiB).
UVICORN_WS_FLAGS = ["--ws-per-message-deflate", "false", "--ws-max-size", "131072"]
log = logging.getLogger("backend.cluster")


def uvicorn_command(host: str, port: int, app: str = APP, *, factory: bool = False) -> list[str]:
    """How a node is started, by the launcher and by the chaos and bench tools alike
    (the bench's anchors too, with their own app): the same flags everywhere."""
    command = [sys.executable, "-m", "uvicorn", app, "--app-dir", str(ROOT), "--host", host]
    command += ["--port", str(port), "--no-access-log", *UVICORN_WS_FLAGS]
    return command + (["--factory"] if factory else [])


@dataclass
class NodeProcess:
    """One uvicorn serving the app, started again on the same port with the same NODE_ID."""

    name: str
    host: str
    port: int
    url: str
    env: dict[str, str]
    process: "subprocess.Popen[bytes] | None" = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        require_free_port(self.port, self.name)
        command = uvicorn_command(self.host, self.port)
        self.process = subprocess.Popen(command, cwd=ROOT, env={**self.env, "NODE_ID": self.name})

    def ended(self) -> str | None:
        """None while it runs; else how it ended (and reaped: no zombie)."""
        if self.process is None:
            return "never started"
        code = self.process.poll()
        return None if code is None else exit_reason(code)

    def ready(self) -> bool:
        """/health answers: the process serves. /ready may say 503 while its
        database or Redis is away; that is no reason to restart it."""
        try:
            return httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def wait(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM; killing it", self.name)
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        self.terminate()
        self.wait()
