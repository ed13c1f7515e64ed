"""A slow network link for tests: a loopback TCP relay with a bandwidth limit.

Stands in for a slow WAN between a device and the server, which loopback cannot
be. Bytes from the server to the client pass at `bytes_per_second` per connection;
the other direction is not limited. Socket.IO and HTTP downloads both go through
it unchanged, so the agent and the server do not know it is there.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

CHUNK = 16 * 1024


class SlowLink:
    def __init__(self, server_url: str, bytes_per_second: int) -> None:
        target = urlsplit(server_url)
        self._target = (target.hostname or "127.0.0.1", target.port or 80)
        self._rate = bytes_per_second
        self._listener: asyncio.Server | None = None
        self._connections: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        assert self._listener is not None
        host, port = self._listener.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def __aenter__(self) -> SlowLink:
        self._listener = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._listener is not None
        self._listener.close()
        for connection in list(self._connections):
            connection.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._listener.wait_closed()

    async def _relay(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            server_reader, server_writer = await asyncio.open_connection(*self._target)
            await asyncio.gather(
                self._pipe(client_reader, server_writer, rate=None),
                self._pipe(server_reader, client_writer, rate=self._rate),
            )
        except OSError:
            client_writer.close()
        finally:
            self._connections.discard(task)

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rate: int | None
    ) -> None:
        try:
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
                if rate:
                    # The bandwidth limit itself: this is the link being slow.
                    await asyncio.sleep(len(data) / rate)
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
