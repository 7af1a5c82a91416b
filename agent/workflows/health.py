"""A device's health in the worker's words: what every screen says of a device that is down.

Drivers word a problem in English for the log, the birth and the site's dashboard
(``Health.detail``: ``"paper out, paused"``, ``"overload"``, or an exception's text). A
worker needs what is wrong and what to do, in their language, and not the errno: the
conditions drivers name with the words of :mod:`devices.base` (a printer's fault flags, a
scale's overload, a light controller's alarm) become catalogue messages here, and any other
detail becomes the device's state in words ("not connected", "fault"). The driver's detail
stays beside them in ``GET /api/state``.
"""

from __future__ import annotations

from typing import Any

from agent.i18n import Message, msg
from devices.base import (
    CONTROLLER_ALARM,
    NO_STATUS_REPLY,
    PAPER_NEAR_END,
    PRINTER_FAULTS,
    SCALE_OVERLOAD,
    SCALE_UNDERLOAD,
)
from devices.registry import KINDS

_PRINTER_WORDS: dict[str, Message] = {
    PRINTER_FAULTS["paper_out"]: msg("printer.paper_out"),
    PRINTER_FAULTS["head_open"]: msg("printer.head_open"),
    PRINTER_FAULTS["media_jam"]: msg("printer.media_jam"),
    PRINTER_FAULTS["paused"]: msg("printer.paused"),
    PRINTER_FAULTS["ribbon_out"]: msg("printer.ribbon_out"),
    PRINTER_FAULTS["offline"]: msg("printer.offline"),
}


def _family(kind: str) -> str:
    """``printers``, ``scales``, ``lights`` or ``scanners`` (the driver's package)."""
    module = KINDS.get(kind, "")
    return module.split(".")[1] if module.count(".") >= 2 else ""


def says(kind: str, status: str, detail: str) -> list[Message]:
    """What a screen says of a device of ``kind`` in health ``status`` with ``detail``.

    Empty for a device that is fine (or starting); a printer about to run out of paper says
    so while it still prints.
    """
    family = _family(kind)
    if status == "unavailable":
        return [msg("health.unavailable")]
    if status == "ok":
        return [msg("printer.paper_near_end")] if detail == PAPER_NEAR_END else []
    if status != "fault":
        return []
    if family == "printers":
        if detail == NO_STATUS_REPLY:
            return [msg("printer.no_reply")]
        known = [_PRINTER_WORDS[w] for w in detail.split(", ") if w in _PRINTER_WORDS]
        return known or [msg("printer.check")]  # an IPP reason of its own, a bad reply
    if family == "scales" and detail in (SCALE_OVERLOAD, SCALE_UNDERLOAD):
        return [msg("scale.overload" if detail == SCALE_OVERLOAD else "scale.underload")]
    if family == "lights" and detail.startswith(CONTROLLER_ALARM):
        return [msg("lights.alarm")]
    return [msg("health.fault")]


def screen_devices(devices: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The devices of ``GET /api/state`` with ``says`` added to each, and to each part.

    ``devices`` is :meth:`agent.floor.DeviceFloor.health` as JSON (``kind``, ``status``,
    ``detail``, ``parts``); a part that is down says "not connected" or "fault".
    """
    out = {}
    for name, device in devices.items():
        parts = {
            where: {**part, "says": says("", part["status"], part.get("detail", ""))}
            for where, part in device.get("parts", {}).items()
        }
        words = says(device["kind"], device["status"], device.get("detail", ""))
        out[name] = {**device, "parts": parts, "says": words}
    return out
