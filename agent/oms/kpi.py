"""KPIs computed from node events, as the OMS receives them (definitions in docs/kpi.md).

``Kpis`` takes events one at a time (``add``), each once and in order per node, as the
reference OMS client delivers them, and answers ``table()``. Pure: no I/O, no clock.

It keeps some facts per order (its lines, first and last times) until the order is over.
A long-running reader (the dashboard) calls ``fold`` when an order is finished: its facts
become counts and two lead times, so the memory a finished order holds is its id (for the
guide's wrong-item returns) and two numbers, and ``table()`` works on the open orders only.
The figures are the same as without folding, as long as nothing more is heard of the
order's picking after it is folded.
"""

from __future__ import annotations

import statistics
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def field_of(body: Any, name: str) -> Any:
    """Field ``name`` of an event body, a model or a map (as recorded); ``None`` if absent."""
    return body.get(name) if isinstance(body, Mapping) else getattr(body, name, None)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class Kpis:
    """Counts and times gathered from events."""

    lines: int = 0
    units: int = 0
    short_lines: int = 0
    misscans: int = 0
    scans: int = 0
    weighed_orders: set[str] = field(default_factory=set)
    failed_orders: set[str] = field(default_factory=set)
    first_ms: int | None = None
    last_ms: int | None = None
    misscanned_tasks: set[str] = field(default_factory=set)
    order_lines: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)
    order_start: dict[str, int] = field(default_factory=dict)
    order_end: dict[str, int] = field(default_factory=dict)
    packed_orders: set[str] = field(default_factory=set)
    node_scans: dict[str, int] = field(default_factory=dict)
    units_sold: int = 0
    units_returned: int = 0
    returned_by_reason: dict[str, int] = field(default_factory=dict)
    wrong_item_orders: set[str] = field(default_factory=set)
    shipped_at: dict[str, int] = field(default_factory=dict)
    parcels_loaded: int = 0
    parcels_late: int = 0
    folded_orders: int = 0
    """Orders picked and folded (``fold``): counted, their lines no longer kept."""
    folded_right_orders: int = 0
    folded_right_lines: int = 0
    folded_shipped: int = 0
    lead_s: array[float] = field(default_factory=lambda: array("d"))
    """Folded orders' lead times (first line lit to packed or last line), seconds (8 bytes
    each: an exact median needs them all)."""
    to_shipped_s: array[float] = field(default_factory=lambda: array("d"))
    """Folded orders' lead times to shipped, seconds."""

    def _span(self, start: int | None, end: int | None) -> None:
        if start is not None:
            self.first_ms = start if self.first_ms is None else min(self.first_ms, start)
        if end is not None:
            self.last_ms = end if self.last_ms is None else max(self.last_ms, end)

    def add(self, node: str, name: str, body: Any) -> None:
        """Take one event (name and body as delivered)."""
        if name in ("picked", "short"):
            task, order = str(field_of(body, "task")), str(field_of(body, "order"))
            lit, done = field_of(body, "lit_at"), field_of(body, "confirmed_at")
            self.lines += 1
            self.units += int(field_of(body, "picked") or 0)
            short = name == "short"
            self.short_lines += short
            self.order_lines.setdefault(order, []).append((task, short))
            self._span(lit, done)
            if lit is not None:
                self.order_start[order] = min(self.order_start.get(order, lit), lit)
            if done is not None and order not in self.packed_orders:
                self.order_end[order] = max(self.order_end.get(order, done), done)
        elif name == "misscan":
            self.misscans += 1
            task = field_of(body, "task")
            if task:
                self.misscanned_tasks.add(str(task))
        elif name == "counters":
            counts = field_of(body, "counts") or {}
            self.node_scans[node] = int(counts.get("scans", 0))
        elif name == "weighed":
            # A parcel that failed and then passed a re-weigh (or was released) still failed.
            order = str(field_of(body, "order"))
            self.weighed_orders.add(order)
            if field_of(body, "verdict") in ("over", "under"):
                self.failed_orders.add(order)
        elif name == "packed":
            order = str(field_of(body, "order"))
            if order not in self.packed_orders:
                self.units_sold += int(field_of(body, "units") or 0)
            self.packed_orders.add(order)
            end = field_of(body, "labelled_at") or field_of(body, "at")
            if end is not None:
                self.order_end[order] = end
        elif name == "return_received":
            # One event per unit physically received and graded (what a refund waits for).
            reason = str(field_of(body, "reason"))
            self.units_returned += 1
            self.returned_by_reason[reason] = self.returned_by_reason.get(reason, 0) + 1
            order = field_of(body, "order")
            if reason == "wrong_item_sent" and order:
                self.wrong_item_orders.add(str(order))
        elif name == "loaded":
            self.parcels_loaded += 1
            self.parcels_late += bool(field_of(body, "late"))
        elif name == "shipped":
            order = str(field_of(body, "order"))
            at = field_of(body, "at")
            if at is not None:
                self.shipped_at[order] = max(self.shipped_at.get(order, at), at)

    def fold(self, order: str) -> None:
        """An order is over: keep its counts and lead times, let go of its lines and times."""
        lines = self.order_lines.pop(order, None)
        if lines is not None:
            right = [not short and task not in self.misscanned_tasks for task, short in lines]
            self.folded_orders += 1
            self.folded_right_lines += sum(right)
            self.folded_right_orders += all(right)
            self.misscanned_tasks.difference_update(task for task, _ in lines)
        start = self.order_start.pop(order, None)
        end = self.order_end.pop(order, None)
        shipped = self.shipped_at.pop(order, None)
        if start is not None and end is not None:
            self.lead_s.append((end - start) / 1000)
        if start is not None and shipped is not None:
            self.to_shipped_s.append((shipped - start) / 1000)
        self.folded_shipped += shipped is not None

    def table(self) -> list[tuple[str, str, str]]:
        """``(kpi, value, definition)`` rows; ``-`` where nothing was measured."""

        def pct(part: int, whole: int) -> str:
            return f"{100 * part / whole:.2f} %" if whole else "-"

        hours = 0.0
        if self.first_ms is not None and self.last_ms is not None:
            hours = (self.last_ms - self.first_ms) / 3_600_000
        right_lines = self.folded_right_lines + sum(
            1
            for lines in self.order_lines.values()
            for task, short in lines
            if not short and task not in self.misscanned_tasks
        )
        right_orders = self.folded_right_orders + sum(
            1
            for lines in self.order_lines.values()
            if all(not short and task not in self.misscanned_tasks for task, short in lines)
        )
        orders_picked = self.folded_orders + len(self.order_lines)
        scans = max(sum(self.node_scans.values()), self.misscans)
        lead = [*self.lead_s] + [
            (self.order_end[o] - s) / 1000
            for o, s in self.order_start.items()
            if o in self.order_end
        ]
        to_shipped = [*self.to_shipped_s] + [
            (self.shipped_at[o] - s) / 1000
            for o, s in self.order_start.items()
            if o in self.shipped_at
        ]
        orders = len(self.packed_orders)
        wrong = len(self.wrong_item_orders & self.packed_orders)
        by_reason = [
            (
                f"rate of return: {reason}",
                pct(count, self.units_sold),
                f"units returned for {reason} / units sold x 100",
            )
            for reason, count in sorted(self.returned_by_reason.items())
        ]
        return [
            ("lines picked", str(self.lines), "picked + short confirmations"),
            (
                "picks per hour",
                f"{self.lines / hours:.0f}" if hours else "-",
                "lines / hours from the first line lit to the last confirmed",
            ),
            (
                "line pick accuracy",
                pct(right_lines, self.lines),
                "lines confirmed in full with no mis-scan / lines confirmed",
            ),
            (
                "order pick accuracy",
                pct(right_orders, orders_picked),
                "orders whose every line was right / orders picked",
            ),
            ("short-pick rate", pct(self.short_lines, self.lines), "short lines / lines confirmed"),
            ("mis-scan rate", pct(self.misscans, scans), "mis-scans / scans (node counters)"),
            (
                "check-weigh failure rate",
                pct(len(self.failed_orders), len(self.weighed_orders)),
                "parcels that failed a check-weigh (over or under) / parcels weighed",
            ),
            ("orders packed", str(len(self.packed_orders)), "orders with a packed event"),
            (
                "order lead time median",
                f"{statistics.median(lead):.1f} s" if lead else "-",
                "first line lit to label printed (or last line picked)",
            ),
            (
                "order lead time p95",
                f"{percentile(lead, 0.95):.1f} s" if lead else "-",
                "as above, 95th percentile",
            ),
            (
                "orders shipped",
                str(self.folded_shipped + len(self.shipped_at)),
                "orders with a shipped event",
            ),
            (
                "order lead time to shipped median",
                f"{statistics.median(to_shipped):.1f} s" if to_shipped else "-",
                "first line lit to shipped (manifest closed)",
            ),
            (
                "order lead time to shipped p95",
                f"{percentile(to_shipped, 0.95):.1f} s" if to_shipped else "-",
                "as above, 95th percentile",
            ),
            (
                "parcels loaded after cut-off",
                f"{self.parcels_late} of {self.parcels_loaded}" if self.parcels_loaded else "-",
                "loaded events marked late / parcels loaded",
            ),
            (
                "rate of return",
                pct(self.units_returned, self.units_sold),
                "units returned (received and graded) / units sold (packed) x 100",
            ),
            *by_reason,
            (
                "picking accuracy (guide)",
                pct(orders - wrong, orders),
                "(orders - orders with a wrong-item-sent return) / orders packed x 100",
            ),
        ]
