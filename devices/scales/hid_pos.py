"""USB HID point-of-sale scales (Dymo M10/M25/S-series, Stamps.com, Fairbanks, Mettler, USPS).

A shipping scale on USB is a HID device on the "Scales" usage page (8Dh). It needs no
command: it sends a 6-byte scale data report whenever it has one, which the driver reads
from hidraw (``devices.backends.hidraw``)::

    byte 0  report id   03h scale data report (04h status report, same layout)
    byte 1  status      01 fault | 02 stable at zero | 03 in motion | 04 stable
                        05 under zero | 06 over the weight limit | 07 needs calibration
                        08 needs re-zeroing
    byte 2  unit        01 mg | 02 g | 03 kg | 04 carat | 05 tael | 06 grain
                        07 pennyweight | 08 metric ton | 09 avoirdupois ton | 0A troy oz
                        0B oz | 0C lb
    byte 3  exponent    signed: weight = raw x 10^exponent (FFh = -1: tenths)
    byte 4-5 weight     unsigned 16 bits, little-endian

``03 04 0B FF 1B 01`` is 283 x 10^-1 = 28.3 oz, stable. The report carries no sign and no
"net" flag: a weight below zero comes as status 05 (the driver reports underload, as a
serial scale's "under zero" bit), and a tare taken with the scale's own key is invisible
(weights are reported gross). The statuses map onto the serial scales' ``Reading``, so the
check-weigh treats a USB scale exactly as a serial one: stable and zero are stable
weights, motion an unstable weight, 05/06 underload/overload faults, 01/07/08 a fault a
person must clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal, Self

from pydantic import Field, field_validator

from devices.backends.hidraw import FAKE_SCHEME, HidBackend, open_hidraw, parse_vid_pid
from devices.base import SCALE_OVERLOAD, SCALE_UNDERLOAD, Device, HealthStatus
from devices.config import DeviceConfig
from devices.context import DeviceContext
from devices.errors import DeviceError, DeviceProtocolError, DeviceUnavailable
from devices.events import Weight
from devices.scales.base import (
    Condition,
    Reading,
    ScaleCommandUnsupported,
    ScaleFault,
    ScaleNoReply,
    ScaleNotStable,
    ScaleOverload,
    ScaleUnderload,
    next_backoff,
)
from devices.scales.hid_sim import HidPosSimulator

log = logging.getLogger("devices.scales")

DATA_REPORT = 0x03
STATUS_REPORT = 0x04
REPORT_LENGTH = 6


class HidStatus(IntEnum):
    """Byte 1: the index into the HID POS Scale Status usages 71h-78h."""

    FAULT = 1
    ZERO = 2  # stable at the centre of zero
    MOTION = 3
    STABLE = 4
    UNDER_ZERO = 5
    OVER_LIMIT = 6
    NEEDS_CALIBRATION = 7
    NEEDS_REZERO = 8


class HidUnit(IntEnum):
    """Byte 2: the index into the HID POS Weight Unit usages 51h-5Ch."""

    MG = 1
    G = 2
    KG = 3
    CARAT = 4
    TAEL = 5
    GRAIN = 6
    PENNYWEIGHT = 7
    METRIC_TON = 8
    AVOIR_TON = 9
    TROY_OZ = 10
    OZ = 11
    LB = 12


#: Grams per unit of every HID POS weight unit.
GRAMS_PER_HID_UNIT: dict[HidUnit, float] = {
    HidUnit.MG: 0.001,
    HidUnit.G: 1.0,
    HidUnit.KG: 1000.0,
    HidUnit.CARAT: 0.2,  # metric carat
    # The usage table does not say which tael; the Hong Kong / troy tael (1.2 troy oz) is
    # the one scales sold outside mainland China print.
    HidUnit.TAEL: 37.79936,
    HidUnit.GRAIN: 0.06479891,
    HidUnit.PENNYWEIGHT: 1.55517384,
    HidUnit.METRIC_TON: 1_000_000.0,
    # Avoirdupois ton: the US short ton, 2,000 lb (US postal scales are the ones on USB).
    HidUnit.AVOIR_TON: 907_184.74,
    HidUnit.TROY_OZ: 31.1034768,
    HidUnit.OZ: 28.349523125,
    HidUnit.LB: 453.59237,
}

_FAULTS: dict[HidStatus, str] = {
    HidStatus.FAULT: "the scale reports a fault",
    HidStatus.NEEDS_CALIBRATION: "the scale needs calibration",
    HidStatus.NEEDS_REZERO: "the scale needs re-zeroing (empty the platform, press zero)",
}


@dataclass(frozen=True, slots=True)
class KnownScale:
    """A USB scale whose ids are known (usbscale's scales.h, hardware-next.md §3.2)."""

    vid: int
    pid: int
    name: str


#: USB scales known by vendor:product id. Matching the scale usage page finds the others.
KNOWN_SCALES: tuple[KnownScale, ...] = (
    KnownScale(0x0922, 0x8003, "DYMO 1772057 postal scale"),
    KnownScale(0x0922, 0x8004, "DYMO M25"),
    KnownScale(0x0922, 0x8009, "DYMO S180 / S250"),
    KnownScale(0x6096, 0x0158, "Sanford DYMO 10 lb (M10)"),
    KnownScale(0x1446, 0x6A73, "Stamps.com Model 510 5 lb"),
    KnownScale(0x2474, 0x0550, "Stamps.com 5 lb"),
    KnownScale(0x2474, 0x3550, "Stamps.com 35 lb"),
    KnownScale(0x0EB8, 0xF000, "Mettler Toledo USB (PS60 and others)"),
    KnownScale(0x0B67, 0x555E, "Fairbanks SCB-R9000 / Ultegra"),
    KnownScale(0x7B7C, 0x0100, "USPS / Elane PS311"),
    KnownScale(0x0D8F, 0x0200, "Pitney Bowes 10 lb"),
)
KNOWN_IDS = frozenset((s.vid, s.pid) for s in KNOWN_SCALES)


def known_scale(vid: int, pid: int) -> KnownScale | None:
    """The known scale with these ids, if any."""
    return next((s for s in KNOWN_SCALES if (s.vid, s.pid) == (vid, pid)), None)


@dataclass(frozen=True, slots=True)
class ScaleReport:
    """One decoded scale data report.

    Attributes:
        report_id: 03h (data) or 04h (status).
        status: what the scale says about the weight.
        unit: the unit of ``value``.
        exponent: the power of ten ``raw`` is scaled by.
        raw: the unsigned weight field.
    """

    report_id: int
    status: HidStatus
    unit: HidUnit
    exponent: int
    raw: int

    @property
    def value(self) -> float:
        """The weight in ``unit`` (a magnitude: under zero it is the amount below)."""
        return self.raw * 10.0**self.exponent

    @property
    def grams(self) -> float:
        """The weight in grams, milligram resolution; negative under zero."""
        grams = round(self.value * GRAMS_PER_HID_UNIT[self.unit], 3)
        return -grams if self.status is HidStatus.UNDER_ZERO else grams


def decode_report(data: bytes) -> ScaleReport | None:
    """Decode a scale data report; ``None`` for a report that is not one (another report id).

    Raises:
        DeviceProtocolError: a scale report (id 03h/04h) that is too short or carries a
            status or unit the HID POS tables do not have, named byte by byte.
    """
    if not data or data[0] not in (DATA_REPORT, STATUS_REPORT):
        return None
    if len(data) < REPORT_LENGTH:
        raise DeviceProtocolError(
            f"scale report {data.hex(' ')}: {len(data)} bytes, a scale report has {REPORT_LENGTH}"
        )
    try:
        status = HidStatus(data[1])
    except ValueError:
        raise DeviceProtocolError(
            f"scale report {data[:REPORT_LENGTH].hex(' ')}: byte 1 (status) {data[1]:02x}h "
            "is not a HID POS scale status (01h-08h)"
        ) from None
    try:
        unit = HidUnit(data[2])
    except ValueError:
        raise DeviceProtocolError(
            f"scale report {data[:REPORT_LENGTH].hex(' ')}: byte 2 (unit) {data[2]:02x}h "
            "is not a HID POS weight unit (01h-0Ch)"
        ) from None
    exponent = int.from_bytes(data[3:4], "little", signed=True)
    raw = int.from_bytes(data[4:6], "little")
    return ScaleReport(data[0], status, unit, exponent, raw)


def report_reading(report: ScaleReport) -> Reading:
    """What the report says, as the serial scales' ``Reading`` the check-weigh understands.

    Raises:
        ScaleFault: status 01h (fault), 07h (needs calibration) or 08h (needs re-zeroing).
    """
    match report.status:
        case HidStatus.ZERO | HidStatus.STABLE:
            return Reading(Condition.WEIGHT, report.grams, stable=True)
        case HidStatus.MOTION:
            return Reading(Condition.WEIGHT, report.grams, stable=False)
        case HidStatus.UNDER_ZERO:
            return Reading(Condition.UNDERLOAD, report.grams)
        case HidStatus.OVER_LIMIT:
            return Reading(Condition.OVERLOAD)
    raise ScaleFault(_FAULTS[report.status])


class HidPosConfig(DeviceConfig):
    """A USB HID point-of-sale scale (``kind = "hid_pos"``).

    Attributes:
        device: ``auto`` (the first HID scale plugged in), ``VID:PID`` in hex
            (``"0922:8009"``; followed across replugs that renumber the node), or a path
            (``/dev/hidraw0``, a udev symlink such as ``/dev/zone-scale``).
        skip_first_report: drop the first report after each open: some scales send a
            stale one first (usbscale reads twice for this reason).
        stale_after_s: a reading older than this is not given as the current weight
            (the scale stopped reporting); 0 keeps the last one for ever (scales that
            report only on change).
        reconnect_min_s, reconnect_max_s: backoff bounds for reopening a vanished scale.
    """

    kind: Literal["hid_pos"]
    device: str = "auto"
    skip_first_report: bool = True
    stale_after_s: float = Field(default=0.0, ge=0)
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=10.0, gt=0)

    @field_validator("device")
    @classmethod
    def _known_form(cls, value: str) -> str:
        if value == "auto" or value.startswith(("/", FAKE_SCHEME)) or parse_vid_pid(value):
            return value
        raise ValueError(
            f"{value!r} is not a HID device: 'auto', VID:PID in hex ('0922:8009') or a "
            "path ('/dev/hidraw0', '/dev/zone-hid-scale')"
        )

    def claims(self) -> list[str]:
        """The HID device, held by one driver."""
        return [f"hid:{self.device}"]


class HidPosScale(Device):
    """A USB HID point-of-sale scale, read through hidraw.

    Wiring: plug the scale into a USB port of the Pi; install
    ``firmware_config/rpi/60-zone-agent-hid-scales.rules`` so the service user may read
    ``/dev/hidrawN`` (nodes are root-only otherwise), then replug. No kernel driver is
    detached. Set the scale's display to any unit: every HID POS unit is converted to
    grams. A scale that powers itself off when idle (the Dymo M10 does after a few
    minutes) makes health ``unavailable`` until it is switched on again: the driver
    reopens it by itself, as it does after an unplug.

    Args:
        config: the scale's config.
        backend: the HID device (not yet open; the driver opens it).

    Example::

        config = HidPosConfig(name="pack-scale", kind="hid_pos", device="0922:8009")
        async with HidPosScale.from_config(config, DeviceContext()) as scale:
            weight = await scale.read_stable(timeout=5.0)
            print(weight.grams, weight.stable)
    """

    protocol = "hid_pos"

    def __init__(self, config: HidPosConfig, backend: HidBackend) -> None:
        super().__init__(config.name)
        self.config = config
        self.backend = backend
        self.bad_reports = 0
        self._reading: Reading | None = None
        self._fault: str | None = None
        self._at = 0.0
        self._skip = False
        self._changed = asyncio.Condition()
        self._weight_queues: list[asyncio.Queue[tuple[Reading | None, str | None]]] = []
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, config: HidPosConfig, context: DeviceContext) -> Self:
        """Build the driver on the configured hidraw device (or fake)."""
        del context  # a HID scale needs nothing from the node besides its device
        return cls(config, open_hidraw(config.device, KNOWN_IDS))

    def describe(self) -> str:
        """Kind and device."""
        return f"{type(self).__name__} {self.name}: USB HID scale {self.config.device}"

    # -- lifecycle --------------------------------------------------------------------------

    async def _open(self) -> None:
        with contextlib.suppress(DeviceUnavailable):
            await self._open_backend()
        self._reader = asyncio.create_task(self._run(), name=f"scale-{self.name}-hid")

    async def _open_backend(self) -> None:
        try:
            await self.backend.open()
        except DeviceUnavailable as exc:
            self._set_health(HealthStatus.UNAVAILABLE, str(exc))
            raise
        self._skip = self.config.skip_first_report
        self._reading = None
        self._fault = None
        log.info("device %s: reading %s", self.name, self.backend.node)
        self._set_health(HealthStatus.OK)

    async def _close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        await self.backend.close()

    async def _run(self) -> None:
        """Read reports while the device is there; reopen it with backoff when it is not."""
        delay = self.config.reconnect_min_s
        while True:
            if not self.backend.is_open:
                await asyncio.sleep(delay)
                try:
                    await self._open_backend()
                except DeviceUnavailable:
                    delay = next_backoff(delay, self.config.reconnect_max_s)
                    continue
                delay = self.config.reconnect_min_s
            try:
                data = await self.backend.read()
            except DeviceUnavailable as exc:
                await self._lost(str(exc))
                continue
            await self._report(data)

    async def _lost(self, why: str) -> None:
        self._set_health(HealthStatus.UNAVAILABLE, why)
        await self.backend.close()
        # No reading is kept or replayed while the scale is away.
        await self._publish(None, None)

    async def _report(self, data: bytes) -> None:
        try:
            report = decode_report(data)
        except DeviceProtocolError as exc:
            self._bad_report(data, str(exc))
            return
        if report is None:
            return  # another report of the device (a feature, a vendor report): not ours
        if self._skip:
            self._skip = False
            return
        try:
            reading: Reading | None = report_reading(report)
            fault = None
        except ScaleFault as exc:
            reading, fault = None, str(exc)
        self._health_for(reading, fault)
        await self._publish(reading, fault)

    async def _publish(self, reading: Reading | None, fault: str | None) -> None:
        async with self._changed:
            self._reading, self._fault, self._at = reading, fault, time.monotonic()
            self._changed.notify_all()
        for queue in self._weight_queues:
            if queue.full():
                queue.get_nowait()  # a slow listener loses the oldest, never the latest
            queue.put_nowait((reading, fault))

    def _bad_report(self, data: bytes, why: str) -> None:
        self.bad_reports += 1
        log.warning("device %s: ignored a report on %s: %s", self.name, self.backend.node, why)

    def _health_for(self, reading: Reading | None, fault: str | None) -> None:
        if fault is not None:
            self._set_health(HealthStatus.FAULT, fault)
        elif reading is not None and reading.condition is Condition.OVERLOAD:
            self._set_health(HealthStatus.FAULT, SCALE_OVERLOAD)
        elif reading is not None and reading.condition is Condition.UNDERLOAD:
            self._set_health(HealthStatus.FAULT, SCALE_UNDERLOAD)
        else:
            self._set_health(HealthStatus.OK)

    # -- public API (the serial scales' API) -------------------------------------------------

    def _current(self) -> tuple[Reading | None, str | None]:
        stale = self.config.stale_after_s
        if stale and time.monotonic() - self._at > stale:
            return None, None
        return self._reading, self._fault

    def _to_weight(self, reading: Reading | None, fault: str | None) -> Weight:
        if fault is not None:
            raise ScaleFault(f"{self.name}: {fault}")
        assert reading is not None
        match reading.condition:
            case Condition.OVERLOAD:
                raise ScaleOverload(f"{self.name}: overload (load above capacity)")
            case Condition.UNDERLOAD:
                raise ScaleUnderload(
                    f"{self.name}: underload (below zero: platform lifted or needs zeroing)"
                )
        assert reading.grams is not None
        return Weight(
            device=self.name, grams=reading.grams, stable=reading.stable, at=time.monotonic()
        )

    async def _next(self, timeout: float, fresh: bool) -> tuple[Reading | None, str | None]:
        """The current reading, or (``fresh``) the next one, within ``timeout`` seconds."""
        async with self._changed:
            if not fresh:
                reading, fault = self._current()
                if reading is not None or fault is not None:
                    return reading, fault
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
                    while self._reading is None and self._fault is None:
                        if not self.backend.is_open:
                            break
                        await self._changed.wait()
            except TimeoutError:
                pass
            return self._current()

    def _nothing(self, timeout: float) -> DeviceError:
        if not self.backend.is_open:
            return DeviceUnavailable(self.health.detail or f"{self.backend.node}: not open")
        return ScaleNoReply(
            f"{self.backend.node}: no scale report within {timeout:.3g} s (is it a HID "
            "point-of-sale scale? `zone-agent scale probe` lists them)"
        )

    async def read(self, timeout: float = 1.0) -> Weight:
        """The current weight, stable or not (waits up to ``timeout`` for a first report).

        Raises:
            ScaleOverload, ScaleUnderload: the scale reports the load out of range.
            ScaleFault: the scale reports a fault, or needs calibration or re-zeroing.
            ScaleNoReply: no scale report arrived within ``timeout``.
            DeviceUnavailable: the scale is gone (the driver is reopening it).
        """
        reading, fault = await self._next(timeout, fresh=False)
        if reading is None and fault is None:
            raise self._nothing(timeout)
        return self._to_weight(reading, fault)

    async def read_stable(self, timeout: float = 5.0) -> Weight:
        """Wait until the scale itself reports a stable weight.

        Raises:
            ScaleOverload, ScaleUnderload, ScaleFault: as soon as the scale reports one.
            ScaleNotStable: only weights in motion within ``timeout`` (``last`` holds the
                last one).
            ScaleNoReply, DeviceUnavailable: no report, or the scale is gone.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: Weight | None = None
        fresh = False
        while (remaining := deadline - loop.time()) > 0:
            reading, fault = await self._next(remaining, fresh)
            fresh = True
            if reading is None and fault is None:
                break
            weight = self._to_weight(reading, fault)
            if weight.stable:
                return weight
            last = weight
        if last is not None:
            raise ScaleNotStable(
                f"{self.name}: no stable weight within {timeout:.3g} s (last {last.grams:g} g)",
                last=last,
            )
        raise self._nothing(timeout)

    async def events(self) -> AsyncIterator[Weight]:
        """Live weight: one ``Weight`` per change (grams, stable), as the scale reports it.

        Reports the scale sends again unchanged yield nothing; faults, overload and a gone
        scale yield nothing (health says why) and the next weight after them is yielded.
        """
        last: tuple[float, bool] | None = None
        queue: asyncio.Queue[tuple[Reading | None, str | None]] = asyncio.Queue(maxsize=64)
        self._weight_queues.append(queue)
        try:
            while True:
                reading, fault = await queue.get()
                if reading is None or fault is not None:
                    last = None
                    continue
                if reading.condition is not Condition.WEIGHT or reading.grams is None:
                    last = None
                    continue
                key = (reading.grams, reading.stable)
                if key != last:
                    last = key
                    yield Weight(
                        device=self.name,
                        grams=reading.grams,
                        stable=reading.stable,
                        at=time.monotonic(),
                    )
        finally:
            self._weight_queues.remove(queue)

    async def tare(self) -> None:
        """HID scales are tared with their own key: the report carries no tare.

        Raises:
            ScaleCommandUnsupported: always.
        """
        raise ScaleCommandUnsupported(
            f"{self.name}: a USB HID scale is tared with its own key (the report has no tare)"
        )

    async def clear_tare(self) -> None:
        """Not possible over HID; raises ``ScaleCommandUnsupported``."""
        raise ScaleCommandUnsupported(f"{self.name}: a USB HID scale clears its tare by its key")

    async def zero(self) -> None:
        """Not done over HID (the zero output report is unconfirmed on Dymo scales).

        Raises:
            ScaleCommandUnsupported: always: press the scale's zero key.
        """
        raise ScaleCommandUnsupported(f"{self.name}: zero a USB HID scale with its own key")


CONFIG = HidPosConfig
DRIVER = HidPosScale
SIMULATOR = HidPosSimulator
