"""A loopback TCP proxy that can stall or throttle each direction: a bad link in one process.

The node connects to the proxy, the proxy to the broker. ``stall("up")`` holds every byte
the node sends (they are kept, in order, and forwarded on ``flow("up")``), as a link that
stopped moving without closing does; ``rate`` throttles a direction to some bytes a second,
as a slow Wi-Fi link does. Nothing is dropped or reordered: TCP would not either.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

Direction = Literal["up", "down"]
"""``up``: client (node) to server (broker); ``down``: server to client."""

CHUNK = 4096


class LinkProxy:
    """Forwards one listening loopback port to ``target_port``, per connection.

    Args:
        target_port: the broker's port on 127.0.0.1.
        rate: bytes a second per direction (``None``: as fast as loopback).
    """

    def __init__(self, target_port: int, *, rate: dict[Direction, int] | None = None) -> None:
        self.target_port = target_port
        self.rate: dict[Direction, int | None] = {"up": None, "down": None, **(rate or {})}
        self.moved: dict[Direction, int] = {"up": 0, "down": 0}
        self._flowing: dict[Direction, asyncio.Event] = {
            "up": asyncio.Event(),
            "down": asyncio.Event(),
        }
        for event in self._flowing.values():
            event.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.connections = 0

    @property
    def url(self) -> str:
        """The MQTT URL the node should use."""
        return f"mqtt://127.0.0.1:{self.port}"

    async def __aenter__(self) -> LinkProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def stall(self, direction: Direction) -> None:
        """Hold the bytes of ``direction`` (kept, forwarded once it flows again)."""
        self._flowing[direction].clear()

    def flow(self, direction: Direction) -> None:
        """Let ``direction`` move again."""
        self._flowing[direction].set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        for src, dst, direction in ((reader, up_writer, "up"), (up_reader, writer, "down")):
            task = asyncio.create_task(self._pipe(src, dst, direction))  # type: ignore[arg-type]
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, direction: Direction
    ) -> None:
        try:
            while True:
                rate = self.rate[direction]
                data = await src.read(CHUNK if rate is None else max(1, min(CHUNK, rate // 10)))
                if not data:
                    break
                await self._flowing[direction].wait()
                if rate is not None:
                    await asyncio.sleep(len(data) / rate)
                dst.write(data)
                await dst.drain()
                self.moved[direction] += len(data)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                dst.close()
