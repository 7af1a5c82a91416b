"""The site service's routing over a real SQLite log, crashed at every point of a wave.

No broker: the service's routing (``agent.oms.site.routing``) and its log are driven as the
service drives them (append a batch of node events, take it, settle, keep the step, then
send), with nodes that answer every command at once and apply each id once. The service
"crashes" after every append and after every kept step (what it had not sent is lost), and
a new one restores the waves from the log, replays it and resends what is unanswered, as
``SiteService._lead`` does. The wave ends as it does without a crash, with every order's
put, pack and load and every pick task applied once.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agent.oms.fulfilment import OrderFile, Send
from agent.oms.site.log import NewEvent, SqliteLog
from agent.oms.site.routing import Routing, Step, command_of
from agent.wire.messages import Reply, State

SITE = {
    "pick-a": State(online=True, role="pick", locations=["A1", "A2", "A3"]),
    "pick-b": State(online=True, role="pick", locations=["B1", "B2"]),
    "wall": State(online=True, role="put_wall", locations=["C1"]),
    "pack": State(online=True, role="pack"),
    "dock": State(online=True, role="dispatch"),
    "returns": State(online=True, role="returns"),
}
FILE = OrderFile.model_validate(
    {
        "catalogue": {
            sku: {"location": loc, "barcodes": [f"CODE-{sku}"]}
            for sku, loc in [("A", "A1"), ("B", "A2"), ("C", "A3"), ("D", "B1"), ("E", "B2")]
        },
        "orders": [
            {
                "order": "O1",
                "carrier": "DHL",
                "lines": [{"sku": "A", "qty": 1}, {"sku": "D", "qty": 1}],
            },
            {
                "order": "O2",
                "carrier": "DHL",
                "lines": [{"sku": "B", "qty": 2}, {"sku": "E", "qty": 1}],
            },
            {"order": "O3", "carrier": "DHL", "lines": [{"sku": "C", "qty": 1}]},
        ],
        "returns": [{"rma": "R1", "order": "O3", "lines": [{"sku": "C"}]}],
    }
)


class Nodes:
    """Every node of ``SITE``: each command id applied once, answered, its work done."""

    def __init__(self) -> None:
        self.seq: Counter[str] = Counter()
        self.applied: dict[str, tuple[str, str, Any]] = {}
        self.serial = 0

    def event(
        self, node: str, name: str, body: dict[str, Any], corr: str | None = None
    ) -> NewEvent:
        self.seq[node] += 1
        order = body.get("order")
        reply = body if name == "reply" else None  # as SiteService._entry gives it
        return NewEvent(node, "s1", self.seq[node], name, 1, body, order, corr, reply)

    def handle(self, command_id: str, send: Send) -> list[NewEvent]:
        if command_id in self.applied:
            return []  # a copy: the node answered it already (that reply is in the log)
        body = send.body.model_dump(mode="json")
        self.applied[command_id] = (send.node, send.command, body)
        reply = Reply(cmd=send.command, status="accepted").model_dump(mode="json")
        out = [self.event(send.node, "reply", reply, command_id)]
        if send.command == "pick":
            for task in body["tasks"]:
                done = {"task": task["task"], "order": task["order"], "picked": task["qty"]}
                out.append(self.event(send.node, "picked", done))
        elif send.command == "put":
            for order in body["orders"]:
                out.append(self.event(send.node, "order_complete", {"order": order["order"]}))
        elif send.command == "pack":
            self.serial += 1
            sscc = f"3761042500{self.serial:08d}"
            out.append(
                self.event(send.node, "label_printed", {"order": body["order"], "sscc": sscc})
            )
            out.append(self.event(send.node, "packed", {"order": body["order"]}))
        elif send.command == "load":
            for parcel in body["parcels"]:
                shipped = {"order": parcel["order"], "manifest": "DHL-1"}
                out.append(self.event(send.node, "shipped", shipped))
        elif send.command == "rma":
            for rma in body["rmas"]:
                out.append(self.event(send.node, "return_closed", {"rma": rma["rma"]}))
        return out


class Service:
    """The routing half of ``SiteService`` on a log file."""

    def __init__(self, path: Path, snapshot_s: float, nodes: Nodes) -> None:
        self.log = SqliteLog(path)
        self.routing = Routing(snapshot_s)
        self.nodes = nodes
        self.now = 0.0
        self.queue: list[tuple[str, Send]] = []  # sent, not reached its node yet

    def keep(self, step: Step, *, force: bool = False) -> None:
        self.now += 0.25
        self.routing.settle(step, self.now, force=force)
        if step.routed:
            fresh = self.log.route(step.routed)
            self.queue += [(cid, step.sends[cid]) for cid in fresh if cid in step.sends]

    def submit(self) -> None:
        _, row, step, rows = self.routing.submit(
            "W1", FILE, SITE, dock_carriers=None, cutoffs=None, salt="5a17", now=self.now
        )
        self.log.add_wave(row, step.routed.commands, rows)
        self.queue += list(step.sends.items())

    def restart(self) -> None:
        """What ``SiteService._lead`` does on becoming active."""
        unanswered = self.log.unanswered()
        step = Step()
        self.routing.restore(self.log, step, self.now)
        self.keep(step, force=True)
        for command_id, node, name, body in unanswered:
            self.queue.append((command_id, command_of(node, name, body, None)))

    def deliver(self, crash_after: str | None) -> str | None:
        """One command reaches its node; its events are logged, then routed.

        Returns where it stopped when told to crash there (``appended``, ``kept``).
        """
        command_id, send = self.queue.pop(0)
        events = self.nodes.handle(command_id, send)
        if not events:
            return None
        positions = self.log.append(events)
        if crash_after == "appended":
            return "appended"
        step = Step()
        for event, position in zip(events, positions, strict=True):
            if position is not None:
                self.routing.take(position, event.node, event.name, event.body, event.corr, step)
        self.keep(step)
        return "kept" if crash_after == "kept" else None


def run(tmp_path: Path, snapshot_s: float, crash: tuple[int, str] | None) -> tuple[Any, ...]:
    nodes = Nodes()
    path = tmp_path / f"site-{snapshot_s}-{crash}.db"
    service = Service(path, snapshot_s, nodes)
    service.submit()
    steps = 0
    while service.queue:
        steps += 1
        where = crash[1] if crash is not None and crash[0] == steps else None
        if service.deliver(where) is not None:
            service.log.close()  # the process dies: its queue of unsent commands with it
            service = Service(path, snapshot_s, nodes)
            service.restart()
    statuses = {o["order"]: (o["status"], o["detail"]) for o in service.log.orders()}
    kept = service.log._query("SELECT id, reply IS NOT NULL FROM commands")
    finished = service.log._query("SELECT finished IS NOT NULL FROM waves")
    service.log.close()
    logical: Counter[tuple[str, str]] = Counter()
    for _, name, body in nodes.applied.values():
        if name == "pick":
            logical.update(("task", t["task"]) for t in body["tasks"])
        elif name == "pack":
            logical[("pack", body["order"])] += 1
        elif name == "put":
            logical.update(("put", o["order"]) for o in body["orders"])
        elif name == "load":
            logical.update(("load", p["order"]) for p in body["parcels"])
        elif name == "rma":
            logical.update(("rma", r["rma"]) for r in body["rmas"])
        else:
            logical[(name, "")] += 1
    assert sorted(cid for cid, _ in kept) == sorted(nodes.applied), "kept == applied, once"
    assert all(answered for _, answered in kept)
    return statuses, dict(logical), finished, steps


@pytest.mark.parametrize("snapshot_s", [0.0, 3600.0])
def test_a_crash_anywhere_in_a_wave_ends_it_as_without_one(
    tmp_path: Path, snapshot_s: float
) -> None:
    statuses, logical, finished, steps = run(tmp_path, snapshot_s, None)
    assert {k: v[0] for k, v in statuses.items()} == {
        "O1": "shipped",
        "O2": "shipped",
        "O3": "shipped",
    }
    assert finished == [(1,)]
    assert logical[("put", "O1")] == logical[("rma", "R1")] == 1
    for step in range(1, steps + 1):
        for where in ("appended", "kept"):
            got = run(tmp_path, snapshot_s, (step, where))
            assert got[:3] == (statuses, logical, finished), f"crash after step {step}, {where}"
