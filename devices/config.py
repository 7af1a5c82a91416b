"""The config model every device kind extends.

A device's settings live in the node file as one ``[[devices]]`` table; ``kind`` picks the
module (see ``devices.registry``), whose ``CONFIG`` model validates the rest. Defaults live
in the models, never in drivers.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FieldValueError(ValueError):
    """A check of a whole device config that blames one field (a pin used twice).

    Pydantic reports a model validator's error at the model itself; the node file loader
    adds ``field`` so the message names the key to fix.

    Args:
        message: what is wrong.
        field: the path of the blamed field within the device, e.g. ``("slots", 1, "led")``.
    """

    def __init__(self, message: str, field: tuple[str | int, ...]) -> None:
        super().__init__(message)
        self.field = field


class DeviceConfig(BaseModel):
    """Fields every device has.

    Attributes:
        name: unique within the node; used in logs, health and the simulation control API.
        kind: the registry key of the driver.
        simulate: under ``--simulate``, replace the device by its simulator (the default);
            ``false`` drives the real device beside simulated ones (a real label printer
            on a laptop whose scanner and scale are simulated).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    kind: str
    simulate: bool = True

    def claims(self) -> list[str]:
        """Resources this device holds exclusively; two devices may not claim the same one.

        Examples: ``gpio:17``, ``serial:/dev/ttyUSB0``, ``tcp:10.0.0.5:9100``, ``spi:0.0``.
        """
        return []

    def locations(self) -> list[str]:
        """Shelf locations (slot ids) this device lights; a location belongs to one device."""
        return []

    def advice(self) -> list[tuple[str, str]]:
        """Warnings about a valid config, as ``(field, reason)``.

        ``check-config`` prints them and ``run`` logs them; neither fails (for example a bus
        sized past what answers in time).
        """
        return []
