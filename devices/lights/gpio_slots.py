"""Pick-to-light slots wired straight to the Pi's GPIO (kind ``gpio_slots``).

Each slot is a light (one LED, or an RGB LED on three pins), a confirm button, optional
plus/minus buttons for short picks and an optional TM1637 4-digit display on two pins. An
optional zone lamp (LED or RGB) signals that the whole zone is done.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from devices.backends.gpio import (
    Lamp,
    PinTap,
    TwoWireOutputs,
    is_mock,
    lamp_on,
    pin_level,
    resolve_pin_factory,
    tap_pins,
)
from devices.config import FieldValueError
from devices.context import DeviceContext
from devices.events import Button
from devices.lights.base import BcmPin, LightBar, LightBarConfig, SlotId
from devices.lights.palette import Colour, Indication, Pattern, nearest_colour
from devices.lights.sim import BUTTONS, LightSimulator
from devices.lights.tm1637 import BusDecoder, DisplayState, Tm1637


class DisplayPins(BaseModel):
    """The two pins of a TM1637 display module."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    clk: BcmPin
    dio: BcmPin


class LampPins(BaseModel):
    """A light: ``led`` (one pin) or ``rgb`` (red, green, blue pins), exactly one of them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    led: BcmPin | None = None
    rgb: tuple[BcmPin, BcmPin, BcmPin] | None = None

    @model_validator(mode="after")
    def _one_light(self) -> Self:
        if (self.led is None) == (self.rgb is None):
            raise ValueError("give exactly one of 'led' (one pin) or 'rgb' (three pins)")
        return self

    def light_pins(self) -> tuple[int, ...]:
        """The light's pins (one, or red, green, blue)."""
        return self.rgb if self.rgb is not None else (self.led,)  # type: ignore[return-value]


class GpioSlot(LampPins):
    """One slot: light, confirm button, optional plus/minus buttons and display."""

    id: SlotId
    confirm: BcmPin
    plus: BcmPin | None = None
    minus: BcmPin | None = None
    display: DisplayPins | None = None

    def pin_uses(self) -> list[tuple[str, tuple[str | int, ...], int]]:
        """Every pin of the slot: what it is used for, its field in the slot, the pin."""
        uses: list[tuple[str, tuple[str | int, ...], int]] = [
            (f"slot {self.id} light", ("led",) if self.rgb is None else ("rgb", n), pin)
            for n, pin in enumerate(self.light_pins())
        ]
        for button in ("confirm", "plus", "minus"):
            pin = getattr(self, button)
            if pin is not None:
                uses.append((f"slot {self.id} {button}", (button,), pin))
        if self.display is not None:
            uses += [
                (f"slot {self.id} display clk", ("display", "clk"), self.display.clk),
                (f"slot {self.id} display dio", ("display", "dio"), self.display.dio),
            ]
        return uses


class GpioSlotsConfig(LightBarConfig):
    """Config of a ``gpio_slots`` device.

    Attributes:
        slots: the slots, in shelf order.
        active_high: ``True`` when a high pin lights the LED (common-cathode RGB);
            ``False`` when the pin sinks it (common-anode RGB, LEDs to 3V3).
        pwm: mix RGB colours with PWM (else each channel is only on or off).
        display_brightness: TM1637 brightness 0..7.
        zone_lamp: the optional zone-complete lamp.
    """

    kind: Literal["gpio_slots"]
    slots: list[GpioSlot] = Field(min_length=1)
    active_high: bool = True
    pwm: bool = True
    display_brightness: int = Field(default=4, ge=0, le=7)
    zone_lamp: LampPins | None = None

    @model_validator(mode="after")
    def _unique(self) -> Self:
        seen_ids: set[str] = set()
        for n, slot in enumerate(self.slots):
            if slot.id in seen_ids:
                raise FieldValueError(f"slot id {slot.id!r} is used twice", ("slots", n, "id"))
            seen_ids.add(slot.id)
        used: dict[int, str] = {}
        for what, field, pin in self._pin_uses():
            if pin in used:
                raise FieldValueError(f"GPIO {pin} is used twice: {used[pin]} and {what}", field)
            used[pin] = what
        return self

    def _pin_uses(self) -> list[tuple[str, tuple[str | int, ...], int]]:
        uses = [
            (what, ("slots", n, *field), pin)
            for n, slot in enumerate(self.slots)
            for what, field, pin in slot.pin_uses()
        ]
        if self.zone_lamp is not None:
            lamp = self.zone_lamp
            uses += [
                (
                    "zone lamp",
                    ("zone_lamp", "led") if lamp.rgb is None else ("zone_lamp", "rgb", n),
                    pin,
                )
                for n, pin in enumerate(lamp.light_pins())
            ]
        return uses

    def claims(self) -> list[str]:
        """``gpio:N`` for every pin of every slot and the zone lamp."""
        return [f"gpio:{pin}" for pin in sorted(pin for _, _, pin in self._pin_uses())]

    def locations(self) -> list[str]:
        """The slot ids."""
        return [slot.id for slot in self.slots]


class GpioSlots(LightBar):
    """Pick-to-light slots on GPIO: LEDs or RGB LEDs, buttons and TM1637 displays.

    Wiring (BCM numbers, 3V3 logic): each LED through a resistor (~330 Ω) from its pin to
    ground (``active_high = true``); common-anode RGB LEDs to 3V3 with
    ``active_high = false``. Buttons between their pin and ground (internal pull-up;
    ``pull_up = false`` for buttons to 3V3). A TM1637 module takes VCC (3V3), GND, CLK and
    DIO on any two free pins. Avoid GPIO 2/3 (I2C pull-ups) and the SPI pins if a strip
    is fitted.

    Node file example::

        [[devices]]
        name = "shelf-a"
        kind = "gpio_slots"
        slots = [
          { id = "A1", rgb = [17, 27, 22], confirm = 5, plus = 6, minus = 13,
            display = { clk = 23, dio = 24 } },
          { id = "A2", led = 16, confirm = 26 },
        ]
        zone_lamp = { led = 12 }

    Usage::

        async with GpioSlots.from_config(config, DeviceContext()) as bar:
            await bar.show("A1", Indication(Colour.ORANGE, Pattern.STEADY, qty=3))
            async for press in bar.events():
                ...

    Args:
        config: the validated config.
        pin_factory: the injected gpiozero pin factory (``None``: the Pi's own).
        clock: time source of the double-press guard.
    """

    def __init__(
        self,
        config: GpioSlotsConfig,
        pin_factory: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(config.name, config.locations(), config, pin_factory, clock)
        self.config = config
        self._slot_config = {slot.id: slot for slot in config.slots}
        self._lamps: dict[str, Lamp] = {}
        self._displays: dict[str, Tm1637] = {}

    @classmethod
    def from_config(cls, config: GpioSlotsConfig, context: DeviceContext) -> GpioSlots:
        """Build the driver on the context's pin factory."""
        return cls(config, context.pin_factory)

    def describe(self) -> str:
        """One line naming the slots and pins."""
        displays = sum(1 for slot in self.config.slots if slot.display is not None)
        return (
            f"GpioSlots {self.name}: {len(self.config.slots)} slots "
            f"({displays} with display) on {', '.join(self.config.claims())}"
        )

    def has_zone_lamp(self) -> bool:
        """Whether the config has a zone lamp."""
        return self.config.zone_lamp is not None

    async def _open_hardware(self) -> None:
        self._factory = await asyncio.to_thread(resolve_pin_factory, self._factory)
        config = self.config
        lights: list[tuple[str, LampPins]] = [(slot.id, slot) for slot in config.slots]
        if config.zone_lamp is not None:
            lights.append((self.ZONE, config.zone_lamp))
        for key, pins in lights:
            self._lamps[key] = await asyncio.to_thread(
                Lamp,
                pins.light_pins(),
                self._factory,
                active_high=config.active_high,
                pwm=config.pwm,
            )
        for slot in config.slots:
            if slot.display is not None:
                bus = await asyncio.to_thread(
                    TwoWireOutputs, slot.display.clk, slot.display.dio, self._factory
                )
                self._displays[slot.id] = Tm1637(bus, config.display_brightness)
            await self._add_button(slot.id, Button.CONFIRM, slot.confirm)
            if slot.plus is not None:
                await self._add_button(slot.id, Button.PLUS, slot.plus)
            if slot.minus is not None:
                await self._add_button(slot.id, Button.MINUS, slot.minus)

    async def _render(self, slot: str, indication: Indication | None) -> None:
        lamp = self._lamps[slot]
        if indication is None:
            await asyncio.to_thread(lamp.off)
        else:
            rgb = indication.colour.unit_rgb
            timing = self.timing(indication.pattern)
            if timing is None:
                await asyncio.to_thread(lamp.steady, rgb)
            else:
                await asyncio.to_thread(lamp.blink, timing.on_s, timing.off_s, rgb)
        display = self._displays.get(slot)
        if display is not None:
            await display.show(None if indication is None else indication.display)

    async def _close_hardware(self) -> None:
        lamps, self._lamps = self._lamps, {}
        displays, self._displays = self._displays, {}
        for lamp in lamps.values():
            await asyncio.to_thread(lamp.close)
        for display in displays.values():
            await asyncio.to_thread(display.close)


class GpioSlotsSimulator(LightSimulator):
    """Plays the shelf on gpiozero's ``MockFactory`` (``DeviceContext.pin_factory``).

    Control actions: ``press`` (see ``devices.lights.sim.LightSimulator``).

    ``state()`` reads the hardware: light on/colour from the mock pin levels (RGB duty
    cycles mapped to the nearest palette colour), the display from the CLK/DIO changes
    decoded as the TM1637 would latch them. A pin level cannot tell steady from blinking
    at one instant, so the pattern comes from the blink the gpio backend handed to
    gpiozero (and a blinking light counts as on in its dark phase).
    """

    config: GpioSlotsConfig

    def __init__(self, config: GpioSlotsConfig, context: DeviceContext) -> None:
        super().__init__(config, context)
        self._taps: dict[str, PinTap] = {}
        self._displays: dict[str, DisplayState] = {}  # slot -> what its display shows

    @property
    def factory(self) -> Any:
        """The mock pin factory."""
        return self.context.pin_factory

    async def start(self) -> None:
        """Tap the display pins (before the driver claims them)."""
        if not is_mock(self.factory):
            raise ValueError(
                "the gpio_slots simulator needs DeviceContext(pin_factory=MockFactory)"
            )
        for slot in self.config.slots:
            if slot.display is not None:
                clk, dio = slot.display.clk, slot.display.dio
                tap = tap_pins(self.factory, [clk, dio])
                self._taps[slot.id] = tap
                decoder = BusDecoder(clk=tap.initial[clk], dio=tap.initial[dio])
                display = DisplayState()
                self._displays[slot.id] = display
                tap.listen(self._decoding(clk, decoder, display))

    def button_pins(self) -> dict[str, dict[str, int]]:
        """Pins of each slot's fitted buttons."""
        return {
            slot.id: {
                button: pin for button in BUTTONS if (pin := getattr(slot, button)) is not None
            }
            for slot in self.config.slots
        }

    def _light_state(self, pins: LampPins) -> dict[str, Any]:
        levels = [pin_level(self.factory, pin) for pin in pins.light_pins()]
        if not self.config.active_high:
            levels = [1.0 - level for level in levels]
        lamp = lamp_on(self.factory, pins.light_pins()[0])
        blinking = lamp.blinking if lamp is not None else None
        lit_now = max(levels) > 0.0
        colour: Colour | None = None
        if pins.rgb is not None:
            if lit_now:
                colour = nearest_colour((levels[0] * 255, levels[1] * 255, levels[2] * 255))
            elif blinking is not None and lamp is not None and lamp.target is not None:
                r, g, b = lamp.target
                colour = nearest_colour((r * 255, g * 255, b * 255))
        pattern: Pattern | None = None
        if blinking is not None:
            fast = Pattern.FAST_BLINK
            fast_period = 1 / self.config.fast_blink_hz
            slow_period = 1 / self.config.slow_blink_hz
            period = sum(blinking)
            closer_to_fast = abs(period - fast_period) < abs(period - slow_period)
            pattern = fast if closer_to_fast else Pattern.SLOW_BLINK
        elif lit_now:
            pattern = Pattern.STEADY
        return {
            "on": lit_now or blinking is not None,
            "colour": None if colour is None else colour.value,
            "pattern": None if pattern is None else pattern.value,
        }

    @staticmethod
    def _decoding(
        clk: int, decoder: BusDecoder, display: DisplayState
    ) -> Callable[[int, bool], None]:
        """A tap listener: decode each change as it comes, keep only what the display shows."""

        def feed(pin: int, level: bool) -> None:
            decoder.feed("clk" if pin == clk else "dio", level)
            if decoder.transactions:
                display.apply(decoder.transactions)
                decoder.transactions.clear()

        return feed

    def _display_text(self, slot_id: str) -> str | None:
        tap = self._taps.get(slot_id)
        display = self._displays.get(slot_id)
        if tap is None or display is None:
            return None
        with tap.lock:  # the pin thread may be feeding it
            return display.text

    def state(self) -> dict[str, Any]:
        """``{"slots": {id: {on, colour, pattern, qty, display}}, "zone_lamp": ...}``."""
        slots: dict[str, Any] = {}
        for slot in self.config.slots:
            entry = self._light_state(slot)
            text = self._display_text(slot.id)
            entry["display"] = text
            entry["qty"] = int(text) if text is not None and text.strip().isdigit() else None
            slots[slot.id] = entry
        zone = None if self.config.zone_lamp is None else self._light_state(self.config.zone_lamp)
        return {"slots": slots, "zone_lamp": zone}


CONFIG = GpioSlotsConfig
DRIVER = GpioSlots
SIMULATOR = GpioSlotsSimulator
