"""What every serial scale driver shares: config, errors, request lock, reconnects, polling.

A protocol module (``mt_sics``, ``toledo_8217``, ``nci``) subclasses :class:`Scale` and says
three things: which command asks for a weight, how a reply frame parses into a
:class:`Reading`, and how tare and zero are done. Everything else lives here:

* one ``asyncio.Lock`` serialises requests on the port, so the live-weight poller and a
  workflow's ``read_stable()`` never interleave their bytes;
* input is discarded before each request, so a stale frame is never taken for the answer;
* a frame that is not the protocol is counted (``bad_frames``), logged on one line and
  skipped; line noise glued to the start of a reply (power-up, a loose cable) is cut off,
  counted and logged the same way, and the reply behind it is read;
* the port vanishing (USB unplugged) makes health ``unavailable``; a watcher reopens the port
  with capped exponential backoff and health returns to ``ok``; no reading is invented or
  replayed meanwhile;
* weights are normalised to grams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Literal, Self, TypeVar

from pydantic import Field

from devices.backends.serial import Parity, SerialPort, SerialSettings
from devices.base import SCALE_OVERLOAD, SCALE_UNDERLOAD, Device, HealthStatus
from devices.config import DeviceConfig
from devices.context import DeviceContext
from devices.errors import (
    DeviceError,
    DeviceFault,
    DeviceProtocolError,
    DeviceUnavailable,
)
from devices.events import Weight

log = logging.getLogger("devices.scales")

T = TypeVar("T")

#: Grams per unit, for the unit names scales print (lower-cased before lookup).
GRAMS_PER_UNIT: dict[str, float] = {
    "g": 1.0,
    "mg": 0.001,
    "kg": 1000.0,
    "lb": 453.59237,
    "lbs": 453.59237,
    "oz": 28.349523125,
}

# How often the watcher looks at the port while nothing is being asked: a pty or USB port
# that vanishes is noticed by the serial backend, which has no callback to tell us.
_PORT_CHECK_S = 0.2


def to_grams(value: float, unit: str) -> float:
    """Convert ``value`` in ``unit`` (g, mg, kg, lb, oz; any case) to grams.

    Raises:
        DeviceProtocolError: the unit is not one a scale should print.
    """
    factor = GRAMS_PER_UNIT.get(unit.strip().lower())
    if factor is None:
        raise DeviceProtocolError(f"unknown weight unit {unit!r}")
    # Milligram resolution: float noise from unit factors never shows up in comparisons.
    return round(value * factor, 3)


def reply_behind_noise(
    frame: bytes, parse: Callable[[bytes], T | None], starts: bytes, end_length: int
) -> tuple[int, T] | None:
    """Where in ``frame`` a reply ``parse`` accepts begins behind line noise, and the reply.

    After a power-up, or through a loose cable, stray bytes arrive with no terminator
    between them and the reply. Each position after the first where a reply can begin (a
    byte in ``starts``) is tried in turn, so the earliest complete reply wins. The driver
    and the probe both use this, so the probe is exactly as tolerant as a weight request.

    Args:
        frame: one frame, ending with the protocol's terminator.
        parse: the frame parser; ``None`` for a frame that is not a reply.
        starts: the bytes a reply can begin with.
        end_length: the length of the terminator (a reply is longer than it).
    """
    for start in range(1, len(frame) - end_length):
        if frame[start] not in starts:
            continue
        result = parse(frame[start:])
        if result is not None:
            return start, result
    return None


class ScaleConfig(DeviceConfig):
    """Settings every serial scale has (protocol modules subclass it).

    Attributes:
        port: the serial device (prefer a stable ``/dev/serial/by-id/...`` path).
        baudrate, bytesize, parity, stopbits: line settings; must match the scale's menu.
        poll_interval: seconds between live-weight polls for ``events()``; 0 disables.
        reply_timeout: seconds to wait for the reply to one weight request.
        command_timeout: seconds to wait for the reply to tare/zero (scales wait for
            stability before they answer these).
        retry_interval: seconds between weight requests while waiting for stability.
        reconnect_min_s, reconnect_max_s: backoff bounds for reopening a vanished port.
    """

    port: str
    baudrate: int = Field(default=9600, gt=0)
    bytesize: Literal[7, 8] = 8
    parity: Parity = "N"
    stopbits: Literal[1, 2] = 1
    poll_interval: float = Field(default=0.25, ge=0)
    reply_timeout: float = Field(default=1.0, gt=0)
    command_timeout: float = Field(default=5.0, gt=0)
    retry_interval: float = Field(default=0.1, gt=0)
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=10.0, gt=0)

    def claims(self) -> list[str]:
        """The serial port, held exclusively."""
        return [f"serial:{self.port}"]

    def serial_settings(self) -> SerialSettings:
        """The line settings as the serial backend takes them."""
        return SerialSettings(
            baudrate=self.baudrate,
            bytesize=self.bytesize,
            parity=self.parity,
            stopbits=self.stopbits,
        )


def next_backoff(delay: float, ceiling: float) -> float:
    """The wait after ``delay`` failed: doubled, at most ``ceiling`` (0.5, 1, 2, ... 10)."""
    return min(delay * 2, ceiling)


def describe_settings(settings: SerialSettings) -> str:
    """Line settings the way installers write them: ``9600 7E1``."""
    return f"{settings.baudrate} {settings.bytesize}{settings.parity}{settings.stopbits}"


class ScaleFault(DeviceFault):
    """The scale reports a condition a person must clear (hardware error, overload...)."""


class ScaleOverload(ScaleFault):
    """The load is above the scale's capacity."""


class ScaleUnderload(ScaleFault):
    """The reading is below zero beyond what the scale can show (platform lifted, drift)."""


class ScaleNotStable(DeviceError):
    """The scale did not report a stable weight (in motion, or busy).

    Args:
        message: what happened.
        last: the last unstable reading, when the protocol sends weights while moving.
    """

    def __init__(self, message: str, last: Weight | None = None) -> None:
        super().__init__(message)
        self.last = last


class ScaleCommandUnsupported(DeviceError):
    """The protocol (or this scale's configuration) has no such command."""


class ScaleCommandRefused(DeviceError):
    """The scale answered but did not carry out the command (out of range, wrong mode)."""


class ScaleErrorReply(DeviceProtocolError):
    """The scale answered with an error code (MT-SICS ``ES``/``ET``/``EL``, NCI ``?``).

    Args:
        code: the error code as the scale sent it.
        message: what it means.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ScaleNoReply(DeviceUnavailable):
    """The port is open but the scale sent nothing (off, wrong cable, baud rate or parity)."""


class Condition(StrEnum):
    """What a reply to a weight request says."""

    WEIGHT = "weight"  # a number is present (stable or not)
    MOTION = "motion"  # in motion and the protocol sends no number while moving
    BUSY = "busy"  # the scale cannot answer now (MT-SICS "S I")
    OVERLOAD = "overload"
    UNDERLOAD = "underload"


@dataclass(frozen=True, slots=True)
class Reading:
    """One parsed reply to a weight request, before it becomes a ``Weight``.

    Attributes:
        condition: what the reply says.
        grams: the weight in grams when ``condition`` is ``WEIGHT``.
        stable: the scale said the weight is stable.
        net: a tare is active.
    """

    condition: Condition
    grams: float | None = None
    stable: bool = False
    net: bool = False


class Scale(Device):
    """Base driver of a serial scale; protocol modules fill in the wire details.

    Args:
        config: the scale's config.
        port: the serial port to talk through (not yet open; the driver opens it).

    Subclasses set ``protocol``, ``frame_end`` and ``default_settings`` and implement
    ``_weight_request``, ``_parse_weight`` and whichever of ``_tare``/``_zero``/``_clear_tare``
    the protocol has.
    """

    protocol: ClassVar[str] = "scale"
    frame_end: ClassVar[bytes] = b"\r\n"
    #: Bytes a reply frame can begin with: where a reply is looked for behind line noise.
    frame_starts: ClassVar[bytes] = b""
    default_settings: ClassVar[SerialSettings] = SerialSettings()

    def __init__(self, config: ScaleConfig, port: SerialPort) -> None:
        super().__init__(config.name)
        self.config = config
        self.port = port
        self.bad_frames = 0
        self._lock = asyncio.Lock()
        self._lost = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, config: ScaleConfig, context: DeviceContext) -> Self:
        """Build the driver on a serial port with the configured line settings."""
        del context  # a serial scale needs nothing from the node besides its port
        return cls(config, SerialPort(config.port, config.serial_settings()))

    def describe(self) -> str:
        """Protocol, port and line settings."""
        return (
            f"{type(self).__name__} {self.name}: {self.protocol} on {self.config.port} "
            f"({describe_settings(self.port.settings)})"
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def _open_port(self) -> None:
        await self.port.open()

    async def _open(self) -> None:
        try:
            await self._open_port()
        except DeviceUnavailable as exc:
            self._set_health(HealthStatus.UNAVAILABLE, str(exc))
        else:
            self._set_health(HealthStatus.OK)
        self._watcher = asyncio.create_task(self._watch(), name=f"scale-{self.name}-watch")

    async def _close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        async with self._lock:
            await self.port.close()

    async def _watch(self) -> None:
        """Notice a vanished port and reopen it with capped exponential backoff."""
        cfg = self.config
        delay = cfg.reconnect_min_s
        while True:
            if self.port.is_open:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_PORT_CHECK_S):
                        await self._lost.wait()
                self._lost.clear()
                if self.port.is_open:
                    continue
                self._set_health(HealthStatus.UNAVAILABLE, await self._port_failure())
                async with self._lock:
                    await self.port.close()
                delay = cfg.reconnect_min_s
            await asyncio.sleep(delay)
            try:
                async with self._lock:
                    await self._open_port()
            except DeviceUnavailable as exc:
                self._set_health(HealthStatus.UNAVAILABLE, str(exc))
                delay = next_backoff(delay, cfg.reconnect_max_s)
                continue
            log.info("device %s: %s reopened", self.name, self.config.port)
            self._set_health(HealthStatus.OK)
            delay = cfg.reconnect_min_s

    async def _port_failure(self) -> str:
        """Why the port failed, as the serial backend words it."""
        try:
            await self.port.read_available(0)
        except DeviceUnavailable as exc:
            return str(exc)
        return f"{self.config.port}: port closed"

    # -- requests ---------------------------------------------------------------------------

    def _expected(self) -> str:
        configured = describe_settings(self.port.settings)
        usual = describe_settings(self.default_settings)
        if configured == usual:
            return f"{self.protocol} at {configured}"
        return f"{self.protocol} configured at {configured}; this protocol usually runs at {usual}"

    def _bad_frame(self, data: bytes, why: str) -> None:
        self.bad_frames += 1
        shown = data if len(data) <= 48 else data[:48] + b"..."
        log.warning("device %s: ignored %s on %s: %r", self.name, why, self.config.port, shown)

    async def _exchange(
        self,
        command: bytes,
        parse: Callable[[bytes], T | None],
        wait_s: float,
        what: str,
    ) -> T:
        """Send ``command`` and return the first reply frame ``parse`` accepts.

        ``parse`` returns ``None`` for a frame that is not an answer (counted, skipped) and
        may raise for an answer that reports an error.
        """
        async with self._lock:
            if not self.port.is_open:
                raise DeviceUnavailable(self.health.detail or f"{self.config.port}: not open")
            try:
                self.port.reset_input()
                await self.port.write(command)
                return await self._collect(parse, wait_s, what)
            except ScaleNoReply as exc:
                self._set_health(HealthStatus.UNAVAILABLE, str(exc))
                raise
            except DeviceUnavailable as exc:
                self._set_health(HealthStatus.UNAVAILABLE, str(exc))
                self._lost.set()
                raise
            except (ScaleFault, DeviceProtocolError) as exc:
                # Nonsense on the line is a fault a person must look at (wrong protocol,
                # baud rate or parity; a failing scale): the screen and the birth show why.
                self._set_health(HealthStatus.FAULT, str(exc))
                raise

    async def _collect(self, parse: Callable[[bytes], T | None], wait_s: float, what: str) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        rejected = 0
        while True:
            frame = await self.port.read_until(self.frame_end, max(deadline - loop.time(), 0.0))
            if frame is None:
                leftover = await self.port.read_available(0)
                if leftover:
                    self._bad_frame(leftover, "a partial frame")
                    rejected += 1
                if rejected:
                    raise DeviceProtocolError(
                        f"{self.config.port}: {rejected} unrecognised frame(s) and no {what} "
                        f"reply within {wait_s:.3g} s (expected {self._expected()}; check the "
                        "protocol, baud rate and parity)"
                    )
                raise ScaleNoReply(
                    f"{self.config.port}: no reply to the {what} request within {wait_s:.3g} s "
                    f"(expected {self._expected()}; check cable, baud rate and parity)"
                )
            result = parse(frame)
            if result is None:
                result = self._behind_noise(frame, parse)
            if result is None:
                self._bad_frame(frame, f"a frame that is not a {self.protocol} {what} reply")
                rejected += 1
                continue
            return result

    def _behind_noise(self, frame: bytes, parse: Callable[[bytes], T | None]) -> T | None:
        """The reply behind line noise glued to its start, or ``None`` (``reply_behind_noise``).

        The bytes before the reply are counted and logged as noise. Whatever ``parse`` raises
        for a reply found this way (an error code) is raised as for a clean one.
        """
        found = reply_behind_noise(frame, parse, self.frame_starts, len(self.frame_end))
        if found is None:
            return None
        start, result = found
        self._bad_frame(frame[:start], "line noise before a reply")
        return result

    def _to_weight(self, reading: Reading) -> Weight:
        match reading.condition:
            case Condition.OVERLOAD:
                message = f"{self.name}: overload (load above capacity)"
                self._set_health(HealthStatus.FAULT, SCALE_OVERLOAD)
                raise ScaleOverload(message)
            case Condition.UNDERLOAD:
                message = f"{self.name}: underload (below zero: platform lifted or needs zeroing)"
                self._set_health(HealthStatus.FAULT, SCALE_UNDERLOAD)
                raise ScaleUnderload(message)
        self._set_health(HealthStatus.OK)
        if reading.condition is Condition.MOTION:
            raise ScaleNotStable(f"{self.name}: in motion (the scale sends no weight meanwhile)")
        if reading.condition is Condition.BUSY or reading.grams is None:
            raise ScaleNotStable(f"{self.name}: the scale is busy and sent no weight")
        return Weight(
            device=self.name,
            grams=reading.grams,
            stable=reading.stable,
            net=reading.net,
            at=time.monotonic(),
        )

    # -- public API -------------------------------------------------------------------------

    async def read(self, timeout: float = 1.0) -> Weight:
        """Ask for one reading, stable or not.

        Raises:
            ScaleOverload, ScaleUnderload: the scale reports the load out of range.
            ScaleNotStable: the scale answered without a number (in motion, busy).
            ScaleNoReply: nothing answered within ``timeout``.
            DeviceUnavailable: the port is gone (the driver is reopening it).
            DeviceProtocolError: only garbage or an error code came back.
        """
        reading = await self._exchange(
            self._weight_request(), self._parse_weight, timeout, "weight"
        )
        return self._to_weight(reading)

    async def read_stable(self, timeout: float = 5.0) -> Weight:
        """Keep asking until the scale itself reports a stable weight.

        Raises:
            ScaleOverload, ScaleUnderload: as soon as the scale reports one.
            ScaleNotStable: only unstable readings arrived within ``timeout`` (``last`` holds
                the last one when the protocol sends weights in motion).
            DeviceProtocolError: only garbage or error codes arrived.
            DeviceUnavailable: nothing answered, or the port is gone.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_unstable: Weight | None = None
        not_stable: ScaleNotStable | None = None
        nonsense: DeviceProtocolError | None = None
        silence: ScaleNoReply | None = None
        while (remaining := deadline - loop.time()) > 0:
            try:
                weight = await self.read(min(remaining, self.config.reply_timeout))
            except ScaleNotStable as exc:
                not_stable = exc
            except ScaleNoReply as exc:
                silence = exc
            except DeviceProtocolError as exc:
                nonsense = exc
            else:
                if weight.stable:
                    return weight
                last_unstable = weight
            pause = min(self.config.retry_interval, deadline - loop.time())
            if pause > 0:
                await asyncio.sleep(pause)
        if last_unstable is not None or not_stable is not None:
            shown = f" (last {last_unstable.grams:g} g)" if last_unstable else ""
            raise ScaleNotStable(
                f"{self.name}: no stable weight within {timeout:.3g} s{shown}", last=last_unstable
            )
        if nonsense is not None:
            raise nonsense
        if silence is not None:
            raise silence
        raise ScaleNoReply(f"{self.config.port}: no reply within {timeout:.3g} s")

    async def tare(self) -> None:
        """Tare the current load (the scale then reports net weights).

        Raises:
            ScaleCommandUnsupported: the protocol has no tare command.
            ScaleNotStable: the scale refused because it is in motion.
            ScaleCommandRefused: the scale refused for another reason (range, settings).
        """
        await self._tare()

    async def clear_tare(self) -> None:
        """Clear the tare (back to gross weights); same errors as ``tare``."""
        await self._clear_tare()

    async def zero(self) -> None:
        """Set the empty platform as zero; same errors as ``tare``."""
        await self._zero()

    async def events(self) -> AsyncIterator[Weight]:
        """Live weight for a packer's display: poll every ``poll_interval`` seconds.

        Yields a reading only when it differs from the last one yielded (grams, stable, net),
        or when it is the first after a failed poll. Failed polls (in motion without a number,
        overload, port gone, garbage) yield nothing: health and the log tell why. With
        ``poll_interval = 0`` the iterator ends at once (the node's event pump then idles).
        """
        interval = self.config.poll_interval
        if interval <= 0:
            log.info("device %s: live weight is off (poll_interval = 0)", self.name)
            return
        last: tuple[float, bool, bool] | None = None
        while True:
            try:
                weight = await self.read(self.config.reply_timeout)
            except DeviceError:
                last = None
            else:
                key = (weight.grams, weight.stable, weight.net)
                if key != last:
                    last = key
                    yield weight
            await asyncio.sleep(interval)

    # -- protocol hooks ---------------------------------------------------------------------

    def _weight_request(self) -> bytes:
        """The bytes that ask for one weight."""
        raise NotImplementedError

    def _parse_weight(self, frame: bytes) -> Reading | None:
        """Parse one frame (ending with ``frame_end``); ``None`` if it is not a weight reply."""
        raise NotImplementedError

    async def _tare(self) -> None:
        raise ScaleCommandUnsupported(f"{self.name}: the {self.protocol} protocol has no tare")

    async def _clear_tare(self) -> None:
        raise ScaleCommandUnsupported(
            f"{self.name}: the {self.protocol} protocol cannot clear the tare"
        )

    async def _zero(self) -> None:
        raise ScaleCommandUnsupported(f"{self.name}: the {self.protocol} protocol has no zero")
