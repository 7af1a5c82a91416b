"""What every pick-to-light device offers: slots to light, buttons to confirm.

``LightBar`` is the API the workflows call (``show``, ``off``, ``clear``, ``events``);
``gpio_slots`` and ``led_strip`` implement how a slot is lit. Buttons of both kinds are
plain GPIO push buttons handled here: gpiozero debounces the contact, and a software guard
drops a second press of the same button within ``double_press_s`` (a picker hitting the
button twice must not confirm two picks). Presses arrive on gpiozero's threads and enter
the loop only through ``EventQueue.put_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Annotated, Any

from pydantic import Field

from devices._bridge import EventQueue
from devices.backends.gpio import PressButton
from devices.base import Device, HealthStatus
from devices.config import DeviceConfig
from devices.errors import DeviceError, DeviceUnavailable
from devices.events import Button, ButtonPress
from devices.lights.palette import (
    MAX_FLASH_HZ,
    BlinkTiming,
    Colour,
    Indication,
    Pattern,
    pattern_timing,
)

__all__ = [
    "Button",
    "ButtonPress",
    "Colour",
    "Indication",
    "LightBar",
    "LightBarConfig",
    "Pattern",
    "UnknownSlot",
]

log = logging.getLogger("devices")

BcmPin = Annotated[int, Field(ge=0, le=27, description="BCM GPIO number")]
SlotId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")]


class UnknownSlot(DeviceError, KeyError):
    """A slot id this device does not have (a wrong location in an order, or a typo)."""

    def __init__(self, device: str, slot: str, known: list[str]) -> None:
        message = f"device {device}: no slot {slot!r} (slots: {', '.join(known)})"
        super().__init__(message)
        self.device = device
        self.slot = slot

    def __str__(self) -> str:
        return str(self.args[0])


class LightBarConfig(DeviceConfig):
    """Settings shared by every pick-to-light kind.

    Attributes:
        pull_up: buttons connect the pin to ground (internal pull-up); ``False`` for
            buttons to 3V3.
        bounce_s: gpiozero's debounce time of the buttons.
        double_press_s: a second press of the same button within this window is dropped.
        slow_blink_hz: flashes per second of ``Pattern.SLOW_BLINK``.
        fast_blink_hz: flashes per second of ``Pattern.FAST_BLINK`` (at most 3: a safety cap).
    """

    pull_up: bool = True
    bounce_s: float = Field(default=0.02, ge=0, le=1)
    double_press_s: float = Field(default=0.3, ge=0, le=5)
    slow_blink_hz: float = Field(default=1.0, gt=0, le=MAX_FLASH_HZ)
    fast_blink_hz: float = Field(default=2.5, gt=0, le=MAX_FLASH_HZ)


class LightBar(Device):
    """A set of pick-to-light slots addressed by slot id, with their buttons.

    Subclasses implement ``_open_hardware``, ``_render`` and ``_close_hardware``. The base
    keeps what each slot shows, validates slot ids and turns everything off at open and
    close.

    Args:
        name: the device name.
        slot_ids: the slots in wiring order.
        settings: the shared settings (blink rates, button handling).
        factory: the gpiozero pin factory the buttons are built on.
        clock: monotonic time source of the double-press guard (tests inject one).
    """

    ZONE = "zone_lamp"
    """The key of the zone-complete lamp in ``_render`` calls."""

    def __init__(
        self,
        name: str,
        slot_ids: list[str],
        settings: LightBarConfig,
        factory: Any,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name)
        self._slot_ids = list(slot_ids)
        self._slot_set = frozenset(self._slot_ids)  # _check per light change: 2,000 slots
        self._settings = settings
        self._factory = factory
        self._clock = clock
        self._lit: dict[str, Indication] = {}
        self._zone: Indication | None = None
        self._events: EventQueue[ButtonPress] = EventQueue(name)
        self._buttons: list[PressButton] = []
        self._last_press: dict[tuple[str, Button], float] = {}
        self._press_lock = threading.Lock()
        self.presses_dropped = 0

    # -- the API the workflows use ------------------------------------------------------

    def slots(self) -> list[str]:
        """The slot ids of this device, in wiring order."""
        return list(self._slot_ids)

    def has_zone_lamp(self) -> bool:
        """Whether a zone-complete lamp is fitted."""
        return False

    async def show(self, slot: str, indication: Indication) -> None:
        """Light ``slot`` as ``indication`` says (colour, pattern, quantity or text).

        Raises:
            UnknownSlot: ``slot`` is not one of ``slots()``.
            DeviceUnavailable: the device is not open.
        """
        self._check(slot)
        await self._render(slot, indication)
        self._lit[slot] = indication

    async def off(self, slot: str) -> None:
        """Turn ``slot``'s light and display off."""
        self._check(slot)
        await self._render(slot, None)
        self._lit.pop(slot, None)

    async def apply(self, changes: Sequence[tuple[str, Indication | None]]) -> None:
        """Show (or, for ``None``, turn off) several slots in one go.

        A strip writes one frame for all of them instead of one per slot; GPIO slots
        change one after another. A wave lights hundreds of slots through this.

        Raises:
            UnknownSlot: a slot is not one of ``slots()`` (nothing is changed).
            DeviceUnavailable: the device is not open.
        """
        for slot, _ in changes:
            self._check(slot)
        await self._render_many(changes)
        for slot, indication in changes:
            if indication is None:
                self._lit.pop(slot, None)
            else:
                self._lit[slot] = indication

    async def clear(self) -> None:
        """Turn every slot off (the zone lamp too)."""
        self._check_open()
        await self._render_many([(slot, None) for slot in self._slot_ids])
        self._lit.clear()
        if self.has_zone_lamp():
            await self.show_zone(None)

    async def show_zone(self, indication: Indication | None) -> None:
        """Light the zone-complete lamp (``None`` turns it off).

        Raises:
            UnknownSlot: the device has no zone lamp.
        """
        if not self.has_zone_lamp():
            raise UnknownSlot(self.name, self.ZONE, self._slot_ids)
        self._check_open()
        await self._render(self.ZONE, indication)
        self._zone = indication

    def lit(self) -> dict[str, Indication]:
        """What each lit slot shows now (slots that are off are absent)."""
        return dict(self._lit)

    def zone(self) -> Indication | None:
        """What the zone lamp shows, ``None`` when off."""
        return self._zone

    def events(self) -> AsyncIterator[ButtonPress]:
        """Button presses, debounced, in the order they happened."""
        return aiter(self._events)

    def timing(self, pattern: Pattern) -> BlinkTiming | None:
        """The blink timing of ``pattern`` on this device (``None`` for steady)."""
        return pattern_timing(pattern, self._settings.slow_blink_hz, self._settings.fast_blink_hz)

    # -- lifecycle -----------------------------------------------------------------------

    async def _open(self) -> None:
        self._events.bind(asyncio.get_running_loop())
        self._lit.clear()
        self._zone = None
        try:
            await self._open_hardware()
            await self._all_off()
        except DeviceError as exc:
            await self._release()
            self._set_health(HealthStatus.UNAVAILABLE, str(exc))
            raise
        self._set_health(HealthStatus.OK)

    async def _close(self) -> None:
        try:
            await self._all_off()
        except DeviceError as exc:
            log.warning("device %s: could not turn the lights off at close: %s", self.name, exc)
        await self._release()
        self._lit.clear()
        self._zone = None

    async def _release(self) -> None:
        buttons, self._buttons = self._buttons, []
        # gpiozero's Button.close waits ~0.1 s for its hold thread: close them side by side.
        await asyncio.gather(*(asyncio.to_thread(button.close) for button in buttons))
        await self._close_hardware()

    async def _all_off(self) -> None:
        await self._render_many([(slot, None) for slot in self._slot_ids])
        if self.has_zone_lamp():
            await self._render(self.ZONE, None)

    def _check(self, slot: str) -> None:
        if slot not in self._slot_set:
            raise UnknownSlot(self.name, slot, self._slot_ids)
        self._check_open()

    def _check_open(self) -> None:
        if self._closed or self.health.status is not HealthStatus.OK:
            raise DeviceUnavailable(f"device {self.name}: not open")

    # -- buttons ------------------------------------------------------------------------

    async def _add_button(self, slot: str, button: Button, pin: int) -> None:
        """Build the GPIO button ``button`` of ``slot`` on ``pin``."""

        def on_press() -> None:
            self._pressed(slot, button)

        handle = await asyncio.to_thread(
            PressButton,
            pin,
            self._factory,
            on_press,
            pull_up=self._settings.pull_up,
            bounce_s=self._settings.bounce_s,
        )
        self._buttons.append(handle)

    def _pressed(self, slot: str, button: Button, qty: int | None = None) -> None:
        """Handle a press on any thread: drop double presses, queue the rest."""
        now = self._clock()
        with self._press_lock:
            last = self._last_press.get((slot, button))
            if last is not None and now - last < self._settings.double_press_s:
                self.presses_dropped += 1
                return
            self._last_press[(slot, button)] = now
        self._events.put_threadsafe(ButtonPress(self.name, slot, button, now, qty))

    # -- what subclasses implement ------------------------------------------------------

    async def _open_hardware(self) -> None:
        """Claim the lights, displays and buttons (call ``_add_button`` for buttons)."""
        raise NotImplementedError

    async def _render(self, slot: str, indication: Indication | None) -> None:
        """Make the hardware of ``slot`` (or ``ZONE``) show ``indication``; ``None`` = off."""
        raise NotImplementedError

    async def _render_many(self, changes: Sequence[tuple[str, Indication | None]]) -> None:
        """Render several slots; devices that can batch (one strip frame) override this."""
        for slot, indication in changes:
            await self._render(slot, indication)

    async def _close_hardware(self) -> None:
        """Release lights and displays; must work after a partial open."""
        raise NotImplementedError
