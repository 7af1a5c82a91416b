"""The lifecycle and health contract every driver follows.

A driver is an async context manager: ``async with driver:`` opens the device and
``close()`` (idempotent) turns it off and releases it. Health is a small state machine
(``starting`` → ``ok`` / ``unavailable`` / ``fault``) that the node publishes with its
birth; the driver calls ``_set_health`` and the node is told through a listener, so a log
line is written only when health changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Self

log = logging.getLogger("devices")


class HealthStatus(StrEnum):
    """How usable a device is right now."""

    STARTING = "starting"
    OK = "ok"
    UNAVAILABLE = "unavailable"  # gone or unreachable: the driver retries by itself
    FAULT = "fault"  # needs a person: paper out, head open, overload


@dataclass(frozen=True, slots=True)
class Health:
    """A device's health and, when not ok, why."""

    status: HealthStatus
    detail: str = ""


HealthListener = Callable[[str, Health], None]

# How drivers word, in ``Health.detail``, the conditions a person at the device fixes. The
# node's screens recognise these words and say them in the worker's language
# (agent/workflows/health.py); any other detail is the driver's own, for logs and the OMS.
PRINTER_FAULTS: dict[str, str] = {
    "paper_out": "paper out",
    "head_open": "head open",
    "media_jam": "media jam",
    "paused": "paused",
    "ribbon_out": "ribbon out",
    "offline": "offline",
}
"""A printer's fault flags and their words; a fault's detail lists them joined by ", "."""
PAPER_NEAR_END = "ready, paper near end"
"""A printer that still prints but is about to run out (status ok)."""
NO_STATUS_REPLY = "no status reply: media out, head open or offline"
"""A printer that took the connection but did not answer its status request."""
SCALE_OVERLOAD = "overload"
SCALE_UNDERLOAD = "underload"
CONTROLLER_ALARM = "controller alarm"
"""A light controller's own alarm (the detail goes on: ``controller alarm: ...``)."""

_WARN = frozenset({HealthStatus.UNAVAILABLE, HealthStatus.FAULT})


class Device:
    """Base class of all drivers: name, health, lifecycle.

    Subclasses override ``_open`` and ``_close``; they never override ``close``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._health = Health(HealthStatus.STARTING)
        self._listeners: list[HealthListener] = []
        self._closed = False

    @property
    def health(self) -> Health:
        """The current health."""
        return self._health

    def add_health_listener(self, listener: HealthListener) -> None:
        """Call ``listener(name, health)`` on every health change (on the event loop)."""
        self._listeners.append(listener)

    def _set_health(self, status: HealthStatus, detail: str = "") -> None:
        new = Health(status, detail)
        if new == self._health:
            return
        self._health = new
        # Unavailable and fault are what `journalctl -p warning` must show (a device missing
        # at start included); starting and ok are information.
        level = logging.WARNING if status in _WARN else logging.INFO
        log.log(level, "device %s: %s%s", self.name, status.value, f" ({detail})" if detail else "")
        for listener in self._listeners:
            listener(self.name, new)

    def describe(self) -> str:
        """One line saying what this device is and how it is connected (logged at start)."""
        return f"{type(self).__name__} {self.name}"

    async def open(self) -> None:
        """Open the device; health tells whether it is usable."""
        self._closed = False
        await self._open()

    async def close(self) -> None:
        """Turn the device off and release it; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self._close()

    async def _open(self) -> None:
        """Open the hardware (subclasses)."""

    async def _close(self) -> None:
        """Release the hardware (subclasses)."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
