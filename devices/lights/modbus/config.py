"""The node-file table of a Modbus I/O bus (kind ``modbus_io``): its modules and their maps.

See :mod:`devices.lights.modbus.driver` for what the kind does and a node file example.
"""

from __future__ import annotations

import math
import re
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from devices.backends.modbus import BusSettings
from devices.config import FieldValueError
from devices.lights.base import LightBarConfig, SlotId
from devices.lights.palette import Colour

OutputTable = Literal["coil", "holding"]
InputTable = Literal["discrete_input", "coil", "input_register", "holding"]


class ModbusMap(BaseModel):
    """Where a module keeps its outputs (lamps) and inputs (buttons); wire addresses, 0-based.

    Attributes:
        outputs: ``coil`` (FC05/FC15) or ``holding`` (one register per channel, 1 on, 0 off).
        output_base: the wire address of channel 0's output.
        channels: outputs the module has.
        inputs: ``discrete_input`` (FC02), ``coil`` (FC01: ADAM reads its inputs so),
            ``input_register`` / ``holding`` (bit n of the registers from ``input_base`` is
            channel n, 16 a register); ``none`` for a module without inputs.
        input_base: the wire address of channel 0's input.
        input_channels: inputs the module has (default: as many as outputs).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    outputs: OutputTable = "coil"
    output_base: int = Field(default=0, ge=0, le=65_535)
    channels: int = Field(default=8, ge=1, le=64)
    inputs: InputTable | Literal["none"] = "discrete_input"
    input_base: int = Field(default=0, ge=0, le=65_535)
    input_channels: int | None = Field(default=None, ge=1, le=64)

    @property
    def inputs_count(self) -> int:
        """How many inputs there are to read."""
        if self.inputs == "none":
            return 0
        return self.input_channels or self.channels


PRESETS: dict[str, ModbusMap] = {
    # Waveshare Modbus RTU IO 8CH: DO coils 0-7, DI discrete inputs 0-7 (hardware-next §2.1).
    "waveshare_io8": ModbusMap(channels=8),
    # Waveshare Modbus POE ETH IO 8CH (TCP): the same map (per Busloom; not re-checked).
    "waveshare_eth_io8": ModbusMap(channels=8),
    # Waveshare Modbus RTU Relay 8 ch: coils 0-7, no inputs (lamps only, a stack light).
    "waveshare_relay8": ModbusMap(channels=8, inputs="none"),
    # Advantech ADAM-6060: DI 00001-00006 read as coils 0-5, relays 00017-00022 = coils 16-21.
    "adam6060": ModbusMap(output_base=16, channels=6, inputs="coil", input_channels=6),
    # Advantech ADAM-6050: DI 00001-00012, DO 00017-00022 (inferred from the 6000 manual's
    # pattern; the 6050 table itself was not read: check it against your module).
    "adam6050": ModbusMap(output_base=16, channels=6, inputs="coil", input_channels=12),
    # WAGO 750 coupler: bit outputs written from 0x0000, bit inputs read from 0x0000 (FC02);
    # the count depends on the terminals fitted: set ``map`` when it is not 16.
    "wago750": ModbusMap(channels=16),
}
"""Register maps of the modules in hardware-next.md §2.1. Banner PICK-IQ is not here: which
register selects the pick state and which reports the acknowledge is UNCONFIRMED there, so
its map must be written as a ``map`` table from the module's register map."""

_SUFFIX = re.compile(r"^(.*?)(\d+)$")


def _count_up(first: str, n: int) -> list[str]:
    match = _SUFFIX.match(first)
    if match is None:
        raise ValueError(f"first_id {first!r} must end in a number to count up from")
    head, digits = match.groups()
    start = int(digits)
    return [f"{head}{start + i:0{len(digits)}d}" for i in range(n)]


class ModbusUnit(BaseModel):
    """One module on the bus (``[[devices.units]]``) and the slots on its channels.

    Attributes:
        unit: its Modbus address (1-247).
        preset: a module from ``PRESETS``; or
        map: the module's register map as a table (for any other module).
        first_id: slot id of channel 0; the next channels count its trailing number up.
        count: how many channels are slots, from channel 0 (default: every output).
        slots: the slot id of each channel instead (``""`` leaves a channel unused).

    A unit with neither is no slot's (a stack light's relay module).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    unit: int = Field(ge=1, le=247)
    preset: str | None = None
    map: ModbusMap | None = None
    first_id: SlotId | None = None
    count: int | None = Field(default=None, ge=1, le=64)
    slots: list[str] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _one_map_and_one_naming(self) -> Self:
        if (self.preset is None) == (self.map is None):
            raise ValueError("give either preset (one of " + ", ".join(PRESETS) + ") or map")
        if self.preset is not None and self.preset not in PRESETS:
            raise FieldValueError(
                f"unknown preset {self.preset!r} (known: {', '.join(PRESETS)}; "
                "or describe the module with a map table)",
                ("preset",),
            )
        if self.first_id is not None and self.slots:
            raise ValueError("name the slots with first_id (and count) or with slots, not both")
        if self.count is not None and self.first_id is None:
            raise FieldValueError("count goes with first_id", ("count",))
        if self.count is not None and self.count > self.module.channels:
            raise FieldValueError(
                f"{self.count} slots but the module has {self.module.channels} channels",
                ("count",),
            )
        if len(self.slots) > self.module.channels:
            raise FieldValueError(
                f"{len(self.slots)} slots but the module has {self.module.channels} channels",
                ("slots",),
            )
        return self

    @property
    def module(self) -> ModbusMap:
        """The register map in force."""
        return self.map if self.map is not None else PRESETS[self.preset or ""]

    def slot_channels(self) -> list[tuple[str, int]]:
        """``(slot id, channel)`` of every slot on this unit."""
        if self.first_id is not None:
            ids = _count_up(self.first_id, self.count or self.module.channels)
            return list(zip(ids, range(len(ids)), strict=True))
        return [(slot, ch) for ch, slot in enumerate(self.slots) if slot]


class ZoneLampChannels(BaseModel):
    """A stack light (andon) on a unit's outputs: "zone done" and "zone needs help".

    Attributes:
        unit: the unit the tower hangs on (one of ``units``).
        green / amber / red / blue / white: the channel of each tier fitted.
        buzzer: the buzzer's channel, sounded for a fast-blinking (alarm) indication.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    unit: int = Field(ge=1, le=247)
    green: int | None = Field(default=None, ge=0, le=63)
    amber: int | None = Field(default=None, ge=0, le=63)
    red: int | None = Field(default=None, ge=0, le=63)
    blue: int | None = Field(default=None, ge=0, le=63)
    white: int | None = Field(default=None, ge=0, le=63)
    buzzer: int | None = Field(default=None, ge=0, le=63)

    def tiers(self) -> dict[str, int]:
        """Fitted tiers by colour name."""
        fitted = {
            "green": self.green,
            "amber": self.amber,
            "red": self.red,
            "blue": self.blue,
            "white": self.white,
        }
        return {name: ch for name, ch in fitted.items() if ch is not None}

    def channels(self) -> list[int]:
        """Every channel the tower takes."""
        return [*self.tiers().values(), *([] if self.buzzer is None else [self.buzzer])]

    def tier_for(self, colour: Colour) -> int | None:
        """The tier that shows ``colour`` best: done is green, error red, the rest amber."""
        tiers = self.tiers()
        wanted = {
            Colour.BLUISH_GREEN: ["green"],
            Colour.VERMILLION: ["red", "amber"],
            Colour.BLUE: ["blue", "amber"],
            Colour.SKY_BLUE: ["blue", "amber"],
            Colour.WHITE: ["white", "amber"],
        }.get(colour, ["amber"])
        for name in [*wanted, "amber", "green", "red", "blue", "white"]:
            if name in tiers:
                return tiers[name]
        return None


class ModbusIoConfig(LightBarConfig):
    """A Modbus bus with I/O modules whose channels are pick-to-light slots.

    Attributes:
        transport: ``tcp`` (a Modbus TCP module or an RTU gateway) or ``rtu`` (RS-485).
        host / port: the TCP module or gateway.
        serial_port / baudrate / parity / stopbits: the RS-485 line (8 data bits).
        timeout_ms: how long a unit may take to answer before it counts as silent.
        poll_ms: the pause between two polls of every unit's buttons.
        reconnect_max_s: the longest wait between two attempts to reopen the bus.
        units: the modules on the bus.
        zone_lamp: a stack light on one of them, shown as the zone lamp.
    """

    kind: Literal["modbus_io"]
    transport: Literal["tcp", "rtu"]
    host: str = "127.0.0.1"
    port: int = Field(default=502, ge=1, le=65_535)
    serial_port: str = ""
    baudrate: int = Field(default=19_200, ge=1_200, le=921_600)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    timeout_ms: int = Field(default=200, ge=10, le=5_000)
    poll_ms: int = Field(default=20, ge=0, le=5_000)
    reconnect_max_s: float = Field(default=5.0, gt=0, le=300)
    units: list[ModbusUnit] = Field(min_length=1, max_length=247)
    zone_lamp: ZoneLampChannels | None = None

    @model_validator(mode="after")
    def _check_bus(self) -> Self:
        if self.transport == "rtu" and not self.serial_port:
            raise FieldValueError("an rtu bus needs serial_port", ("serial_port",))
        seen: dict[int, int] = {}
        for index, unit in enumerate(self.units):
            if unit.unit in seen:
                raise FieldValueError(
                    f"unit {unit.unit} is listed twice (units[{seen[unit.unit]}])",
                    ("units", index, "unit"),
                )
            seen[unit.unit] = index
        slots: dict[str, int] = {}
        for index, unit in enumerate(self.units):
            for slot, _ in unit.slot_channels():
                if slot in slots:
                    raise FieldValueError(
                        f"slot {slot!r} is on units[{slots[slot]}] already", ("units", index)
                    )
                slots[slot] = index
        lamp = self.zone_lamp
        if lamp is not None:
            if lamp.unit not in seen:
                raise FieldValueError(f"no unit {lamp.unit} in units", ("zone_lamp", "unit"))
            unit = self.units[seen[lamp.unit]]
            used = {ch for _, ch in unit.slot_channels()}
            for ch in lamp.channels():
                if ch in used:
                    raise FieldValueError(
                        f"channel {ch} of unit {lamp.unit} is a slot's lamp already",
                        ("zone_lamp",),
                    )
                if ch >= unit.module.channels:
                    raise FieldValueError(
                        f"unit {lamp.unit} has {unit.module.channels} outputs, no {ch}",
                        ("zone_lamp",),
                    )
        return self

    def bus(self) -> BusSettings:
        """The backend's settings."""
        return BusSettings(
            transport=self.transport,
            host=self.host,
            port=self.port,
            serial_port=self.serial_port,
            baudrate=self.baudrate,
            parity=self.parity,
            stopbits=self.stopbits,
            timeout_s=self.timeout_ms / 1000,
        )

    def claims(self) -> list[str]:
        """The bus: a TCP module or a serial port."""
        if self.transport == "tcp":
            return [f"tcp:{self.host}:{self.port}"]
        return [f"serial:{self.serial_port}"]

    def locations(self) -> list[str]:
        """Every slot on every unit."""
        return [slot for unit in self.units for slot, _ in unit.slot_channels()]

    def poll_cycle_ms(self) -> float:
        """An estimate of one poll of every unit with buttons (hardware-next.md §2.3).

        RTU: per unit, an 8-byte request and a 5 + n/8 byte reply of 11-bit characters, two
        3.5-character silences (1.75 ms each above 19,200 baud) and 10 ms of module
        turnaround, plus ``poll_ms``. TCP modules are polled one after another too, at
        about 2 ms each on a LAN.
        """
        polled = [u for u in self.units if u.module.inputs_count]
        if self.transport == "tcp":
            return len(polled) * 2.0 + self.poll_ms
        char_ms = 11_000 / self.baudrate
        silence_ms = 3.5 * char_ms if self.baudrate <= 19_200 else 1.75
        total = 0.0
        for unit in polled:
            reply = 5 + math.ceil(unit.module.inputs_count / 8)
            total += (8 + reply) * char_ms + 2 * silence_ms + 10.0
        return total + self.poll_ms

    def advice(self) -> list[tuple[str, str]]:
        """Warnings ``check-config`` prints without failing (``(field, reason)``)."""
        cycle = self.poll_cycle_ms()
        if cycle <= 200:
            return []
        polled = sum(1 for u in self.units if u.module.inputs_count)
        return [
            (
                "units",
                f"a button may wait about {cycle:.0f} ms to be seen: {polled} polled modules "
                f"on one {self.transport} bus"
                + (f" at {self.baudrate} baud" if self.transport == "rtu" else "")
                + " (hardware-next.md §2.3: about 9 at 19,200 baud keep it under 200 ms); "
                "split them over more buses, raise the baud rate, or use TCP modules",
            )
        ]
