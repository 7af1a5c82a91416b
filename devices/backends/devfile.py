"""Writing to (and maybe reading from) a device file: ``/dev/usb/lp0`` or a serial port.

The USB printer class driver (usblp) exposes a printer as ``/dev/usb/lpN``; a bidirectional
printer answers status requests on the same file. A serial port is put in raw mode at the
configured baud rate. Every blocking call (open, write, the wait for a reply) runs in a
worker thread through ``asyncio.to_thread``. A regular file (a spool file, a test) takes
the bytes and never answers, so ``can_read`` is false for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import select
import stat
import termios
import tty

from devices.errors import DeviceUnavailable

_BAUD = {
    1200: termios.B1200,
    2400: termios.B2400,
    4800: termios.B4800,
    9600: termios.B9600,
    19200: termios.B19200,
    38400: termios.B38400,
    57600: termios.B57600,
    115200: termios.B115200,
}


def _translate(path: str, exc: OSError) -> DeviceUnavailable:
    if exc.errno == errno.ENOENT:
        why = "no such device (unplugged, or a wrong path)"
    elif exc.errno == errno.EACCES:
        why = "permission denied (add the service user to the 'lp' or 'dialout' group)"
    elif exc.errno == errno.EBUSY:
        why = "busy (CUPS or another process holds it)"
    elif exc.errno in (errno.ENODEV, errno.EIO, errno.ENXIO):
        why = "device gone (unplugged or powered off)"
    else:
        why = exc.strerror or str(exc)
    return DeviceUnavailable(f"{path}: {why}")


class DeviceFileLink:
    """A printer reached through a device file.

    Args:
        path: ``/dev/usb/lp0``, ``/dev/ttyUSB0``, ``/dev/serial/by-id/...``, or a file.
        readback: whether the device answers on the same file (set ``False`` for a
            write-only printer; a regular file never answers).
        baudrate: line speed when the path is a serial port (ignored otherwise).
    """

    def __init__(self, path: str, *, readback: bool = True, baudrate: int = 9600) -> None:
        if baudrate not in _BAUD:
            raise ValueError(f"unsupported baud rate {baudrate}")
        self.path = path
        self.readback = readback
        self.baudrate = baudrate
        self._fd = -1
        self._readable = False
        self._buffer = bytearray()

    @property
    def target(self) -> str:
        """Where the link goes, for logs."""
        return f"file {self.path}"

    @property
    def can_read(self) -> bool:
        """Whether replies can be read back (known once open)."""
        return self._readable

    @property
    def is_open(self) -> bool:
        """Whether the file is open."""
        return self._fd >= 0

    def _open_blocking(self) -> tuple[int, bool]:
        # O_APPEND keeps a spool file's earlier jobs; a character device ignores it.
        access = os.O_RDWR if self.readback else os.O_WRONLY
        fd = os.open(self.path, access | os.O_APPEND | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            mode = os.fstat(fd).st_mode
            if os.isatty(fd):
                # Raw: no echo and no CR/LF translation, or ZPL and ESC/POS bytes change.
                tty.setraw(fd)
                attrs = termios.tcgetattr(fd)
                attrs[4] = attrs[5] = _BAUD[self.baudrate]
                termios.tcsetattr(fd, termios.TCSANOW, attrs)
        except OSError:
            os.close(fd)
            raise
        return fd, self.readback and stat.S_ISCHR(mode)

    async def open(self) -> None:
        """Open the file; raises ``DeviceUnavailable`` with the reason."""
        await self.close()
        try:
            self._fd, self._readable = await asyncio.to_thread(self._open_blocking)
        except OSError as exc:
            raise _translate(self.path, exc) from exc
        self._buffer.clear()

    def _check(self) -> int:
        if self._fd < 0:
            raise DeviceUnavailable(f"{self.path}: not open")
        return self._fd

    def _write_blocking(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    async def write(self, data: bytes) -> None:
        """Write all of ``data``."""
        fd = self._check()
        try:
            await asyncio.to_thread(self._write_blocking, fd, data)
        except OSError as exc:
            raise _translate(self.path, exc) from exc

    def _read_blocking(self, fd: int, timeout: float) -> bytes:
        ready, _, _ = select.select([fd], [], [], max(timeout, 0.0))
        if not ready:
            return b""
        return os.read(fd, 4096)

    def discard_input(self) -> None:
        """Forget bytes received so far."""
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
            fd = self._check()
            remaining = deadline - loop.time()
            if remaining <= 0 or not self._readable:
                return None
            try:
                data = await asyncio.to_thread(self._read_blocking, fd, remaining)
            except OSError as exc:
                raise _translate(self.path, exc) from exc
            if not data:
                return None  # nothing within the time, or end of file: no reply either way
            self._buffer += data

    def pending_input(self) -> bytes:
        """Bytes received and not consumed yet."""
        return bytes(self._buffer)

    async def close(self) -> None:
        """Close the file; safe to call twice."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            # The device may be gone already; closing is best effort.
            with contextlib.suppress(OSError):
                await asyncio.to_thread(os.close, fd)
