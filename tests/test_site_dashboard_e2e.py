"""The dashboard served by the site service reads the log: it survives a restart.

Events are in a site service's SQLite log (births and an offline message as the service
logs them, seq null; node events with their seqs), the service starts with
``--dashboard-port``, the page's ``/api/state`` shows them; an event logged while it runs
shows too; after a restart the state shows the same orders, exceptions and KPIs.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from agent.oms.demo.broker import LocalBroker
from agent.oms.site.log import NewEvent, SqliteLog
from agent.wire.messages import DeviceHealth, State
from tests.site_harness import SiteProcess, site_file

T0 = 1_780_000_000_000
FAULT = "serial port /dev/ttyUSB3 went away (cable pulled or hub reset)"


def births() -> list[NewEvent]:
    scanner = DeviceHealth(kind="serial_scanner", status="ok")
    pick = State(
        online=True,
        role="pick",
        sw="0.9.3",
        store="s-a",
        locations=[f"A{n:03d}" for n in range(1, 301)],
        devices={"scanner": scanner},
    )
    pack = State(
        online=True,
        role="pack",
        sw="0.9.3",
        store="s-p",
        devices={"scanner": DeviceHealth(kind="serial_scanner", status="fault", detail=FAULT)},
    )
    gone = State(online=True, role="pick", sw="0.9.3", store="s-b")

    def entry(node: str, state: State, at: int) -> NewEvent:
        body = {**state.model_dump(mode="json"), "boot": 4}
        name = "online" if state.online else "offline"
        return NewEvent(node, state.store or "", None, name, at, body)

    return [
        entry("zone-a", pick, T0),
        entry("pack-1", pack, T0),
        entry("zone-b", gone, T0),
        entry("zone-b", State(online=False), T0 + 5_000),
    ]


def node_events() -> list[NewEvent]:
    feed: list[tuple[str, str, dict[str, Any]]] = []
    for n in range(1, 9):  # an order of 8 lines, picked
        feed.append(
            (
                "zone-a",
                "picked",
                {"order": "SO-1", "task": f"SO-1-{n}", "sku": f"SKU-{n}", "picked": 1},
            )
        )
    feed += [
        (
            "zone-a",
            "short",
            {
                "order": "SO-2",
                "task": "SO-2-1",
                "sku": "SKU-9",
                "location": "A009",
                "qty": 3,
                "picked": 1,
                "reason": "empty",
            },
        ),
        ("zone-a", "misscan", {"code": "4006381333931", "reason": "wrong_item"}),
        ("pack-1", "verified", {"order": "SO-1"}),
        (
            "pack-1",
            "weighed",
            {"order": "SO-1", "verdict": "over", "actual_g": 612.0, "expected_g": 540.0},
        ),
        ("pack-1", "packed", {"order": "SO-1", "units": 8}),
    ]
    seqs: dict[str, int] = {}
    out = []
    for n, (node, name, body) in enumerate(feed):
        seqs[node] = seqs.get(node, 0) + 1
        store = "s-a" if node == "zone-a" else "s-p"
        out.append(
            NewEvent(node, store, seqs[node], name, T0 + 10_000 + n * 1000, body, body.get("order"))
        )
    return out


def state_of(site: SiteProcess) -> dict[str, Any]:
    url = site.ready_data["dashboard"] + "api/state"
    with urllib.request.urlopen(url, timeout=10) as reply:
        result: dict[str, Any] = json.loads(reply.read())
        return result


def essence(state: dict[str, Any]) -> dict[str, Any]:
    """What must be the same after a restart."""
    return {
        "orders": [(o["order"], o["stage"], o["where"], o["done"]) for o in state["orders"]],
        "exceptions": [
            (
                x["kind"],
                x["node"],
                x["text"],
                x["at"],
                x["acked_at"],
                x["acked_by"],
                x["cleared_at"],
            )
            for x in state["exceptions"]
        ],
        "kpis": state["kpis"],
        "nodes": [(n["node"], n["online"], n["problem"], n["events"]) for n in state["nodes"]],
    }


def post(site: SiteProcess, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        site.ready_data["dashboard"] + path, json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        result: dict[str, Any] = json.loads(reply.read())
        return result


def wait_for(site: SiteProcess, check: Any, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    state = state_of(site)
    while not check(state) and time.monotonic() < deadline:
        time.sleep(0.1)
        state = state_of(site)
    assert check(state), json.dumps(state)[:3000]
    return state


@pytest.mark.broker
@pytest.mark.slow  # two starts of the service: 15-30 s on a loaded machine
def test_the_dashboard_is_rebuilt_from_the_log_after_a_restart(
    tmp_path: Path, broker: LocalBroker
) -> None:
    path = site_file(tmp_path, broker)
    events = node_events()
    log = SqliteLog(tmp_path / "site.db")
    log.append(births())
    log.append(events[:-1])  # the last one is logged while the service runs
    log.close()

    site = SiteProcess(path, args=("--dashboard-port", "0"))
    site.start()
    try:
        first = wait_for(site, lambda s: len(s["nodes"]) == 3)
        rows = {o["order"]: o for o in first["orders"]}
        assert rows["SO-1"]["stage"] == "pack" and rows["SO-1"]["where"] == "pack-1"
        assert rows["SO-2"]["stage"] == "pick"
        kinds = {(x["kind"], x["node"]) for x in first["exceptions"]}
        assert {("short", "zone-a"), ("misscan", "zone-a"), ("weighed", "pack-1")} <= kinds
        assert ("node", "zone-b") in kinds and ("device", "pack-1") in kinds  # from births
        assert [n["node"] for n in first["nodes"]] == ["zone-b", "pack-1", "zone-a"]
        assert dict(map(tuple, (r[:2] for r in first["kpis"])))["lines picked"] == "9"

        # A node event logged while it runs is on the page within the follower's poll.
        log = SqliteLog(tmp_path / "site.db")
        log.append(events[-1:])
        log.close()
        live = wait_for(site, lambda s: s["orders_done"] == 1)
        assert live["orders"][0]["order"] == "SO-2"  # SO-1 is packed: done, last

        # Two acknowledged on the page: an event's exception and a node's offline.
        chosen = [x for x in live["exceptions"] if x["kind"] in ("short", "node")]
        for x in chosen:
            acked = post(site, f"api/exceptions/{x['id']}/ack", {"by": "Maria"})
            assert acked["acked_by"] == "Maria" and acked["acked_at"] is not None
        live = wait_for(site, lambda s: s["exceptions_open"] == len(s["exceptions"]) - 2)
        assert {x["kind"] for x in live["exceptions"] if x["acked_by"] == "Maria"} == {
            "short",
            "node",
        }
        assert site.terminate() == 0

        site.start()
        again = wait_for(site, lambda s: len(s["nodes"]) == 3 and s["orders_done"] == 1)
        assert essence(again) == essence(live)
        assert again["exceptions_open"] == live["exceptions_open"] > 0
    finally:
        site.stop()


def test_a_view_replayed_from_the_log_keeps_times_acknowledgements_and_clearings(
    tmp_path: Path,
) -> None:
    """Without a service: two boards on one log, the second replaying what the first wrote."""
    import asyncio

    from agent.link.settings import BrokerConfig
    from agent.oms import OmsClient
    from agent.oms.dashboard import SiteView
    from agent.oms.site.board import LogBoard
    from agent.oms.site.service import HeadNotifier

    store = SqliteLog(tmp_path / "site.db")
    store.append(births())
    store.append(node_events())
    back = births()[2]  # zone-b comes back
    store.append([NewEvent(back.node, back.store, None, "online", T0 + 60_000, back.body)])
    # A command the service sent, which the node refused: its reply is an event of the log.
    store.add_command("c-1", "zone-a", "cancel", {"tasks": ["SO-2-1"]})
    refusal = {"cmd": "cancel", "status": "rejected", "reason": "task_done"}
    store.append([NewEvent("zone-a", "s-a", 11, "reply", T0 + 70_000, refusal, None, "c-1")])

    def board() -> LogBoard:
        oms = OmsClient(BrokerConfig(urls=["mqtt://127.0.0.1:1"]), "dc1")
        return LogBoard(SiteView(oms), store, HeadNotifier())

    async def scenario() -> None:
        one = board()
        await one.catch_up()
        first = one.view.snapshot()
        offline = next(x for x in first["exceptions"] if x["text"] == "offline")
        assert (offline["at"], offline["cleared_at"]) == (T0 + 5_000, T0 + 60_000)
        refused = next(x for x in first["exceptions"] if x["kind"] == "refusal")
        assert (refused["node"], refused["at"]) == ("zone-a", T0 + 70_000)
        assert refused["text"] == "refused cancel: task done"  # a code no catalogue has: spaced
        assert refused["message"] == {
            "id": "dashboard.exc.refusal",
            "params": {"command": "cancel", "reason": {"id": "reason.task_done", "params": {}}},
        }
        short = next(x for x in first["exceptions"] if x["kind"] == "short")
        await one.acknowledge(short["id"], "Maria")
        with pytest.raises(KeyError):
            await one.acknowledge(999, "Maria")
        two = board()
        await two.catch_up()
        again = two.view.snapshot()
        assert essence(again) == essence(one.view.snapshot())
        (acked,) = [x for x in again["exceptions"] if x["acked_by"]]
        assert acked["kind"] == "short" and acked["acked_by"] == "Maria"

    asyncio.run(scenario())
    store.close()


def shipped_orders(count: int, open_: int) -> list[NewEvent]:
    """``count`` orders picked at zone-a, all but the last ``open_`` packed and shipped."""
    out = []
    seqs = {"zone-a": 0, "pack-1": 0}
    for n in range(count):
        order = f"SO-{n:04d}"
        at = T0 + 100_000 + n * 10_000
        feed = [("zone-a", "picked", {"order": order, "task": f"{order}-1", "picked": 1})]
        if n < count - open_:
            feed += [
                ("pack-1", "packed", {"order": order, "units": 1}),
                ("pack-1", "shipped", {"order": order, "at": at + 2_000}),
            ]
        for i, (node, name, body) in enumerate(feed):
            seqs[node] += 1
            store = "s-a" if node == "zone-a" else "s-p"
            out.append(NewEvent(node, store, seqs[node], name, at + i * 1000, body, order))
    return out


def test_the_view_keeps_open_orders_and_the_latest_finished_and_the_log_has_the_rest(
    tmp_path: Path,
) -> None:
    """A log of 40 orders, 3 open: the view holds 3 open and 5 finished; the page's order
    search pages through all 40 from the log, finds some by their ids' beginning, and an old
    order that comes back (a customer return) is open again."""
    import asyncio

    from agent.link.settings import BrokerConfig
    from agent.oms import OmsClient
    from agent.oms.site.board import LogBoard, log_view
    from agent.oms.site.service import HeadNotifier

    store = SqliteLog(tmp_path / "site.db")
    store.append(births())
    store.append(shipped_orders(40, open_=3))
    oms = OmsClient(BrokerConfig(urls=["mqtt://127.0.0.1:1"]), "dc1")
    view = log_view(oms, store)
    view.done_kept = 5
    board = LogBoard(view, store, HeadNotifier())

    def get(url: str) -> dict[str, Any]:
        with urllib.request.urlopen(url, timeout=10) as reply:
            result: dict[str, Any] = json.loads(reply.read())
            return result

    async def scenario() -> None:
        web = await board.start("127.0.0.1", 0)
        base = f"http://127.0.0.1:{web.port}/api/"
        try:
            assert (len(view.orders), len(view.finished), view.done_older) == (3, 5, 32)
            state = await asyncio.to_thread(get, base + "state")
            shown = [o["order"] for o in state["orders"]]
            assert shown[:3] == ["SO-0037", "SO-0038", "SO-0039"]  # open first
            assert shown[3:] == [f"SO-00{n}" for n in range(32, 37)]  # the latest finished
            assert (state["orders_total"], state["orders_done"], state["orders_older"]) == (
                40,
                37,
                32,
            )
            # Every order is reachable from the log, page by page, highest id first.
            seen: list[str] = []
            after = ""
            while True:
                page = await asyncio.to_thread(get, base + f"orders?limit=7{after}")
                seen += [o["order"] for o in page["orders"]]
                if page["next"] is None:
                    break
                after = f"&before={page['next']}"
            assert seen == [f"SO-{n:04d}" for n in range(39, -1, -1)]
            old = await asyncio.to_thread(get, base + "orders?q=SO-001")
            rows = {o["order"]: o for o in old["orders"]}
            assert sorted(rows) == [f"SO-001{n}" for n in range(10)]
            assert rows["SO-0012"]["stage"] == "shipped" and rows["SO-0012"]["done"]
            assert rows["SO-0012"]["where"] == "pack-1"
            assert (await asyncio.to_thread(get, base + "orders?q=SO-0038"))["orders"][0][
                "done"
            ] is False

            # SO-0002 left the view long ago; a customer sends it back: it is open again.
            back = {"order": "SO-0002", "rma": "R-1"}
            await asyncio.to_thread(
                store.append, [NewEvent("returns-1", "s-r", 1, "return_opened", T0 + 10**6, back)]
            )
            board.head.notify(await asyncio.to_thread(store.head))
            await asyncio.wait_for(_until(lambda: "SO-0002" in view.orders), 10)
            await asyncio.sleep(0.3)  # the page's data is rebuilt at most every 0.15 s
            state = await asyncio.to_thread(get, base + "state")
            rows = {o["order"]: o for o in state["orders"]}
            assert rows["SO-0002"]["stage"] == "returns" and not rows["SO-0002"]["done"]
        finally:
            await board.close()

    asyncio.run(scenario())
    store.close()


async def _until(check: Any) -> None:
    import asyncio

    while not check():
        await asyncio.sleep(0.02)


def test_orders_show_the_router_s_carrier_and_cut_off_and_those_near_or_past_it_come_first(
    tmp_path: Path,
) -> None:
    """The log's ``orders`` table (the router's word) joins the events: each order's carrier
    and cut-off; one past its cut-off and not at the dock is late, one within the window is
    due soon, and both are listed right after the problems; an order the router could not
    route (no event ever names it) is a problem; a change in the table reaches the page."""
    import asyncio

    from agent.link.settings import BrokerConfig
    from agent.oms import OmsClient
    from agent.oms.site.board import LogBoard, log_view
    from agent.oms.site.log import OrderRow
    from agent.oms.site.service import HeadNotifier

    now = T0 + 10 * 3_600_000
    store = SqliteLog(tmp_path / "site.db")
    store.append(births())
    store.append(shipped_orders(6, open_=4))  # SO-0000, SO-0001 shipped; SO-0002..5 picking

    def row(order: str, status: str, carrier: str | None, cutoff: int | None) -> OrderRow:
        body = {"order": order, "lines": [{"sku": "SKU-1", "qty": 1}]}
        return OrderRow(order, "W1", status, "", body, carrier, cutoff)

    store.set_orders(
        [
            row("SO-0001", "shipped", "DHL", now - 3_600_000),  # gone: its cut-off no matter
            row("SO-0002", "picking", "DHL", now - 600_000),  # past: late
            row("SO-0003", "picking", "UPS", now + 900_000),  # in 15 min: due soon
            row("SO-0004", "picking", "GLS", now + 3 * 3_600_000),  # later: nothing to flag
            row("SO-0009", "unrouted", None, None),  # never reached a node
        ]
    )
    oms = OmsClient(BrokerConfig(urls=["mqtt://127.0.0.1:1"]), "dc1")
    view = log_view(oms, store)
    view.clock = lambda: now
    board = LogBoard(view, store, HeadNotifier())

    async def scenario() -> None:
        await board.catch_up()
        state = view.snapshot()
        rows = {o["order"]: o for o in state["orders"]}
        assert [o["order"] for o in state["orders"]][:3] == ["SO-0009", "SO-0002", "SO-0003"]
        assert rows["SO-0009"]["problem"] and rows["SO-0009"]["label"] == "unrouted"
        assert (rows["SO-0002"]["carrier"], rows["SO-0002"]["cutoff"], rows["SO-0002"]["due"]) == (
            "DHL",
            now - 600_000,
            "late",
        )
        assert (rows["SO-0003"]["carrier"], rows["SO-0003"]["due"]) == ("UPS", "soon")
        assert (rows["SO-0004"]["carrier"], rows["SO-0004"]["due"]) == ("GLS", None)
        assert rows["SO-0001"]["done"] and rows["SO-0001"]["due"] is None
        assert (state["orders_late"], state["orders_due_soon"]) == (1, 1)

        # The router routes SO-0009 after all, and SO-0002's parcel is loaded: no longer late.
        store.set_orders([row("SO-0009", "picking", None, None)])
        store.set_orders([row("SO-0002", "dispatching", "DHL", now - 600_000)])
        await board.catch_up()
        rows = {o["order"]: o for o in view.snapshot()["orders"]}
        assert not rows["SO-0009"]["problem"] and rows["SO-0009"]["stage"] == "pick"
        assert rows["SO-0002"]["stage"] == "dispatch" and rows["SO-0002"]["due"] is None
        # The log's page of orders says the same for an order the view no longer holds.
        found = {f.order: f for f in view.history.find(None, "SO-000", 10)} if view.history else {}
        assert found["SO-0004"].facts is not None and found["SO-0004"].facts.carrier == "GLS"

    asyncio.run(scenario())
    store.close()
