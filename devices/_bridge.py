"""Where threads and blocking calls meet the event loop.

Vendor callbacks (gpiozero edges, reader threads) run on foreign threads; they hand values
to the loop only through ``EventQueue.put_threadsafe``. Input devices expose their queue as
an async iterator. The queue is bounded and drops the *oldest* value with one log line,
because a stale button press or scan is worth less than the newest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("devices")


class EventQueue(Generic[T]):
    """A bounded queue of device events, fed from any thread, read on the loop."""

    def __init__(self, name: str, maxsize: int = 1000) -> None:
        self.name = name
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dropped = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Remember the loop that reads the queue (call from the loop)."""
        self._loop = loop

    def put(self, item: T) -> None:
        """Add an item from the loop's own thread."""
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            log.warning("device %s: event queue full, dropped the oldest event", self.name)
        self._queue.put_nowait(item)

    def put_threadsafe(self, item: T) -> None:
        """Add an item from any thread (vendor callbacks)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self.put, item)

    async def get(self) -> T:
        """Wait for the next item."""
        return await self._queue.get()

    def get_nowait(self) -> T:
        """The next item, or ``asyncio.QueueEmpty``."""
        return self._queue.get_nowait()

    async def __aiter__(self) -> AsyncIterator[T]:
        while True:
            yield await self._queue.get()
