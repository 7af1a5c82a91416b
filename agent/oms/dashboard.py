"""The supervisor dashboard of the reference OMS: one live page for the whole site.

``SiteView`` gathers what a supervisor wants on a wall screen from what the reference OMS
already has: every node's birth (``OmsClient.nodes``: role, online, boot, device health),
the events it delivers once and in order (``on_event``), the replies to what it sent
(``on_reply``) and, when this OMS also routes orders, the ``Fulfilment``'s view of each
order. ``snapshot()`` is the page's JSON; ``serve_dashboard`` serves it with
``agent/static/dashboard.html`` over SSE through the same small web server as the node
screens (``agent.web``), with ``/metrics`` for Prometheus beside it.

Orders are listed stuck first: an order that ended badly (refused, unrouted, nothing
picked), then those open longest without news (``stuck_after_s``), then the rest by age;
finished orders last. Without a ``Fulfilment`` (``zone-agent oms serve`` beside an OMS that
routes) an order's stage comes from its latest event (``picked`` -> pick, ``put`` -> wall,
``verified``/``weighed``/``label_printed`` -> pack, ``packed``, ``loaded`` -> dispatch,
``shipped``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.metrics import Family, bump, counter, gauge, render
from agent.oms.kpi import Kpis, field_of

if TYPE_CHECKING:
    from agent.oms import NodeEvent, OmsClient
    from agent.oms.fulfilment import Fulfilment, Send
    from agent.web import WebServer
    from agent.wire.messages import Reply

MAX_EXCEPTIONS = 60
MAX_ORDERS_SHOWN = 40
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
        stuck_after_s: an open order without news for this long is listed as stuck.
        bucket_s: seconds between two points of the picks-per-hour chart.
        clock: wall-clock milliseconds (tests pass their own).
    """

    oms: OmsClient
    fulfilment: Fulfilment | None = None
    stuck_after_s: float = 60.0
    bucket_s: int = BUCKET_S
    clock: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    kpis: Kpis = field(default_factory=Kpis)
    exceptions: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_EXCEPTIONS))
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
        if name in ("picked", "short"):
            self.confirmed_ms.append(at)
        if name == "counters" and isinstance(field_of(body, "open_lines"), int):
            self.open_work[node] = field_of(body, "open_lines")
        elif name == "pack_counters" and isinstance(field_of(body, "queued"), int):
            self.open_work[node] = field_of(body, "queued")
        text = _exception_text(name, body)
        if text is not None:
            self._exception(at, node, name, text)

    def on_reply(self, send: Send, reply: Reply) -> None:
        """A command's reply: a refusal (whole or of an item) is an exception."""
        refused = [i for i in reply.items if i.status != "accepted"]
        if reply.status == "accepted" and not refused:
            return
        why = reply.reason or ", ".join(f"{i.id}: {i.reason}" for i in refused[:3])
        target = f" for {send.order}" if send.order else ""
        self._exception(
            self.clock(), send.node, "refusal", f"refused {send.command}{target}: {why}"
        )

    def _exception(self, at: int, node: str, kind: str, text: str) -> None:
        bump(self.exception_counts, kind)
        self.exceptions.appendleft({"at": at, "node": node, "kind": kind, "text": text[:200]})

    def _watch_births(self, now: int) -> None:
        """Device health and online changes, seen in the births, become exceptions."""
        for name, view in self.oms.nodes.items():
            was = self._online.get(name)
            if was is not None and was != view.online:
                self._exception(now, name, "node", "back online" if view.online else "offline")
            self._online[name] = view.online
            devices = view.state.devices if view.state is not None else {}
            for device, health in devices.items():
                key = (name, device)
                before = self._health.get(key)
                if before != health.status and health.status in ("fault", "unavailable"):
                    detail = f": {health.detail}" if health.detail else ""
                    self._exception(now, name, "device", f"{device} {health.status}{detail}")
                self._health[key] = health.status
                for where, part in health.parts.items():
                    part_key = (name, f"{device}/{where}")
                    if self._health.get(part_key) != part.status:
                        self._exception(
                            now, name, "device", f"{device} {where} {part.status}: {part.detail}"
                        )
                    self._health[part_key] = part.status
                gone = [k for k in self._health if k[0] == name and k[1].startswith(f"{device}/")]
                for part_key in gone:
                    if part_key[1].split("/", 1)[1] not in health.parts:
                        del self._health[part_key]

    # --- output ------------------------------------------------------------------------

    def _rate_points(self, now: int) -> list[tuple[int, float]]:
        """Picks per hour every ``BUCKET_S``, each over the last ``WINDOW_S``."""
        step = self.bucket_s * 1000
        if self._next_point_ms == 0:
            first = self.confirmed_ms[0] if self.confirmed_ms else now
            self._next_point_ms = first - first % step + step
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
            stuck = problem or (not done and idle_s is not None and idle_s >= self.stuck_after_s)
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
            "orders": orders[:MAX_ORDERS_SHOWN],
            "returns": returns,
            "exceptions": list(self.exceptions),
            "kpis": [list(row) for row in self.kpis.table()],
            "picks_per_hour": [[t, v] for t, v in self._rate_points(now)],
            "stuck_after_s": self.stuck_after_s,
        }

    def _node_rows(self, orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
        at_node: dict[str, int] = {}
        for row in orders:
            if not row["done"] and row["where"]:
                at_node[row["where"]] = at_node.get(row["where"], 0) + 1
        rows = []
        for name, view in sorted(self.oms.nodes.items()):
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
                }
            )
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


def _exception_text(name: str, body: Any) -> str | None:
    """What the supervisor should read about an event, or ``None`` when it is not an exception."""

    def f(key: str) -> Any:
        return field_of(body, key)

    if name == "short":
        return (
            f"short {f('order')} {f('sku')} at {f('location')}: "
            f"{f('picked')}/{f('qty')} ({f('reason')})"
        )
    if name == "misscan":
        where = f" at {f('location')}" if f("location") else ""
        return f"mis-scan {f('code')} ({f('reason')}){where}"
    if name in ("pack_refused", "load_refused", "return_refused"):
        return f"{name.replace('_', ' ')} {f('code') or ''} ({f('reason')})".replace("  ", " ")
    if name == "weighed" and f("verdict") in ("over", "under"):
        return (
            f"check-weigh {f('verdict')} {f('order')}: {f('actual_g')} g, "
            f"expected {f('expected_g')} g"
        )
    if name in ("print_failed", "print_delayed"):
        verb = "failed" if name == "print_failed" else "late"
        return f"{f('document')} for {f('order')} {verb} on {f('printer')}: {f('reason')}"
    if name == "expired":
        return f"task {f('task')} expired"
    if name == "no_free_colour":
        return "no free colour for another picker"
    return None


async def serve_dashboard(view: SiteView, bind: str, port: int) -> WebServer:
    """Serve the dashboard page, its SSE stream and ``/metrics``; returns the started server."""
    from agent.web import WebServer

    cache: dict[str, Any] = {}

    def state() -> dict[str, Any]:
        # The stream polls every 0.2 s per browser: build at most one snapshot a poll tick.
        now = time.monotonic()
        if cache.get("at", -1.0) < now - 0.15:
            cache["state"], cache["at"] = view.snapshot(), now
        result: dict[str, Any] = cache["state"]
        return result

    web = WebServer(state, page="dashboard.html", metrics=lambda: render(view.families()))
    await web.start(bind, port)
    return web
