"""Serial ports (RS-232, USB-CDC, pseudo-terminals) for scanners and scales, without blocking.

The port is opened with pyserial (in a worker thread, since opening can block), switched to
non-blocking reads, and watched with ``loop.add_reader``; bytes land in a buffer that
``read_until``/``read_available`` consume. pyserial exceptions end here as ``DeviceUnavailable``
with a reason an installer can act on (wrong path, permission, busy).
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import termios
from dataclasses import dataclass
from typing import Literal

import serial

from devices.errors import DeviceUnavailable

Parity = Literal["N", "E", "O"]


@dataclass(frozen=True, slots=True)
class SerialSettings:
    """Line settings of a serial device (8N1 at 9600 unless the protocol says otherwise)."""

    baudrate: int = 9600
    bytesize: Literal[7, 8] = 8
    parity: Parity = "N"
    stopbits: Literal[1, 2] = 1


def _translate(port: str, exc: BaseException) -> DeviceUnavailable:
    text = str(exc)
    code = getattr(exc, "errno", None)
    if code == errno.ENOENT or "No such file" in text:
        why = f"{port}: no such port (unplugged, or a wrong path: see `zone-agent scale probe`)"
    elif code == errno.EACCES or "Permission denied" in text:
        why = f"{port}: permission denied (add the service user to the 'dialout' group)"
    elif code == errno.EBUSY or "busy" in text.lower() or "lock" in text.lower():
        why = f"{port}: busy (another process holds it: stop it or pick another port)"
    else:
        why = f"{port}: {text or type(exc).__name__}"
    return DeviceUnavailable(why)


class LineSettingsRefused(DeviceUnavailable):
    """A real serial line refused the baud rate, data bits, parity or stop bits asked for."""


# Unix98 pty slaves (/dev/pts/N) have majors 136-143 (Documentation/admin-guide/devices.txt).
_PTY_SLAVE_MAJORS = range(136, 144)


def is_pseudo_terminal(port: str) -> bool:
    """Whether ``port`` (a path, maybe a symlink) is a pseudo-terminal's slave."""
    try:
        st = os.stat(port)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) in _PTY_SLAVE_MAJORS


def _move_pty_speed(port: str, baudrate: int) -> None:
    """Set a pty's speed to one other than ``baudrate``, so the next open changes something."""
    other = termios.B19200 if baudrate == 38400 else termios.B38400
    fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        attrs = termios.tcgetattr(fd)
        attrs[2] = (attrs[2] & ~termios.CBAUD) | other
        attrs[4] = attrs[5] = other
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    finally:
        os.close(fd)


class SerialPort:
    """An open serial port read through the event loop.

    Args:
        port: device path (``/dev/ttyUSB0``, ``/dev/serial/by-id/...``, a pty path).
        settings: baud rate, data bits, parity, stop bits.
    """

    def __init__(self, port: str, settings: SerialSettings | None = None) -> None:
        self.port = port
        self.settings = settings or SerialSettings()
        self._serial: serial.Serial | None = None
        self._fd = -1
        self._buffer = bytearray()
        self._arrived = asyncio.Event()
        self._error: DeviceUnavailable | None = None

    @property
    def is_open(self) -> bool:
        """Whether the port is open and has not failed."""
        return self._serial is not None and self._error is None

    async def open(self) -> None:
        """Open the port; raises ``DeviceUnavailable`` with the reason.

        Raises:
            LineSettingsRefused: the port is a real line that refused the line settings.
            DeviceUnavailable: missing, busy, no permission.
        """
        s = self.settings
        try:
            self._serial = await asyncio.to_thread(self._open_serial)
        except termios.error as exc:
            # Not an OSError: a port refusing the line settings raises it from pyserial's
            # configure step. A pseudo-terminal has no line: see _open_serial.
            detail = exc.args[-1] if exc.args else exc
            raise LineSettingsRefused(
                f"{self.port}: the port refused the line settings {s.baudrate} "
                f"{s.bytesize}{s.parity}{s.stopbits} ({detail}): the adapter cannot do them"
            ) from exc
        except (serial.SerialException, OSError, ValueError) as exc:
            raise _translate(self.port, exc) from exc
        self._fd = self._serial.fileno()
        self._buffer.clear()
        self._error = None
        asyncio.get_running_loop().add_reader(self._fd, self._on_readable)

    def _serial_at_settings(self) -> serial.Serial:
        s = self.settings
        return serial.Serial(
            self.port,
            baudrate=s.baudrate,
            bytesize=s.bytesize,
            parity=s.parity,
            stopbits=s.stopbits,
            timeout=0,
            write_timeout=1.0,
            exclusive=True,
        )

    def _open_serial(self) -> serial.Serial:
        """Open with pyserial; on a pseudo-terminal, get past its ``EINVAL`` on reopen.

        A pty keeps CS8 without parity whatever is asked, and Linux answers ``tcsetattr``
        with EINVAL when none of the requested changes can be made: reopening a pty at 7E1
        once its speed already is 9600 (a 7E1 probe after an 8N1 one, a restarted driver)
        fails although there is no line whose settings could be wrong. On a pty only, the
        (ignored) speed is moved away and the open tried once more. On a real adapter the
        error stands: it did refuse the settings.
        """
        try:
            return self._serial_at_settings()
        except termios.error as exc:
            if not (exc.args and exc.args[0] == errno.EINVAL and is_pseudo_terminal(self.port)):
                raise
        _move_pty_speed(self.port, self.settings.baudrate)
        return self._serial_at_settings()

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(exc)
            return
        if not data:
            self._fail(OSError(errno.EIO, "port closed (unplugged)"))
            return
        self._buffer += data
        self._arrived.set()

    def _fail(self, exc: BaseException) -> None:
        self._error = _translate(self.port, exc)
        asyncio.get_running_loop().remove_reader(self._fd)
        self._arrived.set()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self._serial is None:
            raise DeviceUnavailable(f"{self.port}: not open")

    async def _wait(self, deadline: float) -> bool:
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        self._arrived.clear()
        try:
            async with asyncio.timeout(remaining):
                await self._arrived.wait()
        except TimeoutError:
            return False
        return True

    async def read_until(self, terminator: bytes, timeout: float) -> bytes | None:
        """Bytes up to and including ``terminator``, or ``None`` after ``timeout`` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            self._check()
            end = self._buffer.find(terminator)
            if end >= 0:
                end += len(terminator)
                frame = bytes(self._buffer[:end])
                del self._buffer[:end]
                return frame
            if not await self._wait(deadline):
                self._check()
                return None

    async def read_available(self, timeout: float) -> bytes:
        """Whatever arrives within ``timeout`` seconds (at least one read), maybe empty."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self._buffer:
            self._check()
            if not await self._wait(deadline):
                break
        self._check()
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def reset_input(self) -> None:
        """Forget bytes received so far (stale frames from a continuous-output device)."""
        self._buffer.clear()

    async def write(self, data: bytes) -> None:
        """Send ``data``; commands are a few bytes, so this never waits on the loop."""
        self._check()
        assert self._serial is not None
        try:
            self._serial.write(data)
        except (serial.SerialException, OSError) as exc:
            self._fail(exc)
            raise self._error from exc  # type: ignore[misc]

    async def close(self) -> None:
        """Close the port; safe to call twice."""
        if self._serial is None:
            return
        if self._error is None and self._fd >= 0:
            asyncio.get_running_loop().remove_reader(self._fd)
        ser, self._serial = self._serial, None
        try:
            await asyncio.to_thread(ser.close)
        except (serial.SerialException, OSError):
            pass  # the port is already gone; closing is best effort


def list_ports() -> list[tuple[str, str]]:
    """Serial ports the OS knows, as ``(path, description)``; skips the Pi 5 console."""
    from serial.tools import list_ports as lp

    found = []
    for info in lp.comports():
        # The Pi 5 exposes its debug console as ttyAMA10; it is never a scale or scanner.
        if info.device.endswith("ttyAMA10"):
            continue
        found.append((info.device, info.description or ""))
    return sorted(found)
