"""Shared helpers of the pick-to-light tests (no fixtures: plain functions)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from devices.backends.gpio import mock_factory
from devices.context import DeviceContext
from devices.lights.gpio_slots import GpioSlotsConfig
from devices.lights.led_strip import LedStripConfig

SHELF: dict[str, Any] = {
    "name": "shelf-a",
    "kind": "gpio_slots",
    "slots": [
        {
            "id": "A1",
            "rgb": [17, 27, 22],
            "confirm": 5,
            "plus": 6,
            "minus": 13,
            "display": {"clk": 23, "dio": 24},
        },
        {"id": "A2", "led": 16, "confirm": 26, "display": {"clk": 20, "dio": 21}},
    ],
    "zone_lamp": {"led": 12},
}

STRIP: dict[str, Any] = {
    "name": "strip-b",
    "kind": "led_strip",
    "led_count": 10,
    "brightness": 1.0,
    "slots": [
        {"id": "B1", "first": 0, "count": 3, "confirm": 5},
        {"id": "B2", "first": 3, "count": 4, "confirm": 6, "plus": 13},
    ],
    "zone_lamp": {"first": 9},
}


def shelf_config(**changes: Any) -> GpioSlotsConfig:
    """The test shelf with ``changes`` applied."""
    return GpioSlotsConfig.model_validate({**SHELF, **changes})


def strip_config(**changes: Any) -> LedStripConfig:
    """The test strip with ``changes`` applied."""
    return LedStripConfig.model_validate({**STRIP, **changes})


def mock_context() -> DeviceContext:
    """A simulated context on a fresh MockFactory."""
    return DeviceContext(pin_factory=mock_factory(), simulate=True)


def level(context: DeviceContext, pin: int) -> float:
    """The level a mock pin drives now."""
    return float(context.pin_factory.pin(pin).state)


async def eventually(check: Callable[[], bool], limit_s: float = 3.0) -> None:
    """Wait until ``check()`` holds; the limit is only a safety net."""
    deadline = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the safety timeout")
        await asyncio.sleep(0.01)
