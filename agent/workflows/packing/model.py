"""The pack station's model: an order at the bench, its lines, its phase; the check-weigh rule.

Plain data the state machine (``machine``) and the screen (``screen``) share; an order is
one store task (``pack_order``), so a restart in the middle of an order carries on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from agent.store import StoredTask
from agent.workflows.cartons import Item
from agent.workflows.packing.messages import PackCommand, Packed

ORDER = "pack_order"

Phase = Literal[
    "queued",
    "verify",
    "carton",
    "weigh",
    "weigh_failed",
    "override_reason",
    "label",
    "label_failed",
    "label_unknown",
]


@dataclass(slots=True)
class Line:
    """An order line and how many of it were scanned."""

    sku: str
    qty: int
    barcodes: tuple[str, ...]
    unit_weight_g: float
    dims_mm: tuple[int, int, int] | None
    fragile: bool
    description: str
    scanned: int = 0

    def item(self) -> Item:
        """The line as the carton choice sees it."""
        return Item(self.sku, self.qty, self.unit_weight_g, self.dims_mm, self.fragile)


@dataclass(slots=True)
class PackOrder:
    """An order at the station and everything done to it so far (one store task)."""

    order: str
    tote: str | None
    lines: list[Line]
    express: bool
    gift_note: str
    bonus_item: str
    carrier_zpl: bytes | None
    label: dict[str, Any] | None
    slip: bool
    arrival: int
    received_at: int
    phase: Phase = "queued"
    started_at: int | None = None
    verified_at: int | None = None
    box: str | None = None
    attempts: int = 0
    actual_g: float | None = None
    expected_g: float | None = None
    verdict: str | None = None
    weighed_at: int | None = None
    supervisor: str | None = None
    label_attempt: int = 0
    label_job: str | None = None
    label_submitted_at: int | None = None
    label_reason: str | None = None
    label_late: bool = False
    slip_job: str | None = None
    slip_state: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    carrier_format: str | None = None  # of a carrier_label (kept as its own store task)

    @property
    def units(self) -> int:
        """Units in the order."""
        return sum(line.qty for line in self.lines)

    @property
    def scanned(self) -> int:
        """Units scanned so far."""
        return sum(line.scanned for line in self.lines)

    def items(self) -> list[Item]:
        """The lines as the carton choice sees them."""
        return [line.item() for line in self.lines]

    def packed(self, box_suggested: str, material: str, now: int) -> Packed:
        """The ``packed`` event of this order, labelled at ``now``."""
        assert self.box is not None and self.started_at is not None
        assert self.verified_at is not None and self.weighed_at is not None
        return Packed(
            order=self.order,
            tote=self.tote,
            box=self.box,
            box_suggested=box_suggested,
            material=material,
            units=self.units,
            weight_g=self.actual_g or 0.0,
            expected_g=self.expected_g or 0.0,
            check="override" if self.verdict == "override" else "pass",
            express=self.express,
            received_at=self.received_at,
            started_at=self.started_at,
            verified_at=self.verified_at,
            weighed_at=self.weighed_at,
            labelled_at=now,
        )

    def stored(self) -> StoredTask:
        """The store row of this order."""
        data: dict[str, Any] = {
            name: getattr(self, name) for name in self.__slots__ if name != "lines"
        }
        data["lines"] = [
            [
                ln.sku,
                ln.qty,
                list(ln.barcodes),
                ln.unit_weight_g,
                None if ln.dims_mm is None else list(ln.dims_mm),
                ln.fragile,
                ln.description,
                ln.scanned,
            ]
            for ln in self.lines
        ]
        return StoredTask(f"pack:{self.order}", ORDER, None, data)

    @classmethod
    def from_command(cls, body: PackCommand, arrival: int, now: int) -> PackOrder:
        """A new order from the OMS's ``pack`` command, the ``arrival``-th at the station."""
        return cls(
            order=body.order,
            tote=body.tote,
            lines=[
                Line(
                    ln.sku,
                    ln.qty,
                    tuple(ln.barcodes),
                    ln.unit_weight_g,
                    ln.dims_mm,
                    ln.fragile,
                    ln.description,
                )
                for ln in body.lines
            ],
            express=body.express,
            gift_note=body.gift_note,
            bonus_item=body.bonus_item,
            carrier_zpl=body.carrier_zpl,
            carrier_format=None if body.carrier_label is None else body.carrier_label.format,
            label=None if body.label is None else body.label.model_dump(),
            slip=body.packing_slip,
            arrival=arrival,
            received_at=now,
        )

    @classmethod
    def from_stored(cls, row: StoredTask) -> PackOrder:
        """Rebuild from a store row."""
        data = dict(row.data)
        lines = [
            Line(sku, qty, tuple(codes), w, None if dims is None else tuple(dims), frag, desc, n)
            for sku, qty, codes, w, dims, frag, desc, n in data.pop("lines")
        ]
        return cls(lines=lines, **data)


def check_weight(
    actual_g: float, expected_g: float, tolerance_pct: float, tolerance_g: float
) -> tuple[Literal["pass", "over", "under"], float]:
    """The check-weigh verdict and the allowed difference.

    It fails only when the difference exceeds both ``tolerance_pct`` of the expected
    weight and ``tolerance_g``, that is when it exceeds the larger of the two.
    """
    allowed = round(max(expected_g * tolerance_pct / 100, tolerance_g), 1)
    diff = actual_g - expected_g
    if abs(diff) <= allowed:
        return "pass", allowed
    return ("over" if diff > 0 else "under"), allowed
