"""What the packer's screen shows: the prompt and the state ``GET /api/state`` returns.

Read from the station (``machine.PackingWorkflow``) when the screen asks; nothing here
changes it. See docs/simulation.md, "Pack station", for the shape.
"""

from __future__ import annotations

from typing import Protocol, TypedDict

from agent.i18n import Message, msg, render
from agent.workflows.cartons import BoxSize, Suggestion
from agent.workflows.packing.model import PackOrder, check_weight
from agent.workflows.packing.settings import PackSettings
from agent.workflows.station import (
    Notice,
    NoticeView,
    RefusalView,
    notice_view,
    refusal_views,
)
from devices.events import Weight


class LineView(TypedDict):
    """An order line and how much of it is scanned."""

    sku: str
    description: str
    qty: int
    scanned: int
    fragile: bool


class BoxView(TypedDict):
    """The suggested box and the one chosen; ``note`` in English, ``note_message`` to say."""

    suggested: str
    suggested_barcode: str
    fits: bool
    note: str
    note_message: Message | None
    chosen: str | None
    inner_mm: list[int]


class MaterialView(TypedDict):
    """The packaging material suggested; ``message`` is the line the screen says."""

    name: str
    label: str
    protection: float
    message: Message


class CheckView(TypedDict):
    """The latest check-weigh."""

    attempts: int
    actual_g: float | None
    expected_g: float | None
    verdict: str
    allowed_g: float | None
    supervisor: str | None


class LabelView(TypedDict):
    """The order's label job."""

    job_id: str
    attempt: int
    reason: str | None
    late: bool


class OrderView(TypedDict):
    """The order open at the bench."""

    order: str
    tote: str | None
    phase: str
    express: bool
    gift_note: str
    bonus_item: str
    units: int
    scanned: int
    lines: list[LineView]
    box: BoxView
    material: MaterialView
    check: CheckView | None
    label: LabelView | None
    slip: str | None


class QueuedView(TypedDict):
    """An order waiting its turn."""

    order: str
    tote: str | None
    express: bool
    units: int


class WeightView(TypedDict):
    """The scale's latest reading."""

    grams: float
    stable: bool
    at: int | None


class PackScreen(TypedDict):
    """What the packer's screen shows: ``GET /api/state``'s ``workflow``."""

    phase: str
    prompt: str
    prompt_message: Message
    notice: NoticeView
    refusals: list[RefusalView]
    order: OrderView | None
    queue: list[QueuedView]
    weight: WeightView | None
    devices: dict[str, str | None]
    tolerance: dict[str, float]
    counts: dict[str, int]


class PackStation(Protocol):
    """What the screen reads of the station (``machine.PackingWorkflow``)."""

    settings: PackSettings
    orders: dict[str, PackOrder]
    current: str | None
    notice: Notice
    weight: Weight | None
    weight_at: int | None
    scale_clear: bool
    boxes: dict[str, BoxSize]
    counts: dict[str, int]
    label_printer: str
    slip_printer: str | None
    scale: str

    def suggestion(self, order: PackOrder) -> Suggestion:
        """The suggested box and material."""
        ...

    def refusals_now(self) -> list[Notice]:
        """The refusals the screen lists now."""
        ...


def prompt(station: PackStation, order: PackOrder | None) -> Message:
    """The one line that tells the packer what to do now."""
    if order is None:
        return msg("pack.prompt_idle")
    confirm = station.settings.confirm_barcode
    match order.phase:
        case "verify":
            return msg("pack.prompt_verify")
        case "carton":
            box = station.suggestion(order).box
            return msg("pack.prompt_carton", barcode=box.barcode, confirm=confirm)
        case "weigh":
            if station.weight is not None and not station.weight.stable:
                return msg("pack.prompt_stable")
            if not station.scale_clear:
                return msg("pack.scale_not_clear")
            return msg("pack.prompt_weigh")
        case "weigh_failed":
            return msg("pack.prompt_weigh_failed")
        case "override_reason":
            return msg("pack.prompt_override_reason")
        case "label":
            return msg("pack.prompt_label")
        case "label_failed" | "label_unknown":
            return msg("pack.prompt_reprint", confirm=confirm)
    return msg("pack.prompt_idle")  # an order at the bench is never queued


def snapshot(station: PackStation) -> PackScreen:
    """What the packer's screen shows (see docs/simulation.md, "Pack station")."""
    order = station.orders.get(station.current) if station.current else None
    current: OrderView | None = None
    if order is not None:
        suggestion = station.suggestion(order)
        box = station.boxes.get(order.box or "", suggestion.box)
        current = {
            "order": order.order,
            "tote": order.tote,
            "phase": order.phase,
            "express": order.express,
            "gift_note": order.gift_note,
            "bonus_item": order.bonus_item,
            "units": order.units,
            "scanned": order.scanned,
            "lines": [
                {
                    "sku": ln.sku,
                    "description": ln.description,
                    "qty": ln.qty,
                    "scanned": ln.scanned,
                    "fragile": ln.fragile,
                }
                for ln in order.lines
            ],
            "box": {
                "suggested": suggestion.box.name,
                "suggested_barcode": suggestion.box.barcode,
                "fits": suggestion.fits,
                "note": "" if suggestion.note is None else render(suggestion.note),
                "note_message": suggestion.note,
                "chosen": order.box,
                "inner_mm": list(box.inner_mm),
            },
            "material": {
                "name": suggestion.material.name,
                "label": suggestion.material.label,
                "protection": suggestion.material.protection,
                "message": msg(
                    "pack.packaging",
                    label=suggestion.material.words(),
                    protection=suggestion.material.protection,
                ),
            },
            "check": None
            if order.verdict is None
            else {
                "attempts": order.attempts,
                "actual_g": order.actual_g,
                "expected_g": order.expected_g,
                "verdict": order.verdict,
                "allowed_g": None
                if order.actual_g is None or order.expected_g is None
                else check_weight(
                    order.actual_g,
                    order.expected_g,
                    station.settings.tolerance_pct,
                    station.settings.tolerance_g,
                )[1],
                "supervisor": order.supervisor,
            },
            "label": None
            if order.label_job is None
            else {
                "job_id": order.label_job,
                "attempt": order.label_attempt,
                "reason": order.label_reason,
                "late": order.label_late,
            },
            "slip": order.slip_state,
        }
    queue = sorted(
        (o for o in station.orders.values() if o.phase == "queued"),
        key=lambda o: (not o.express, o.arrival),
    )
    now = prompt(station, order)
    return {
        "phase": "idle" if order is None else order.phase,
        "prompt": render(now),
        "prompt_message": now,
        "notice": notice_view(station.notice),
        "refusals": refusal_views(station.refusals_now()),
        "order": current,
        "queue": [
            {"order": o.order, "tote": o.tote, "express": o.express, "units": o.units}
            for o in queue
        ],
        "weight": None
        if station.weight is None
        else {
            "grams": station.weight.grams,
            "stable": station.weight.stable,
            "at": station.weight_at,
        },
        "devices": {
            # The printer the open order's label goes to (a PDF to the IPP printer, ZPL to
            # the Zebra): the screen shows that one's health.
            "label_printer": station.label_printer
            if order is None
            else str(order.extra.get("label_printer", station.label_printer)),
            "slip_printer": station.slip_printer,
            "scale": station.scale,
        },
        "tolerance": {"pct": station.settings.tolerance_pct, "g": station.settings.tolerance_g},
        "counts": dict(station.counts),
    }
