"""Pick-to-light on Modbus I/O modules (kind ``modbus_io``): a lamp and a button per slot.

A slot is a channel of a Modbus unit: its lamp on an output (a coil, or a holding register
written 1/0), its confirm button on an input (a discrete input, a coil, or a bit of an
input or holding register). Modules are described by data, not code: a named preset for
the modules of hardware-next.md §2.1, or a ``map`` table for any other module, so a new
module is a table in the node file. One ``[[devices]]`` table is one bus: a Modbus TCP
module or gateway, or an RS-485 line through a USB adapter with several units on it.

Buttons are polled (Modbus has no events): every ``poll_ms`` each unit's inputs are read
and a rising edge is a press. Output changes are written at once (one FC15/FC16 per unit),
blinking lamps are toggled by the poll loop at the pattern's rate (at most 3 flashes/s),
and everything that should be lit is written again after the bus comes back. A unit that
stops answering is a part ``unavailable`` (its slots listed in ``parts()``); a bus that is
gone makes the device ``unavailable`` until it is back.

How fast a confirm can be seen depends on the bus: on RS-485 one poll of one unit costs the
request, the reply, two 3.5-character silences and the module's turnaround (hardware-next.md
§2.3: about 22 ms at 19,200 baud), so about 9 modules per bus keep a press under 200 ms.
``check-config`` warns past that (:meth:`ModbusIoConfig.advice`).

Node file example (two Waveshare 8-channel I/O modules on one RS-485 line)::

    [[devices]]
    name = "shelf-b"
    kind = "modbus_io"
    transport = "rtu"
    serial_port = "/dev/serial/by-id/usb-FTDI_USB-RS485-if00-port0"
    baudrate = 19200

    [[devices.units]]
    unit = 1
    preset = "waveshare_io8"
    first_id = "B-01"                # channels 0-7 are slots B-01 .. B-08

    [[devices.units]]
    unit = 2
    preset = "waveshare_io8"
    first_id = "B-09"
    count = 6                        # channels 0-5
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from devices.backends.modbus import ModbusBus, UnitSilent
from devices.base import HealthStatus
from devices.context import DeviceContext
from devices.errors import DeviceProtocolError, DeviceUnavailable
from devices.events import Button
from devices.lights.base import LightBar
from devices.lights.modbus.config import ModbusIoConfig, ModbusUnit
from devices.lights.modbus.sim import ModbusIoSimulator
from devices.lights.palette import Indication, Pattern

log = logging.getLogger("devices")


@dataclass(frozen=True, slots=True)
class PartHealth:
    """One unit's health when it is not ok (its slots are listed with it)."""

    status: HealthStatus
    detail: str


@dataclass(slots=True)
class _Unit:
    """What the driver keeps per unit: its outputs as wanted, its inputs as last read."""

    config: ModbusUnit
    outputs: list[bool]
    written: list[bool] | None
    inputs: list[bool] | None
    silent: str | None = None


class ModbusIo(LightBar):
    """Pick-to-light slots on Modbus I/O modules: a lamp and a confirm button per slot.

    Wiring: each slot's lamp (a 24 V indicator or an LED with its resistor) on a module
    output, its push button between a module input and the input's common; modules on one
    RS-485 pair (A/B, a 120 Ω terminator at each end of the line, the adapter's ground to
    the modules' ground) or on the LAN for TCP modules. Give each RTU module its own
    address and the same baud rate (Waveshare: holding register 0x4000 / 0x2000). Set the
    FTDI adapter's latency timer to 1 ms (docs/wiring.md). See the module docstring for a
    node file.

    Args:
        config: the validated config.
        bus: the Modbus master (tests inject one).
        clock: monotonic time source of blinking and the double-press guard.
    """

    def __init__(
        self,
        config: ModbusIoConfig,
        bus: ModbusBus | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        slot_map = [(slot, u.unit, ch) for u in config.units for slot, ch in u.slot_channels()]
        super().__init__(config.name, [s for s, _, _ in slot_map], config, None, clock)
        self.config = config
        self.bus = bus or ModbusBus(config.bus())
        self._where_of = {slot: (unit, ch) for slot, unit, ch in slot_map}
        self._units = {
            u.unit: _Unit(u, [False] * u.module.channels, None, None) for u in config.units
        }
        self._slots_of = {u.unit: [s for s, _ in u.slot_channels()] for u in config.units}
        self._slot_at = {(unit, ch): slot for slot, unit, ch in slot_map}
        self._want: dict[tuple[int, int], Indication] = {}
        self._runner: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.connected = asyncio.Event()
        self.counts: Counter[str] = Counter()
        """Polls, writes, presses, silent units, refused requests, reconnects."""

    @classmethod
    def from_config(cls, config: ModbusIoConfig, context: DeviceContext) -> ModbusIo:
        """Build the driver (a simulated node's config already points at the simulator)."""
        return cls(config)

    def describe(self) -> str:
        """One line naming the bus and its modules."""
        c = self.config
        return (
            f"{c.name}: modbus_io on {c.bus().where}, {len(c.units)} units, "
            f"{len(self._slot_ids)} slots"
        )

    def has_zone_lamp(self) -> bool:
        """Whether a stack light is configured."""
        return self.config.zone_lamp is not None

    def parts(self) -> dict[str, PartHealth]:
        """Slots whose unit does not answer, by slot id (the others are ok)."""
        return {
            slot: PartHealth(HealthStatus.UNAVAILABLE, f"unit {unit}: {state.silent}")
            for unit, state in self._units.items()
            if state.silent is not None
            for slot in self._slots_of[unit]
        }

    # -- lifecycle ------------------------------------------------------------------------

    async def _open(self) -> None:
        self._events.bind(asyncio.get_running_loop())
        self._lit.clear()
        self._want.clear()
        for state in self._units.values():
            state.outputs = [False] * len(state.outputs)
            state.written = None
            state.inputs = None
            state.silent = None
        self._set_health(HealthStatus.STARTING, f"connecting to {self.config.bus().where}")
        self._runner = asyncio.create_task(self._run(), name=f"modbus {self.name}")
        # A bus that is there at start is lit at once; one that is not is retried behind.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.timeout_ms / 1000 * 3 + 1):
                await self.connected.wait()

    async def _close(self) -> None:
        self._want.clear()
        for state in self._units.values():
            state.outputs = [False] * len(state.outputs)
        if self.bus.connected:
            with contextlib.suppress(DeviceUnavailable, DeviceProtocolError):
                await self._write_changes(force=True)
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None
        self.bus.close()
        self.connected.clear()
        self._lit.clear()

    def _check_open(self) -> None:
        # The wanted state is kept while the bus is away and written when it is back.
        if self._closed:
            raise DeviceUnavailable(f"device {self.name}: not open")

    async def _run(self) -> None:
        wait = 0.2
        while True:
            try:
                await self.bus.connect()
                self.counts["connects"] += 1
                for state in self._units.values():
                    state.written = None  # a module may have lost power: write all again
                    state.inputs = None
                self.connected.set()
                self._set_health(HealthStatus.OK, self._summary())
                wait = 0.2
                await self._serve()
            except DeviceUnavailable as exc:
                self.connected.clear()
                self.bus.close()
                self.counts["disconnects"] += 1
                self._set_health(HealthStatus.UNAVAILABLE, str(exc))
                log.warning("device %s: %s; again in %.1f s", self.name, exc, wait)
                await asyncio.sleep(wait)
                wait = min(wait * 2, self.config.reconnect_max_s)

    async def _serve(self) -> None:
        """Write what changed, read the buttons, toggle blinking lamps: until the bus fails."""
        period = self.config.poll_ms / 1000
        while True:
            self._blink()
            await self._write_changes()
            await self._poll_inputs()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period if period > 0 else 0.001):
                    await self._wake.wait()

    # -- outputs --------------------------------------------------------------------------

    def _level(self, indication: Indication, now: float) -> bool:
        timing = self.timing(indication.pattern)
        if timing is None:
            return True
        return (now % (timing.on_s + timing.off_s)) < timing.on_s

    def _blink(self) -> None:
        now = self._clock()
        for (unit, ch), indication in self._want.items():
            if indication.pattern is not Pattern.STEADY:
                self._units[unit].outputs[ch] = self._level(indication, now)

    async def _write_changes(self, *, force: bool = False) -> None:
        for unit, state in self._units.items():
            if state.written == state.outputs and not force:
                continue
            if state.silent is not None and not force:
                # Try a silent unit only on a poll; a write would wait its timeout each time.
                continue
            module = state.config.module
            values = list(state.outputs)
            try:
                if module.outputs == "coil":
                    await self.bus.write_bits(unit, module.output_base, values)
                else:
                    await self.bus.write_registers(
                        unit, module.output_base, [int(v) for v in values]
                    )
            except DeviceProtocolError as exc:
                self._unit_failed(unit, exc)
                continue
            self.counts["writes"] += 1
            state.written = values

    def _set(self, slot: str | tuple[int, int], indication: Indication | None) -> None:
        where = self._where_of[slot] if isinstance(slot, str) else slot
        unit, ch = where
        if indication is None:
            self._want.pop(where, None)
            self._units[unit].outputs[ch] = False
        else:
            self._want[where] = indication
            self._units[unit].outputs[ch] = self._level(indication, self._clock())

    async def _render(self, slot: str, indication: Indication | None) -> None:
        if slot == self.ZONE:
            self._set_zone(indication)
        else:
            self._set(slot, indication)
        self._wake.set()

    async def _render_many(self, changes: Sequence[tuple[str, Indication | None]]) -> None:
        for slot, indication in changes:
            if slot == self.ZONE:
                self._set_zone(indication)
            else:
                self._set(slot, indication)
        self._wake.set()

    def _set_zone(self, indication: Indication | None) -> None:
        lamp = self.config.zone_lamp
        if lamp is None:
            return
        for ch in lamp.channels():
            self._set((lamp.unit, ch), None)
        if indication is None:
            return
        tier = lamp.tier_for(indication.colour)
        if tier is not None:
            self._set((lamp.unit, tier), indication)
        if lamp.buzzer is not None and indication.pattern is Pattern.FAST_BLINK:
            self._set((lamp.unit, lamp.buzzer), Indication(indication.colour, Pattern.STEADY))

    # -- inputs ---------------------------------------------------------------------------

    async def _poll_inputs(self) -> None:
        for unit, state in self._units.items():
            module = state.config.module
            count = module.inputs_count
            if not count:
                continue
            try:
                if module.inputs in ("discrete_input", "coil"):
                    table: Literal["discrete_input", "coil"] = (
                        "coil" if module.inputs == "coil" else "discrete_input"
                    )
                    bits = await self.bus.read_bits(table, unit, module.input_base, count)
                else:
                    reg_table: Literal["holding", "input"] = (
                        "holding" if module.inputs == "holding" else "input"
                    )
                    registers = await self.bus.read_registers(
                        reg_table, unit, module.input_base, math.ceil(count / 16)
                    )
                    bits = [bool(registers[i // 16] >> (i % 16) & 1) for i in range(count)]
            except DeviceProtocolError as exc:
                self._unit_failed(unit, exc)
                continue
            self.counts["polls"] += 1
            if state.silent is not None:
                log.warning("device %s: unit %d answers again", self.name, unit)
                state.silent = None
                state.written = None  # it may have lost power: write its lamps again
                self._notify_parts()
            previous, state.inputs = state.inputs, bits
            if previous is None:
                continue  # the first read is the baseline: a button held at start is no press
            for ch, (was, now) in enumerate(zip(previous, bits, strict=False)):
                if now and not was:
                    slot = self._slot_at.get((unit, ch))
                    if slot is None:
                        self.counts["presses_unowned"] += 1
                        continue
                    self.counts["presses"] += 1
                    self._pressed(slot, Button.CONFIRM)

    def _unit_failed(self, unit: int, exc: DeviceProtocolError) -> None:
        """A request to ``unit`` failed: it did not answer, or it refused the request."""
        if isinstance(exc, UnitSilent):
            self._unit_silent(unit, str(exc))
        else:
            self._refused(unit, exc)

    def _unit_silent(self, unit: int, why: str) -> None:
        self.counts["unit_silent"] += 1
        state = self._units[unit]
        if state.silent is None:
            log.warning("device %s: %s", self.name, why)
            state.silent = why
            state.inputs = None
            self._notify_parts()

    def _refused(self, unit: int, exc: DeviceProtocolError) -> None:
        self.counts["refused"] += 1
        if self.counts["refused"] == 1 or self.counts["refused"] % 1000 == 0:
            log.warning(
                "device %s: %s (the register map does not fit the module? %d so far)",
                self.name,
                exc,
                self.counts["refused"],
            )

    def _summary(self) -> str:
        silent = sorted(u for u, state in self._units.items() if state.silent is not None)
        if not silent:
            return ""
        return f"{len(silent)} of {len(self._units)} units silent: " + ", ".join(map(str, silent))

    def _notify_parts(self) -> None:
        # Parts are read with the health: the detail changes, so the node hears of it.
        if self.health.status is HealthStatus.OK:
            before = self.health
            self._set_health(HealthStatus.OK, self._summary())
            if self.health != before:
                return
        for listener in self._listeners:
            listener(self.name, self.health)

    # -- what LightBar asks of subclasses (unused: this driver overrides _open/_close) ----

    async def _open_hardware(self) -> None:
        """Not used: the bus is opened by the background task."""

    async def _close_hardware(self) -> None:
        """Not used: ``_close`` releases the bus."""


CONFIG = ModbusIoConfig
DRIVER = ModbusIo
SIMULATOR = ModbusIoSimulator
