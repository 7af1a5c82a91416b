"""Turning a scanner's output into reads: terminators, prefix/suffix, AIM ids, duplicates.

Shared by the serial and the HID driver. A scanner sends, in this order::

    [prefix] [AIM symbology id] data [suffix] terminator

(the order Honeywell, Zebra and Datalogic use when all are switched on). ``LineFramer``
splits a byte stream at the terminator, ``unwrap`` strips the rest, and ``Deduplicator``
drops the second read of a code a scanner in presentation mode produces while the code is
still under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

from devices._bridge import EventQueue
from devices.base import Device, HealthStatus
from devices.errors import DeviceUnavailable
from devices.events import Scan
from devices.scanners.interpret import interpret

log = logging.getLogger("devices")

TERMINATORS: dict[str, str] = {"\r": "cr", "\r\n": "crlf", "\n": "lf", "\t": "tab"}
"""Terminators scanners can be set to, with the short names the CLI uses."""

# ISO/IEC 15424 code characters (biip.symbology.ISOSymbology); one modifier character follows.
# "Y" (system expansion) has a variable-length modifier and is not stripped.
_AIM_ID = re.compile(r"\][A-IK-UXZcdeopsz][0-9A-Za-z]")


@dataclass(frozen=True, slots=True)
class Unwrapped:
    """A read with everything but the data removed.

    Attributes:
        data: the barcode data.
        symbology: the AIM identifier (``"]C1"``) when the scanner sent one.
    """

    data: str
    symbology: str | None


def unwrap(frame: str, *, prefix: str = "", suffix: str = "", aim_ids: bool = True) -> Unwrapped:
    """Strip the configured prefix and suffix, then an AIM symbology identifier.

    A missing prefix or suffix is tolerated (a scanner set up by hand may not send them):
    the read is kept as it is rather than thrown away.

    Args:
        frame: one read without its terminator.
        prefix: what the scanner sends before each read ("" for none).
        suffix: what the scanner sends after each read, before the terminator.
        aim_ids: whether to look for a ``]Xn`` symbology identifier at the start.
    """
    if prefix and frame.startswith(prefix):
        frame = frame[len(prefix) :]
    if suffix and frame.endswith(suffix):
        frame = frame[: -len(suffix)]
    if aim_ids and _AIM_ID.match(frame):
        return Unwrapped(frame[3:], frame[:3])
    return Unwrapped(frame, None)


def decode(frame: bytes, encoding: str) -> str:
    """Bytes to text; undecodable bytes survive as surrogates so ``interpret`` can name them."""
    return frame.decode(encoding, errors="surrogateescape")


# Control bytes that are never barcode data at the start of a read: what a line picks up at
# power-up or through a loose cable. EOT, GS and RS are kept: ISO/IEC 15434 and GS1 use them.
_NOISE_CONTROLS = frozenset(range(0x20)) - {0x04, 0x1D, 0x1E} | {0x7F}


def strip_line_noise(frame: bytes, encoding: str) -> tuple[bytes, bytes]:
    """Split stray bytes off the start of a read: ``(noise, read)``.

    Noise is a run of control bytes (not EOT, GS or RS) and bytes that are not text in
    ``encoding`` where they stand (a UTF-8 continuation byte, 0xFF...). The cut is the
    earliest one after which the read is clean text, so a read beginning with a real
    non-ASCII character keeps it. A frame that is noise through and through is returned
    whole (``interpret`` reports it as a bad read), as is one with no noise.

    Args:
        frame: one read without its terminator.
        encoding: the scanner's text encoding.
    """
    head = 0
    while head < len(frame) and (frame[head] in _NOISE_CONTROLS or frame[head] >= 0x7F):
        head += 1
    if head == 0 or head == len(frame):
        return b"", frame
    for cut in range(head + 1):
        rest = frame[cut:]
        if rest[0] in _NOISE_CONTROLS:
            continue
        try:
            rest.decode(encoding)
        except UnicodeDecodeError:
            continue
        return frame[:cut], rest
    # Bad bytes further in: drop the head anyway, the read's own error names the rest.
    return frame[:head], frame[head:]


def check_gs_substitute(value: str | None) -> str | None:
    """Validate a GS stand-in: 1 to 4 printable characters, or ``None``.

    Raises:
        ValueError: when it is empty, too long or not printable.
    """
    if value is None:
        return None
    if not 1 <= len(value) <= 4 or not value.isprintable():
        raise ValueError("gs_substitute must be 1 to 4 printable characters, e.g. '^'")
    return value


class LineFramer:
    """Splits a byte stream into frames at a terminator, with a length cap.

    A line that grows past ``max_length`` without a terminator is discarded, and so is the
    rest of it up to the next terminator, with one log line: it is noise (a scanner in the
    wrong mode, a baud-rate mismatch), never a barcode.

    Args:
        name: the device name for log lines.
        terminator: the bytes ending each read.
        max_length: the longest frame accepted, without its terminator.
    """

    def __init__(self, name: str, terminator: bytes, max_length: int) -> None:
        self.name = name
        self.terminator = terminator
        self.max_length = max_length
        self.discarded = 0
        self._buffer = bytearray()
        self._skipping = False

    @property
    def pending(self) -> int:
        """Bytes received since the last terminator."""
        return len(self._buffer)

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add received bytes; returns the frames completed by them (terminators removed)."""
        self._buffer += chunk
        frames: list[bytes] = []
        while True:
            end = self._buffer.find(self.terminator)
            if end < 0:
                break
            frame = bytes(self._buffer[:end])
            del self._buffer[: end + len(self.terminator)]
            if self._skipping:
                self._skipping = False
                continue
            if len(frame) > self.max_length:
                self._discard(len(frame), "before its terminator")
                continue
            # A scanner sending CRLF to a port set for CR (or the reverse) leaves a stray
            # CR or LF at a frame's edge; neither is ever barcode data.
            frame = frame.strip(b"\r\n")
            if frame:
                frames.append(frame)
        if len(self._buffer) > self.max_length:
            if not self._skipping:
                self._discard(len(self._buffer), "without a terminator")
            self._skipping = True
            # Keep a tail as long as the terminator: it may be the start of a split one.
            del self._buffer[: len(self._buffer) - len(self.terminator) + 1]
        return frames

    def _discard(self, length: int, where: str) -> None:
        self.discarded += 1
        log.warning(
            "device %s: discarded a %d+ byte line %s (limit %d): wrong scanner mode or baud?",
            self.name,
            length,
            where,
            self.max_length,
        )

    def reset(self) -> bytes:
        """Forget any partial frame (the port went away); returns what was dropped."""
        partial = bytes(self._buffer)
        self._buffer.clear()
        self._skipping = False
        return partial


class Deduplicator:
    """Drops a repeat of the last reported code within a time window.

    Only the last *reported* read counts: ``A, B, A`` inside the window is three scans (a
    picker alternating items), ``A, A`` is one (a double read). The window starts at the
    reported read, so a code held under a presentation scanner comes through again once per
    window.

    Args:
        window_s: the window in seconds; 0 reports every read.
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.duplicates = 0
        self._last: tuple[str | None, str] | None = None
        self._last_at = 0.0

    def accept(self, key: tuple[str | None, str], at: float) -> bool:
        """Whether a read of ``key`` (symbology, data) at ``at`` is a new scan."""
        if self._last == key and at - self._last_at < self.window_s:
            self.duplicates += 1
            return False
        self._last, self._last_at = key, at
        return True


class ScannerSource(Protocol):
    """Where a scanner's input comes from (a serial port, an input device)."""

    @property
    def is_open(self) -> bool:
        """Whether the source is open and has not failed."""
        ...

    async def open(self) -> None:
        """Open; raises ``DeviceUnavailable``."""
        ...

    async def close(self) -> None:
        """Close; safe to call twice."""
        ...


class ScannerDevice(Device):
    """What serial and HID scanners share: lifecycle, de-duplication, interpretation.

    The source is opened at start (a missing one only makes health unavailable) and
    reopened with capped exponential backoff whenever it goes away; an unfinished read from
    before is dropped, never glued to the next. Subclasses set ``_source`` and
    ``_reopen_s`` and implement ``_read_once`` (read, then hand each unwrapped read to
    ``_deliver``) and ``_reset_framing``.

    Args:
        name: the device name.
        dedupe_window_s: see ``Deduplicator``.
        gs_substitute: passed to ``interpret``.
        clock: the monotonic clock reads are timed with.
    """

    def __init__(
        self,
        name: str,
        *,
        dedupe_window_s: float,
        gs_substitute: str | None,
        clock: Callable[[], float],
    ) -> None:
        super().__init__(name)
        self._clock = clock
        self._gs_substitute = gs_substitute
        self._queue: EventQueue[Scan] = EventQueue(name)
        self._dedupe = Deduplicator(dedupe_window_s)
        self._task: asyncio.Task[None] | None = None
        self.scans = 0
        self.bad_reads = 0
        self.partial_dropped = 0

    def events(self) -> AsyncIterator[Scan]:
        """The scans, in order, as an endless async iterator."""
        return self._queue.__aiter__()

    @property
    def duplicates(self) -> int:
        """How many repeated reads the de-duplication window dropped."""
        return self._dedupe.duplicates

    def _deliver(self, read: Unwrapped, at: float, error: str | None = None) -> Scan | None:
        """Interpret a read and queue it, unless it repeats the last one; ``error`` overrides."""
        if not self._dedupe.accept((read.symbology, read.data), at):
            return None
        scan = interpret(
            self.name, read.data, read.symbology, at=at, gs_substitute=self._gs_substitute
        )
        if error is not None:
            scan = replace(scan, gtin=None, sscc=None, fields={}, error=error)
        self.scans += 1
        if scan.error is not None:
            self.bad_reads += 1
            log.warning("device %s: bad read %r: %s", self.name, scan.text, scan.error)
        self._queue.put(scan)
        return scan

    _source: ScannerSource
    _reopen_s: tuple[float, float]
    _unit = "bytes"

    async def _read_once(self) -> None:
        """Read what the source has and deliver it; raises ``DeviceUnavailable``."""
        raise NotImplementedError

    def _reset_framing(self) -> int:
        """Forget a partial read; returns how much (bytes or characters) was dropped."""
        raise NotImplementedError

    async def _open(self) -> None:
        try:
            await self._source.open()
        except DeviceUnavailable as exc:
            self._set_health(HealthStatus.UNAVAILABLE, str(exc))
        else:
            self._opened()
        self._start_reader(self._run())

    async def _close(self) -> None:
        await self._stop_reader()
        await self._source.close()

    def _opened(self) -> None:
        self._reset_framing()
        self._set_health(HealthStatus.OK)

    async def _run(self) -> None:
        delays = backoff(*self._reopen_s)
        while True:
            if not self._source.is_open:
                await asyncio.sleep(next(delays))
                try:
                    await self._source.close()
                    await self._source.open()
                except DeviceUnavailable as exc:
                    self._set_health(HealthStatus.UNAVAILABLE, str(exc))
                    continue
                self._opened()
                delays = backoff(*self._reopen_s)
            try:
                await self._read_once()
            except DeviceUnavailable as exc:
                self._lost(exc)

    def _lost(self, exc: DeviceUnavailable) -> None:
        dropped = self._reset_framing()
        if dropped:
            self.partial_dropped += 1
            log.warning(
                "device %s: dropped %d %s of an unfinished read when it went away",
                self.name,
                dropped,
                self._unit,
            )
        self._set_health(HealthStatus.UNAVAILABLE, str(exc))

    def _start_reader(self, reader: Coroutine[Any, Any, None]) -> None:
        self._queue.bind(asyncio.get_running_loop())
        self._task = asyncio.create_task(reader, name=f"scanner {self.name}")
        self._task.add_done_callback(self._reader_ended)

    async def _stop_reader(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _reader_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # A bug, not bad input: say so loudly and let the node see a fault.
            log.error("device %s: reader stopped: %r", self.name, exc, exc_info=exc)
            self._set_health(HealthStatus.FAULT, f"reader stopped: {exc!r}")


def backoff(first_s: float, max_s: float) -> Iterator[float]:
    """Reopen delays: ``first_s`` doubling up to ``max_s``, forever."""
    delay = first_s
    while True:
        yield delay
        delay = min(delay * 2, max_s)
