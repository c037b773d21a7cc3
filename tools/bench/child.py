"""The server processes a bench run starts: their memory, their CPU, a clean stop."""

import subprocess

import psutil

from tools.bench import BenchError


def pid_of(process: "subprocess.Popen[bytes] | None", what: str) -> int:
    if process is None:
        raise BenchError(f"{what} is not running")
    return process.pid


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def stop(process: "subprocess.Popen[bytes] | None", timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not gone within `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
