"""A USB HID point-of-sale scale played through the fake hidraw backend.

The simulator writes the 6-byte scale data report byte for byte from the HID POS layout
(hardware-next.md §3.1: report id 03h, status, unit, signed exponent, weight u16
little-endian), not through the driver's decoder, and feeds it to a ``FakeHidraw``
registered under ``fake:<name>``: every ``report_interval_s`` and at once on every change,
as a shipping scale streams its reports.

Control actions are the serial scale simulators' (``devices.scales.sim``), so demos and
tests put weight on a USB scale the same way:

* ``set`` ``{grams?, mode?, unit?, split_s?, settle_after?}``: ``mode`` is one of
  ``stable moving overload underload garbage silent`` or the HID statuses ``fault
  needs_calibration needs_rezero``; ``unit`` one of ``UNITS``; ``split_s`` is accepted and
  has no effect (a HID report always arrives whole); ``settle_after`` counts reports;
* ``tare`` ``{grams?}``: the scale's tare key (reports then show the load minus it; the
  report has no "net" flag);
* ``inject`` ``{data, keep_reply?}``: the next report is ``data`` (latin-1), or ``data``
  arrives as a report of its own before it;
* ``play`` ``{sequence}``: send one of the ``RECORDED`` sequences, report by report, 10 ms
  apart; then the scale reports its own load again (``set`` it to match to keep the weight);
* ``unplug`` / ``replug``: the device disappears / comes back (the driver must reopen it).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any, ClassVar

from devices.backends.hidraw import FAKE_SCHEME, FakeHidraw
from devices.config import DeviceConfig
from devices.context import DeviceContext
from devices.scales.sim import MODES as SERIAL_MODES
from devices.scales.sim import ScaleControls

MODES = (*SERIAL_MODES, "fault", "needs_calibration", "needs_rezero")

#: Unit name -> (HID POS weight unit byte, exponent the simulated scale reports with,
#: grams per unit). Exponents are those of a postal scale: whole grams, 0.001 kg, 0.1 oz.
UNITS: dict[str, tuple[int, int, float]] = {
    "mg": (0x01, 0, 0.001),
    "g": (0x02, 0, 1.0),
    "kg": (0x03, -3, 1000.0),
    "carat": (0x04, -1, 0.2),
    "tael": (0x05, -2, 37.79936),
    "grain": (0x06, 0, 0.06479891),
    "pennyweight": (0x07, -1, 1.55517384),
    "metric_ton": (0x08, -4, 1_000_000.0),
    "avoir_ton": (0x09, -4, 907_184.74),
    "troy_oz": (0x0A, -1, 31.1034768),
    "oz": (0x0B, -1, 28.349523125),
    "lb": (0x0C, -2, 453.59237),
}

_STATUS = {
    "fault": 0x01,
    "zero": 0x02,
    "moving": 0x03,
    "stable": 0x04,
    "underload": 0x05,
    "overload": 0x06,
    "needs_calibration": 0x07,
    "needs_rezero": 0x08,
}


def report(status: int, unit: int, exponent: int, raw: int, report_id: int = 0x03) -> bytes:
    """The 6 report bytes: id, status, unit, exponent (signed), weight (u16 little-endian)."""
    return bytes([report_id, status, unit, exponent & 0xFF]) + raw.to_bytes(2, "little")


#: Report sequences as a scale sends them, written from the layout in hardware-next.md
#: §3.1 (the first is the raw zero report RocketShipIt's scale server shows for a Dymo).
RECORDED: dict[str, tuple[bytes, ...]] = {
    "empty_oz": (bytes.fromhex("03020bff0000"),),
    # A parcel put down on an ounce scale: zero, two readings in motion, 28.3 oz stable.
    "parcel_oz": (
        bytes.fromhex("03020bff0000"),
        bytes.fromhex("03030bff7800"),
        bytes.fromhex("03030bff1701"),
        bytes.fromhex("03040bff1b01"),
    ),
    # 1.5 kg on a gram scale, and on a kilogram scale (exponent -3).
    "parcel_g": (bytes.fromhex("030302005005"), bytes.fromhex("03040200dc05")),
    "parcel_kg": (bytes.fromhex("030303fd5005"), bytes.fromhex("030403fddc05")),
    # The platform lifted after zeroing: 1.0 oz below zero.
    "under_zero": (bytes.fromhex("03050bff0a00"),),
    "over_limit": (bytes.fromhex("03060cfe0000"),),
    "fault": (bytes.fromhex("030102000000"),),
    "needs_calibration": (bytes.fromhex("030702000000"),),
    "needs_rezero": (bytes.fromhex("030802000000"),),
}


class HidPosSimulator(ScaleControls):
    """A USB shipping scale streaming HID POS scale reports into a ``FakeHidraw``.

    Args:
        config: the scale's config (``device`` becomes ``fake:<name>``).
        context: the node's device context.
        report_interval_s: seconds between reports while nothing changes.
        seed: seed of the garbage generator.
    """

    protocol: ClassVar[str] = "hid_pos"
    modes: ClassVar[tuple[str, ...]] = MODES
    units: ClassVar[tuple[str, ...]] = tuple(UNITS)

    def __init__(
        self,
        config: DeviceConfig,
        context: DeviceContext,
        *,
        report_interval_s: float = 0.2,
        seed: int = 0,
    ) -> None:
        super().__init__(config, context)
        self.device = f"{FAKE_SCHEME}{config.name}"
        self.report_interval_s = report_interval_s
        self.sent: list[bytes] = []
        self.fake: FakeHidraw | None = None
        self._queued: list[bytes] = []
        self._random = random.Random(seed)
        self._changed = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Register the fake device and start reporting."""
        self.fake = FakeHidraw.register(self.device)
        self._sender = asyncio.create_task(self._send_loop(), name=f"sim-{self.config.name}")

    async def stop(self) -> None:
        """Stop reporting and unregister the device; safe to call twice."""
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
        FakeHidraw.unregister(self.device)

    def patched_config(self) -> DeviceConfig:
        """The config with ``device`` set to the fake."""
        return self.config.model_copy(update={"device": self.device})

    # -- control ----------------------------------------------------------------------------

    async def control(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        """Act on the simulated scale (see the module docstring); returns ``state()``."""
        self._started()
        state = await super().control(action, args)
        self._changed.set()  # report the change at once, as the scale does
        return state

    def _control(self, action: str, args: dict[str, Any]) -> None:
        fake = self._started()
        match action:
            case "play":
                self._only(args, {"sequence"})
                name = args.get("sequence")
                if name not in RECORDED:
                    raise ValueError(f"sequence must be one of {', '.join(RECORDED)}, not {name!r}")
                self._queued.extend(RECORDED[name])
            case "unplug":
                self._only(args, set())
                fake.unplug()
            case "replug":
                self._only(args, set())
                fake.replug()
            case _:
                super()._control(action, args)

    @property
    def plugged(self) -> bool:
        """Whether the fake device is plugged in."""
        return self.fake is not None and self.fake.plugged

    def _started(self) -> FakeHidraw:
        if self.fake is None:
            raise ValueError("the simulator is not started")
        return self.fake

    # -- reports ----------------------------------------------------------------------------

    def current_report(self) -> bytes:
        """The report the scale sends now (counts ``settle_after`` down while moving)."""
        mode = self._weigh_mode()
        code, exponent, grams_per_unit = UNITS[self.unit]
        shown = self.shown_g
        raw = round(abs(shown) / grams_per_unit / 10.0**exponent)
        match mode:
            case "garbage":
                # Report id 03h with a status and unit no HID POS table has.
                return bytes([0x03, 0x00, 0x7F]) + self._random.randbytes(3)
            case "overload":
                return report(_STATUS["overload"], code, exponent, 0)
            case "fault" | "needs_calibration" | "needs_rezero":
                return report(_STATUS[mode], code, exponent, 0)
        if raw > 0xFFFF:
            return report(_STATUS["overload"], code, exponent, 0)
        if mode == "underload" or shown < 0:
            return report(_STATUS["underload"], code, exponent, raw)
        if mode == "moving":
            return report(_STATUS["moving"], code, exponent, raw)
        return report(_STATUS["zero" if raw == 0 else "stable"], code, exponent, raw)

    def _send(self, data: bytes) -> None:
        self.sent.append(data)
        del self.sent[:-256]  # what tests look at is recent; a long demo must not grow
        self._started().feed(data)

    async def _send_loop(self) -> None:
        while True:
            fake = self._started()
            if fake.is_open and self.mode != "silent":
                if self._queued:
                    self._send(self._queued.pop(0))
                    await asyncio.sleep(0.01)  # a scale's reports come apart in time
                    continue
                data = self.current_report()
                if self._inject:
                    injected, keep = self._inject.pop(0)
                    if keep:
                        self._send(injected)
                    else:
                        data = injected
                self._send(data)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.report_interval_s):
                    await self._changed.wait()
