"""A TCP forwarder on loopback, so a test can make a server appear, vanish and come back."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

from backend.embedded import HOST


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def forward(listen_port: int, target_port: int) -> AsyncIterator[None]:
    """Accept on `listen_port` and forward each connection to `target_port` until the block
    ends; then stop listening and cut every connection, as a server that died would."""
    tasks: set[asyncio.Task[None]] = set()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(HOST, target_port)
        except OSError:
            writer.close()
            return
        for job in (_pipe(reader, upstream_writer), _pipe(upstream_reader, writer)):
            task = asyncio.create_task(job)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(accept, HOST, listen_port)
    try:
        yield
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
