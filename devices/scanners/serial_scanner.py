"""Barcode scanners on RS-232 or USB-CDC ("USB COM port" / "USB serial") mode.

Serial mode is the one to choose for GS1 codes: bytes arrive verbatim, including the GS
(0x1D) separators that a keyboard wedge cannot type. See ``SerialScanner`` for set-up.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, field_validator

from devices.backends.serial import SerialPort, SerialSettings
from devices.config import DeviceConfig
from devices.context import DeviceContext
from devices.ptysim import PtyEndpoint
from devices.scanners.framing import (
    TERMINATORS,
    LineFramer,
    ScannerDevice,
    check_gs_substitute,
    decode,
    strip_line_noise,
    unwrap,
)
from devices.scanners.interpret import MAX_TEXT_LENGTH
from devices.sim import Simulator

log = logging.getLogger("devices")

_READ_SAFETY_TIMEOUT_S = 30.0  # read_available returns empty after this; the loop just reads again


class SerialScannerConfig(DeviceConfig):
    """A scanner on a serial port.

    Attributes:
        port: the port path; prefer a stable ``/dev/serial/by-id/...`` name.
        baudrate: line speed the scanner is set to.
        bytesize: data bits.
        parity: ``N``, ``E`` or ``O``.
        stopbits: 1 or 2.
        terminator: what ends each read: CR (the default), CR LF, LF or TAB.
        prefix: text the scanner sends before each read, stripped ("" for none).
        suffix: text the scanner sends after each read, before the terminator, stripped.
        aim_ids: detect and strip AIM symbology identifiers (``]C1``) into ``Scan.symbology``.
        gs_substitute: a printable stand-in the scanner sends for GS, read as GS in GS1 data.
        encoding: how bytes become text (``utf-8``, or ``latin-1`` for older scanners).
        dedupe_window_s: the same code read again within this many seconds is one scan.
        max_length: longest read in bytes; a longer line is discarded with one log line.
        reopen_min_s: first wait before reopening a vanished port (doubles each try).
        reopen_max_s: longest wait between reopen attempts.
    """

    kind: Literal["serial_scanner"]
    port: str = Field(min_length=1)
    baudrate: int = Field(default=9600, gt=0)
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    terminator: Literal["\r", "\r\n", "\n", "\t"] = "\r"
    prefix: str = ""
    suffix: str = ""
    aim_ids: bool = True
    gs_substitute: str | None = None
    encoding: Literal["utf-8", "latin-1"] = "utf-8"
    dedupe_window_s: float = Field(default=1.0, ge=0, le=60)
    max_length: int = Field(default=512, ge=16, le=MAX_TEXT_LENGTH)
    reopen_min_s: float = Field(default=0.5, gt=0)
    reopen_max_s: float = Field(default=10.0, gt=0)

    _check_gs = field_validator("gs_substitute")(check_gs_substitute)

    def claims(self) -> list[str]:
        """The serial port, held exclusively."""
        return [f"serial:{self.port}"]

    def settings(self) -> SerialSettings:
        """The line settings for ``SerialPort``."""
        return SerialSettings(self.baudrate, self.bytesize, self.parity, self.stopbits)


class SerialScanner(ScannerDevice):
    """A barcode scanner in serial (RS-232 or USB-CDC) mode.

    Set-up: put the scanner in USB-CDC / "USB COM port emulation" mode (or wire RS-232 at
    9600 8N1), with a CR suffix, and preferably with AIM symbology identifiers on: with them
    a GS1-128 read (``]C1``) is told apart from plain Code 128. Point ``port`` at the
    ``/dev/serial/by-id/...`` link so a replug keeps its name; the service user must be in
    the ``dialout`` group. If the scanner adds a prefix or suffix, configure the same here.

    The driver reads in a task between ``open()`` and ``close()``. A vanished port (cable
    pulled) sets health ``unavailable``; the driver reopens it with backoff and drops the
    half-received read from before the unplug.

    Example::

        config = SerialScannerConfig(name="scan1", kind="serial_scanner", port="/dev/ttyACM0")
        async with SerialScanner.from_config(config, DeviceContext()) as scanner:
            async for scan in scanner.events():
                print(scan.text, scan.gtin, scan.error)

    Args:
        config: the validated config.
        port: the serial port backend (not opened yet).
        clock: the monotonic clock reads are timed and de-duplicated with.
    """

    def __init__(
        self,
        config: SerialScannerConfig,
        port: SerialPort,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            config.name,
            dedupe_window_s=config.dedupe_window_s,
            gs_substitute=config.gs_substitute,
            clock=clock,
        )
        self.config = config
        self._port = port
        self._source = port
        self._reopen_s = (config.reopen_min_s, config.reopen_max_s)
        self._framer = LineFramer(config.name, config.terminator.encode("ascii"), config.max_length)
        #: Reads that arrived with stray bytes before them (power-up, a loose cable).
        self.line_noise = 0

    @classmethod
    def from_config(cls, config: SerialScannerConfig, context: DeviceContext) -> Self:
        """Build the driver for ``config`` on a real serial port."""
        return cls(config, SerialPort(config.port, config.settings()))

    def describe(self) -> str:
        """Port, line settings and framing, as logged at start."""
        c = self.config
        return (
            f"serial scanner {self.name} on {c.port} "
            f"({c.baudrate} {c.bytesize}{c.parity}{c.stopbits}, "
            f"terminator {TERMINATORS[c.terminator]})"
        )

    @property
    def discarded(self) -> int:
        """How many over-long lines were discarded."""
        return self._framer.discarded

    async def _read_once(self) -> None:
        chunk = await self._port.read_available(_READ_SAFETY_TIMEOUT_S)
        if chunk:
            at = self._clock()
            for frame in self._framer.feed(chunk):
                self._frame(frame, at)

    def _reset_framing(self) -> int:
        return len(self._framer.reset())

    def _frame(self, frame: bytes, at: float) -> None:
        c = self.config
        noise, frame = strip_line_noise(frame, c.encoding)
        if noise:
            self.line_noise += 1
            log.warning(
                "device %s: ignored %d byte(s) of line noise before a read: %r",
                self.name,
                len(noise),
                noise[:16],
            )
        text = decode(frame, c.encoding)
        self._deliver(unwrap(text, prefix=c.prefix, suffix=c.suffix, aim_ids=c.aim_ids), at)


class SerialScannerSimulator(Simulator):
    """A serial scanner on a pseudo-terminal, sending what a configured scanner would.

    A scan is sent as ``prefix + symbology + code + suffix + terminator`` using the device's
    config, so the driver's real framing runs.

    Control actions:
        ``scan`` {code: str, symbology?: str}: one read (``code`` may contain GS, 0x1D).
        ``garbage`` {hex: str}: raw bytes, e.g. ``"07ff0d"``, or half a frame.
        ``unplug`` {}: the port vanishes.
        ``replug`` {}: the port comes back under the same path.

    Args:
        config: the scanner's config.
        context: the node's device context.
        link_dir: where the pty link ``<name>.tty`` is made (a fresh temporary directory by
            default); also a public attribute the node may set before ``start()``.
        link: the exact link path instead (``zone-agent sim scanner --link``).
    """

    def __init__(
        self,
        config: DeviceConfig,
        context: DeviceContext,
        *,
        link_dir: str | Path | None = None,
        link: str | Path | None = None,
    ) -> None:
        super().__init__(config, context)
        if not isinstance(config, SerialScannerConfig):
            raise TypeError(f"expected a SerialScannerConfig, got {type(config).__name__}")
        self.scanner_config = config
        self.link_dir = Path(link_dir) if link_dir is not None else None
        self._link = Path(link) if link is not None else None
        self._endpoint: PtyEndpoint | None = None
        self.scans_sent = 0
        self.last: str | None = None

    @property
    def link(self) -> Path:
        """The path the driver opens."""
        if self._link is not None:
            return self._link
        if self.link_dir is None:
            self.link_dir = Path(tempfile.mkdtemp(prefix="zone-agent-scanner-"))
        return Path(self.link_dir) / f"{self.config.name}.tty"

    async def start(self) -> None:
        """Create the pty and its link."""
        self._endpoint = PtyEndpoint(self.link, lambda _data: None)
        self._endpoint.open()

    async def stop(self) -> None:
        """Remove the pty; safe to call twice."""
        if self._endpoint is not None:
            self._endpoint.close()
            self._endpoint = None

    def patched_config(self) -> SerialScannerConfig:
        """The config with ``port`` pointing at the pty link."""
        return self.scanner_config.model_copy(update={"port": str(self.link)})

    @property
    def plugged(self) -> bool:
        """Whether the simulated cable is in."""
        return self._endpoint is not None and self._endpoint.plugged

    def send_scan(self, code: str, symbology: str | None = None) -> bool:
        """Send one read; returns ``False`` (nothing sent) while unplugged."""
        c = self.scanner_config
        frame = c.prefix + (symbology or "") + code + c.suffix + c.terminator
        if not self.plugged:
            return False
        assert self._endpoint is not None
        self._endpoint.write(frame.encode(c.encoding, errors="surrogateescape"))
        self.scans_sent += 1
        self.last = code
        return True

    async def control(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        """Act on the simulated scanner; see the class docstring for the actions."""
        if action == "scan":
            code = args.get("code")
            symbology = args.get("symbology")
            if not isinstance(code, str) or not code:
                raise ValueError("scan needs 'code', a non-empty string")
            if symbology is not None and not isinstance(symbology, str):
                raise ValueError("'symbology' must be a string such as ']C1'")
            return {"sent": self.send_scan(code, symbology)}
        if action == "garbage":
            raw = args.get("hex")
            if not isinstance(raw, str):
                raise ValueError("garbage needs 'hex', a string of hex digits")
            data = bytes.fromhex(raw)
            if self.plugged:
                assert self._endpoint is not None
                self._endpoint.write(data)
            return {"sent": self.plugged}
        if action == "unplug":
            if self._endpoint is not None:
                self._endpoint.unplug()
            return {}
        if action == "replug":
            if self._endpoint is None:
                self._endpoint = PtyEndpoint(self.link, lambda _data: None)
            self._endpoint.replug()
            return {}
        raise ValueError(f"unknown action {action!r} (scan, garbage, unplug, replug)")

    def state(self) -> dict[str, Any]:
        """``{"plugged": bool, "scans_sent": int, "last": str | None}``."""
        return {"plugged": self.plugged, "scans_sent": self.scans_sent, "last": self.last}


CONFIG = SerialScannerConfig
DRIVER = SerialScanner
SIMULATOR = SerialScannerSimulator
