"""Ports and processes of the embedded servers: finding, checking and stopping them."""

import contextlib
import logging
import os
import signal
import socket
import time
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


class EmbeddedServerError(RuntimeError):
    """A server could not be started or stopped; the message says why."""


class PortInUseError(EmbeddedServerError):
    """The port belongs to some other program."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def require_free_port(port: int, what: str) -> None:
    if not port_is_free(port):
        raise PortInUseError(f"{what}: port {port} on {HOST} is already in use by another program")


def process_running(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not reaped yet) counts as gone."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def process_cmdline(pid: int) -> list[str]:
    """The command line of a running process, or [] if it is gone or hidden."""
    try:
        return [str(part) for part in psutil.Process(pid).cmdline()]
    except psutil.Error:
        return []


def exit_reason(code: int) -> str:
    """How a child process ended, from its Popen return code, in words."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:  # a signal Python has no name for
        return f"was killed by signal {-code}"


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def terminate(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM `pid`, then SIGKILL it if it outlives `timeout` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout):
        return
    log.warning("process %d ignored SIGTERM for %g s; killing it", pid, timeout)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_gone(pid, 5.0):
        raise EmbeddedServerError(f"process {pid} survived SIGKILL")


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return f"last lines of {path}:\n" + "\n".join(text.splitlines()[-lines:])
