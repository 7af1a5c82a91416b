"""SPI output through spidev (imported lazily), with a fake that records every frame.

Used for WS2812 strips: rpi_ws281x (PWM/PCM DMA) does not run on a Pi 5 (rpi_ws281x
issue 528), while the SPI controller does on every Pi. spidev is only installed with the
``pi`` extra, so it is imported when a real bus is opened.

``FakeSpiBus`` objects are kept per ``(bus, device)`` so a simulator started before the
driver reads exactly the frames the driver wrote (``fake_bus``).
"""

from __future__ import annotations

import errno
import threading
import time
from typing import Any, Protocol

from devices.errors import DeviceUnavailable


class SpiBus(Protocol):
    """A write-only SPI device; methods block, call them through ``asyncio.to_thread``."""

    def open(self) -> None:
        """Open the bus (raises ``DeviceUnavailable``)."""

    def write(self, data: bytes) -> None:
        """Clock ``data`` out on MOSI (raises ``DeviceUnavailable``)."""

    def close(self) -> None:
        """Release the bus; safe to call twice."""


def permission_reason(exc: PermissionError) -> str:
    """What a refused open of a spidev node means, by its errno.

    The file's permission bits refuse with EACCES: the user lacks the group. A cgroup
    device filter (systemd's ``DevicePolicy=closed`` without ``DeviceAllow=char-spi``)
    refuses with EPERM, whatever the groups: adding one would not help.
    """
    if exc.errno == errno.EPERM:
        return (
            "blocked by the service's device policy (the unit needs DeviceAllow=char-spi rw; "
            "the group is not the problem)"
        )
    return "permission denied (add the service user to the 'spi' group)"


class SpidevBus:
    """``/dev/spidevB.D`` through spidev, mode 0, at ``speed_hz``.

    Args:
        bus: SPI bus (0 on the 40-pin header: MOSI GPIO 10, SCLK GPIO 11).
        device: chip select (0 = CE0 on GPIO 8).
        speed_hz: clock rate.
    """

    def __init__(self, bus: int, device: int, speed_hz: int) -> None:
        self.bus, self.device, self.speed_hz = bus, device, speed_hz
        self._spi: Any = None

    @property
    def path(self) -> str:
        """The device node."""
        return f"/dev/spidev{self.bus}.{self.device}"

    def open(self) -> None:
        """Open the device node; says how to fix the usual mistakes."""
        try:
            import spidev
        except ImportError as exc:
            raise DeviceUnavailable(
                f"{self.path}: spidev is not installed (pip install 'zone-agent[pi]')"
            ) from exc
        spi = spidev.SpiDev()
        try:
            spi.open(self.bus, self.device)
            spi.mode = 0
            spi.max_speed_hz = self.speed_hz
        except FileNotFoundError as exc:
            raise DeviceUnavailable(
                f"{self.path}: no such device (enable SPI: dtparam=spi=on in config.txt)"
            ) from exc
        except PermissionError as exc:
            raise DeviceUnavailable(f"{self.path}: {permission_reason(exc)}") from exc
        except OSError as exc:
            raise DeviceUnavailable(f"{self.path}: {exc}") from exc
        self._spi = spi

    def write(self, data: bytes) -> None:
        """Send ``data`` (writebytes2 splits it into transfers of the driver's bufsiz)."""
        if self._spi is None:
            raise DeviceUnavailable(f"{self.path}: not open")
        try:
            self._spi.writebytes2(data)
        except OSError as exc:
            raise DeviceUnavailable(f"{self.path}: write failed: {exc}") from exc

    def close(self) -> None:
        """Close the device node."""
        spi, self._spi = self._spi, None
        if spi is not None:
            spi.close()


class FakeSpiBus:
    """Records frames instead of sending them; ``frames`` holds ``(monotonic, bytes)``."""

    def __init__(self, bus: int = 0, device: int = 0) -> None:
        self.bus, self.device = bus, device
        self.frames: list[tuple[float, bytes]] = []
        self.is_open = False
        self.fail_with: str | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        """Open (fails with ``DeviceUnavailable`` while ``fail_with`` is set)."""
        if self.fail_with is not None:
            raise DeviceUnavailable(f"/dev/spidev{self.bus}.{self.device}: {self.fail_with}")
        self.is_open = True

    def write(self, data: bytes) -> None:
        """Record one frame."""
        if not self.is_open:
            raise DeviceUnavailable(f"/dev/spidev{self.bus}.{self.device}: not open")
        with self._lock:
            self.frames.append((time.monotonic(), bytes(data)))

    def close(self) -> None:
        """Mark closed."""
        self.is_open = False

    def history(self) -> list[tuple[float, bytes]]:
        """A copy of the frames so far (safe from any thread)."""
        with self._lock:
            return list(self.frames)


_FAKES: dict[tuple[int, int], FakeSpiBus] = {}


def fake_bus(bus: int, device: int, *, fresh: bool = False) -> FakeSpiBus:
    """The process-wide fake of ``(bus, device)``; ``fresh`` replaces it with a new one."""
    key = (bus, device)
    if fresh or key not in _FAKES:
        _FAKES[key] = FakeSpiBus(bus, device)
    return _FAKES[key]


def spi_bus(bus: int, device: int, speed_hz: int, *, simulate: bool) -> SpiBus:
    """An unopened SPI bus: the real one, or its fake when the node is simulated."""
    if simulate:
        return fake_bus(bus, device)
    return SpidevBus(bus, device, speed_hz)
