"""The supervisor dashboard of the reference OMS: one live page for the whole site.

``SiteView`` gathers what a supervisor wants on a wall screen from what the reference OMS
already has: every node's birth (``OmsClient.nodes``: role, online, boot, device health),
the events it delivers once and in order (``on_event``), the replies to what it sent
(``on_reply``) and, when this OMS also routes orders, the ``Fulfilment``'s view of each
order. ``snapshot()`` is the page's JSON; ``serve_dashboard`` serves it with
``agent/static/dashboard.html`` over SSE through the same small web server as the node
screens (``agent.web``), with ``/metrics`` for Prometheus beside it.

Nothing is hidden: every node, order, exception and KPI row is on the page (its panel
scrolls). Nodes are listed problems first: offline, another node on the same id (its birth's
``takeovers``), a device or part not ok; then by name. Orders are listed stuck first: an
order that ended badly (refused, unrouted, nothing picked), then those open longest without
news, then the rest by age; finished orders last. "Stuck" is judged per stage
(``STUCK_AFTER_S``): an order queued at a pack station waits by design and is not stuck
until a packer has started it and gone quiet. Exceptions carry an id; a supervisor
acknowledges one (``POST /api/exceptions/{id}/ack``), and those of a condition (a node
offline, a device down) show when the condition cleared.

Without a ``Fulfilment`` (``zone-agent oms serve`` beside an OMS that routes) an order's
stage comes from its latest event (``picked`` -> pick, ``put`` -> wall,
``verified``/``weighed``/``label_printed`` -> pack, ``packed``, ``loaded`` -> dispatch,
``shipped``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.i18n import reason_words
from agent.metrics import Family, bump, counter, gauge, render
from agent.oms.kpi import Kpis, field_of

if TYPE_CHECKING:
    from agent.oms import NodeEvent, OmsClient
    from agent.oms.fulfilment import Fulfilment, Send
    from agent.web import WebServer
    from agent.wire.messages import Reply

MAX_EXCEPTIONS = 1000
"""Exceptions kept (oldest dropped first): a shift's worth, all reachable on the page."""
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
STAGES = ("pick", "wall", "pack", "packed", "dispatch", "shipped", "returns")


@dataclass(slots=True)
class OrderSeen:
    """What the events said of one order."""

    stage: str
    first_ms: int
    last_ms: int
    node: str


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
    """

    oms: OmsClient
    fulfilment: Fulfilment | None = None
    stuck_after_s: float | None = None
    bucket_s: int = BUCKET_S
    clock: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    kpis: Kpis = field(default_factory=Kpis)
    exceptions: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_EXCEPTIONS))
    pack_started: set[str] = field(default_factory=set)
    _open_conditions: dict[tuple[str, ...], dict[str, Any]] = field(default_factory=dict)
    _next_exception: int = 1
    orders: dict[str, OrderSeen] = field(default_factory=dict)
    open_work: dict[str, int] = field(default_factory=dict)
    confirmed_ms: deque[int] = field(default_factory=deque)
    points: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=MAX_POINTS))
    events: dict[tuple[str, str], int] = field(default_factory=dict)
    exception_counts: dict[str, int] = field(default_factory=dict)
    _health: dict[tuple[str, str], str] = field(default_factory=dict)
    _online: dict[str, bool] = field(default_factory=dict)
    _first_seen: dict[str, int] = field(default_factory=dict)
    _next_point_ms: int = 0

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
            seen = self.orders.get(order)
            if seen is None:
                self.orders[order] = OrderSeen(stage, at, at, node)
            else:
                seen.stage, seen.last_ms, seen.node = stage, at, node
        if name in PACK_STARTED and isinstance(order, str):
            self.pack_started.add(order)
        if name in ("picked", "short"):
            self.confirmed_ms.append(at)
        if name == "counters" and isinstance(field_of(body, "open_lines"), int):
            self.open_work[node] = field_of(body, "open_lines")
        elif name == "pack_counters" and isinstance(field_of(body, "queued"), int):
            self.open_work[node] = field_of(body, "queued")
        text = _exception_text(name, body)
        if text is not None:
            seq = event.envelope.seq
            key = None if seq is None else f"event:{node}/{event.store or ''}/{seq}"
            self._exception(at, node, name, text, key=key)

    def on_reply(
        self, send: Send, reply: Reply, at: int | None = None, key: str | None = None
    ) -> None:
        """A command's reply: a refusal (whole or of an item) is an exception.

        ``at`` is when it came (default now), ``key`` its stable key (a log replays it).
        """
        refused = [i for i in reply.items if i.status != "accepted"]
        if reply.status == "accepted" and not refused:
            return
        why = reply.reason or ", ".join(f"{i.id}: {i.reason}" for i in refused[:3])
        target = f" for {send.order}" if send.order else ""
        self._exception(
            self.clock() if at is None else at,
            send.node,
            "refusal",
            f"refused {send.command}{target}: {why}",
            key=key,
        )

    def _exception(
        self,
        at: int,
        node: str,
        kind: str,
        text: str,
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
            "text": text[:200],
            "acked_at": None,
            "acked_by": None,
            "cleared_at": None,
        }
        self._next_exception += 1
        self.exceptions.appendleft(entry)
        if condition is not None:
            self._open_conditions[condition] = entry
        return entry

    def _condition(self, now: int, condition: tuple[str, ...], text: str | None) -> None:
        """An exception that lasts while a condition holds (``text``) and clears after it."""
        entry = self._open_conditions.get(condition)
        if text is None:
            if entry is not None:
                entry["cleared_at"] = now
                del self._open_conditions[condition]
            return
        if entry is not None and entry["text"] == text[:200]:
            return
        if entry is not None:
            entry["cleared_at"] = now  # the condition changed: the new one is its own line
        self._exception(now, condition[1], condition[0], text, condition)

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
        for name, view in self.oms.nodes.items():
            was = self._online.get(name)
            self._online[name] = view.online
            self._condition(now, ("node", name), None if view.online else "offline")
            if was is False and view.online:
                self._exception(now, name, "node", "back online", key=f"back/{name}")
            state = view.state
            takeovers = state.takeovers if state is not None else None
            duplicate = takeovers is not None and takeovers >= DUPLICATE_TAKEOVERS
            self._condition(
                now,
                ("duplicate", name),
                f"another node runs with this node id ({takeovers} takeovers)"
                if duplicate
                else None,
            )
            devices = state.devices if state is not None else {}
            for device, health in devices.items():
                bad = health.status in ("fault", "unavailable")
                detail = f": {health.detail}" if health.detail else ""
                self._condition(
                    now,
                    ("device", name, device),
                    f"{device} {health.status}{detail}" if bad else None,
                )
                self._health[(name, device)] = health.status
                for where, part in health.parts.items():
                    self._condition(
                        now,
                        ("device", name, f"{device}/{where}"),
                        f"{device} {where} {part.status}: {part.detail}",
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
        rows: list[dict[str, Any]] = []
        progress = self.fulfilment.orders if self.fulfilment is not None else {}
        for order_id in {*progress, *self.orders}:
            seen = self.orders.get(order_id)
            p = progress.get(order_id)
            status = p.status if p is not None else (seen.stage if seen else "pick")
            stage = STAGE_OF_STATUS.get(status, status) if p is not None else status
            if p is not None and seen is not None and seen.stage in ("returns", "returned"):
                stage = seen.stage
            # An order routed here but not heard of yet counts from when the view first saw it.
            last = seen.last_ms if seen is not None else self._first_seen.setdefault(order_id, now)
            idle_s = max(0, (now - last) // 1000)
            problem = status in PROBLEM_STATUSES
            done = stage in DONE_STAGES or status in FINAL_STATUSES
            limit = self._stuck_after(stage, order_id)
            stuck = problem or (not done and limit is not None and idle_s >= limit)
            order = p.order if p is not None else None
            where = seen.node if seen is not None else ""
            if p is not None:
                at = {"wall": p.wall, "pack": p.station, "packed": p.station}
                at |= {"dispatch": p.dock, "shipped": p.dock}
                where = at.get(stage, where) or where
            rows.append(
                {
                    "order": order_id,
                    "stage": stage,
                    "status": status,
                    "label": RETURN_LABELS.get(stage, status.replace("_", " ")),
                    "detail": p.detail if p is not None else "",
                    "where": where,
                    "idle_s": idle_s,
                    "stuck": stuck,
                    "problem": problem,
                    "done": done,
                    "express": bool(p.order.express) if p is not None else False,
                    "carrier": (order.carrier or None) if order is not None else None,
                    "cutoff": self._cutoff(order.carrier) if order is not None else None,
                    "queued": stage == "pack" and order_id not in self.pack_started,
                }
            )
        rows.sort(
            key=lambda r: (
                r["done"],
                not r["problem"],
                not r["stuck"],
                -(r["idle_s"] or 0),
                r["order"],
            )
        )
        return rows

    def _stuck_after(self, stage: str, order_id: str) -> float | None:
        if stage == "pack" and order_id not in self.pack_started:
            return None  # queued at the station: waiting its turn
        if self.stuck_after_s is not None:
            return self.stuck_after_s
        return STUCK_AFTER_S.get(stage)

    def _cutoff(self, carrier: str) -> int | None:
        cutoffs = self.fulfilment.cutoffs if self.fulfilment is not None else {}
        return cutoffs.get(carrier) if carrier else None

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
            "orders_total": len(orders),
            "orders_done": sum(r["done"] for r in orders),
            "orders_stuck": sum(r["stuck"] for r in orders),
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
                self.oms.duplicates,
            ),
            gauge(
                "oms_commands_pending", "Commands sent and not answered yet.", len(self.oms.pending)
            ),
            gauge(
                "oms_mqtt_connected",
                "1 while the OMS is connected to the broker.",
                1 if self.oms.transport.connected.is_set() else 0,
            ),
            gauge(
                "oms_orders",
                "Orders by status (stage when no router runs here).",
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


def _exceptions_in_order(exceptions: deque[dict[str, Any]]) -> list[dict[str, Any]]:
    """Open ones first (latest first), then acknowledged, then cleared."""

    def rank(e: dict[str, Any]) -> int:
        if e["cleared_at"] is not None:
            return 2
        return 1 if e["acked_at"] is not None else 0

    return sorted(exceptions, key=lambda e: (rank(e), -e["id"]))


def _exception_text(name: str, body: Any) -> str | None:
    """What the supervisor should read about an event, or ``None`` when it is not an exception."""

    def f(key: str) -> Any:
        return field_of(body, key)

    def why() -> str:  # the reason code in the words of the screens' catalogue
        return reason_words(str(f("reason") or ""))

    if name == "short":
        return (
            f"short {f('order')} {f('sku')} at {f('location')}: {f('picked')}/{f('qty')} ({why()})"
        )
    if name == "misscan":
        where = f" at {f('location')}" if f("location") else ""
        return f"mis-scan {f('code')} ({why()}){where}"
    if name in ("pack_refused", "load_refused", "return_refused"):
        return f"{name.replace('_', ' ')} {f('code') or ''} ({why()})".replace("  ", " ")
    if name == "weighed" and f("verdict") in ("over", "under"):
        return (
            f"check-weigh {f('verdict')} {f('order')}: {f('actual_g')} g, "
            f"expected {f('expected_g')} g"
        )
    if name in ("print_failed", "print_delayed"):
        verb = "failed" if name == "print_failed" else "late"
        return f"{f('document')} for {f('order')} {verb} on {f('printer')}: {why()}"
    if name == "expired":
        return f"task {f('task')} expired"
    if name == "no_free_colour":
        return "no free colour for another picker"
    return None


AckFn = Callable[[int, str], Awaitable[dict[str, Any]]]
"""Acknowledge exception ``id`` by a name; the exception as it is now (``KeyError``: none)."""


async def serve_dashboard(
    view: SiteView, bind: str, port: int, acknowledge: AckFn | None = None
) -> WebServer:
    """Serve the dashboard page, its SSE stream and ``/metrics``; returns the started server.

    ``acknowledge`` replaces the in-memory ``SiteView.ack`` (the site service keeps an
    acknowledgement in its log first); it may raise ``AgentError`` to refuse (a 503).
    """
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

    web = WebServer(
        state,
        page="dashboard.html",
        metrics=lambda: render(view.families()),
        action=action,
    )
    await web.start(bind, port)
    return web
