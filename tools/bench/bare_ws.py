"""The WebSocket anchor: a bare `websockets` server that broadcasts, nothing more.

`python -m tools.bench.bare_ws --port P --snapshot FILE --messages FILE` sends
each client the snapshot when it connects, keeps it in a set, and when a
message arrives on `/control` broadcasts every line of the messages file to
the set with `websockets.asyncio.server.broadcast`, then answers `sent`. The
messages are the very changes OrderFlow sent in the same run, so both servers
push the same bytes. `BareWs` starts and stops it for the bench.
"""

import argparse
import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, broadcast, serve

from backend.embedded import HOST, free_port
from tools.bench import BenchError, child

ROOT = Path(__file__).resolve().parents[2]


async def _serve(port: int, snapshot: str, messages: list[str]) -> None:
    clients: set[ServerConnection] = set()

    async def handler(connection: ServerConnection) -> None:
        if connection.request is not None and connection.request.path == "/control":
            async for _ in connection:
                for message in messages:
                    broadcast(clients, message)
                await connection.send("sent")
            return
        clients.add(connection)
        try:
            await connection.send(snapshot)
            await connection.wait_closed()
        finally:
            clients.discard(connection)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with serve(handler, HOST, port, compression=None, max_size=131072):
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--snapshot", type=Path, required=True)
    parser.add_argument("--messages", type=Path, required=True)
    args = parser.parse_args()
    messages = args.messages.read_text().splitlines()
    asyncio.run(_serve(args.port, args.snapshot.read_text(), messages))


class BareWs:
    """The anchor server as a child process of the bench."""

    def __init__(self, folder: Path, snapshot: str, messages: list[str]) -> None:
        self.folder = folder
        self.port = free_port()
        self.snapshot, self.messages = snapshot, messages
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws"

    def start(self) -> None:
        snapshot, messages = self.folder / "bare-snapshot.json", self.folder / "bare-messages.txt"
        snapshot.write_text(self.snapshot)
        messages.write_text("\n".join(self.messages) + "\n")
        command = [sys.executable, "-m", "tools.bench.bare_ws", "--port", str(self.port)]
        command += ["--snapshot", str(snapshot), "--messages", str(messages)]
        with (self.folder / "bare-ws.log").open("ab") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )

    async def wait_ready(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise BenchError("the bare websockets server exited; see bare-ws.log")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection(HOST, self.port)
                writer.close()
                return
            await asyncio.sleep(0.1)
        raise BenchError("the bare websockets server did not start")

    async def broadcast(self) -> float:
        """Ask for the broadcast; the wall-clock time the request was sent."""
        url = f"ws://{HOST}:{self.port}/control"
        async with connect(url, compression=None, proxy=None) as control:
            sent = time.time()
            await control.send("go")
            async with asyncio.timeout(120):
                await control.recv()
        return sent

    @property
    def pid(self) -> int:
        return child.pid_of(self.process, "the bare websockets server")

    def rss(self) -> int:
        return child.rss(self.pid)

    def cpu(self) -> float:
        return child.cpu(self.pid)

    def stop(self) -> None:
        child.stop(self.process, timeout=10)


if __name__ == "__main__":
    main()
