"""What the pick-to-light simulators share: the ``press`` control action.

Both ``gpio_slots`` and ``led_strip`` simulators press buttons the same way: the button's
gpiozero mock pin is driven as the contact would (low then high for a button to ground),
so the driver's real gpiozero callback path runs. Each subclass says which pin a slot's
button is on and reads its own hardware for ``state()``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from devices.backends.gpio import press
from devices.lights.base import LightBarConfig
from devices.sim import Simulator

BUTTONS = ("confirm", "plus", "minus")


class LightSimulator(Simulator):
    """Base of light simulators.

    Control actions:

    * ``press`` ``{"slot": str, "button": "confirm" | "plus" | "minus"}`` (button defaults
      to ``confirm``); returns ``{"slot", "button"}``. Raises ``ValueError`` for an unknown
      slot, a button the slot does not have, or an unknown action.
    """

    config: LightBarConfig

    def button_pins(self) -> dict[str, dict[str, int]]:
        """Pins of each slot's fitted buttons: ``{slot: {button: pin}}`` (subclasses)."""
        raise NotImplementedError

    async def control(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run a control action (see the class docstring)."""
        if action != "press":
            raise ValueError(f"unknown action {action!r} (known: press)")
        slots = self.button_pins()
        slot = str(args.get("slot"))
        if slot not in slots:
            raise ValueError(f"unknown slot {args.get('slot')!r} (slots: {', '.join(slots)})")
        button = str(args.get("button", "confirm"))
        if button not in BUTTONS:
            raise ValueError(f"button must be confirm, plus or minus, not {button!r}")
        pin = slots[slot].get(button)
        if pin is None:
            raise ValueError(f"slot {slot} has no {button} button")
        pull_up = self.config.pull_up
        await asyncio.to_thread(press, self.context.pin_factory, pin, pull_up=pull_up)
        return {"slot": slot, "button": button}
