"""Zone picking's model: an open line (one store task), a logged-in picker.

Plain data the state machine (``machine``) keeps ten thousand of; see the package docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from sys import intern

from agent.store import StoredTask
from agent.wire.messages import PickTask
from devices.lights.palette import Colour

TASK = "pick"


@dataclass(slots=True)
class Line:
    """One open pick line, kept small: a pick node holds ten thousand of them.

    ``release`` is the release order (-1 while its wave waits); ``picked`` the quantity the
    picker set with plus/minus (``None``: untouched, i.e. ``qty``).
    """

    task: str
    order: str
    location: str
    sku: str
    qty: int
    barcodes: tuple[str, ...]
    wave: str | None
    container: str | None
    priority: int
    express: bool
    deadline: int | None
    description: str
    arrival: int
    release: int
    lit_at: int | None = None
    picked: int | None = None
    reason: str | None = None
    picker: str | None = None
    colour: int | None = None  # order colour index (colour_by = "order")

    @property
    def released(self) -> bool:
        """Whether the line may light."""
        return self.release >= 0

    @property
    def to_pick(self) -> int:
        """The quantity the picker will confirm."""
        return self.qty if self.picked is None else self.picked

    @property
    def group(self) -> tuple[str, str | None]:
        """The order's tote this line goes into."""
        return (self.order, self.container)

    @classmethod
    def of(cls, t: PickTask, arrival: int, release: int) -> Line:
        """A new line from a task the OMS sent.

        Values many lines repeat (order, location, wave, tote, description) are shared
        through ``sys.intern``: a wave decodes a fresh copy of each for every line.
        """
        return cls(
            t.task,
            intern(t.order),
            intern(t.location),
            t.sku,
            t.qty,
            tuple(t.barcodes),
            None if t.wave is None else intern(t.wave),
            None if t.container is None else intern(t.container),
            t.priority,
            t.express,
            t.deadline,
            intern(t.description),
            arrival,
            release,
        )

    def stored(self) -> StoredTask:
        """The row the store keeps for this line: every field, in ``_ROW_FIELDS`` order.

        A flat tuple (msgpack array) rather than a map: taken in one C call and packed
        without a key per field, it is the cheapest part of ingesting a wave.
        """
        return StoredTask(self.task, TASK, self.wave, _row(self))

    @classmethod
    def from_stored(cls, row: StoredTask) -> Line:
        """Rebuild from a store row (also the older map rows, with or without ``release``)."""
        data = row.data
        if not isinstance(data, dict):
            values = list(data)
            values[_BARCODES] = tuple(values[_BARCODES])
            for i in _SHARED:
                if values[i] is not None:
                    values[i] = intern(values[i])
            return cls(*values)
        t = data["task"]
        release = data.get("release")
        if release is None:
            release = data["arrival"] if data.get("released") else -1
        return cls(
            t["task"],
            t["order"],
            t["location"],
            t["sku"],
            t["qty"],
            tuple(t.get("barcodes", ())),
            t.get("wave"),
            t.get("container"),
            t.get("priority", 5),
            t.get("express", False),
            t.get("deadline"),
            t.get("description", ""),
            data["arrival"],
            release,
            data.get("lit_at"),
            data.get("picked"),
            data.get("reason"),
            data.get("picker"),
            data.get("colour"),
        )


_ROW_FIELDS = tuple(Line.__dataclass_fields__)
_row = attrgetter(*_ROW_FIELDS)
_BARCODES = _ROW_FIELDS.index("barcodes")
_SHARED = [_ROW_FIELDS.index(f) for f in ("order", "location", "wave", "container", "description")]


@dataclass(slots=True)
class Picker:
    """A logged-in picker: their colour and when they logged in."""

    colour: Colour
    since: int
    seq: int
