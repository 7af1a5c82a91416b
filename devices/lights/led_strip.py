"""Pick-to-light on a WS2812 ("NeoPixel") strip driven over SPI (kind ``led_strip``).

Each slot is a range of LEDs on the strip, with optional GPIO push buttons. WS2812 timing
is produced by the SPI controller: at 2.4 MHz one SPI bit lasts 417 ns, and each WS2812
bit becomes three SPI bits, ``100`` for 0 (417 ns high) and ``110`` for 1 (833 ns high),
which sits inside the chip's tolerances. A pixel is 24 bits in green, red, blue order, MSB
first, so 9 SPI bytes; a frame ends with at least 300 µs of low (the latch/reset gap of
newer WS2812B parts) sent as zero bytes.

One asyncio task renders frames at ``frame_hz`` (10 Hz) for blinking; a frame is only
sent when it differs from the last, and ``show``/``off`` render at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from devices.backends.gpio import is_mock, resolve_pin_factory
from devices.backends.spi import FakeSpiBus, SpiBus, fake_bus, spi_bus
from devices.base import HealthStatus
from devices.config import FieldValueError
from devices.context import DeviceContext
from devices.errors import DeviceError
from devices.events import Button
from devices.lights.base import BcmPin, LightBar, LightBarConfig, SlotId
from devices.lights.palette import Indication, Pattern, nearest_colour
from devices.lights.sim import LightSimulator

log = logging.getLogger("devices")

SPI_HZ = 2_400_000
"""SPI clock: three SPI bits per WS2812 bit give the 800 kHz WS2812 bit rate."""
RESET_S = 300e-6
RESET_BYTES = math.ceil(RESET_S * SPI_HZ / 8)
"""Zero bytes after each frame: the latch gap (90 bytes = 300 µs at 2.4 MHz)."""

# The header pins each SPI controller uses (MOSI, SCLK, then CE0, CE1, CE2).
_SPI_PINS: dict[int, tuple[int, int, tuple[int, ...]]] = {
    0: (10, 11, (8, 7)),
    1: (20, 21, (18, 17, 16)),
}

Pixel = tuple[int, int, int]


def _expand(byte: int) -> int:
    bits = 0
    for i in range(7, -1, -1):
        bits = bits << 3 | (0b110 if byte >> i & 1 else 0b100)
    return bits


_EXPANDED: tuple[bytes, ...] = tuple(_expand(b).to_bytes(3, "big") for b in range(256))
_CONTRACTED: dict[bytes, int] = {code: value for value, code in enumerate(_EXPANDED)}


def encode_frame(pixels: list[Pixel]) -> bytes:
    """The SPI bytes that show ``pixels`` (8-bit RGB each), reset gap included."""
    out = bytearray()
    for r, g, b in pixels:
        out += _EXPANDED[g] + _EXPANDED[r] + _EXPANDED[b]
    out += bytes(RESET_BYTES)
    return bytes(out)


def decode_frame(data: bytes, led_count: int) -> list[Pixel] | None:
    """The pixels an SPI frame sets, or ``None`` if it is not valid WS2812 encoding."""
    if len(data) < led_count * 9:
        return None
    pixels: list[Pixel] = []
    for led in range(led_count):
        values = []
        for colour in range(3):
            start = led * 9 + colour * 3
            value = _CONTRACTED.get(data[start : start + 3])
            if value is None:
                return None
            values.append(value)
        g, r, b = values
        pixels.append((r, g, b))
    return pixels


class LedRange(BaseModel):
    """LEDs ``first`` .. ``first + count - 1`` of the strip (0-based)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    first: int = Field(ge=0)
    count: int = Field(default=1, ge=1)

    def indexes(self) -> range:
        """The LED indexes."""
        return range(self.first, self.first + self.count)


class StripSlot(LedRange):
    """One slot: an LED range and optional GPIO buttons."""

    id: SlotId
    confirm: BcmPin | None = None
    plus: BcmPin | None = None
    minus: BcmPin | None = None

    def buttons(self) -> list[tuple[Button, int]]:
        """The slot's buttons and their pins."""
        found = []
        for button in Button:
            pin = getattr(self, button.value)
            if pin is not None:
                found.append((button, pin))
        return found


class LedStripConfig(LightBarConfig):
    """Config of a ``led_strip`` device.

    Attributes:
        spi_bus: SPI controller (0: MOSI on GPIO 10).
        spi_device: chip select of the bus (the strip ignores it, but spidev claims it).
        led_count: LEDs on the strip.
        brightness: scale of every colour (WS2812 at full power dazzles and draws 60 mA).
        frame_hz: render rate of blink patterns.
        slots: the slots and their LED ranges.
        zone_lamp: an LED range used as the zone-complete lamp.
    """

    kind: Literal["led_strip"]
    spi_bus: int = Field(default=0, ge=0, le=6)
    spi_device: int = Field(default=0, ge=0, le=3)
    led_count: int = Field(ge=1, le=2000)
    brightness: float = Field(default=0.25, gt=0, le=1)
    frame_hz: float = Field(default=10.0, ge=5, le=50)
    slots: list[StripSlot] = Field(min_length=1)
    zone_lamp: LedRange | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        owner: dict[int, str] = {}
        ranges: list[tuple[str, tuple[str | int, ...], LedRange]] = [
            (f"slot {s.id}", ("slots", n), s) for n, s in enumerate(self.slots)
        ]
        if self.zone_lamp is not None:
            ranges.append(("zone lamp", ("zone_lamp",), self.zone_lamp))
        seen: set[str] = set()
        for n, slot in enumerate(self.slots):
            if slot.id in seen:
                raise FieldValueError(f"slot id {slot.id!r} is used twice", ("slots", n, "id"))
            seen.add(slot.id)
        for what, field, leds in ranges:
            if leds.first + leds.count > self.led_count:
                raise FieldValueError(
                    f"{what} ends past the strip's {self.led_count} LEDs", (*field, "count")
                )
            for index in leds.indexes():
                if index in owner:
                    raise FieldValueError(
                        f"LED {index} is in both {owner[index]} and {what}", (*field, "first")
                    )
                owner[index] = what
        used: dict[int, str] = {pin: "SPI" for pin in self._spi_pins()}
        for n, slot in enumerate(self.slots):
            for button, pin in slot.buttons():
                what = f"slot {slot.id} {button.value}"
                if pin in used:
                    raise FieldValueError(
                        f"GPIO {pin} is used twice: {used[pin]} and {what}",
                        ("slots", n, button.value),
                    )
                used[pin] = what
        return self

    def _spi_pins(self) -> list[int]:
        pins = _SPI_PINS.get(self.spi_bus)
        if pins is None:
            return []
        mosi, sclk, chip_selects = pins
        cs = [chip_selects[self.spi_device]] if self.spi_device < len(chip_selects) else []
        return [mosi, sclk, *cs]

    def claims(self) -> list[str]:
        """``spi:B.D``, the bus's header pins and the button pins."""
        pins = self._spi_pins() + [pin for s in self.slots for _, pin in s.buttons()]
        return [f"spi:{self.spi_bus}.{self.spi_device}"] + [f"gpio:{p}" for p in sorted(pins)]

    def locations(self) -> list[str]:
        """The slot ids."""
        return [slot.id for slot in self.slots]


class LedStrip(LightBar):
    """Pick-to-light slots as LED ranges of a WS2812 strip on SPI.

    Wiring: strip DIN to MOSI (GPIO 10, header pin 19) through a 3.3 V → 5 V level shifter
    (74AHCT125), strip GND to Pi GND, 5 V from its own supply (60 mA per LED at full
    white). Enable SPI (``dtparam=spi=on``); the service user needs the ``spi`` group.
    Buttons as for ``gpio_slots`` (pin to ground). Works on a Pi 5, unlike rpi_ws281x.

    Node file example::

        [[devices]]
        name = "strip-b"
        kind = "led_strip"
        led_count = 60
        slots = [
          { id = "B1", first = 0, count = 6, confirm = 5 },
          { id = "B2", first = 6, count = 6, confirm = 6 },
        ]

    Usage::

        async with LedStrip.from_config(config, DeviceContext()) as strip:
            await strip.show("B1", Indication(Colour.SKY_BLUE, Pattern.SLOW_BLINK))

    Args:
        config: the validated config.
        spi: the SPI bus (``devices.backends.spi``), not yet open.
        pin_factory: gpiozero pin factory for the buttons (``None``: the Pi's own).
        clock: time source of the double-press guard.
    """

    def __init__(
        self,
        config: LedStripConfig,
        spi: SpiBus,
        pin_factory: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(config.name, config.locations(), config, pin_factory, clock)
        self.config = config
        self._spi = spi
        self._ranges: dict[str, LedRange] = {slot.id: slot for slot in config.slots}
        if config.zone_lamp is not None:
            self._ranges[self.ZONE] = config.zone_lamp
        self._shown: dict[str, tuple[Indication, float]] = {}
        self._last_frame: bytes | None = None
        self._write_lock = asyncio.Lock()
        self._renderer: asyncio.Task[None] | None = None
        self.frames_written = 0

    @classmethod
    def from_config(cls, config: LedStripConfig, context: DeviceContext) -> LedStrip:
        """Build the driver; a simulated node gets the fake SPI bus."""
        bus = spi_bus(config.spi_bus, config.spi_device, SPI_HZ, simulate=context.simulate)
        return cls(config, bus, context.pin_factory)

    def describe(self) -> str:
        """One line naming the bus and slots."""
        c = self.config
        return (
            f"LedStrip {self.name}: {c.led_count} WS2812 on spi:{c.spi_bus}.{c.spi_device}, "
            f"{len(c.slots)} slots"
        )

    def has_zone_lamp(self) -> bool:
        """Whether a zone lamp range is configured."""
        return self.config.zone_lamp is not None

    def frame(self, now: float) -> list[Pixel]:
        """The pixels to show at monotonic time ``now``."""
        pixels: list[Pixel] = [(0, 0, 0)] * self.config.led_count
        for key, (indication, since) in self._shown.items():
            timing = self.timing(indication.pattern)
            if timing is not None and (now - since) % (timing.on_s + timing.off_s) >= timing.on_s:
                continue
            scale = self.config.brightness
            r, g, b = (round(c * scale) for c in indication.colour.rgb)
            for index in self._ranges[key].indexes():
                pixels[index] = (r, g, b)
        return pixels

    async def _flush(self) -> None:
        async with self._write_lock:
            data = encode_frame(self.frame(time.monotonic()))
            if data == self._last_frame:
                return
            await asyncio.to_thread(self._spi.write, data)
            self._last_frame = data
            self.frames_written += 1

    async def _open_hardware(self) -> None:
        if any(slot.buttons() for slot in self.config.slots):
            self._factory = await asyncio.to_thread(resolve_pin_factory, self._factory)
        await asyncio.to_thread(self._spi.open)
        self._last_frame = None
        self._shown.clear()
        for slot in self.config.slots:
            for button, pin in slot.buttons():
                await self._add_button(slot.id, button, pin)
        self._renderer = asyncio.create_task(self._render_loop(), name=f"{self.name}-frames")

    async def _render_loop(self) -> None:
        period = 1.0 / self.config.frame_hz
        while True:
            await asyncio.sleep(period)
            if not any(self.timing(ind.pattern) for ind, _ in self._shown.values()):
                continue
            try:
                await self._flush()
            except DeviceError as exc:
                self._set_health(HealthStatus.UNAVAILABLE, str(exc))
            else:
                self._set_health(HealthStatus.OK)

    async def _render(self, slot: str, indication: Indication | None) -> None:
        if indication is None:
            self._shown.pop(slot, None)
        else:
            self._shown[slot] = (indication, time.monotonic())
        await self._flush()

    async def _render_many(self, changes: Sequence[tuple[str, Indication | None]]) -> None:
        now = time.monotonic()
        for slot, indication in changes:
            if indication is None:
                self._shown.pop(slot, None)
            else:
                self._shown[slot] = (indication, now)
        await self._flush()

    async def _close_hardware(self) -> None:
        task, self._renderer = self._renderer, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await asyncio.to_thread(self._spi.close)


class LedStripSimulator(LightSimulator):
    """Plays the strip on the fake SPI bus and the buttons on gpiozero's ``MockFactory``.

    Control actions: ``press`` (see ``devices.lights.sim.LightSimulator``).

    ``state()`` decodes the SPI frames the driver wrote: ``on`` and ``colour`` from the
    latest frame, the ``pattern`` from when the slot's LEDs last changed (a blink is
    recognised once two phases of it were sent; until then a lit slot reads ``steady``).
    Strips have no quantity display, so ``qty`` and ``display`` are ``None``.
    """

    config: LedStripConfig

    def __init__(self, config: LedStripConfig, context: DeviceContext) -> None:
        super().__init__(config, context)
        self.bus: FakeSpiBus = fake_bus(config.spi_bus, config.spi_device)

    async def start(self) -> None:
        """Give the driver a fresh fake bus to write to."""
        self.bus = fake_bus(self.config.spi_bus, self.config.spi_device, fresh=True)
        has_buttons = any(slot.buttons() for slot in self.config.slots)
        if has_buttons and not is_mock(self.context.pin_factory):
            raise ValueError("strip buttons need DeviceContext(pin_factory=MockFactory)")

    def button_pins(self) -> dict[str, dict[str, int]]:
        """Pins of each slot's fitted buttons."""
        return {
            slot.id: {button.value: pin for button, pin in slot.buttons()}
            for slot in self.config.slots
        }

    def _range_state(self, leds: LedRange, frames: list[tuple[float, list[Pixel]]]) -> Any:
        if not frames:
            return {"on": False, "colour": None, "pattern": None}
        toggles: list[float] = []
        lit_before: bool | None = None
        colour = None
        for at, pixels in frames:
            lit_pixels = [pixels[i] for i in leds.indexes() if any(pixels[i])]
            lit = bool(lit_pixels)
            if lit:
                colour = nearest_colour(lit_pixels[0])
            if lit != lit_before:
                toggles.append(at)
                lit_before = lit
        lit_now = bool(lit_before)
        pattern = self._blink(toggles)
        on = lit_now or pattern is not None
        if pattern is None and lit_now:
            pattern = Pattern.STEADY
        return {
            "on": on,
            "colour": None if not on or colour is None else colour.value,
            "pattern": None if pattern is None else pattern.value,
        }

    def _blink(self, toggles: list[float]) -> Pattern | None:
        if len(toggles) < 3:
            return None
        tick = 1.0 / self.config.frame_hz
        halves = {
            Pattern.SLOW_BLINK: 0.5 / self.config.slow_blink_hz,
            Pattern.FAST_BLINK: 0.5 / self.config.fast_blink_hz,
        }
        if time.monotonic() - toggles[-1] > max(halves.values()) + 2 * tick:
            return None  # no change for longer than any blink phase: not blinking
        phases = [toggles[-2] - toggles[-3], toggles[-1] - toggles[-2]]
        for pattern, half in halves.items():
            if all(abs(phase - half) <= tick * 1.5 for phase in phases):
                return pattern
        return None

    def state(self) -> dict[str, Any]:
        """``{"slots": {id: {on, colour, pattern, qty, display}}, "zone_lamp": ...}``."""
        frames = []
        for at, data in self.bus.history():
            pixels = decode_frame(data, self.config.led_count)
            if pixels is not None:
                frames.append((at, pixels))
        slots: dict[str, Any] = {}
        for slot in self.config.slots:
            entry = self._range_state(slot, frames)
            entry["qty"] = None
            entry["display"] = None
            slots[slot.id] = entry
        zone = None
        if self.config.zone_lamp is not None:
            zone = self._range_state(self.config.zone_lamp, frames)
        return {"slots": slots, "zone_lamp": zone}


CONFIG = LedStripConfig
DRIVER = LedStrip
SIMULATOR = LedStripSimulator
