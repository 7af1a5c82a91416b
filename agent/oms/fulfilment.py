"""The OMS side of an order's way through a site: pick, consolidate at a put wall, pack.

``Fulfilment`` is a plain state machine like the node workflows: the births it is given
and the events it is fed go in, the commands to send come out. ``zone-agent oms dispatch``
and the demo drive it over the broker (``drive``); tests drive it directly.

An order's way:

1. **Pick.** Every line becomes a pick task (id ``{order}-{n}``) on the pick node whose
   birth lists the line's location, all in one wave per node (``wave_begin``, ``pick``,
   ``wave_release``). An order with a line no online node owns is not sent at all
   (``unrouted``): half an order on the floor helps nobody.
2. **Consolidate.** When every line of a multi-line order is confirmed (``picked`` or
   ``short``; ``expired`` counts as nothing picked), the order is assigned to a free cubby
   of a put wall (``put``) with what was actually picked. When every cubby is taken it
   waits, express orders first; ``order_complete`` frees the cubby. Single-line orders,
   and every order on a site without a put wall, skip this step.
3. **Pack.** The order then goes to the pack station with the fewest orders open
   (``pack``), with the picked quantities, its express flag, gift note, bonus item, packing
   slip wish and either the carrier's ZPL or the fields of the station's own label (with an
   SSCC serial reference from a counter). ``packed`` ends it unless it goes on to the dock.
   A site without a pack station ends at step 1 or 2 (status ``picked``).
4. **Ship.** With a dispatch station online, a packed parcel of a carrier the dock serves
   (every carrier, unless ``dock_carriers`` says which) is announced there (``load``: its
   SSCC from ``label_printed``, else the order's tracking number; carrier, service,
   express, the carrier's cut-off from ``cutoffs``). ``shipped`` ends it (status
   ``shipped``): the order guide's "mark the order as shipped". A parcel the dock refuses
   for want of a lane (``load_refused`` ``no_lane``) ends ``packed`` with the reason.
5. **Returns.** The order file's returns of an order are announced to a returns station
   (``rma``) once the order has shipped (or ended ``packed``, not going to the dock):
   the customer has it. ``return_closed`` ends a return. An OMS refunds per unit on
   ``return_received``, never earlier.

An order of which nothing was picked is ``unfulfilled`` (out of stock: a real OMS would
back-order it or tell the customer) and goes no further. A command a node refuses puts the
order in ``refused`` with the node's reason.

Order files (JSON with a catalogue, or CSV) are described in docs/orders.md;
``read_order_file`` checks one whole and names the file, the field and the reason.
"""

from __future__ import annotations

import asyncio
import binascii
import csv
import functools
import json
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.errors import ConfigError
from agent.oms.kpi import field_of
from agent.wire.messages import (
    MAX_BARCODES_PER_TASK,
    MAX_TASKS_PER_COMMAND,
    Barcode,
    CancelCommand,
    Id,
    PickCommand,
    PickTask,
    Reply,
    State,
    WaveCommand,
    Wire,
)
from agent.workflows.dispatch.messages import LoadCommand, Parcel
from agent.workflows.packing import CarrierLabel, OwnLabel, PackCommand, PackLine, ShipTo
from agent.workflows.putwall import PutCommand, PutItem, PutOrder
from agent.workflows.returns.messages import Grade, Reason, ReturnLine, Rma, RmaCommand

if TYPE_CHECKING:
    from agent.oms import NodeEvent, OmsClient

Dim = Annotated[int, Field(ge=1, le=5000)]
Status = Literal[
    "picking",
    "waiting_for_cubby",
    "at_wall",
    "packing",
    "packed",
    "dispatching",
    "shipped",
    "picked",
    "unfulfilled",
    "unrouted",
    "refused",
]
FINAL: frozenset[str] = frozenset(
    {"packed", "shipped", "picked", "unfulfilled", "unrouted", "refused"}
)
ReturnStatus = Literal["waiting", "announced", "received", "refused", "no_station"]
SNAPSHOT_VERSION = 1
"""The layout of ``Fulfilment.snapshot()``: raise it with any change ``restore`` must tell."""
CUBBY_PROBLEMS = frozenset({"slot_busy", "unknown_location"})
"""Put refusals that are about the cubby, not the order: another cubby is tried."""


# --- the order file ----------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CatalogueItem(_Model):
    """What the site knows of one SKU.

    Attributes:
        location: the slot it is picked from.
        barcodes: codes that identify it (EAN/UPC/GTIN; GS1 scans match by GTIN).
        description: what pickers and packers read.
        unit_weight_g: one unit's weight, for the check-weigh.
        dims_mm: one unit's length, width and height, for the box choice.
        fragile: needs protective packaging.
        hazardous: hazardous goods (lithium batteries, aerosols): a return is never restocked.
        on_shelf: **simulation only**: how many are really in the slot (``None``: plenty).
            The OMS never reads it; the demo's pickers pick short when the slot runs out.
    """

    location: Id
    barcodes: list[Barcode] = Field(min_length=1, max_length=MAX_BARCODES_PER_TASK)
    description: str = Field(default="", max_length=200)
    unit_weight_g: float = Field(default=0, ge=0, le=100_000)
    dims_mm: tuple[Dim, Dim, Dim] | None = None
    fragile: bool = False
    hazardous: bool = False
    on_shelf: int | None = Field(default=None, ge=0)


class OrderLine(_Model):
    """One line of an order: ``qty`` of ``sku``.

    ``location`` and ``barcodes`` are only needed when the SKU is not in the catalogue
    (CSV files carry them on every row).
    """

    sku: Id
    qty: int = Field(ge=1, le=9999)
    location: Id | None = None
    barcodes: list[Barcode] = Field(default_factory=list, max_length=MAX_BARCODES_PER_TASK)


class CarrierLabelEntry(_Model):
    """The carrier's label in an order file: its format and its bytes in base64.

    Checked as the pack command's ``carrier_label`` is (``%PDF-``, the PNG signature,
    ``^XA``...``^XZ``; at most 400,000 bytes).
    """

    format: Literal["pdf", "png", "zpl"]
    base64: str = Field(min_length=4, max_length=540_000)

    @model_validator(mode="after")
    def _check(self) -> CarrierLabelEntry:
        self.label()
        return self

    def label(self) -> CarrierLabel:
        """The pack command's ``carrier_label``."""
        try:
            data = binascii.a2b_base64(self.base64, strict_mode=True)
        except binascii.Error as exc:
            raise ValueError(f"base64 is not base64: {exc}") from exc
        return CarrierLabel(format=self.format, data=data)


class Order(_Model):
    """One customer order as the OMS received it from a sales channel.

    Attributes:
        order: the order id (also the barcode a packer scans to start it).
        channel: the sales channel (web, amazon, ebay, store...): informational.
        express: picked and packed first.
        tote: the container it is picked into (optional).
        gift_note: printed on the packing slip, shown to the packer.
        bonus_item: something the packer adds (a flyer, a sample).
        packing_slip: print a packing slip at the pack station.
        ship_to: the addressee, for the station's own label.
        carrier: the carrier and ``service`` on the station's own label.
        carrier_zpl: the carrier's own label as ZPL, printed byte for byte instead.
        carrier_label: the carrier's own label as PDF, PNG or ZPL (base64), printed as it
            is by a printer of the pack station that takes its format.
        tracking: the carrier's tracking number (the barcode on its label): how the dock
            knows a parcel whose label carries no SSCC.
        lines: what to pick.
    """

    order: Id
    channel: str = Field(default="", max_length=32)
    express: bool = False
    tote: Id | None = None
    gift_note: str = Field(default="", max_length=500)
    bonus_item: str = Field(default="", max_length=200)
    packing_slip: bool = False
    ship_to: ShipTo | None = None
    carrier: str = Field(default="", max_length=64)
    service: str = Field(default="", max_length=64)
    carrier_zpl: str | None = Field(default=None, max_length=60_000)
    carrier_label: CarrierLabelEntry | None = None
    tracking: Id | None = None
    lines: list[OrderLine] = Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _one_line_per_sku(self) -> Order:
        skus = [line.sku for line in self.lines]
        if len(set(skus)) != len(skus):
            raise ValueError("a sku appears on two lines: give one line per sku")
        if self.carrier_zpl is not None and not (
            "^XA" in self.carrier_zpl and "^XZ" in self.carrier_zpl
        ):
            raise ValueError("carrier_zpl is not a ZPL label (no ^XA ... ^XZ)")
        if self.carrier_zpl is not None and self.carrier_label is not None:
            raise ValueError("give carrier_zpl or carrier_label, not both")
        return self


class ReturnLineEntry(_Model):
    """What the customer says they send back: ``qty`` of ``sku``, and why."""

    sku: Id
    qty: int = Field(default=1, ge=1, le=9999)
    reason: Reason = "other"


class ReturnEntry(_Model):
    """A customer return of an order, announced once the order has shipped.

    Attributes:
        rma: the RMA number (on the return label).
        order: the order it returns (must be in the file).
        tracking: the return parcel's tracking number.
        lines: what the customer says they send back.
        grade: **simulation only**: the condition the returns clerk finds (A-D).
        contents: **simulation only**: the SKUs really in the parcel, one per unit
            (default: the lines). A wrong item sent shows up here as another SKU.
    """

    rma: Id
    order: Id
    tracking: Id | None = None
    lines: list[ReturnLineEntry] = Field(min_length=1, max_length=100)
    grade: Grade = "A"
    contents: list[Id] | None = Field(default=None, max_length=1000)


class OrderFile(_Model):
    """A whole order file: the catalogue, the orders and the customer returns."""

    catalogue: dict[Id, CatalogueItem] = Field(default_factory=dict)
    orders: list[Order] = Field(min_length=1)
    returns: list[ReturnEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _lines_resolve(self) -> OrderFile:
        seen: set[str] = set()
        for n, order in enumerate(self.orders):
            if order.order in seen:
                raise ValueError(f"orders[{n}].order: {order.order!r} appears twice")
            seen.add(order.order)
            for m, line in enumerate(order.lines):
                if line.sku not in self.catalogue and line.location is None:
                    raise ValueError(
                        f"orders[{n}].lines[{m}].sku: {line.sku!r} is not in the catalogue "
                        "and the line has no location"
                    )
        rmas: set[str] = set()
        for n, entry in enumerate(self.returns):
            if entry.rma in rmas:
                raise ValueError(f"returns[{n}].rma: {entry.rma!r} appears twice")
            rmas.add(entry.rma)
            if entry.order not in seen:
                raise ValueError(f"returns[{n}].order: {entry.order!r} is not an order of the file")
            for m, ret_line in enumerate(entry.lines):
                if ret_line.sku not in self.catalogue:
                    raise ValueError(
                        f"returns[{n}].lines[{m}].sku: {ret_line.sku!r} is not in the catalogue"
                    )
            for m, sku in enumerate(entry.contents or []):
                if sku not in self.catalogue:
                    raise ValueError(f"returns[{n}].contents[{m}]: {sku!r} is not in the catalogue")
        return self

    def item(self, line: OrderLine) -> CatalogueItem:
        """The catalogue entry of ``line`` (built from the line when the SKU has none)."""
        known = self.catalogue.get(line.sku)
        if known is not None:
            return known
        assert line.location is not None  # the validator guarantees it
        return CatalogueItem(location=line.location, barcodes=line.barcodes or [line.sku])

    def first(self, count: int) -> OrderFile:
        """The first ``count`` orders (more than the file has: repeated with new ids)."""
        orders = list(self.orders[:count])
        used = {o.order for o in self.orders}
        round_ = 1
        while len(orders) < count:
            round_ += 1
            for order in self.orders[: count - len(orders)]:
                suffix = round_
                while f"{order.order}-{suffix}" in used:  # the file may hold "A-2" already
                    suffix += 1
                used.add(new_id := f"{order.order}-{suffix}")
                tote = None if order.tote is None else f"{order.tote}-{suffix}"
                orders.append(order.model_copy(update={"order": new_id, "tote": tote}))
        kept = {o.order for o in orders}
        returns = [r for r in self.returns if r.order in kept]
        return self.model_copy(update={"orders": orders, "returns": returns})


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "y")


def _csv_orders(path: Path) -> dict[str, Any]:
    orders: dict[str, dict[str, Any]] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: Excel's byte-order mark
        for row in csv.DictReader(f):
            order = orders.setdefault(
                row.get("order") or "",
                {
                    "order": row.get("order") or "",
                    "channel": row.get("channel") or "",
                    "express": _truthy(row.get("express") or ""),
                    "tote": row.get("tote") or None,
                    "lines": [],
                },
            )
            order["lines"].append(
                {
                    "sku": row.get("sku") or "",
                    "qty": row.get("qty") or "",
                    "location": row.get("location") or "",
                    "barcodes": [b for b in (row.get("barcode") or "").split("|") if b],
                }
            )
    return {"orders": list(orders.values())}


def read_order_file(path: Path) -> OrderFile:
    """Read and check a whole order file (``.json`` or ``.csv``, docs/orders.md).

    Raises:
        ConfigError: with the file, the field (``orders[3].lines[0].qty``) and the reason.
    """
    try:
        if path.suffix.lower() == ".csv":
            raw = _csv_orders(path)
        else:  # the BOM some editors write is not JSON, but harmless
            raw = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise ConfigError(str(path), "(file)", exc.strerror or str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "(file)", f"not UTF-8 text: {exc}") from exc
    except csv.Error as exc:
        raise ConfigError(str(path), "(file)", f"not a readable CSV file: {exc}") from exc
    except ValueError as exc:
        raise ConfigError(str(path), "(file)", f"not valid JSON: {exc}") from exc
    try:
        return OrderFile.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(
                "."
            )
            message = str(err["msg"]).removeprefix("Value error, ")
            if not where and ": " in message:
                where, message = message.split(": ", 1)
            problems.append((where or "(file)", message))
        field_, reason = problems[0]
        raise ConfigError(str(path), field_, reason, problems) from exc


def carrier_of(order: Order) -> str:
    """The carrier of the order's parcel.

    Its ``carrier``, else Standard for the station's own label; empty when the order brings
    the carrier's label without naming the carrier.
    """
    own = order.carrier_zpl is None and order.carrier_label is None
    return order.carrier or ("Standard" if own else "")


# --- the state machine -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """A command for the driver to send to ``node``; ``order`` is what it is about."""

    node: str
    command: str
    body: Wire
    order: str | None = None


@dataclass(slots=True)
class OrderProgress:
    """Where one order is."""

    order: Order
    status: Status = "picking"
    open_tasks: set[str] = field(default_factory=set)
    picked: Counter[str] = field(default_factory=Counter)
    wall: str | None = None
    slot: str | None = None
    station: str | None = None
    sscc: str | None = None
    dock: str | None = None
    detail: str = ""

    def units(self) -> int:
        """Units actually picked."""
        return sum(self.picked.values())


@dataclass(slots=True)
class ReturnProgress:
    """Where one customer return is."""

    entry: ReturnEntry
    status: ReturnStatus = "waiting"
    node: str | None = None
    detail: str = ""


class Fulfilment:
    """Route an order file's orders through the site (see the module docstring).

    Args:
        orders: the order file.
        wave: the wave id for the pick tasks.
        serial_start: the first SSCC serial reference for the stations' own labels.
        company_prefix: the GS1 company prefix for SSCCs (``None``: the station's setting).
        dock_carriers: the carriers collected at the dispatch station (``None``: all).
        cutoffs: each carrier's cut-off (ms since the epoch), sent with its parcels.
    """

    def __init__(
        self,
        orders: OrderFile,
        *,
        wave: str = "W1",
        serial_start: int = 1,
        company_prefix: str | None = None,
        dock_carriers: Collection[str] | None = None,
        cutoffs: Mapping[str, int] | None = None,
    ) -> None:
        self.file = orders
        self.wave = wave
        self.company_prefix = company_prefix
        self.dock_carriers = None if dock_carriers is None else frozenset(dock_carriers)
        self.cutoffs = dict(cutoffs or {})
        self.returns: dict[str, ReturnProgress] = {r.rma: ReturnProgress(r) for r in orders.returns}
        self._docks: list[str] = []
        self._returns_stations: list[str] = []
        self._serial = serial_start
        self.orders: dict[str, OrderProgress] = {o.order: OrderProgress(o) for o in orders.orders}
        self._task_order: dict[str, tuple[str, str]] = {}  # task id -> (order, sku)
        self._task_node: dict[str, str] = {}  # task id -> the pick node it was sent to
        self._cancelled = 0  # lines cancelled because their order was refused
        self.problems: list[str] = []  # what the OMS worked around (a cubby out of use)
        self._walls: dict[str, list[str]] = {}  # wall node -> its cubbies, in order
        self._taken: dict[tuple[str, str], str] = {}  # (wall, slot) -> order
        self._waiting: list[str] = []  # orders waiting for a cubby
        self._stations: list[str] = []

    # --- planning --------------------------------------------------------------------

    def plan(self, nodes: Mapping[str, State]) -> list[Send]:
        """The pick waves for the online nodes of ``nodes`` (their births)."""
        owner: dict[str, str] = {}
        for name, state in sorted(nodes.items()):
            if not state.online:
                continue
            if state.role == "pick":
                for location in state.locations:
                    owner.setdefault(location, name)
            elif state.role == "put_wall" and state.locations:
                self._walls[name] = list(state.locations)
            elif state.role == "pack":
                self._stations.append(name)
            elif state.role == "dispatch":
                self._docks.append(name)
            elif state.role == "returns":
                self._returns_stations.append(name)
        per_node: dict[str, list[PickTask]] = {}
        for progress in self.orders.values():
            order = progress.order
            items = [self.file.item(line) for line in order.lines]
            missing = [
                f"{line.sku}@{item.location}"
                for line, item in zip(order.lines, items, strict=True)
                if item.location not in owner
            ]
            if missing:
                progress.status = "unrouted"
                progress.detail = "no online pick node owns " + ", ".join(missing)
                continue
            for n, (line, item) in enumerate(zip(order.lines, items, strict=True), 1):
                task = PickTask(
                    task=f"{order.order}-{n}",
                    order=order.order,
                    location=item.location,
                    sku=line.sku,
                    qty=line.qty,
                    barcodes=item.barcodes,
                    wave=self.wave,
                    container=order.tote,
                    priority=2 if order.express else 5,
                    express=order.express,
                    description=item.description[:200],
                )
                per_node.setdefault(owner[item.location], []).append(task)
                progress.open_tasks.add(task.task)
                self._task_order[task.task] = (order.order, line.sku)
                self._task_node[task.task] = owner[item.location]
        sends: list[Send] = []
        for node, tasks in sorted(per_node.items()):
            sends.append(Send(node, "wave_begin", WaveCommand(wave=self.wave)))
            for i in range(0, len(tasks), MAX_TASKS_PER_COMMAND):
                sends.append(
                    Send(node, "pick", PickCommand(tasks=tasks[i : i + MAX_TASKS_PER_COMMAND]))
                )
            sends.append(Send(node, "wave_release", WaveCommand(wave=self.wave)))
        return sends

    # --- input -----------------------------------------------------------------------

    def on_reply(self, send: Send, reply: Reply) -> list[Send]:
        """A node answered ``send``; the commands that leads to.

        A refused task or order ends its order ``refused`` (its other open lines are
        cancelled on their nodes). A cubby the wall calls busy or unknown is not used
        again and its order waits for another; with no cubby left, orders skip the wall.
        """
        refused: dict[str, str] = {}
        retry: list[tuple[str, str]] = []
        not_taken: list[str] = []  # pick tasks the node never took: nothing to cancel
        if reply.status == "rejected":
            why = f"{send.node} refused {send.command}: {reply.reason} {reply.detail or ''}"
            if isinstance(send.body, PickCommand):
                for task in send.body.tasks:
                    refused[task.order] = why.strip()
                    not_taken.append(task.task)
            elif isinstance(send.body, RmaCommand):
                for rma in send.body.rmas:
                    if rma.rma in self.returns:
                        self.returns[rma.rma].status = "refused"
                        self.returns[rma.rma].detail = why.strip()
            elif send.order is not None:
                refused[send.order] = why.strip()
        for item in reply.items:
            if item.status != "rejected":
                continue
            if isinstance(send.body, PutCommand) and item.reason in CUBBY_PROBLEMS:
                retry.append((item.id, item.reason or ""))
                continue
            why = f"{send.node} refused {item.id}: {item.reason}"
            # Only a pick reply names tasks; put and pack replies name orders, and an
            # order id may equal a task id (first() repeats "X" as "X-2", X's 2nd task).
            order = item.id
            if isinstance(send.body, PickCommand) and item.id in self._task_order:
                order = self._task_order[item.id][0]
                not_taken.append(item.id)
            refused[order] = why
        for task_id in not_taken:
            holder = self.orders[self._task_order[task_id][0]]
            if task_id in holder.open_tasks:
                holder.open_tasks.discard(task_id)
                self._cancelled += 1
        out: list[Send] = []
        for order_id, why in refused.items():
            progress = self.orders.get(order_id)
            if progress is None or progress.status in FINAL:
                continue
            progress.status = "refused"
            progress.detail = why
            out += self._cancel_open_lines(progress)
            out += self._free(progress)
        for order_id, reason in retry:
            out += self._cubby_unusable(order_id, reason)
        return out

    def _cancel_open_lines(self, progress: OrderProgress) -> list[Send]:
        per_node: dict[str, list[str]] = {}
        for task in sorted(progress.open_tasks):
            per_node.setdefault(self._task_node[task], []).append(task)
        self._cancelled += len(progress.open_tasks)
        progress.open_tasks.clear()
        return [
            Send(node, "cancel", CancelCommand(tasks=tasks), progress.order.order)
            for node, tasks in sorted(per_node.items())
        ]

    def _cubby_unusable(self, order_id: str, reason: str) -> list[Send]:
        progress = self.orders.get(order_id)
        if progress is None or progress.status != "at_wall":
            return []
        wall, slot = progress.wall, progress.slot
        assert wall is not None and slot is not None
        self._taken.pop((wall, slot), None)
        self._walls[wall].remove(slot)
        if not self._walls[wall]:
            del self._walls[wall]
        self.problems.append(f"{wall} refused cubby {slot} ({reason}): not used again")
        progress.status = "waiting_for_cubby"
        progress.wall = progress.slot = None
        self._waiting.insert(0, order_id)
        if self._walls:
            return self._assign_cubbies()
        out: list[Send] = []  # no usable cubby anywhere: straight to packing
        while self._waiting:
            out += self._pack(self.orders[self._waiting.pop(0)])
        return out

    def on_event(self, node: str, name: str, body: Any) -> list[Send]:
        """Take one node event (as the OMS client delivers them); the commands it leads to."""
        if name in ("picked", "short", "expired"):
            task = str(field_of(body, "task"))
            order_sku = self._task_order.get(task)
            if order_sku is None:
                return []
            progress = self.orders[order_sku[0]]
            if task not in progress.open_tasks:
                return []  # a duplicate confirmation cannot count twice
            progress.open_tasks.discard(task)
            if name != "expired":
                progress.picked[order_sku[1]] += int(field_of(body, "picked") or 0)
            if progress.open_tasks or progress.status != "picking":
                return []
            return self._picked(progress)
        if name == "return_closed":
            ret = self.returns.get(str(field_of(body, "rma")))
            if ret is not None and ret.status == "announced":
                ret.status = "received"
            return []
        found = self.orders.get(str(field_of(body, "order")))
        if found is None:
            return []
        if name == "order_complete" and found.status == "at_wall":
            return self._free(found) + self._pack(found)
        if name == "label_printed" and field_of(body, "sscc"):
            found.sscc = str(field_of(body, "sscc"))
        if name == "packed" and found.status == "packing":
            return self._packed(found)
        if name == "shipped" and found.status == "dispatching":
            found.status = "shipped"
            found.detail = f"manifest {field_of(body, 'manifest')}"
            return self._announce_returns(found)
        if (
            name == "load_refused"
            and found.status == "dispatching"
            and field_of(body, "reason") == "no_lane"
        ):
            found.status = "packed"
            found.detail = f"{node} has no lane for {field_of(body, 'carrier')}"
            return self._announce_returns(found)
        return []

    def concerns(self, name: str, body: Any) -> bool:
        """Whether a node event names a task, an order or a return of this router.

        ``on_event`` leaves the router as it was for any other event.
        """
        if name in ("picked", "short", "expired"):
            return str(field_of(body, "task")) in self._task_order
        if name == "return_closed":
            return str(field_of(body, "rma")) in self.returns
        return str(field_of(body, "order")) in self.orders

    def carrier_of(self, order: Order) -> str:
        """The carrier of the order's parcel (the station's own label says Standard)."""
        return carrier_of(order)

    def _packed(self, progress: OrderProgress) -> list[Send]:
        progress.status = "packed"
        order = progress.order
        carrier = self.carrier_of(order)
        if not self._docks or (
            self.dock_carriers is not None and carrier not in self.dock_carriers
        ):
            return self._announce_returns(progress)
        if not carrier or (progress.sscc is None and order.tracking is None):
            progress.detail = "no carrier, SSCC or tracking number: not sent to the dock"
            return self._announce_returns(progress)
        load = Counter(p.dock for p in self.orders.values() if p.status == "dispatching")
        dock = min(self._docks, key=lambda d: (load[d], d))
        progress.status = "dispatching"
        progress.dock = dock
        parcel = Parcel(
            sscc=progress.sscc,
            tracking=order.tracking,
            carrier=carrier,
            service=order.service,
            order=order.order,
            express=order.express,
            cutoff=self.cutoffs.get(carrier),
        )
        return [Send(dock, "load", LoadCommand(parcels=[parcel]), order.order)]

    def _announce_returns(self, progress: OrderProgress) -> list[Send]:
        out: list[Send] = []
        for ret in self.returns.values():
            if ret.entry.order != progress.order.order or ret.status != "waiting":
                continue
            if not self._returns_stations:
                ret.status = "no_station"
                ret.detail = "no returns station online"
                continue
            ret.status = "announced"
            ret.node = self._returns_stations[0]
            out.append(Send(ret.node, "rma", RmaCommand(rmas=[self.rma(ret.entry)])))
        return out

    def rma(self, entry: ReturnEntry) -> Rma:
        """The ``rma`` of a return, with the catalogue's barcodes and hazard flags."""
        lines = []
        for line in entry.lines:
            item = self.file.catalogue[line.sku]
            lines.append(
                ReturnLine(
                    sku=line.sku,
                    qty=line.qty,
                    barcodes=item.barcodes,
                    reason=line.reason,
                    hazardous=item.hazardous,
                    description=item.description[:200],
                )
            )
        return Rma(rma=entry.rma, order=entry.order, tracking=entry.tracking, lines=lines)

    def _picked(self, progress: OrderProgress) -> list[Send]:
        if progress.units() == 0:
            progress.status = "unfulfilled"
            progress.detail = "nothing picked: out of stock"
            return []
        if len(progress.order.lines) > 1 and self._walls:
            progress.status = "waiting_for_cubby"
            self._waiting.append(progress.order.order)
            return self._assign_cubbies()
        return self._pack(progress)

    def _assign_cubbies(self) -> list[Send]:
        out: list[Send] = []
        self._waiting.sort(key=lambda o: not self.orders[o].order.express)  # stable
        for wall, slots in sorted(self._walls.items()):
            for slot in slots:
                if not self._waiting:
                    return out
                if (wall, slot) in self._taken:
                    continue
                progress = self.orders[self._waiting.pop(0)]
                progress.status = "at_wall"
                progress.wall, progress.slot = wall, slot
                self._taken[(wall, slot)] = progress.order.order
                items = [
                    PutItem(sku=sku, qty=qty, barcodes=self.file.item(line).barcodes)
                    for line in progress.order.lines
                    if (qty := progress.picked[(sku := line.sku)]) > 0
                ]
                order = PutOrder(order=progress.order.order, slot=slot, items=items)
                out.append(Send(wall, "put", PutCommand(orders=[order]), progress.order.order))
        return out

    def _free(self, progress: OrderProgress) -> list[Send]:
        if progress.wall is None or progress.slot is None:
            return []
        self._taken.pop((progress.wall, progress.slot), None)
        progress.slot = None
        return self._assign_cubbies()

    def _pack(self, progress: OrderProgress) -> list[Send]:
        if not self._stations:
            progress.status = "picked"
            return []
        load = Counter(
            p.station for p in self.orders.values() if p.status == "packing" and p.station
        )
        station = min(self._stations, key=lambda s: (load[s], s))
        progress.status = "packing"
        progress.station = station
        return [Send(station, "pack", self.pack_command(progress), progress.order.order)]

    def pack_command(self, progress: OrderProgress) -> PackCommand:
        """The ``pack`` command of an order, with the quantities actually picked."""
        order = progress.order
        lines = []
        for line in order.lines:
            qty = progress.picked[line.sku]
            if qty <= 0:
                continue
            item = self.file.item(line)
            lines.append(
                PackLine(
                    sku=line.sku,
                    qty=qty,
                    barcodes=item.barcodes,
                    unit_weight_g=item.unit_weight_g,
                    dims_mm=item.dims_mm,
                    fragile=item.fragile,
                    description=item.description[:200],
                )
            )
        label = None
        carrier_zpl = None
        carrier_label = None
        if order.carrier_zpl is not None:
            carrier_zpl = order.carrier_zpl.encode()
        elif order.carrier_label is not None:
            carrier_label = order.carrier_label.label()
        else:
            label = OwnLabel(
                ship_to=order.ship_to or ShipTo(name=f"Order {order.order}"),
                carrier=order.carrier or "Standard",
                service=order.service,
                company_prefix=self.company_prefix,
                serial_reference=str(self._serial % 1_000_000_000),
            )
            self._serial += 1
        return PackCommand(
            order=order.order,
            tote=order.tote,
            lines=lines,
            express=order.express,
            gift_note=order.gift_note,
            bonus_item=order.bonus_item,
            packing_slip=order.packing_slip,
            carrier_zpl=carrier_zpl,
            carrier_label=carrier_label,
            label=label,
        )

    # --- keeping it across a restart ---------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything the router knows beyond its constructor's arguments, as plain JSON.

        ``restore`` on a router made with the same arguments brings it back: the site
        service keeps it in its log so that a restart or a takeover goes on routing.
        """
        orders = {}
        for order_id, p in self.orders.items():
            row: dict[str, Any] = {"status": p.status}
            if f"{order_id}-1" in self._task_node:
                # Its lines' pick nodes: the tasks ({order}-{n}) are made again from them.
                lines = range(1, len(p.order.lines) + 1)
                row["nodes"] = [self._task_node[f"{order_id}-{n}"] for n in lines]
            if p.open_tasks:
                row["open"] = sorted(p.open_tasks)
            if p.picked:
                row["picked"] = dict(p.picked)
            for key in ("wall", "slot", "station", "sscc", "dock", "detail"):
                if value := getattr(p, key):
                    row[key] = value
            orders[order_id] = row
        return {
            "v": SNAPSHOT_VERSION,
            "orders": orders,
            "returns": {
                rma: {"status": r.status, "node": r.node, "detail": r.detail}
                for rma, r in self.returns.items()
            },
            # Copies throughout: the service encodes it in another thread while routing on.
            "docks": list(self._docks),
            "returns_stations": list(self._returns_stations),
            "stations": list(self._stations),
            "serial": self._serial,
            "cancelled": self._cancelled,
            "problems": list(self.problems),
            "walls": {wall: list(slots) for wall, slots in self._walls.items()},
            "taken": [[wall, slot, order] for (wall, slot), order in self._taken.items()],
            "waiting": list(self._waiting),
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        """Take the state of ``snapshot()`` (of a router made with the same arguments).

        Raises:
            ValueError: the snapshot is of another layout or does not fit the order file.
        """
        if data.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"router snapshot version {data.get('v')!r} is not {SNAPSHOT_VERSION}")
        self._task_order, self._task_node = {}, {}
        try:
            for order_id, row in data["orders"].items():
                p = self.orders[order_id]
                p.status = row["status"]
                p.open_tasks = set(row.get("open", ()))
                p.picked = Counter({str(k): int(v) for k, v in row.get("picked", {}).items()})
                p.wall, p.slot = row.get("wall"), row.get("slot")
                p.station, p.sscc, p.dock = row.get("station"), row.get("sscc"), row.get("dock")
                p.detail = row.get("detail", "")
                if "nodes" in row:  # none: the order was not routed
                    lines = zip(p.order.lines, row["nodes"], strict=True)
                    for n, (line, node) in enumerate(lines, 1):
                        self._task_order[f"{order_id}-{n}"] = (order_id, line.sku)
                        self._task_node[f"{order_id}-{n}"] = node
            for rma, row in data["returns"].items():
                r = self.returns[rma]
                r.status, r.node, r.detail = row["status"], row["node"], row["detail"]
            self._docks = list(data["docks"])
            self._returns_stations = list(data["returns_stations"])
            self._stations = list(data["stations"])
            self._serial = int(data["serial"])
            self._cancelled = int(data["cancelled"])
            self.problems = list(data["problems"])
            self._walls = {wall: list(slots) for wall, slots in data["walls"].items()}
            self._taken = {(wall, slot): order for wall, slot, order in data["taken"]}
            self._waiting = list(data["waiting"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"router snapshot does not fit its order file: {exc!r}") from None

    # --- where things are --------------------------------------------------------------

    def done(self) -> bool:
        """Whether every order reached a final status and every announced return closed."""
        return all(p.status in FINAL for p in self.orders.values()) and not any(
            r.status == "announced" for r in self.returns.values()
        )

    def counts(self) -> Counter[str]:
        """Orders by status."""
        return Counter(p.status for p in self.orders.values())

    def lines(self) -> tuple[int, int]:
        """``(confirmed, sent)`` pick lines; lines cancelled with a refused order not counted."""
        sent = len(self._task_order) - self._cancelled
        open_ = sum(len(p.open_tasks) for p in self.orders.values())
        return sent - open_, sent


async def drive(
    oms: OmsClient,
    fulfilment: Fulfilment,
    *,
    follow: bool = True,
    on_event: Callable[[NodeEvent], None] | None = None,
    on_send: Callable[[Send, Reply], None] | None = None,
) -> None:
    """Send the plan for the nodes online now, then (``follow``) route orders until done.

    ``on_event`` sees every event the OMS receives (recording, KPIs, progress); ``on_send``
    every command with its reply.
    """
    nodes = {name: view.state for name, view in oms.nodes.items() if view.state is not None}
    replies: asyncio.Queue[tuple[Send, Reply]] = asyncio.Queue()

    def sent(send: Send, future: asyncio.Future[Reply]) -> None:
        if not future.cancelled() and future.exception() is None:
            replies.put_nowait((send, future.result()))

    def send_all(sends: Iterable[Send]) -> None:
        for send in sends:
            future = oms.send(send.node, send.command, send.body)
            future.add_done_callback(functools.partial(sent, send))

    # Waves go out in order per node: begin, every pick batch, then release.
    for send in fulfilment.plan(nodes):
        reply = await oms.call(send.node, send.command, send.body)
        if on_send is not None:
            on_send(send, reply)
        send_all(fulfilment.on_reply(send, reply))
    while follow and not fulfilment.done():
        events = asyncio.ensure_future(oms.events.get())
        answered = asyncio.ensure_future(replies.get())
        finished, _ = await asyncio.wait({events, answered}, return_when=asyncio.FIRST_COMPLETED)
        for task in (events, answered):
            if task not in finished:
                task.cancel()
        if events in finished:
            event = events.result()
            if on_event is not None:
                on_event(event)
            send_all(fulfilment.on_event(event.node, event.name, event.body))
        if answered in finished:
            send, reply = answered.result()
            if on_send is not None:
                on_send(send, reply)
            send_all(fulfilment.on_reply(send, reply))
