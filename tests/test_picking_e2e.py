"""Zone picking end to end: the node as a child process, a real broker, simulated devices
driven and read only through the node's HTTP control API (as docs/simulation.md says)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.oms import NodeEvent, OmsClient
from agent.oms.demo.broker import LocalBroker
from agent.store import now_ms
from tests.harness import SITE, NodeProcess, oms_for

pytestmark = pytest.mark.broker

NODE = "zone-p1"
GTIN = "4006381333931"


def pick_node_file(
    tmp_path: Path,
    broker: LocalBroker,
    *,
    node: str = NODE,
    role: str = "pick",
    settings: str = "",
) -> Path:
    """Three RGB slots with confirm, plus, minus and a display; a zone lamp; a scanner."""
    lines = [
        f'site = "{SITE}"',
        f'node = "{node}"',
        f'role = "{role}"',
        f'state_dir = "{tmp_path / node}"',
        "[broker]",
        f'urls = ["{broker.url}"]',
        "keepalive_s = 5",
        "backoff_initial_s = 0.05",
        "backoff_max_s = 0.5",
        "[settings]",
        settings,
        "[[devices]]",
        'name = "shelf"',
        'kind = "gpio_slots"',
        "zone_lamp = { led = 26 }",
        "double_press_s = 0",  # tests press the same button quickly on purpose
    ]
    for i in range(3):
        b = 2 + i * 8
        lines += [
            "[[devices.slots]]",
            f'id = "A{i + 1}"',
            f"rgb = [{b}, {b + 1}, {b + 2}]",
            f"confirm = {b + 3}",
            f"plus = {b + 4}",
            f"minus = {b + 5}",
            f"display = {{ clk = {b + 6}, dio = {b + 7} }}",
        ]
    lines += [
        "[[devices]]",
        'name = "scanner"',
        'kind = "serial_scanner"',
        'port = "/dev/zone-agent-sim"',
        "dedupe_window_s = 0",
    ]
    path = tmp_path / f"{node}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class Control:
    """The node's HTTP control API, found through ``state_dir/control.json``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.url = ""

    async def connect(self, pid: int, timeout: float = 15) -> None:
        """Wait for the control.json the process ``pid`` wrote."""
        path = self.state_dir / "control.json"
        async with asyncio.timeout(timeout):
            while True:
                try:
                    data = json.loads(path.read_text())
                    if data["pid"] == pid:
                        self.url = data["url"]
                        return
                except (OSError, ValueError, KeyError):
                    pass
                await asyncio.sleep(0.02)

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    async def get(self, path: str) -> Any:
        return await asyncio.to_thread(self._call, "GET", path, None)

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        return await asyncio.to_thread(self._call, "POST", path, body)

    async def press(self, slot: str, button: str = "confirm") -> None:
        async with self._taken():
            await self.post("/sim/shelf/press", {"slot": slot, "button": button})

    async def scan(self, code: str, symbology: str | None = None) -> None:
        body: dict[str, Any] = {"code": code}
        if symbology is not None:
            body["symbology"] = symbology
        async with self._taken():
            assert (await self.post("/sim/scanner/scan", body)) == {"sent": True}

    @contextlib.asynccontextmanager
    async def _taken(self, timeout: float = 10) -> AsyncIterator[None]:
        """Return once the node has handled the input made in the block (its ``inputs``
        count moved): a scan travels by pty and a press by a pin callback, so without this
        a press right after a scan may be handled first, as no picker could make it."""
        before = (await self.get("/api/state"))["inputs"]
        yield
        async with asyncio.timeout(timeout):
            while (await self.get("/api/state"))["inputs"] <= before:
                await asyncio.sleep(0.01)

    async def slot(self, slot: str) -> dict[str, Any]:
        return (await self.get("/sim/shelf"))["slots"][slot]  # type: ignore[no-any-return]

    async def wait_slot(self, slot: str, expect: dict[str, Any], timeout: float = 10) -> None:
        """Wait until the simulated hardware of ``slot`` shows ``expect`` (a subset)."""
        seen: dict[str, Any] = {}
        try:
            async with asyncio.timeout(timeout):
                while True:
                    seen = await self.slot(slot)
                    if all(seen.get(k) == v for k, v in expect.items()):
                        return
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise AssertionError(f"slot {slot} shows {seen}, expected {expect}") from None


def lit(colour: str | None, pattern: str | None, qty: int | None) -> dict[str, Any]:
    return {"on": colour is not None, "colour": colour, "pattern": pattern, "qty": qty}


DARK = {"on": False, "colour": None, "display": None}


async def wait_online(oms: OmsClient, node: str = NODE, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not (oms.nodes.get(node) and oms.nodes[node].online):
            await asyncio.sleep(0.02)


async def next_events(
    oms: OmsClient, count: int, skip: tuple[str, ...] = ("reply", "counters"), timeout: float = 15
) -> list[NodeEvent]:
    """The next ``count`` delivered events, leaving out the names in ``skip``."""
    out: list[NodeEvent] = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            event = await oms.events.get()
            if event.name not in skip:
                out.append(event)
    return out


def body(event: NodeEvent) -> dict[str, Any]:
    b = event.body
    return b if isinstance(b, dict) else b.model_dump()


async def started(node: NodeProcess, control: Control, oms: OmsClient) -> None:
    node.start()
    assert node.proc is not None
    await control.connect(node.proc.pid)
    await wait_online(oms)


def run(node: NodeProcess, scenario: Any) -> None:
    try:
        asyncio.run(scenario())
    finally:
        node.stop()


def tasks(*rows: tuple[str, str, int, dict[str, Any]]) -> dict[str, Any]:
    return {
        "tasks": [
            {"task": t, "order": "o1", "location": loc, "sku": f"S-{t}", "qty": qty, **kw}
            for t, loc, qty, kw in rows
        ]
    }


# --- button confirm, pickers, short, misscan, zone done, cancel ---------------------------


def test_button_picking_login_short_zone_done_and_cancel(
    tmp_path: Path, broker: LocalBroker
) -> None:
    path = pick_node_file(tmp_path, broker)
    node = NodeProcess(path)
    control = Control(tmp_path / NODE)

    async def scenario() -> None:
        async with oms_for(broker) as oms:
            await oms.wait_connected()
            await started(node, control, oms)
            reply = await oms.call(
                NODE,
                "pick",
                tasks(
                    ("t1", "A1", 2, {"container": "c1"}),
                    ("t2", "A2", 3, {"container": "c1", "barcodes": [GTIN]}),
                    ("t3", "A3", 1, {"order": "o2", "express": True}),
                ),
            )
            assert (reply.status, reply.items) == ("accepted", [])
            await control.wait_slot("A1", lit("blue", "steady", 2))
            await control.wait_slot("A3", lit("reddish_purple", "slow_blink", 1))

            await control.scan("BADGE-ann")
            [login] = await next_events(oms, 1)
            assert (login.name, body(login)["picker"], body(login)["colour"]) == (
                "login",
                "ann",
                "orange",
            )
            await control.wait_slot("A1", lit("orange", "steady", 2))
            await control.wait_slot("A3", lit("orange", "slow_blink", 1))

            await control.scan("NOT-A-THING")
            [miss] = await next_events(oms, 1)
            assert (miss.name, body(miss)["reason"], body(miss)["picker"]) == (
                "misscan",
                "unknown_code",
                "ann",
            )

            await control.press("A1")
            [picked] = await next_events(oms, 1)
            b = body(picked)
            assert (picked.name, b["task"], b["picked"], b["picker"]) == ("picked", "t1", 2, "ann")
            assert b["lit_at"] is not None and b["confirmed_at"] >= b["lit_at"]
            await control.wait_slot("A1", DARK)

            await control.press("A2", "minus")
            await control.wait_slot("A2", lit("orange", "steady", 2))
            await control.scan("REASON-damaged")
            await control.press("A2")
            short, done = await next_events(oms, 2)
            assert (short.name, body(short)["qty"], body(short)["picked"]) == ("short", 3, 2)
            assert body(short)["reason"] == "damaged"
            assert (done.name, body(done)["order"], body(done)["container"]) == (
                "zone_done",
                "o1",
                "c1",
            )
            assert (body(done)["lines"], body(done)["short"]) == (2, 1)
            await control.wait_slot("A2", DARK)

            reply = await oms.call(NODE, "cancel", {"tasks": ["t3", "t1", "t9"]})
            assert [(i.id, i.status) for i in reply.items] == [
                ("t3", "cancelled"),
                ("t1", "done"),
                ("t9", "unknown"),
            ]
            await control.wait_slot("A3", DARK)
            state = await control.get("/api/state")
            done_lamp = {"colour": "bluish_green", "pattern": "steady", "qty": None, "text": "donE"}
            assert state["lights"] == {"A1": None, "A2": None, "A3": None, "@zone": done_lamp}
            assert state["workflow"]["pickers"]["ann"]["colour"] == "orange"
            assert state["workflow"]["open_lines"] == 0

    run(node, scenario)


def test_zone_done_lights_the_zone_lamp(tmp_path: Path, broker: LocalBroker) -> None:
    node = NodeProcess(pick_node_file(tmp_path, broker))
    control = Control(tmp_path / NODE)

    async def scenario() -> None:
        async with oms_for(broker) as oms:
            await oms.wait_connected()
            await started(node, control, oms)
            await oms.call(NODE, "pick", tasks(("t1", "A1", 1, {"container": "c1"})))
            await control.wait_slot("A1", lit("blue", "steady", 1))
            await control.press("A1")
            assert [e.name for e in await next_events(oms, 2)] == ["picked", "zone_done"]
            async with asyncio.timeout(5):
                while not ((await control.get("/sim/shelf"))["zone_lamp"] or {}).get("on"):
                    await asyncio.sleep(0.02)

    run(node, scenario)


# --- scan confirm, wrong item, deadline, counters -----------------------------------------


def test_scan_confirm_wrong_item_error_expiry_and_counters(
    tmp_path: Path, broker: LocalBroker
) -> None:
    path = pick_node_file(tmp_path, broker, settings='confirm = "scan"\ncounters_every_s = 1')
    node = NodeProcess(path)
    control = Control(tmp_path / NODE)

    async def scenario() -> None:
        async with oms_for(broker) as oms:
            await oms.wait_connected()
            await started(node, control, oms)
            deadline = now_ms() + 1500
            await oms.call(
                NODE,
                "pick",
                tasks(
                    ("t1", "A1", 1, {"barcodes": [GTIN]}),
                    ("t2", "A2", 4, {"deadline": deadline}),
                ),
            )
            await control.wait_slot("A1", lit("blue", "steady", 1))
            await control.press("A1")  # the button alone confirms nothing in scan mode
            await control.scan("09876543210982")  # a GTIN-14, not the line's
            [miss] = await next_events(oms, 1, skip=("reply", "counters", "expired"))
            b = body(miss)
            assert (miss.name, b["reason"], b["expected"], b["location"], b["task"]) == (
                "misscan",
                "wrong_item",
                [GTIN],
                "A1",
                "t1",
            )
            await control.wait_slot(
                "A1", {"on": True, "colour": "vermillion", "pattern": "fast_blink"}
            )
            assert (await control.slot("A1"))["display"].strip() == "Err"
            # The right item as a GS1-128 element string: compared by GTIN.
            await control.scan("01" + "0" + GTIN + "10LOT7", "]C1")
            [picked] = await next_events(oms, 1, skip=("reply", "counters", "expired"))
            assert (picked.name, body(picked)["task"]) == ("picked", "t1")
            await control.wait_slot("A1", DARK)
            [expired] = await next_events(oms, 1, skip=("reply", "counters"))
            assert (expired.name, body(expired)["task"], body(expired)["deadline"]) == (
                "expired",
                "t2",
                deadline,
            )
            await control.wait_slot("A2", DARK)
            [counters] = await next_events(oms, 1, skip=("reply",))
            counts = body(counters)["counts"]
            assert counters.name == "counters"
            assert (counts["lines_picked"], counts["misscans"], counts["lines_expired"]) == (
                1,
                1,
                1,
            )

    run(node, scenario)


# --- offline ----------------------------------------------------------------------------


def test_picking_goes_on_offline_and_every_confirmation_arrives_once(
    tmp_path: Path, broker: LocalBroker
) -> None:
    node = NodeProcess(pick_node_file(tmp_path, broker))
    control = Control(tmp_path / NODE)

    async def scenario() -> None:
        async with oms_for(broker, resend_s=1.0) as oms:
            await oms.wait_connected()
            await started(node, control, oms)
            await oms.call(
                NODE,
                "pick",
                tasks(*[(f"t{i}", f"A{i % 3 + 1}", 1, {}) for i in range(6)]),
            )
            await control.wait_slot("A1", lit("blue", "steady", 1))
            delivered = oms.nodes[NODE].delivered
            await asyncio.to_thread(broker.stop)
            for i in range(6):
                slot = f"A{i % 3 + 1}"
                await control.press(slot)
                await control.wait_slot(slot, DARK if i >= 3 else lit("blue", "steady", 1))
            state = await control.get("/api/state")
            assert not state["online"] and state["outbox"] == 6
            await asyncio.to_thread(broker.start)
            got = await next_events(oms, 6)
            assert [e.name for e in got] == ["picked"] * 6
            assert sorted(body(e)["task"] for e in got) == [f"t{i}" for i in range(6)]
            seqs = [e.envelope.seq for e in got]
            assert seqs == list(range(delivered + 1, delivered + 7))
            # Nothing else was numbered in between: the ping's reply is the very next event.
            await oms.call(NODE, "ping", {})
            [pong] = await next_events(oms, 1, skip=())
            assert (pong.name, pong.envelope.seq) == ("reply", delivered + 7)
            async with asyncio.timeout(10):
                while (await control.get("/api/state"))["outbox"] != 0:
                    await asyncio.sleep(0.05)

    run(node, scenario)


# --- restart ----------------------------------------------------------------------------


def test_sigkill_then_start_relights_open_tasks_with_progress_and_pickers(
    tmp_path: Path, broker: LocalBroker
) -> None:
    node = NodeProcess(pick_node_file(tmp_path, broker))
    control = Control(tmp_path / NODE)
    figures: dict[str, float] = {}

    async def scenario() -> None:
        async with oms_for(broker) as oms:
            await oms.wait_connected()
            await started(node, control, oms)
            await oms.call(
                NODE,
                "pick",
                tasks(("t1", "A1", 3, {}), ("t2", "A2", 2, {"order": "o2"})),
            )
            await control.scan("BADGE-ann")
            await control.press("A1", "minus")
            await control.wait_slot("A1", lit("orange", "steady", 2))
            await control.wait_slot("A2", lit("orange", "steady", 2))
            node.kill()
            start = time.monotonic()
            node.start()
            assert node.proc is not None
            await control.connect(node.proc.pid)
            async with asyncio.timeout(10):
                while True:
                    lights = (await control.get("/api/state"))["lights"]
                    if lights["A1"] and lights["A2"]:
                        break
                    await asyncio.sleep(0.01)
            figures["relit_s"] = time.monotonic() - start
            assert lights["A1"] == {
                "colour": "orange",
                "pattern": "steady",
                "qty": 2,
                "text": None,
            }
            await control.wait_slot("A1", lit("orange", "steady", 2))
            await control.wait_slot("A2", lit("orange", "steady", 2))
            await wait_online(oms)
            await control.press("A1")
            [short] = await next_events(oms, 1, skip=("reply", "counters", "login"))
            b = body(short)
            assert (short.name, b["task"], b["qty"], b["picked"], b["picker"]) == (
                "short",
                "t1",
                3,
                2,
                "ann",
            )

    run(node, scenario)
    print(f"restart: process start to open tasks relit {figures['relit_s']:.2f} s")
