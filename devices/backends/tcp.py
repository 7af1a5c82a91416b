"""A raw TCP byte stream (printers on port 9100), on asyncio streams.

One background task reads the socket into a buffer, so a reply that arrives late never
blocks a later request and a closed connection is noticed at once. ``OSError`` and
time-outs end here as ``DeviceUnavailable`` with the address and the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno

from devices.errors import DeviceUnavailable


def _reason(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    if isinstance(exc, TimeoutError):
        return "timed out (printer off, or a wrong address)"
    if code == errno.ECONNREFUSED:
        return "connection refused (printer busy with another host, or a wrong port)"
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "host unreachable (network or address)"
    return str(exc) or type(exc).__name__


class TcpLink:
    """A TCP connection to a device, read through the event loop.

    Args:
        host: address or host name.
        port: TCP port (9100 for raw printing).
        connect_timeout: seconds to wait for the connection.
        write_timeout: seconds a write may wait for the peer to take the bytes; a printer
            whose buffer stays full (paper out) stops reading and would stall us forever.
    """

    can_read = True

    def __init__(
        self, host: str, port: int, connect_timeout: float = 5.0, write_timeout: float = 30.0
    ) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.write_timeout = write_timeout
        self._writer: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task[None] | None = None
        self._buffer = bytearray()
        self._arrived = asyncio.Event()
        self._error: DeviceUnavailable | None = None

    @property
    def target(self) -> str:
        """Where the link goes, for logs."""
        return f"tcp {self.host}:{self.port}"

    @property
    def is_open(self) -> bool:
        """Whether the connection is up and has not failed."""
        return self._writer is not None and self._error is None

    async def open(self) -> None:
        """Connect; raises ``DeviceUnavailable`` with the reason."""
        await self.close()
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise DeviceUnavailable(f"{self.host}:{self.port}: {_reason(exc)}") from exc
        self._writer = writer
        self._buffer.clear()
        self._error = None
        self._pump = asyncio.create_task(self._read_forever(reader), name=f"tcp {self.target}")

    async def _read_forever(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    self._fail("connection closed by the device")
                    return
                self._buffer += data
                self._arrived.set()
        except OSError as exc:
            self._fail(_reason(exc))

    def _fail(self, why: str) -> None:
        if self._error is None:
            self._error = DeviceUnavailable(f"{self.host}:{self.port}: {why}")
        self._arrived.set()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self._writer is None:
            raise DeviceUnavailable(f"{self.host}:{self.port}: not connected")

    async def write(self, data: bytes) -> None:
        """Send ``data`` and wait until the socket took it all."""
        self._check()
        assert self._writer is not None
        try:
            self._writer.write(data)
            async with asyncio.timeout(self.write_timeout):
                await self._writer.drain()
        except TimeoutError as exc:
            self._fail("write stalled: the device stopped reading")
            raise DeviceUnavailable(f"{self.host}:{self.port}: write stalled") from exc
        except OSError as exc:
            self._fail(_reason(exc))
            raise DeviceUnavailable(f"{self.host}:{self.port}: {_reason(exc)}") from exc

    def discard_input(self) -> None:
        """Forget bytes received so far (a late reply to an earlier request)."""
        self._buffer.clear()

    async def read_until(self, terminator: bytes, within: float) -> bytes | None:
        """Bytes up to and including ``terminator``, or ``None`` after ``within`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            end = self._buffer.find(terminator)
            if end >= 0:
                end += len(terminator)
                frame = bytes(self._buffer[:end])
                del self._buffer[:end]
                return frame
            self._check()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()

    def pending_input(self) -> bytes:
        """Bytes received and not consumed yet (the start of a reply cut short)."""
        return bytes(self._buffer)

    async def close(self) -> None:
        """Close the connection; safe to call twice."""
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
