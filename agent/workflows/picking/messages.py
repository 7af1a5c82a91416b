"""Zone picking's events (registered in the wire table on import).

The commands a pick node takes (``pick``, ``cancel``, ``wave_*``) are shared with the other
roles and live in ``agent.wire.messages``.
"""

from __future__ import annotations

from pydantic import Field

from agent.wire.messages import Wire, register_event


class Picked(Wire):
    """A pick line confirmed by the picker with its full quantity."""

    task: str
    order: str
    location: str
    sku: str
    qty: int
    picked: int
    wave: str | None = None
    container: str | None = None
    lit_at: int | None = None
    confirmed_at: int
    picker: str | None = None
    express: bool = False


class Short(Picked):
    """A pick line confirmed with less than asked for (``picked < qty``), and why."""

    reason: str


class Misscan(Wire):
    """A scan that was not what the node expected; nothing was confirmed.

    ``reason``: ``wrong_item`` (not one of the line's barcodes), ``wrong_location`` (no
    line lit there), ``location_first`` (scan the location before the item),
    ``unknown_code`` (no line expects it), ``unreadable`` (the scanner flagged the read),
    ``no_line`` (a short or reason code with no line to apply it to).
    """

    code: str
    reason: str
    expected: list[str] = Field(default_factory=list)
    location: str | None = None
    task: str | None = None
    picker: str | None = None
    at: int


class PickerChange(Wire):
    """A picker logged in (``login``) or out (``logout``) by scanning their badge.

    A refused login has ``colour`` None and ``reason`` ``no_free_colour``.
    """

    picker: str
    colour: str | None = None
    orders: int = 0
    reason: str | None = None
    at: int


class ZoneDone(Wire):
    """This zone's part of an order's tote is complete: the tote may move on."""

    order: str
    container: str | None = None
    lines: int
    short: int
    picker: str | None = None
    at: int


class Expired(Wire):
    """A line's deadline passed before it was confirmed; it is dropped and dark."""

    task: str
    order: str
    location: str
    deadline: int
    lit_at: int | None = None
    at: int


class Counters(Wire):
    """The node's counters since ``since`` (its start), published periodically."""

    since: int
    at: int
    counts: dict[str, int]
    open_lines: int
    pickers: int


register_event("picked", Picked)
register_event("short", Short)
register_event("misscan", Misscan)
register_event("login", PickerChange)
register_event("logout", PickerChange)
register_event("zone_done", ZoneDone)
register_event("expired", Expired)
register_event("counters", Counters)


__all__ = [
    "Counters",
    "Expired",
    "Misscan",
    "Picked",
    "PickerChange",
    "Short",
    "ZoneDone",
]
