"""What the zone screen shows: the typed shape of the picking workflow's ``snapshot()``.

``GET /api/state``'s ``workflow`` on a pick node (docs/simulation.md, "Pick zone").
"""

from __future__ import annotations

from typing import TypedDict


class ShownLine(TypedDict):
    """The line a slot shows now."""

    task: str
    order: str
    sku: str
    qty: int
    picked: int
    picker: str | None
    express: bool
    lit_at: int | None
    description: str
    container: str | None


class ToteLight(TypedDict):
    """A tote's put-to-light position after a pick: its colour and how many to put."""

    colour: str
    qty: int


class LocationView(TypedDict):
    """One location with open lines (or a tote light on)."""

    open: int
    shown: ShownLine | None
    tote: ToteLight | None
    error: bool


class PickerView(TypedDict):
    """A logged-in picker."""

    colour: str
    since: int


class ToteDone(TypedDict):
    """The tote the zone lamp says is complete."""

    order: str
    container: str | None


class PickScreen(TypedDict):
    """What the zone screen shows."""

    open_lines: int
    locations: dict[str, LocationView]
    pickers: dict[str, PickerView]
    orders: dict[str, str]
    waves: dict[str, str]
    zone_done: bool
    zone_done_tote: ToteDone | None
    counts: dict[str, int]
