"""What the node hands every driver when it builds it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class DeviceContext:
    """Injected dependencies of drivers.

    Attributes:
        pin_factory: the gpiozero pin factory (lgpio on a Pi, MockFactory when simulated);
            ``None`` lets ``devices.backends.gpio`` choose.
        simulate: ``True`` when the whole node runs on simulated hardware.
    """

    pin_factory: Any = None
    simulate: bool = False
