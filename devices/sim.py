"""The contract of device simulators (``--simulate`` and the tests).

A simulator plays the far end of a device: the driver runs its real code path against it
(pyserial on a pseudo-terminal, a TCP socket, gpiozero's MockFactory). The node's control
interface forwards ``control(action, args)`` to it, so demos and black-box tests can press a
button, scan a code or load the scale from outside the node's process.
"""

from __future__ import annotations

from typing import Any

from devices.config import DeviceConfig
from devices.context import DeviceContext


class Simulator:
    """Base class of simulators; one per simulated device.

    Args:
        config: the device's config as written in the node file.
        context: the node's device context (MockFactory for GPIO).
    """

    def __init__(self, config: DeviceConfig, context: DeviceContext) -> None:
        self.config = config
        self.context = context

    async def start(self) -> None:
        """Start playing the device (open the pty, bind the socket)."""

    async def stop(self) -> None:
        """Stop and release everything; safe to call twice."""

    def patched_config(self) -> DeviceConfig:
        """The config the driver should use to reach this simulator (pty path, port)."""
        return self.config

    async def control(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        """Act on the simulated device; raises ``ValueError`` for an unknown action or args."""
        raise ValueError(f"unknown action {action!r}")

    def state(self) -> dict[str, Any]:
        """What the simulated device shows or holds now (lights lit, jobs printed, weight)."""
        return {}
