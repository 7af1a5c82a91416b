"""Put wall (role ``put_wall``): scan an item, the cubby of its order lights, press to put.

The OMS assigns orders to cubbies (slots) with the ``put`` command, each with the items it
expects. Scanning an item lights the slot of the open order that still expects it (the
earliest assigned first) with how many of it that order still needs; the slot's confirm
button puts them (plus/minus first to put fewer) and sends ``put``. When an order's last
item is in, its slot shows ``DONE`` and ``order_complete`` goes out; the slot stays
``DONE`` until its button is pressed (the packer emptied it from the back) or the next
order is assigned to it. One scanned item waits for its put at a time: a new scan replaces
it. A scan that no open order expects is a ``misscan`` (nothing lights). ``cancel`` with
order ids as ``tasks`` drops orders; the reply says ``cancelled``, ``done`` or ``unknown``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.config import NodeConfig
from agent.roles import RoleManifest
from agent.store import StoredTask
from agent.wire.messages import (
    MAX_BARCODES_PER_TASK,
    Barcode,
    CancelCommand,
    Envelope,
    Id,
    ItemResult,
    Text,
    Wire,
    register_command,
    register_event,
)
from agent.workflows.base import STALE_PRESS, FloorInfo, Step, Verdict, press_saw, settings_from
from agent.workflows.picking.messages import Misscan
from agent.workflows.scans import scan_matches
from devices.events import Button, ButtonPress, Scan
from devices.lights.palette import DONE, Colour

ORDER = "put_order"
MAX_ORDERS_PER_COMMAND = 500
MAX_ITEMS_PER_ORDER = 200


DONE_SHOWS = "done"
"""What a cubby's order-complete light stands for (``Light.shows``)."""


def _put(sku: str) -> str:
    """What a cubby's put light stands for: the item to put (a press confirms that put)."""
    return f"put:{sku}"


class PutItem(Wire):
    """One SKU an order expects at the wall."""

    sku: Id
    qty: int = Field(ge=1, le=9999)
    barcodes: list[Barcode] = Field(default_factory=list, max_length=MAX_BARCODES_PER_TASK)
    description: Text = ""


class PutOrder(Wire):
    """An order assigned to a cubby, with what goes into it."""

    order: Id
    slot: Id
    items: list[PutItem] = Field(min_length=1, max_length=MAX_ITEMS_PER_ORDER)


class PutCommand(Wire):
    """Assign orders to cubbies; the reply lists any order refused (unknown or busy slot)."""

    orders: list[PutOrder] = Field(min_length=1, max_length=MAX_ORDERS_PER_COMMAND)

    @model_validator(mode="after")
    def _unique(self) -> PutCommand:
        ids = [o.order for o in self.orders]
        slots = [o.slot for o in self.orders]
        if len(set(ids)) != len(ids):
            raise ValueError("an order appears twice in one command")
        if len(set(slots)) != len(slots):
            raise ValueError("a slot appears twice in one command")
        return self


class Put(Wire):
    """Items put into an order's cubby."""

    order: str
    slot: str
    sku: str
    qty: int
    expected: int
    remaining: int
    scanned_at: int
    confirmed_at: int


class OrderComplete(Wire):
    """Every item of an order is in its cubby."""

    order: str
    slot: str
    units: int
    at: int


register_command("put", PutCommand)
register_event("put", Put)
register_event("order_complete", OrderComplete)


class PutWallSettings(BaseModel):
    """The ``[settings]`` table of a put wall node.

    Attributes:
        colour: the colour a slot shows while an item waits for its put.
        done_memory: how many completed order ids are remembered for cancel replies.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    colour: Colour = Colour.BLUE
    done_memory: int = Field(default=1000, ge=0, le=100_000)


@dataclass(slots=True)
class WallOrder:
    """An order in a cubby: per SKU, [expected, put so far], its barcodes and its name."""

    order: str
    slot: str
    items: dict[str, list[int]]
    barcodes: dict[str, tuple[str, ...]]
    arrival: int
    names: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Whether every item is in."""
        return all(put >= qty for qty, put in self.items.values())

    def stored(self) -> StoredTask:
        """The store row of this order."""
        data = {
            "slot": self.slot,
            "items": {sku: list(v) for sku, v in self.items.items()},
            "barcodes": {sku: list(b) for sku, b in self.barcodes.items()},
            "arrival": self.arrival,
            "names": self.names,
        }
        return StoredTask(f"put:{self.order}", ORDER, None, data)

    @classmethod
    def from_stored(cls, row: StoredTask) -> WallOrder:
        """Rebuild from a store row."""
        d: dict[str, Any] = row.data
        return cls(
            row.id.removeprefix("put:"),
            d["slot"],
            {sku: list(v) for sku, v in d["items"].items()},
            {sku: tuple(b) for sku, b in d["barcodes"].items()},
            d["arrival"],
            dict(d.get("names", {})),
        )


class CubbyItemView(TypedDict):
    """How many of an item go into a cubby, and how many are in."""

    qty: int
    put: int


class CubbyOrderView(TypedDict):
    """An order being consolidated: its cubby and items."""

    slot: str
    items: dict[str, CubbyItemView]


class PutView(TypedDict):
    """The item scanned and waiting for its put."""

    order: str
    sku: str
    qty: int
    slot: str
    description: str


class WallScreen(TypedDict):
    """What the put wall's screen shows."""

    orders: dict[str, CubbyOrderView]
    done_slots: list[str]
    slots: int
    pending: PutView | None


@dataclass(slots=True)
class Pending:
    """A scanned item waiting for its put."""

    order: str
    sku: str
    qty: int
    scanned_at: int


class PutWallWorkflow:
    """Put-to-light on a wall of cubbies.

    Args:
        locations: the cubbies (slots of the node's lights).
        settings: the node's put wall settings.
    """

    commands: Mapping[str, type[Wire]] = {"put": PutCommand, "cancel": CancelCommand}

    @classmethod
    def from_config(cls, config: NodeConfig, floor: FloorInfo) -> PutWallWorkflow:
        """The workflow of a put wall node.

        Raises:
            ConfigError: a ``[settings]`` value is invalid.
        """
        settings: PutWallSettings = settings_from(PutWallSettings, config.settings)
        return cls(floor.locations(), settings)

    def __init__(self, locations: list[str], settings: PutWallSettings | None = None) -> None:
        self.settings = settings or PutWallSettings()
        self._locations = list(locations)
        self._known = set(locations)
        self.orders: dict[str, WallOrder] = {}
        self.slots: dict[str, str] = {}  # slot -> open order
        self.done_slots: set[str] = set()  # slots showing DONE
        self.pending: Pending | None = None
        self._done: OrderedDict[str, None] = OrderedDict()
        self._arrivals = 0

    def locations(self) -> list[str]:
        """Cubbies of this wall."""
        return list(self._locations)

    def restore(self, tasks: list[StoredTask], step: Step, now: int) -> None:
        """Reload open orders; every light off (nothing waits for a put after a restart)."""
        for row in tasks:
            if row.kind == ORDER:
                order = WallOrder.from_stored(row)
                self.orders[order.order] = order
                self.slots[order.slot] = order.order
                self._arrivals = max(self._arrivals, order.arrival + 1)
        for location in self._locations:
            step.off(location)

    def on_command(
        self, name: str, envelope: Envelope, body: Wire, step: Step, now: int
    ) -> Verdict:
        """Assign orders to cubbies, or cancel orders."""
        if isinstance(body, CancelCommand):
            return self._cancel(body.tasks, step)
        assert isinstance(body, PutCommand)
        items: list[ItemResult] = []
        for o in body.orders:
            if o.order in self.orders:
                continue  # sent again: already held
            if o.slot not in self._known:
                items.append(ItemResult(id=o.order, status="rejected", reason="unknown_location"))
                continue
            if o.slot in self.slots:
                items.append(ItemResult(id=o.order, status="rejected", reason="slot_busy"))
                continue
            counts: dict[str, list[int]] = {}
            barcodes: dict[str, tuple[str, ...]] = {}
            names = {item.sku: item.description for item in o.items if item.description}
            for item in o.items:
                counts.setdefault(item.sku, [0, 0])[0] += item.qty
                barcodes[item.sku] = tuple(
                    dict.fromkeys((*barcodes.get(item.sku, ()), *item.barcodes))
                )
            order = WallOrder(o.order, o.slot, counts, barcodes, self._arrivals, names)
            self._arrivals += 1
            self.orders[o.order] = order
            self.slots[o.slot] = o.order
            if o.slot in self.done_slots:
                self.done_slots.discard(o.slot)
                step.off(o.slot)
            step.unit.put_task(order.stored())
        return Verdict.accepted(items)

    def _cancel(self, order_ids: list[str], step: Step) -> Verdict:
        items: list[ItemResult] = []
        for order_id in order_ids:
            order = self.orders.pop(order_id, None)
            if order is None:
                status: Literal["done", "unknown"] = "done" if order_id in self._done else "unknown"
                items.append(ItemResult(id=order_id, status=status))
                continue
            del self.slots[order.slot]
            step.unit.drop_task(f"put:{order_id}")
            if self.pending is not None and self.pending.order == order_id:
                self.pending = None
            step.off(order.slot)
            items.append(ItemResult(id=order_id, status="cancelled"))
        return Verdict.accepted(items)

    def on_input(self, event: object, step: Step, now: int) -> None:
        """A scan picks the cubby; the cubby's button puts; plus/minus change how many."""
        if isinstance(event, Scan):
            self._scan(event, step, now)
        elif isinstance(event, ButtonPress):
            self._press(event, step, now)

    def _scan(self, scan: Scan, step: Step, now: int) -> None:
        step.unit.count("scans")
        candidates = [
            (order, sku)
            for order in self.orders.values()
            for sku, (qty, put) in order.items.items()
            if put < qty and scan.error is None and scan_matches(scan, order.barcodes[sku])
        ]
        self._drop_pending(step)
        if not candidates:
            step.emit(
                "misscan",
                Misscan(
                    code=scan.text[:128],
                    reason="unreadable" if scan.error is not None else "unknown_code",
                    at=now,
                ),
                ts=now,
            )
            step.unit.count("misscans")
            return
        order, sku = min(candidates, key=lambda c: c[0].arrival)
        qty, put = order.items[sku]
        self.pending = Pending(order.order, sku, qty - put, now)
        step.light(order.slot, self.settings.colour.value, "steady", qty - put, shows=_put(sku))

    def _drop_pending(self, step: Step) -> None:
        if self.pending is not None:
            order = self.orders.get(self.pending.order)
            if order is not None:
                step.off(order.slot)
            self.pending = None

    def _slot_shows(self, slot: str) -> str | None:
        """What the light of cubby ``slot`` stands for now (None: dark)."""
        pending = self.pending
        if pending is not None and self.orders[pending.order].slot == slot:
            return _put(pending.sku)
        return DONE_SHOWS if slot in self.done_slots else None

    def _press(self, event: ButtonPress, step: Step, now: int) -> None:
        if not press_saw(event, self._slot_shows(event.slot)):
            step.ignored.append(STALE_PRESS)  # pressed for a put this cubby no longer shows
            return
        if event.slot in self.done_slots and event.button is Button.CONFIRM:
            self.done_slots.discard(event.slot)
            step.off(event.slot)
            return
        pending = self.pending
        if pending is None:
            return
        order = self.orders[pending.order]
        if order.slot != event.slot:
            return  # a press on another cubby: the wrong cubby puts nothing
        qty, put = order.items[pending.sku]
        if event.qty is not None:  # a tag that reports what its keys set (ATOP)
            pending.qty = max(0, min(qty - put, event.qty))
        if event.button is not Button.CONFIRM:
            delta = 1 if event.button is Button.PLUS else -1
            pending.qty = max(0, min(qty - put, pending.qty + delta))
            step.light(
                order.slot,
                self.settings.colour.value,
                "steady",
                pending.qty,
                shows=_put(pending.sku),
            )
            return
        self.pending = None
        order.items[pending.sku][1] = put + pending.qty
        step.emit(
            "put",
            Put(
                order=order.order,
                slot=order.slot,
                sku=pending.sku,
                qty=pending.qty,
                expected=qty,
                remaining=qty - put - pending.qty,
                scanned_at=pending.scanned_at,
                confirmed_at=now,
            ),
            ts=now,
        )
        step.unit.count("puts")
        step.unit.count("units_put", pending.qty)
        if not order.complete:
            step.unit.put_task(order.stored())
            step.off(order.slot)
            return
        del self.orders[order.order]
        del self.slots[order.slot]
        step.unit.drop_task(f"put:{order.order}")
        if self.settings.done_memory:
            self._done[order.order] = None
            while len(self._done) > self.settings.done_memory:
                self._done.popitem(last=False)
        self.done_slots.add(order.slot)
        step.light(
            order.slot, DONE.colour.value, DONE.pattern.value, text=DONE.text, shows=DONE_SHOWS
        )
        units = sum(put for _, put in order.items.values())
        step.emit(
            "order_complete",
            OrderComplete(order=order.order, slot=order.slot, units=units, at=now),
            ts=now,
        )
        step.unit.count("orders_complete")

    def on_tick(self, step: Step, now: int) -> None:
        """Nothing periodic on a put wall."""

    def snapshot(self) -> WallScreen:
        """Open orders per cubby, the item waiting for its put, and the wall's size.

        The item waiting names its cubby and, when the ``put`` command gave one, its name;
        ``slots`` (every cubby) against the orders and ``done_slots`` is how full it is.
        """
        pending = self.pending
        return {
            "orders": {
                o.order: {
                    "slot": o.slot,
                    "items": {sku: {"qty": q, "put": p} for sku, (q, p) in o.items.items()},
                }
                for o in self.orders.values()
            },
            "done_slots": sorted(self.done_slots),
            "slots": len(self._locations),
            "pending": None
            if pending is None
            else {
                "order": pending.order,
                "sku": pending.sku,
                "qty": pending.qty,
                "slot": self.orders[pending.order].slot,
                "description": self.orders[pending.order].names.get(pending.sku, ""),
            },
        }


ROLE = RoleManifest(
    name="put_wall",
    settings=PutWallSettings,
    workflow=PutWallWorkflow,
    page="wall.html",
    misscan_events=frozenset({"misscan"}),
    shows_locations=True,
)
