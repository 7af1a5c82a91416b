"""The supervisor dashboard (``agent.oms.dashboard``): live in headless chromium, and its model.

The browser test runs a real pick node (in this process, simulated shelf and scanner) on a
real Mosquitto, the reference OMS routing three orders through it with ``Fulfilment``, and
the dashboard served from that OMS process; the page is read at a wall TV's 1920x1080 and a
10-inch tablet's 1280x800 while presses, a mis-scan and an unplugged scanner arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from agent import __version__
from agent.i18n import catalogue, render
from agent.oms.dashboard import SiteView, serve_dashboard
from agent.oms.demo.broker import LocalBroker
from agent.oms.fulfilment import Fulfilment, OrderFile, drive
from tests.browser import Page, browser, needs_chromium
from tests.harness import Running, node_file, node_in_process, oms_for
from tests.test_metrics import documented_metrics

pytestmark = pytest.mark.broker

SCANNER = '[[devices]]\nname = "scanner"\nkind = "serial_scanner"\nport = "/dev/zone-scanner"\n'
CATALOGUE = {
    "MUG": {"location": "A1", "barcodes": ["4012345000009"], "unit_weight_g": 380},
    "TEE": {"location": "A2", "barcodes": ["4012345000108"], "unit_weight_g": 180},
    "GHOST": {"location": "Z9", "barcodes": ["4012345000405"], "unit_weight_g": 10},
}
ORDERS = OrderFile.model_validate(
    {
        "catalogue": CATALOGUE,
        "orders": [
            {"order": "o1", "lines": [{"sku": "MUG", "qty": 1}]},
            {"order": "o2", "lines": [{"sku": "TEE", "qty": 2}]},
            {"order": "o3", "lines": [{"sku": "GHOST", "qty": 1}]},
        ],
    }
)
SERVE = [sys.executable, "-m", "agent.cli", "oms", "serve"]
SIZES = [(1920, 1080, 16.0), (1280, 800, 12.0)]
"""Viewport, and the smallest text size (px) a table cell may have there."""


def layout_problems(page: Page, width: int, height: int, min_font: float) -> list[str]:
    """What does not fit: page scrolling, a panel outside the viewport, text too small."""
    problems = []
    scroll = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
    )
    if scroll[0] > width or scroll[1] > height:
        problems.append(f"page scrolls: {scroll} in {width}x{height}")
    for selector in ("#stages", "#nodes", "#orders", "#exceptions", "#kpis", "#chart-box"):
        box = page.rect(selector)
        if box["left"] < 0 or box["top"] < 0 or box["right"] > width or box["bottom"] > height:
            problems.append(f"{selector} outside the screen: {box}")
        if box["height"] < (40 if selector == "#stages" else 80) or box["width"] < 200:
            problems.append(f"{selector} too small: {box}")
    font = page.evaluate("parseFloat(getComputedStyle(document.querySelector('td')).fontSize)")
    if font < min_font:
        problems.append(f"table text {font}px < {min_font}px")
    return problems


def order_rows(page: Page) -> list[tuple[str, str]]:
    rows = page.evaluate(
        "[...document.querySelectorAll('#order-rows tr')].map(r => [r.dataset.order, r.className])"
    )
    return [(o, c) for o, c in rows]


def wait_eval(page: Page, expression: str, timeout: float = 15) -> Any:
    """Wait until ``expression`` is truthy in the page; returns its value."""
    import time

    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = page.evaluate(expression)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{expression} stayed {value!r}")


async def press(running: Running, slot: str) -> None:
    await running.floor.simulators["shelf"].control("press", {"slot": slot, "button": "confirm"})


@needs_chromium
def test_dashboard_live_at_tv_and_tablet_sizes(tmp_path: Path, broker: LocalBroker) -> None:
    path = node_file(tmp_path, broker, extra="[settings]\ncounters_every_s = 1\n" + SCANNER)

    async def scenario() -> None:
        async with oms_for(broker) as oms, node_in_process(path) as running:
            await asyncio.wait_for(running.node.online.wait(), 10)
            async with asyncio.timeout(10):
                while not (oms.nodes.get("zone-a1") and oms.nodes["zone-a1"].state):
                    await asyncio.sleep(0.02)
            fulfilment = Fulfilment(ORDERS, wave="W1")
            view = SiteView(oms, fulfilment, stuck_after_s=1.5, bucket_s=1)
            web = await serve_dashboard(view, "127.0.0.1", 0)
            driver = asyncio.create_task(
                drive(oms, fulfilment, on_event=view.on_event, on_send=view.on_reply)
            )
            url = f"http://127.0.0.1:{web.port}/"
            try:
                await asyncio.to_thread(check_page, url, running, asyncio.get_running_loop())
                metrics = await asyncio.to_thread(
                    lambda: urllib.request.urlopen(url + "metrics", timeout=10).read().decode()
                )
                assert 'oms_events_total{event="picked",node="zone-a1"} 2.0' in metrics
                assert 'oms_orders{status="unrouted"} 1.0' in metrics
                assert 'oms_nodes{online="true",role="pick"} 1.0' in metrics
                typed = set(re.findall(r"^# TYPE (\S+) ", metrics, re.MULTILINE))
                typed |= {n + "_total" for n in typed}
                documented = {n for n in documented_metrics() if n.startswith("oms_")}
                assert documented and documented <= typed, documented - typed
            finally:
                driver.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await driver
                await web.close()

    def check_page(url: str, running: Running, loop: asyncio.AbstractEventLoop) -> None:
        def run(coro: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(coro, loop).result(10)

        with browser() as page:
            width, height, min_font = SIZES[0]
            page.open(url)
            page.viewport(width, height)
            node = page.wait_text('#node-rows tr[data-node="zone-a1"]', "online")
            assert "pick" in node and "shelf" in node and "scanner" in node
            assert __version__ in node  # the build each node runs, from its birth
            # o3's line is at a location no node owns: unrouted, listed first; the two
            # others are on the floor.
            page.wait_text("#order-rows", "o2")
            first = order_rows(page)[0]
            assert first == ("o3", "problem"), order_rows(page)
            page.wait_text('#order-rows tr[data-order="o3"]', "UNROUTED")
            assert (
                page.evaluate("document.querySelector('#stages [data-stage=pick] b').innerText")
                == "2"
            )

            run(press(running, "A1"))
            page.wait_text('#order-rows tr[data-order="o1"]', "picked")
            page.wait_text('#kpi-rows tr[data-kpi="lines picked"]', "1")
            assert order_rows(page)[-1] == ("o1", "done")
            # Picks per hour: a point a second, rising once the pick is in its window.
            wait_eval(page, "Number(document.getElementById('chart').dataset.last) > 0")
            assert page.evaluate("document.getElementById('rate-line').getAttribute('d')")

            run(running.floor.simulators["scanner"].control("scan", {"code": "NOT-A-THING"}))
            page.wait_text("#exception-list li:first-child", "MIS-SCAN")
            assert "NOT-A-THING" in page.wait_text("#exception-list", "barcode not known")
            assert "unknown_code" not in page.evaluate("document.body.innerText")

            # o2 has had no news for 1.5 s: stuck, after the unrouted one, before o1.
            o2 = "document.querySelector('#order-rows tr[data-order=o2]')"
            wait_eval(page, f"({o2} || {{}}).className === 'stuck'")
            assert [o for o, _ in order_rows(page)] == ["o3", "o2", "o1"]
            assert page.wait_text("#stages [data-stage=stuck]", "stuck").startswith("2")
            assert layout_problems(page, width, height, min_font) == []

            # The tablet: the same page, resized; the next events still arrive.
            width, height, min_font = SIZES[1]
            page.viewport(width, height)
            run(running.floor.simulators["scanner"].control("unplug", {}))
            page.wait_text("#exception-list li:first-child", "DEVICE")
            page.wait_text('#node-rows tr[data-node="zone-a1"]', "scanner: ")
            run(press(running, "A2"))
            page.wait_text('#order-rows tr[data-order="o2"]', "picked")
            page.wait_text('#kpi-rows tr[data-kpi="lines picked"]', "2")
            # Both done now, the one done longest ago first; the problem stays on top.
            assert order_rows(page) == [("o3", "problem"), ("o1", "done"), ("o2", "done")]
            assert layout_problems(page, width, height, min_font) == []
            page.screenshot(tmp_path / "dashboard-1280x800.png")
            page.viewport(*SIZES[0][:2])
            page.screenshot(tmp_path / "dashboard-1920x1080.png")

    asyncio.run(scenario())


def test_the_page_embeds_its_first_state(tmp_path: Path, broker: LocalBroker) -> None:
    async def scenario() -> None:
        async with oms_for(broker) as oms:
            web = await serve_dashboard(SiteView(oms), "127.0.0.1", 0)
            try:
                url = f"http://127.0.0.1:{web.port}"
                page = await asyncio.to_thread(
                    lambda: urllib.request.urlopen(url + "/", timeout=10).read().decode()
                )
                assert '<script id="state" type="application/json">' in page
                state = json.loads(
                    await asyncio.to_thread(
                        lambda: urllib.request.urlopen(url + "/api/state", timeout=10).read()
                    )
                )
                assert state["site"] == "dc1" and state["orders"] == []
            finally:
                await web.close()

    asyncio.run(scenario())


def test_oms_serve_prints_its_loopback_url_and_serves_page_state_and_metrics(
    tmp_path: Path, broker: LocalBroker
) -> None:
    proc, url = start_serve(broker, tmp_path / "serve.db")
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            assert b'id="exception-list"' in response.read()
        with urllib.request.urlopen(url + "api/state", timeout=10) as response:
            assert json.loads(response.read())["site"] == "dc1"
        with urllib.request.urlopen(url + "metrics", timeout=10) as response:
            text = response.read().decode()
        assert "oms_mqtt_connected" in text and "process_resident_memory_bytes" in text
    finally:
        proc.terminate()
        proc.wait(20)


def start_serve(broker: LocalBroker, log: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """``zone-agent oms serve`` on its own site log; the process and the page's URL."""
    proc = subprocess.Popen(
        [
            *(*SERVE, "--site", "dc1", "--broker", broker.url, "--port", "0"),
            *("--seconds", "60", "--log", str(log), *extra),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen = ""
    found = None
    for _ in range(20):  # log lines (link up) may come first
        line = proc.stdout.readline()
        seen += line
        found = re.search(r"dashboard on (http://127\.0\.0\.1:\d+/)", line)
        if found is not None or not line:
            break
    assert found is not None, seen
    return proc, found.group(1)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


def wait_json(url: str, check: Any, timeout: float = 20) -> Any:
    """GET ``url`` until ``check`` holds for its JSON; returns it."""
    import time

    deadline = time.monotonic() + timeout
    value = get_json(url)
    while not check(value) and time.monotonic() < deadline:
        time.sleep(0.1)
        value = get_json(url)
    assert check(value), json.dumps(value)[:2000]
    return value


def test_oms_serve_keeps_its_page_and_acknowledgements_across_a_restart(
    tmp_path: Path, broker: LocalBroker
) -> None:
    """``oms serve`` is a front over a site log: a node goes offline, a supervisor
    acknowledges that, ``oms serve`` restarts on the same log and shows both, in German."""
    log = tmp_path / "serve.db"
    path = node_file(tmp_path, broker)

    async def scenario() -> None:
        proc, url = await asyncio.to_thread(start_serve, broker, log, "--language", "de")
        try:
            async with node_in_process(path) as running:
                await asyncio.wait_for(running.node.online.wait(), 10)
                await asyncio.to_thread(
                    wait_json,
                    url + "api/state",
                    lambda s: [(n["node"], n["online"]) for n in s["nodes"]] == [("zone-a1", True)],
                )
            state = await asyncio.to_thread(
                wait_json,
                url + "api/state",
                lambda s: any(x["text"] == "offline" for x in s["exceptions"]),
            )
            offline = next(x for x in state["exceptions"] if x["text"] == "offline")
            request = urllib.request.Request(
                url + f"api/exceptions/{offline['id']}/ack", b'{"by": "Maria"}', method="POST"
            )
            await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=10).read())
            page = await asyncio.to_thread(
                lambda: urllib.request.urlopen(url, timeout=10).read().decode()
            )
            assert '<html lang="de">' in page and "Standort-Übersicht" in page
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 20)
        assert proc.returncode == 0
        proc, url = await asyncio.to_thread(start_serve, broker, log)
        try:
            state = await asyncio.to_thread(
                wait_json, url + "api/state", lambda s: len(s["nodes"]) == 1
            )
            assert [(n["node"], n["online"]) for n in state["nodes"]] == [("zone-a1", False)]
            (again,) = [x for x in state["exceptions"] if x["text"] == "offline"]
            assert (again["at"], again["acked_by"]) == (offline["at"], "Maria")
            assert again["acked_at"] is not None and again["cleared_at"] is None
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 20)

    asyncio.run(scenario())


def _event(node: str, name: str, body: dict[str, Any], ts: int) -> Any:
    from agent.oms import NodeEvent
    from agent.wire.messages import Envelope

    return NodeEvent(node, name, Envelope(v=1, id="x", ts=ts, seq=1, body=body), body)


def test_without_a_router_orders_follow_their_events_and_exceptions_read_as_words() -> None:
    """No Fulfilment (``oms serve`` beside the OMS that routes): stages come from events."""
    from agent.link.settings import BrokerConfig
    from agent.oms import OmsClient

    now = [100_000]
    view = SiteView(
        OmsClient(BrokerConfig(urls=["mqtt://127.0.0.1:1"]), "dc1"),
        stuck_after_s=30,
        clock=lambda: now[0],
    )
    feed = [
        ("zone-a", "picked", {"order": "A", "task": "A-1", "picked": 1}, 10_000),
        (
            "zone-a",
            "short",
            {
                "order": "B",
                "sku": "TEE",
                "location": "A2",
                "qty": 2,
                "picked": 0,
                "reason": "empty",
            },
            20_000,
        ),
        (
            "pack-1",
            "weighed",
            {"order": "A", "verdict": "under", "actual_g": 300.0, "expected_g": 380.0},
            90_000,
        ),
        (
            "pack-1",
            "print_failed",
            {"order": "A", "document": "label", "printer": "label", "reason": "paper out"},
            91_000,
        ),
        ("dock-1", "load_refused", {"code": "LANE-X", "reason": "wrong_lane"}, 92_000),
        ("dock-1", "shipped", {"order": "C", "parcel": "P1"}, 95_000),
    ]
    for node, name, body, ts in feed:
        view.on_event(_event(node, name, body, ts))
    state = view.snapshot()
    rows = {r["order"]: r for r in state["orders"]}
    assert (rows["A"]["stage"], rows["A"]["where"], rows["A"]["stuck"]) == ("pack", "pack-1", False)
    assert (rows["B"]["stage"], rows["B"]["idle_s"], rows["B"]["stuck"]) == ("pick", 80, True)
    assert rows["C"]["done"] and not rows["C"]["stuck"]
    assert [r["order"] for r in state["orders"]] == ["B", "A", "C"]
    texts = [(x["kind"], x["text"]) for x in state["exceptions"]]
    assert texts == [
        ("load_refused", "load refused LANE-X (wrong lane)"),
        ("print_failed", "label for A failed on label: paper out"),
        ("weighed", "check-weigh under A: 300 g, expected 380 g"),
        ("short", "short B TEE at A2: 0/2 (location empty)"),
    ]
    # Each is a message the page says in its language: codes as words there too.
    german = [render(x["message"], catalogue("de"), "de") for x in state["exceptions"]]
    assert german == [
        "Verladen abgelehnt LANE-X (falsche Bahn)",
        "Etikett für A auf label fehlgeschlagen: paper out",
        "Kontrollwiegung zu leicht A: 300 g, erwartet 380 g",
        "Fehlmenge B TEE in A2: 0/2 (Fach leer)",
    ]
    assert state["stages"]["pick"] == 1 and state["stages"]["pack"] == 1
    # A point every 10 s from the bucket after the first line: at 20 s both lines (the pick
    # at 10 s, the short at 20 s) are in the last minute, 120 an hour; at 100 s neither.
    assert state["picks_per_hour"][0] == [20_000, 120.0]
    assert state["picks_per_hour"][-1] == [100_000, 0.0]


def _site(now: list[int]) -> Any:
    from agent.link.settings import BrokerConfig
    from agent.oms import OmsClient

    return SiteView(
        OmsClient(BrokerConfig(urls=["mqtt://127.0.0.1:1"]), "dc1"), clock=lambda: now[0]
    )


def _birth(view: Any, node: str, online: bool, role: str = "pick", **state: Any) -> None:
    from agent.oms.client import NodeView
    from agent.wire.messages import State

    view.oms.nodes[node] = NodeView(
        node, online=online, boot=1, state=State(online=online, role=role, **state)
    )


def test_nodes_problems_first_and_an_offline_node_is_an_exception_from_the_start() -> None:
    from agent.wire.messages import DeviceHealth, PartHealth

    now = [1_000_000]
    view = _site(now)
    for i in range(26):
        _birth(view, f"zone-{i:02d}", online=True)
    _birth(view, "zone-07", online=False)  # offline before the page opened
    _birth(view, "zone-03", online=True, takeovers=5)
    lamp = DeviceHealth(
        kind="atop", status="ok", parts={"A-0007": PartHealth(status="unavailable")}
    )
    _birth(view, "zone-12", online=True, devices={"atop-1": lamp})
    state = view.snapshot()
    order = [(n["node"], n["problem"]) for n in state["nodes"][:4]]
    assert order == [
        ("zone-07", "offline"),
        ("zone-03", "duplicate id"),
        ("zone-12", "device"),
        ("zone-00", None),
    ]
    assert len(state["nodes"]) == 26  # every node, none cut
    kinds = sorted((x["kind"], x["node"]) for x in state["exceptions"])
    assert kinds == [("device", "zone-12"), ("duplicate", "zone-03"), ("node", "zone-07")]
    assert state["exceptions_open"] == 3


def test_exceptions_are_acknowledged_and_show_when_their_condition_cleared() -> None:
    now = [1_000_000]
    view = _site(now)
    _birth(view, "zone-a", online=False)
    (offline,) = view.snapshot()["exceptions"]
    assert offline["text"] == "offline" and offline["cleared_at"] is None
    now[0] += 5_000
    view.ack(offline["id"], "Maria")
    now[0] += 5_000
    _birth(view, "zone-a", online=True)
    state = view.snapshot()
    by_text = {x["text"]: x for x in state["exceptions"]}
    assert by_text["offline"]["acked_by"] == "Maria"
    assert by_text["offline"]["acked_at"] == 1_005_000
    assert by_text["offline"]["cleared_at"] == 1_010_000
    assert [x["text"] for x in state["exceptions"]] == ["back online", "offline"]  # open first
    assert state["exceptions_open"] == 1
    with pytest.raises(KeyError):
        view.ack(999)
    _birth(view, "zone-a", online=False)  # offline again: a new line, not the old one reopened
    texts = [(x["text"], x["cleared_at"]) for x in view.snapshot()["exceptions"]]
    assert texts[0] == ("offline", None) and ("offline", 1_010_000) in texts


def test_a_queue_at_packing_is_not_stuck_but_a_started_order_gone_quiet_is() -> None:
    now = [0]
    view = _site(now)
    events = [
        ("zone-a", "picked", {"order": "Q1", "task": "t1", "picked": 1}, 1_000),
        ("zone-a", "picked", {"order": "S1", "task": "t2", "picked": 1}, 1_000),
        ("pack-1", "verified", {"order": "S1"}, 2_000),
        ("pack-1", "label_printed", {"order": "Q2"}, 2_000),
    ]
    for node, name, body, ts in events:
        view.on_event(_event(node, name, body, ts))
    view.orders["Q1"].stage = "pack"  # routed to the station, not started there
    now[0] = 2_000 + 3 * 3600 * 1000  # three hours on
    rows = {r["order"]: r for r in view.snapshot()["orders"]}
    assert rows["Q1"]["stage"] == "pack" and rows["Q1"]["queued"] and not rows["Q1"]["stuck"]
    assert rows["S1"]["stage"] == "pack" and not rows["S1"]["queued"] and rows["S1"]["stuck"]


def test_a_supervisor_acknowledges_an_exception_on_the_page() -> None:
    now = [1_000_000]
    view = _site(now)
    _birth(view, "zone-a", online=False)

    async def scenario() -> None:
        web = await serve_dashboard(view, "127.0.0.1", 0)
        try:
            base = f"http://127.0.0.1:{web.port}"
            (x,) = json.loads(
                await asyncio.to_thread(lambda: urllib.request.urlopen(base + "/api/state").read())
            )["exceptions"]

            def post(path: str, body: bytes) -> tuple[int, Any]:
                request = urllib.request.Request(base + path, body, method="POST")
                try:
                    with urllib.request.urlopen(request, timeout=10) as reply:
                        return reply.status, json.loads(reply.read())
                except urllib.error.HTTPError as err:
                    return err.code, json.loads(err.read())

            status, entry = await asyncio.to_thread(
                post, f"/api/exceptions/{x['id']}/ack", b'{"by": "Maria"}'
            )
            assert status == 200 and entry["acked_by"] == "Maria"
            assert (await asyncio.to_thread(post, "/api/exceptions/9999/ack", b"{}"))[0] == 404
            assert (await asyncio.to_thread(post, f"/api/exceptions/{x['id']}/ack", b"[]"))[
                0
            ] == 400
            state = json.loads(
                await asyncio.to_thread(lambda: urllib.request.urlopen(base + "/api/state").read())
            )
            assert state["exceptions"][0]["acked_by"] == "Maria" and state["exceptions_open"] == 0
        finally:
            await web.close()

    asyncio.run(scenario())


def test_finished_orders_fold_into_the_kpis_with_the_same_figures() -> None:
    """The view folds an order's KPI facts when it finishes; the table is the same as a
    ``Kpis`` that keeps every order's lines (``oms kpi``), and the view keeps none of them."""
    from agent.oms.kpi import Kpis

    now = [10_000_000]
    view = _site(now)
    _birth(view, "dock-1", online=True, role="dispatch")
    view.snapshot()  # the view knows the site has a dock: packed is not the end
    plain = Kpis()
    feed: list[tuple[str, str, dict[str, Any], int]] = []
    for n in range(30):
        order, at = f"SO-{n:03d}", 1_000_000 + n * 60_000
        for line in range(3):
            task = f"{order}-{line}"
            if (n + line) % 7 == 0:
                feed.append(
                    ("zone-a", "misscan", {"code": "X", "task": task, "reason": "wrong_item"}, at)
                )
            name = "short" if (n + line) % 11 == 0 else "picked"
            body = {
                "order": order,
                "task": task,
                "picked": 1,
                "lit_at": at + line * 1000,
                "confirmed_at": at + line * 1000 + 2500 + n * 10,
            }
            feed.append(("zone-a", name, body, at + line * 1000))
        if n < 25:
            feed.append(
                (
                    "pack-1",
                    "weighed",
                    {"order": order, "verdict": "over" if n % 9 == 0 else "ok"},
                    at + 20_000,
                )
            )
            feed.append(
                (
                    "pack-1",
                    "packed",
                    {"order": order, "units": 3, "at": at + 30_000 + n},
                    at + 30_000,
                )
            )
        if n < 20:
            feed.append(("dock-1", "loaded", {"order": order, "late": n % 5 == 0}, at + 40_000))
            feed.append(
                ("dock-1", "shipped", {"order": order, "at": at + 50_000 + 7 * n}, at + 50_000)
            )
    feed.append(
        (
            "returns-1",
            "return_received",
            {"order": "SO-003", "reason": "wrong_item_sent"},
            9_000_000,
        )
    )
    for node, name, body, ts in feed:
        view.on_event(_event(node, name, body, ts))
        plain.add(node, name, body)
    state = view.snapshot()
    assert [tuple(r[:2]) for r in state["kpis"]] == [r[:2] for r in plain.table()]
    table = dict(r[:2] for r in state["kpis"])
    assert table["orders shipped"] == "20" and table["orders packed"] == "25"
    assert table["order lead time to shipped median"] != "-"
    # Shipped orders are finished and folded; packed ones go on to the dock (open); the
    # order sent back is open again, as a return.
    assert state["orders_done"] == 19 and len(view.kpis.order_lines) == 10
    assert next(r for r in state["orders"] if r["order"] == "SO-003")["stage"] == "returns"
    assert not set(view.kpis.order_start) & {f"SO-{n:03d}" for n in range(20)}


def test_every_word_of_the_dashboard_is_in_german_and_polish() -> None:
    """Every ``dashboard.`` key is in de and pl; every key the page and the view use is
    one; and every code the page shows (exception kinds, statuses, roles, KPI names, the
    reasons a node refuses a command with) reads as words in all three languages."""
    import ast
    import re

    from agent.i18n import shipped
    from agent.oms import dashboard
    from agent.oms.kpi import Kpis
    from agent.roles import ROLES

    root = Path(__file__).parent.parent
    languages = shipped()
    bases = {lang: {k.partition("#")[0] for k in words} for lang, words in languages.items()}
    ours = sorted(k for k in bases["en"] if k.startswith("dashboard."))
    assert len(ours) > 150
    for lang in ("de", "pl"):
        assert [k for k in ours if k not in bases[lang]] == [], lang
    page = (root / "agent" / "static" / "dashboard.html").read_text()
    used = set(re.findall(r'\bt\("(dashboard\.[a-z_.]+)"', page))
    used |= set(re.findall(r'data-t(?:-placeholder)?="(dashboard\.[a-z_.]+)"', page))
    assert len(used) > 40 and sorted(used - bases["en"]) == []

    source = ast.parse(Path(dashboard.__file__).read_text())
    said = {
        node.args[0].value
        for node in ast.walk(source)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "exc"
        and isinstance(node.args[0], ast.Constant)
    }
    said |= {"pack_refused", "load_refused", "return_refused", "print_failed", "print_delayed"}
    events = {"short", "misscan", "weighed", "expired", "no_free_colour"}
    kinds = events | {"pack_refused", "load_refused", "return_refused", "print_failed"}
    kinds |= {"print_delayed", "device", "node", "duplicate", "refusal"}
    statuses = {*dashboard.STAGE_OF_STATUS, *dashboard.PROBLEM_STATUSES, *dashboard.STAGES}
    statuses |= {"returned", "unfulfilled", "pick", "wall", "pack", "dispatch"}
    kpis = {
        re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        for name, _, _ in Kpis().table()
        if not name.startswith("rate of return:")
    }
    refusals = set()
    for path in (root / "agent").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", None))
                in ("rejected", "MessageRejected")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                refusals.add(node.args[0].value)
    assert {"outbox_full", "wave_released", "too_large", "already_packed"} <= refusals
    wanted = [f"dashboard.exc.{m}" for m in said]
    wanted += [f"dashboard.kind.{k}" for k in kinds]
    wanted += [f"dashboard.status.{s}" for s in statuses]
    wanted += [f"dashboard.role.{r}" for r in ROLES]
    wanted += [f"dashboard.kpi.{k}" for k in kpis] + ["dashboard.kpi.rate_of_return_for"]
    wanted += [
        f"dashboard.stage.{s}"
        for s in ("late", "soon", "done", "stuck", *dashboard.STAGES)
        if s not in ("packed", "shipped")
    ]
    for lang in ("en", "de", "pl"):
        assert sorted(k for k in wanted if k not in bases[lang]) == [], lang
        unsaid = [
            r
            for r in sorted(refusals)
            if f"reason.{r}" not in bases[lang] and f"dashboard.reason.{r}" not in bases[lang]
        ]
        assert unsaid == [], lang


def test_oms_serve_routes_its_order_file_once_per_log(tmp_path: Path, broker: LocalBroker) -> None:
    """``oms serve --orders``: the wave is routed through the site log (the node gets its
    picks, the page shows the orders), and a restart on the same log does not route it again."""
    log = tmp_path / "serve.db"
    orders = tmp_path / "orders.json"
    orders.write_text(ORDERS.model_dump_json(exclude_defaults=True))
    path = node_file(tmp_path, broker)

    async def scenario() -> None:
        async with node_in_process(path) as running:
            await asyncio.wait_for(running.node.online.wait(), 10)
            workflow: Any = running.node.workflow
            for run in range(2):
                proc, url = await asyncio.to_thread(
                    start_serve, broker, log, "--orders", str(orders), "--wave", "W7"
                )
                try:
                    state = await asyncio.to_thread(
                        wait_json,
                        url + "api/state",
                        lambda s: {o["order"] for o in s["orders"]} >= {"o1", "o2", "o3"},
                    )
                    if run == 0:
                        deadline = asyncio.get_running_loop().time() + 20
                        while len(workflow.tasks) < 2:
                            assert asyncio.get_running_loop().time() < deadline, workflow.tasks
                            await asyncio.sleep(0.05)
                        tasks = dict(workflow.tasks)
                    # o3's GHOST is on no node's shelf: unrouted, a problem on the page.
                    assert {o["order"]: o["status"] for o in state["orders"]}["o3"] == "unrouted"
                    said = await asyncio.to_thread(read_until_line, proc, "routed")
                finally:
                    proc.terminate()
                    out, _ = await asyncio.to_thread(proc.communicate, None, 20)
                assert proc.returncode == 0, said + out
                if run == 0:
                    assert "routed 3 orders as wave W7" in said
                else:
                    assert "not routed again" in said and "routed 3 orders" not in said + out
            assert sorted(t.location for t in tasks.values()) == ["A1", "A2"]
            assert workflow.tasks.keys() == tasks.keys()  # no pick sent a second time

    asyncio.run(scenario())


def read_until_line(proc: subprocess.Popen[str], word: str) -> str:
    """What ``proc`` prints up to and including the first line with ``word`` (or its end)."""
    assert proc.stdout is not None
    seen = ""
    for line in proc.stdout:
        seen += line
        if word in line:
            break
    return seen
