"""What input devices report, as small frozen values.

These are in-process values, not wire messages: the workflows turn them into events for
the OMS. Timestamps are ``time.monotonic()`` seconds unless a name says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Scan:
    """One barcode read, after framing, de-duplication and interpretation.

    Attributes:
        device: the scanner's configured name.
        text: the data with prefix, suffix and symbology identifier stripped.
        symbology: the AIM identifier (``]C1``) when the scanner sent one, else ``None``.
        gtin: the GTIN normalised to 14 digits when the code carries one.
        sscc: the 18-digit SSCC when the code is one (AI 00).
        fields: GS1 element strings by AI (``{"10": "LOT42"}``), empty when not GS1.
        error: why the code cannot be trusted (bad check digit, ...), else ``None``.
        at: monotonic time the terminator arrived.
    """

    device: str
    text: str
    symbology: str | None = None
    gtin: str | None = None
    sscc: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    at: float = 0.0


class Button(StrEnum):
    """Which button of a pick-to-light slot was pressed."""

    CONFIRM = "confirm"
    PLUS = "plus"
    MINUS = "minus"


@dataclass(frozen=True, slots=True)
class ButtonPress:
    """A debounced press of one button on one slot.

    Attributes:
        device: the light device's configured name.
        slot: the slot whose button it was.
        button: which button.
        at: monotonic time of the press (0.0: not known).
        qty: the quantity the slot's display showed when the key was pressed, for slots
            that report it (an ATOP tag's confirm and shortage keys: the picker may have
            set it with the tag's up/down keys, so it is the quantity picked); ``None``
            when the slot does not say (GPIO buttons: what the node showed).
        shown: what the slot showed when it was pressed, as the node's floor knew it: the
            workflow's name for it (a task id), ``""`` when the slot was dark, ``None`` when
            not known (input not made through the floor, or a light the workflow did not
            name). A workflow acts on a press only for what it showed (docs/protocol.md).
    """

    device: str
    slot: str
    button: Button
    at: float = 0.0
    qty: int | None = None
    shown: str | None = None


@dataclass(frozen=True, slots=True)
class Weight:
    """One weight reading normalised to grams.

    Attributes:
        grams: the (net) weight in grams; negative below zero.
        stable: ``True`` only when the scale itself said the value is stable.
        net: ``True`` when a tare is active.
    """

    device: str
    grams: float
    stable: bool
    net: bool = False
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class DeviceHealthChanged:
    """A device's health changed (the floor sends one per change, first health included).

    Workflows that care (a pack station's printers) react to it; the others ignore it.

    Attributes:
        device: the device's configured name.
        status: ``"starting"``, ``"ok"``, ``"unavailable"`` (gone or unreachable; the
            driver retries by itself) or ``"fault"`` (needs a person: paper out, head open,
            overload), as ``devices.base.HealthStatus`` values.
        detail: why, in the driver's words (``"paper out"``); on ``ok`` an optional warning
            (``"ready, paper near end"``).
    """

    device: str
    status: str
    detail: str = ""
