"""The supervisor dashboard: one live page for the whole site (docs/dashboard.md).

``SiteView`` gathers what a supervisor wants on a wall screen: every node's birth
(``OmsClient.nodes``: role, online, boot, device health), the events delivered once and in
order (``on_event``), the replies to commands (``on_reply``) and the router's word on each
order: a ``Fulfilment`` in this process (the demo) or the site log's ``orders`` table
(``set_facts``: status, carrier, cut-off). ``snapshot()`` is the page's JSON;
``serve_dashboard`` serves it with ``agent/static/dashboard.html`` over SSE through the same
small web server as the node screens (``agent.web``), with ``/metrics`` beside it. The site
service and ``oms serve`` feed it from their log (``agent.oms.site.board``).

Nothing is hidden: every node, open order, exception and KPI row is on the page (its panel
scrolls). Nodes are listed problems first: offline, another node on the same id (its birth's
``takeovers``), a device or part not ok; then by name. Orders are listed problems first (an
order that ended badly: refused, unrouted, nothing picked), then those past their carrier's
cut-off and not dispatched, then those near it (``CUTOFF_SOON_S``), then stuck ones, longest
without news first; finished orders last. "Stuck" is judged per stage (``STUCK_AFTER_S``):
an order queued at a pack station waits by design and is not stuck until a packer has
started it and gone quiet. With a history (``OrderHistory``: the log) the view keeps the
open orders and the ``DONE_KEPT`` most recently finished; the older ones are a "more" away,
read from the log page by page (``GET /api/orders``). Exceptions carry an id; a supervisor
acknowledges one (``POST /api/exceptions/{id}/ack``), and those of a condition (a node
offline, a device down) show when the condition cleared. An exception is a message
(``agent.i18n``: a ``dashboard.exc.`` key and its parameters, codes as nested messages) the
page says in the supervisor's language; its ``text`` is the English.

Without a router's word an order's stage comes from its latest event (``picked`` -> pick,
``put`` -> wall, ``verified``/``weighed``/``label_printed`` -> pack, ``packed``, ``loaded``
-> dispatch, ``shipped``).
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from agent.i18n import Message, Param, catalogue, msg
from agent.i18n import render as say
from agent.metrics import Family, bump, counter, gauge, render
from agent.oms.kpi import Kpis, field_of

if TYPE_CHECKING:
    from agent.oms import NodeEvent, OmsClient
    from agent.oms.fulfilment import Fulfilment, Send
    from agent.web import WebServer
    from agent.wire.messages import Reply

MAX_EXCEPTIONS = 1000
"""Exceptions kept (oldest dropped first): a shift's worth, all reachable on the page."""
DONE_KEPT = 200
"""Finished orders a view with a history (the log) keeps in memory and on the page: the
most recently finished. Older ones are read from the log on demand (``/api/orders``)."""
PAGE_ORDERS = 50
"""Orders in one page of ``/api/orders``."""
STUCK_AFTER_S: dict[str, float | None] = {
    "pick": 1800.0,
    "wall": 1800.0,
    "pack": 900.0,
    "packed": 3600.0,
    "dispatch": 3600.0,
    "returns": 3600.0,
}
"""How long an open order may go without news at each stage before it is stuck. At ``pack``
the clock runs only once a packer has started the order (a ``verified``, ``weighed`` or
label event): an order queued at the station is waiting its turn, not stuck."""
PACK_STARTED = frozenset(
    {"verified", "weighed", "label_printed", "print_failed", "print_delayed", "pack_refused"}
)
DUPLICATE_TAKEOVERS = 3
"""Takeovers in a birth from which another node most likely runs with the same node id."""
SNAPSHOT_SPACING = 5
"""The page's data is rebuilt at most every 0.15 s and never sooner than this many times
the last build took after it (a fifth of a core at most, however large the view)."""
BUCKET_S = 10
"""Width of one point of the picks-per-hour chart."""
WINDOW_S = 60
"""The rate at a point is the lines confirmed in the last ``WINDOW_S`` seconds, per hour."""
MAX_POINTS = 360

STAGE_OF_STATUS = {
    "picking": "pick",
    "waiting_for_cubby": "wall",
    "at_wall": "wall",
    "packing": "pack",
    "packed": "packed",
    "dispatching": "dispatch",
    "shipped": "shipped",
    "picked": "picked",
}
"""A ``Fulfilment`` status's stage on the page; the others (unfulfilled, unrouted,
refused) are problems."""

STAGE_OF_EVENT = {
    "picked": "pick",
    "short": "pick",
    "put": "wall",
    "order_complete": "wall",
    "verified": "pack",
    "weighed": "pack",
    "label_printed": "pack",
    "print_failed": "pack",
    "print_delayed": "pack",
    "pack_refused": "pack",
    "packed": "packed",
    "loaded": "dispatch",
    "shipped": "shipped",
    "return_opened": "returns",
    "return_received": "returns",
    "return_closed": "returned",
}
DONE_STAGES = frozenset({"shipped", "returned"})
PROBLEM_STATUSES = frozenset({"unfulfilled", "unrouted", "refused"})
FINAL_STATUSES = frozenset({"shipped", "packed", "picked"})
"""A ``Fulfilment`` ends an order at these (``packed`` goes on at once when it ships)."""
RETURN_LABELS = {"returns": "return open", "returned": "returned"}
DISPATCHED = frozenset({"dispatch", "shipped", "returns", "returned"})
"""Stages at which an order's parcel is at the dock or gone: its cut-off no longer matters."""
CUTOFF_SOON_S = 1800
"""An open order within this many seconds of its carrier's cut-off is flagged as due."""
STAGES = ("pick", "wall", "pack", "packed", "dispatch", "shipped", "returns")


@dataclass(slots=True)
class OrderSeen:
    """What the events said of one order."""

    stage: str
    first_ms: int
    last_ms: int
    node: str


@dataclass(frozen=True, slots=True)
class OrderFacts:
    """What the router says of an order: its status, words, carrier, cut-off, where.

    From a ``Fulfilment`` in this process, or from the log's ``orders`` table.
    """

    status: str
    detail: str = ""
    carrier: str | None = None
    cutoff: int | None = None
    express: bool = False
    places: tuple[tuple[str, str], ...] = ()
    """(stage, node) pairs: where the router sent it at each stage."""


@dataclass(frozen=True, slots=True)
class FoundOrder:
    """One order read from a history (the log): what its events and its router said."""

    order: str
    seen: OrderSeen | None
    started: bool = False
    """A packer has started it (a pack station's event other than being routed there)."""
    facts: OrderFacts | None = None


class OrderHistory(Protocol):
    """Every order a site has had, read on demand (the log's events and ``orders`` table)."""

    def find(self, before: str | None, prefix: str, limit: int) -> list[FoundOrder]:
        """Up to ``limit`` orders by id, highest first: ids starting with ``prefix``.

        Only ids sorting before ``before`` (``None``: from the highest). Blocking.
        """
        ...


def seen_from(events: Iterable[tuple[str, str, int]]) -> tuple[OrderSeen | None, bool]:
    """An order's ``OrderSeen`` and whether a packer started it, from its events.

    ``events`` are ``(name, node, ts)`` in log order, as ``SiteView.on_event`` saw them.
    """
    seen: OrderSeen | None = None
    started = False
    for name, node, at in events:
        stage = STAGE_OF_EVENT.get(name)
        if stage is None:
            continue
        if seen is None:
            seen = OrderSeen(stage, at, at, node)
        else:
            seen.stage, seen.last_ms, seen.node = stage, at, node
        started = started or name in PACK_STARTED
    return seen, started


@dataclass(slots=True)
class SiteView:
    """The site as the dashboard shows it; fed by the OMS's events and replies.

    Args:
        oms: the OMS client whose node views (births) are shown.
        fulfilment: the order router, when this OMS routes orders (its statuses win).
        stuck_after_s: one threshold for every stage instead of ``STUCK_AFTER_S`` (``oms
            serve --stuck-after``; tests).
        bucket_s: seconds between two points of the picks-per-hour chart.
        clock: wall-clock milliseconds (tests pass their own).
        history: every order ever, read on demand (the log). With one, the view keeps
            the open orders and only the ``done_kept`` most recently finished in memory;
            without, it keeps every order it saw.
        done_kept: finished orders kept with a history (default ``DONE_KEPT``).
        link: the client on the broker when it is not ``oms`` (the site service's: the
            dashboard's own ``oms`` only holds the births read from the log); metrics.
    """

    oms: OmsClient
    fulfilment: Fulfilment | None = None
    stuck_after_s: float | None = None
    bucket_s: int = BUCKET_S
    clock: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    history: OrderHistory | None = None
    done_kept: int = DONE_KEPT
    link: OmsClient | None = None
    kpis: Kpis = field(default_factory=Kpis)
    exceptions: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_EXCEPTIONS))
    pack_started: set[str] = field(default_factory=set)
    _open_conditions: dict[tuple[str, ...], dict[str, Any]] = field(default_factory=dict)
    _next_exception: int = 1
    orders: dict[str, OrderSeen] = field(default_factory=dict)
    """Open orders (and, without a history, finished ones too)."""
    finished: OrderedDict[str, OrderSeen] = field(default_factory=OrderedDict)
    """Finished orders, the most recently finished last (bounded with a history)."""
    facts: dict[str, OrderFacts] = field(default_factory=dict)
    """The router's word on orders in the view (from the log's ``orders`` table)."""
    done_older: int = 0
    """Finished orders let go of: in the history, not in memory."""
    open_work: dict[str, int] = field(default_factory=dict)
    confirmed_ms: deque[int] = field(default_factory=deque)
    points: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=MAX_POINTS))
    events: dict[tuple[str, str], int] = field(default_factory=dict)
    exception_counts: dict[str, int] = field(default_factory=dict)
    _health: dict[tuple[str, str], str] = field(default_factory=dict)
    _online: dict[str, bool] = field(default_factory=dict)
    _first_seen: dict[str, int] = field(default_factory=dict)
    _next_point_ms: int = 0
    _dock: bool = False
    """A dispatch node is known: a packed order goes on to the dock (without a router)."""

    # --- input -------------------------------------------------------------------------

    def on_event(self, event: NodeEvent) -> None:
        """Take one delivered event (each once, in order per node)."""
        name, body, node = event.name, event.body, event.node
        at = event.envelope.ts or self.clock()
        bump(self.events, (node, name))
        self.kpis.add(node, name, body)
        order = field_of(body, "order")
        stage = STAGE_OF_EVENT.get(name)
        if isinstance(order, str) and stage is not None:
            # A finished order with news (a customer return) is open again.
            seen = self.orders.get(order) or self.finished.pop(order, None)
            if seen is None:
                seen = OrderSeen(stage, at, at, node)
            else:
                seen.stage, seen.last_ms, seen.node = stage, at, node
            if name in PACK_STARTED:
                self.pack_started.add(order)
            if stage in DONE_STAGES:
                self._finish(order, seen)
            else:
                self.orders[order] = seen
        span_ms = (MAX_POINTS * self.bucket_s + WINDOW_S) * 1000
        if name in ("picked", "short") and at > self.clock() - span_ms:
            self.confirmed_ms.append(at)  # an older one is of no point of the chart
        if name == "counters" and isinstance(field_of(body, "open_lines"), int):
            self.open_work[node] = field_of(body, "open_lines")
        elif name == "pack_counters" and isinstance(field_of(body, "queued"), int):
            self.open_work[node] = field_of(body, "queued")
        message = _exception_message(name, body)
        if message is not None:
            seq = event.envelope.seq
            key = None if seq is None else f"event:{node}/{event.store or ''}/{seq}"
            self._exception(at, node, name, message, key=key)

    def on_reply(
        self, send: Send, reply: Reply, at: int | None = None, key: str | None = None
    ) -> None:
        """A command's reply: a refusal (whole or of an item) is an exception.

        ``at`` is when it came (default now), ``key`` its stable key (a log replays it).
        """
        refused = [i for i in reply.items if i.status != "accepted"]
        if reply.status == "accepted" and not refused:
            return
        why: Param = (
            code_msg("reason", reply.reason)
            if reply.reason
            else [
                msg(
                    "dashboard.item_reason",
                    id=i.id,
                    reason=code_msg("reason", i.reason or i.status),
                )
                for i in refused[:3]
            ]
        )
        message = (
            exc("refusal_for", command=send.command, order=send.order, reason=why)
            if send.order
            else exc("refusal", command=send.command, reason=why)
        )
        self._exception(self.clock() if at is None else at, send.node, "refusal", message, key=key)

    def set_facts(self, order: str, facts: OrderFacts) -> None:
        """The router's word on an order (the log's ``orders`` table) changed.

        Kept for an order the view holds, or an open one it has not heard of yet (an order
        the router could not route has no events); a finished order the view let go of
        stays in the history.
        """
        held = order in self.orders or order in self.finished
        if held or facts.status not in FINAL_STATUSES:
            self.facts[order] = facts
        else:
            self.facts.pop(order, None)

    def _finish(self, order: str, seen: OrderSeen) -> set[str]:
        """Move an order among the finished; with a history, let the oldest go.

        Returns the orders let go of (their events and status stay in the log).
        """
        self.orders.pop(order, None)
        self.pack_started.discard(order)
        self._first_seen.pop(order, None)
        self.kpis.fold(order)
        self.finished[order] = seen
        self.finished.move_to_end(order)
        gone: set[str] = set()
        while self.history is not None and len(self.finished) > self.done_kept:
            old, _ = self.finished.popitem(last=False)
            self.facts.pop(old, None)
            self.done_older += 1
            gone.add(old)
        return gone

    def _exception(
        self,
        at: int,
        node: str,
        kind: str,
        message: Message,
        condition: tuple[str, ...] | None = None,
        key: str | None = None,
    ) -> dict[str, Any]:
        bump(self.exception_counts, kind)
        if key is None and condition is not None:
            key = "/".join(condition)
        entry: dict[str, Any] = {
            "id": self._next_exception,
            "key": key,
            "at": at,
            "node": node,
            "kind": kind,
            "text": english(message)[:200],
            "message": message,
            "acked_at": None,
            "acked_by": None,
            "cleared_at": None,
        }
        self._next_exception += 1
        self.exceptions.appendleft(entry)
        if condition is not None:
            self._open_conditions[condition] = entry
        return entry

    def _condition(self, now: int, condition: tuple[str, ...], message: Message | None) -> None:
        """An exception that lasts while a condition holds (``message``) and clears after it."""
        entry = self._open_conditions.get(condition)
        if message is None:
            if entry is not None:
                entry["cleared_at"] = now
                del self._open_conditions[condition]
            return
        if entry is not None and entry["message"] == message:
            return
        if entry is not None:
            entry["cleared_at"] = now  # the condition changed: the new one is its own line
        self._exception(now, condition[1], condition[0], message, condition)

    def ack_key(self, key: str, by: str = "", now: int | None = None) -> dict[str, Any] | None:
        """Acknowledge the latest exception with this ``key``; ``None`` when there is none.

        For an acknowledgement replayed from a log: ids are the view's own, keys are stable
        (``event:node/store/seq`` for an event's, the condition for a node or device).
        """
        for entry in self.exceptions:  # newest first
            if entry["key"] == key:
                return self.ack(entry["id"], by, now)
        return None

    def ack(self, exception_id: int, by: str = "", now: int | None = None) -> dict[str, Any]:
        """A supervisor acknowledges an exception; ``KeyError`` when there is no such one."""
        for entry in self.exceptions:
            if entry["id"] == exception_id:
                if entry["acked_at"] is None:
                    entry["acked_at"] = self.clock() if now is None else now
                    entry["acked_by"] = by[:64] or None
                return entry
        raise KeyError(exception_id)

    def watch_births(self, now: int) -> None:
        """Judge the births now (a replay calls it at each logged birth, with its time)."""
        self._watch_births(now)

    def _watch_births(self, now: int) -> None:
        """Offline nodes, duplicate ids and devices not ok, seen in the births, are exceptions.

        Each lasts while its condition does and shows when it cleared; a node already
        offline when this view first saw it is one too.
        """
        self._dock = any(
            v.state is not None and v.state.role == "dispatch" for v in self.oms.nodes.values()
        )
        for name, view in self.oms.nodes.items():
            was = self._online.get(name)
            self._online[name] = view.online
            self._condition(now, ("node", name), None if view.online else exc("offline"))
            if was is False and view.online:
                self._exception(now, name, "node", exc("back_online"), key=f"back/{name}")
            state = view.state
            takeovers = state.takeovers if state is not None else None
            duplicate = takeovers is not None and takeovers >= DUPLICATE_TAKEOVERS
            self._condition(
                now,
                ("duplicate", name),
                exc("duplicate", takeovers=takeovers or 0) if duplicate else None,
            )
            devices = state.devices if state is not None else {}
            for device, health in devices.items():
                bad = health.status in ("fault", "unavailable")
                status = code_msg("health", health.status)
                down = (
                    exc("device", device=device, status=status, detail=health.detail)
                    if health.detail
                    else exc("device_bare", device=device, status=status)
                )
                self._condition(now, ("device", name, device), down if bad else None)
                self._health[(name, device)] = health.status
                for where, part in health.parts.items():
                    status = code_msg("health", part.status)
                    self._condition(
                        now,
                        ("device", name, f"{device}/{where}"),
                        exc("part", device=device, part=where, status=status, detail=part.detail)
                        if part.detail
                        else exc("part_bare", device=device, part=where, status=status),
                    )
                for key in [k for k in self._open_conditions if k[:2] == ("device", name)]:
                    if (
                        key[2].startswith(f"{device}/")
                        and key[2].split("/", 1)[1] not in health.parts
                    ):
                        self._condition(now, key, None)

    # --- output ------------------------------------------------------------------------

    def _rate_points(self, now: int) -> list[tuple[int, float]]:
        """Picks per hour every ``BUCKET_S``, each over the last ``WINDOW_S``."""
        step = self.bucket_s * 1000
        if self._next_point_ms == 0:
            first = self.confirmed_ms[0] if self.confirmed_ms else now
            self._next_point_ms = first - first % step + step
        # Only the last MAX_POINTS points are kept: after a gap (a log replayed from months
        # ago) start there instead of walking every bucket since the first line.
        self._next_point_ms = max(self._next_point_ms, now - now % step - (MAX_POINTS - 1) * step)
        while self._next_point_ms <= now:
            at = self._next_point_ms
            while self.confirmed_ms and self.confirmed_ms[0] <= at - WINDOW_S * 1000:
                self.confirmed_ms.popleft()
            in_window = sum(1 for t in self.confirmed_ms if t <= at)
            self.points.append((at, in_window * 3600 / WINDOW_S))
            self._next_point_ms += step
        return list(self.points)

    def _order_rows(self, now: int) -> list[dict[str, Any]]:
        """Every open order, and the finished ones the view keeps; problems first.

        An order the rows find finished (its router's final status) joins the finished
        ones, one found open again (a return, a router that sent it on) rejoins the open.
        """
        progress = self.fulfilment.orders if self.fulfilment is not None else {}
        ids = [*self.orders, *self.finished]
        listed = set(ids)
        # Routed here but not heard of yet: shown while open; a finished one was heard of.
        ids += [
            o for o, p in progress.items() if o not in listed and p.status not in FINAL_STATUSES
        ]
        ids += [o for o in self.facts if o not in listed and o not in progress]
        rows = []
        for order_id in ids:
            seen = self.orders.get(order_id) or self.finished.get(order_id)
            started = order_id in self.pack_started
            rows.append(self._row(order_id, seen, self._facts(order_id), now, started))
        gone: set[str] = set()
        for row in rows:
            order_id = row["order"]
            if row["done"] and order_id in self.orders:
                gone |= self._finish(order_id, self.orders[order_id])
            elif not row["done"] and order_id in self.finished:
                self.orders[order_id] = self.finished.pop(order_id)
            elif row["done"] and order_id not in self.finished and order_id in self.facts:
                # The router's word only, now final: in the history, not in memory.
                del self.facts[order_id]
                self._first_seen.pop(order_id, None)
                gone.add(order_id)
        if gone:
            rows = [r for r in rows if r["order"] not in gone]
        rows.sort(key=order_rank)
        return rows

    def _facts(self, order_id: str) -> OrderFacts | None:
        """The router's word on an order: this process's ``Fulfilment``, else the log's."""
        if self.fulfilment is not None:
            p = self.fulfilment.orders.get(order_id)
            if p is not None:
                carrier = p.order.carrier or None
                places = (
                    ("wall", p.wall),
                    ("pack", p.station),
                    ("packed", p.station),
                    ("dispatch", p.dock),
                    ("shipped", p.dock),
                )
                return OrderFacts(
                    p.status,
                    p.detail,
                    carrier,
                    self.fulfilment.cutoffs.get(carrier) if carrier else None,
                    p.order.express,
                    tuple((stage, node) for stage, node in places if node),
                )
        return self.facts.get(order_id)

    def _row(
        self,
        order_id: str,
        seen: OrderSeen | None,
        facts: OrderFacts | None,
        now: int,
        started: bool,
        *,
        remember: bool = True,
    ) -> dict[str, Any]:
        """One order as the page shows it.

        ``remember``: a routed order not heard of yet counts its time without news from now.
        """
        status = facts.status if facts is not None else (seen.stage if seen else "pick")
        stage = STAGE_OF_STATUS.get(status, status) if facts is not None else status
        if facts is not None and seen is not None and seen.stage in ("returns", "returned"):
            stage = seen.stage
        if seen is not None:
            last = seen.last_ms
        elif remember:  # routed here, not heard of yet: counts from when the view first saw it
            last = self._first_seen.setdefault(order_id, now)
        else:
            last = now
        idle_s = max(0, (now - last) // 1000)
        problem = status in PROBLEM_STATUSES
        done = stage in DONE_STAGES or status in FINAL_STATUSES
        if facts is None and stage == "packed" and self._dock:
            done = False  # no router's word: a site with a dock ships what it packs
        limit = self._stuck_after(stage, started)
        stuck = problem or (not done and limit is not None and idle_s >= limit)
        where = seen.node if seen is not None else ""
        if facts is not None:
            where = dict(facts.places).get(stage) or where
        cutoff = facts.cutoff if facts is not None else None
        return {
            "order": order_id,
            "stage": stage,
            "status": status,
            "label": RETURN_LABELS.get(stage, status.replace("_", " ")),
            "detail": facts.detail if facts is not None else "",
            "where": where,
            "idle_s": idle_s,
            "stuck": stuck,
            "problem": problem,
            "done": done,
            "express": facts.express if facts is not None else False,
            "carrier": facts.carrier if facts is not None else None,
            "cutoff": cutoff,
            "due": cutoff_due(cutoff, now, stage, done),
            "queued": stage == "pack" and not started,
        }

    def _stuck_after(self, stage: str, started: bool) -> float | None:
        if stage == "pack" and not started:
            return None  # queued at the station: waiting its turn
        if self.stuck_after_s is not None:
            return self.stuck_after_s
        return STUCK_AFTER_S.get(stage)

    def find_in_memory(self, before: str | None, prefix: str, limit: int) -> list[FoundOrder]:
        """``OrderHistory.find`` over what this view holds (a view without a history)."""
        ids = {*self.orders, *self.finished}
        if self.fulfilment is not None:
            ids.update(self.fulfilment.orders)
        chosen = sorted(
            (i for i in ids if i.startswith(prefix) and (before is None or i < before)),
            reverse=True,
        )
        return [FoundOrder(i, None) for i in chosen[:limit]]

    def found_rows(self, found: Iterable[FoundOrder]) -> list[dict[str, Any]]:
        """Rows for orders found in the history; what the view holds now wins."""
        now = self.clock()
        rows = []
        for f in found:
            live = self.orders.get(f.order) or self.finished.get(f.order)
            facts = self._facts(f.order)
            if live is not None or (facts is not None and f.order not in self.facts):
                rows.append(self._row(f.order, live, facts, now, f.order in self.pack_started))
            else:
                rows.append(self._row(f.order, f.seen, f.facts, now, f.started, remember=False))
        return rows

    def snapshot(self) -> dict[str, Any]:
        """The page's data, JSON-able."""
        now = self.clock()
        self._watch_births(now)
        orders = self._order_rows(now)
        stages = dict.fromkeys(STAGES, 0)
        for row in orders:
            if not row["done"] and row["stage"] in stages:
                stages[row["stage"]] += 1
        returns: list[dict[str, Any]] = []
        if self.fulfilment is not None:
            returns = [
                {"rma": rma, "status": r.status, "order": r.entry.order}
                for rma, r in sorted(self.fulfilment.returns.items())
            ]
            stages["returns"] = sum(r["status"] in ("announced",) for r in returns)
        else:
            stages["returns"] = sum(1 for o in self.orders.values() if o.stage == "returns")
        return {
            "site": self.oms.site,
            "now": now // 1000 * 1000,
            "connected": self.oms.transport.connected.is_set(),
            "nodes": self._node_rows(orders),
            "stages": stages,
            "orders_total": len(orders) + self.done_older,
            "orders_done": sum(r["done"] for r in orders) + self.done_older,
            "orders_stuck": sum(r["stuck"] for r in orders),
            "orders_late": sum(r["due"] == "late" for r in orders),
            "orders_due_soon": sum(r["due"] == "soon" for r in orders),
            "orders_older": self.done_older,
            "orders": orders,
            "returns": returns,
            "exceptions": _exceptions_in_order(self.exceptions),
            "exceptions_open": sum(
                1 for e in self.exceptions if e["acked_at"] is None and e["cleared_at"] is None
            ),
            "kpis": [list(row) for row in self.kpis.table()],
            "picks_per_hour": [[t, v] for t, v in self._rate_points(now)],
            "stuck_after_s": self.stuck_after_s
            if self.stuck_after_s is not None
            else STUCK_AFTER_S,
            "cutoff_soon_s": CUTOFF_SOON_S,
        }

    def _node_rows(self, orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
        at_node: dict[str, int] = {}
        for row in orders:
            if not row["done"] and row["where"]:
                at_node[row["where"]] = at_node.get(row["where"], 0) + 1
        rows: list[dict[str, Any]] = []
        for name, view in self.oms.nodes.items():
            state = view.state
            devices = [
                {
                    "name": d,
                    "kind": h.kind,
                    "status": h.status,
                    "detail": h.detail,
                    "parts": {w: f"{p.status}: {p.detail}" for w, p in h.parts.items()},
                }
                for d, h in sorted((state.devices if state else {}).items())
            ]
            rows.append(
                {
                    "node": name,
                    "role": state.role if state else None,
                    "online": view.online,
                    "boot": view.boot,
                    "sw": state.sw if state else None,
                    "devices": devices,
                    "devices_ok": all(d["status"] == "ok" and not d["parts"] for d in devices),
                    "open": self.open_work.get(
                        name, at_node.get(name, 0 if self.fulfilment is not None else None)
                    ),
                    "events": view.delivered,
                    "outbox": state.outbox if state else None,
                    "takeovers": state.takeovers if state else None,
                }
            )
        for r in rows:
            duplicate = (r["takeovers"] or 0) >= DUPLICATE_TAKEOVERS
            r["problem"] = (
                "offline"
                if not r["online"]
                else "duplicate id"
                if duplicate
                else "device"
                if not r["devices_ok"]
                else None
            )
        order = {"offline": 0, "duplicate id": 1, "device": 2, None: 3}
        rows.sort(key=lambda r: (order[r["problem"]], r["node"]))
        return rows

    def families(self) -> list[Family]:
        """The OMS process's metrics (docs/metrics.md), read now."""
        nodes: dict[tuple[str, str], int] = {}
        for view in self.oms.nodes.values():
            role = (view.state.role if view.state else None) or "unknown"
            key = (role, "true" if view.online else "false")
            nodes[key] = nodes.get(key, 0) + 1
        link = self.link or self.oms
        statuses: dict[str, int] = {}
        for row in self._order_rows(self.clock()):
            statuses[row["status"]] = statuses.get(row["status"], 0) + 1
        return [
            gauge(
                "oms_nodes",
                "Nodes known from their births, by role and online.",
                nodes,
                ("role", "online"),
            ),
            counter(
                "oms_events_total",
                "Events delivered once and in order, by node and event.",
                self.events,
                ("node", "event"),
            ),
            counter(
                "oms_duplicate_events_total",
                "Events received again (already delivered) and dropped.",
                link.duplicates,
            ),
            gauge("oms_commands_pending", "Commands sent and not answered yet.", len(link.pending)),
            gauge(
                "oms_mqtt_connected",
                "1 while the OMS is connected to the broker.",
                1 if self.oms.transport.connected.is_set() else 0,
            ),
            gauge(
                "oms_orders",
                "Orders the dashboard holds (open, latest finished), by status.",
                statuses,
                ("status",),
            ),
            counter(
                "oms_exceptions_total",
                "Exceptions shown on the dashboard, by kind (short, misscan, pack_refused, ...).",
                self.exception_counts,
                ("kind",),
            ),
        ]


def order_rank(row: dict[str, Any]) -> tuple[Any, ...]:
    """How orders are listed: open first, and of those the problems.

    Then orders past their carrier's cut-off, then near it, then stuck ones, then the
    longest without news; finished ones last.
    """
    due = {"late": 0, "soon": 1}.get(row["due"] or "", 2)
    return (
        row["done"],
        not row["problem"],
        due,
        not row["stuck"],
        -(row["idle_s"] or 0),
        row["order"],
    )


def cutoff_due(cutoff: int | None, now: int, stage: str, done: bool) -> str | None:
    """Whether an order is due at the dock: ``"late"``, ``"soon"`` or ``None``.

    ``"late"``: past its carrier's cut-off and not dispatched yet; ``"soon"``: within
    ``CUTOFF_SOON_S`` of it.
    """
    if cutoff is None or done or stage in DISPATCHED:
        return None
    if now >= cutoff:
        return "late"
    return "soon" if now >= cutoff - CUTOFF_SOON_S * 1000 else None


def _exceptions_in_order(exceptions: deque[dict[str, Any]]) -> list[dict[str, Any]]:
    """Open ones first (latest first), then acknowledged, then cleared."""

    def rank(e: dict[str, Any]) -> int:
        if e["cleared_at"] is not None:
            return 2
        return 1 if e["acked_at"] is not None else 0

    return sorted(exceptions, key=lambda e: (rank(e), -e["id"]))


@functools.cache
def _english() -> dict[str, str]:
    return catalogue("en")


def code_msg(kind: str, code: Any) -> Message:
    """A code (a reason, a verdict, a device's status) as a message the page says in words.

    The screens' key (``reason.wrong_bin``, ``health.fault``) where the catalogue has one,
    else the dashboard's (``dashboard.reason.wave_released``); a code neither has reads
    spaced out (``task done``), never raw.
    """
    code = str(code or "")
    for key in (f"{kind}.{code}", f"dashboard.{kind}.{code}"):
        if key in _english():
            return msg(key)
    return msg(f"{kind}.{code}")


def _item(item: str, reason: str) -> Message:
    return msg("dashboard.item_reason", id=item, reason=code_msg("reason", reason))


def exc(name: str, **params: Param) -> Message:
    """An exception's message: ``dashboard.exc.NAME`` with its parameters."""
    return msg(f"dashboard.exc.{name}", **params)


def english(message: Message) -> str:
    """An exception's English text (its ``text`` in the API, metrics, logs)."""
    return " ".join(say(message).split())


def _exception_message(name: str, body: Any) -> Message | None:
    """What the supervisor should read about an event, or ``None`` when it is not an exception."""

    def f(key: str) -> str:
        value = field_of(body, key)
        return "" if value is None else str(value)

    def number(key: str) -> Param:
        value = field_of(body, key)
        return value if isinstance(value, int | float) and not isinstance(value, bool) else f(key)

    reason = code_msg("reason", field_of(body, "reason"))
    if name == "short":
        return exc(
            "short",
            order=f("order"),
            sku=f("sku"),
            location=f("location"),
            picked=number("picked"),
            qty=number("qty"),
            reason=reason,
        )
    if name == "misscan":
        if field_of(body, "location"):
            return exc("misscan_at", code=f("code"), reason=reason, location=f("location"))
        return exc("misscan", code=f("code"), reason=reason)
    if name in ("pack_refused", "load_refused", "return_refused"):
        return exc(name, code=f("code"), reason=reason)
    if name == "weighed" and field_of(body, "verdict") in ("over", "under"):
        return exc(
            "weighed",
            verdict=code_msg("verdict", field_of(body, "verdict")),
            order=f("order"),
            actual=number("actual_g"),
            expected=number("expected_g"),
        )
    if name in ("print_failed", "print_delayed"):
        return exc(
            name,
            document=code_msg("document", field_of(body, "document")),
            order=f("order"),
            printer=f("printer"),
            reason=reason,
        )
    if name == "expired":
        return exc("expired", task=f("task"))
    if name == "no_free_colour":
        return exc("no_free_colour")
    return None


AckFn = Callable[[int, str], Awaitable[dict[str, Any]]]
"""Acknowledge exception ``id`` by a name; the exception as it is now (``KeyError``: none)."""


async def serve_dashboard(
    view: SiteView,
    bind: str,
    port: int,
    acknowledge: AckFn | None = None,
    *,
    language: str = "en",
    words: dict[str, str] | None = None,
) -> WebServer:
    """Serve the dashboard page, its SSE stream and ``/metrics``; returns the started server.

    ``acknowledge`` replaces the in-memory ``SiteView.ack`` (the site service keeps an
    acknowledgement in its log first); it may raise ``AgentError`` to refuse (a 503).
    ``language`` and ``words`` (:func:`agent.i18n.catalogue`) are the page's.
    ``GET /api/orders?q=PREFIX&before=ID&limit=N`` finds orders by id, highest first,
    in the view's history (the log) or, without one, in the view.
    """
    import asyncio

    from agent.errors import AgentError
    from agent.web import Response, WebServer

    async def in_memory(exception_id: int, by: str) -> dict[str, Any]:
        return view.ack(exception_id, by)

    ack = acknowledge or in_memory

    cache: dict[str, Any] = {}

    def state() -> dict[str, Any]:
        # The stream polls every 0.2 s per browser: build at most one snapshot a poll tick.
        now = time.monotonic()
        # A large view (a long log's thousands of orders) costs more: wait at least
        # SNAPSHOT_SPACING times the last build, so the page takes a bounded share of a core.
        if cache.get("at", -1.0) < now - max(0.15, SNAPSHOT_SPACING * cache.get("cost", 0.0)):
            cache["state"] = view.snapshot()
            cache["at"] = time.monotonic()
            cache["cost"] = cache["at"] - now
        result: dict[str, Any] = cache["state"]
        return result

    async def action(path: str, args: dict[str, Any]) -> Response:
        parts = path.split("/")
        if len(parts) == 3 and parts[0] == "exceptions" and parts[2] == "ack":
            try:
                entry = await ack(int(parts[1]), str(args.get("by", "")))
            except (KeyError, ValueError):
                return Response.error(404, f"no exception {parts[1]!r}")
            except AgentError as exc:
                return Response.error(503, str(exc))
            cache.clear()  # the next stream tick shows it
            return Response.json(entry)
        return Response.error(404, f"no route POST /api/{path}")

    async def lookup(path: str, args: dict[str, str]) -> Response:
        if path != "orders":
            return Response.error(404, f"no route GET /api/{path}")
        prefix = args.get("q", "").strip()[:64]
        before = args.get("before") or None
        try:
            limit = max(1, min(200, int(args.get("limit", PAGE_ORDERS))))
        except ValueError:
            return Response.error(400, f"limit must be a number, not {args['limit'][:20]!r}")
        if view.history is not None:
            try:
                found = await asyncio.to_thread(view.history.find, before, prefix, limit)
            except AgentError as exc:
                return Response.error(503, f"the log cannot be read now: {exc}")
        else:
            found = view.find_in_memory(before, prefix, limit)
        rows = view.found_rows(found)
        more = rows[-1]["order"] if len(rows) == limit else None
        return Response.json({"q": prefix, "before": before, "orders": rows, "next": more})

    web = WebServer(
        state,
        page="dashboard.html",
        metrics=lambda: render(view.families()),
        action=action,
        lookup=lookup,
        language=language,
        words=words,
    )
    await web.start(bind, port)
    return web
