"""The ``[settings]`` table of a pick node, and the validation every role's settings go through."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from devices.lights.palette import PICKER_ORDER, Colour

Reason = Literal["empty", "damaged", "not_found"]
"""Why a line was picked short."""


def _default_picker_colours() -> list[Colour]:
    return [c for c in PICKER_ORDER if c not in (Colour.VERMILLION, Colour.BLUISH_GREEN)]


class PickSettings(BaseModel):
    """The ``[settings]`` table of a pick node.

    Attributes:
        confirm: what confirms a line: ``button``, ``scan`` (the item) or
            ``location_then_item``.
        badge_prefix: a scan starting with this logs the picker named by the rest in or out.
        location_prefix: a location's barcode is this followed by the location id.
        short_barcode: scanning it takes one unit off the focused line; scanning it followed
            by ``-N`` sets the quantity picked to N (``None``: no short barcode).
        reason_prefix: scanning this followed by a reason sets the short reason
            (``None``: no reason barcodes).
        default_reason: the reason of a short nobody gave a reason for.
        colour_by: ``picker`` (each picker's colour) or ``order`` (batch picking).
        tote_slots: container id to the cart slot that is its put-to-light position.
        picker_colours: the colours pickers (or orders) get, in turn; ERROR's vermillion
            and DONE's bluish green are left out so a picker's light never reads as either.
        counters_every_s: how often the ``counters`` event goes out (0: never).
        done_memory: how many finished line ids are remembered, so a cancel can say "done".
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    confirm: Literal["button", "scan", "location_then_item"] = "button"
    badge_prefix: str = Field(default="BADGE-", min_length=1, max_length=32)
    location_prefix: str = Field(default="", max_length=32)
    short_barcode: str | None = Field(default="SHORT", min_length=1, max_length=32)
    reason_prefix: str | None = Field(default="REASON-", min_length=1, max_length=32)
    default_reason: Reason = "empty"
    colour_by: Literal["picker", "order"] = "picker"
    tote_slots: dict[str, str] = Field(default_factory=dict)
    picker_colours: list[Colour] = Field(default_factory=_default_picker_colours, min_length=1)
    counters_every_s: int = Field(default=60, ge=0, le=86_400)
    done_memory: int = Field(default=1000, ge=0, le=100_000)


__all__ = ["PickSettings", "Reason"]
