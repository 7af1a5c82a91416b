"""Local input is never held up by the link, and a press confirms only what its slot showed.

Issue 18, item 1: on a congested link, with the OMS resending unanswered commands, the node
stopped handling presses for a minute (answering a duplicate waited for an in-flight slot
behind command copies), then applied every queued press at once, confirming lines nobody
was shown. These tests put the node behind a loopback proxy that stalls what it sends
(tests/linkproxy.py), on a real Mosquitto, and press through the simulated GPIO buttons.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from agent.oms import OmsClient
from agent.oms.demo.broker import LocalBroker
from agent.wire.messages import PickTask
from agent.wire.topics import NodeTopics
from devices.events import Button, ButtonPress
from tests.harness import SITE, Running, node_file, node_in_process, oms_for
from tests.linkproxy import LinkProxy

pytestmark = pytest.mark.broker

NODE = "zone-a1"
SLOTS = ["A1", "A2", "A3", "A4"]


def _node_file(tmp_path: Path, broker: LocalBroker, url: str) -> Path:
    """Four GPIO slots; a keepalive long enough that a stalled minute is not a lost link."""
    path = node_file(tmp_path, broker, extra="max_inflight = 4")
    text = path.read_text().replace(broker.url, url).replace("keepalive_s = 5", "keepalive_s = 120")
    path.write_text(text)
    return path


def _tasks(per_slot: int, prefix: str = "t") -> list[PickTask]:
    """``per_slot`` lines on each slot, 60-character names, one order per line."""
    return [
        PickTask(
            task=f"{prefix}-{slot}-{i}",
            order=f"order-{slot}-{i}",
            location=slot,
            sku=f"SKU-{slot}-{i}",
            qty=i + 1,
            description=f"Stainless steel kitchen scissors, 21 cm, soft grip {slot}-{i:03d}"[:60],
        )
        for slot in SLOTS
        for i in range(per_slot)
    ]


async def _until(predicate: Any, timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what}") from None


async def _press(running: Running, slot: str) -> None:
    await running.floor.simulators["shelf"].control("press", {"slot": slot, "button": "confirm"})


async def _resend_on_a_timer(oms: OmsClient, every_s: float, sent: list[int]) -> None:
    """Publish each unanswered command again every ``every_s`` (no backoff, no waiting);
    ``sent[0]`` counts the copies."""
    topics = NodeTopics(SITE, NODE)
    while True:
        await asyncio.sleep(every_s)
        for command in list(oms.pending.values()):
            if not command.reply.done():
                await oms.transport.publish(topics.cmd(command.name), command.payload)
                sent[0] += 1


def _state(running: Running) -> dict[str, Any]:
    """``GET /api/state`` of the node's web server."""
    url = json.loads((running.config.state_dir / "control.json").read_text())["url"]
    with urllib.request.urlopen(url + "/api/state", timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


async def _online(oms: OmsClient) -> None:
    await _until(lambda: NODE in oms.nodes and oms.nodes[NODE].online, 20, "node online")


async def _picked(oms: OmsClient, count: int, timeout: float = 30) -> list[str]:
    """Task ids of the next ``count`` picked events the OMS takes."""
    out: list[str] = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            event = await oms.events.get()
            if event.name == "picked":
                out.append(event.body.task)  # type: ignore[union-attr]
    return out


def test_presses_are_handled_while_the_uplink_is_stalled_and_the_oms_resends(
    tmp_path: Path, broker: LocalBroker
) -> None:
    """Presses are taken and confirm the shown lines, while no byte leaves the node."""

    async def scenario() -> None:
        async with LinkProxy(broker.port) as proxy:
            path = _node_file(tmp_path, broker, proxy.url)
            async with oms_for(broker, resend_s=0.3) as oms, node_in_process(path) as running:
                node = running.node
                await _online(oms)
                reply = await oms.call(NODE, "pick", {"tasks": [t.model_dump() for t in _tasks(3)]})
                assert reply.status == "accepted"
                await _until(lambda: len(node.workflow.lit) == 4, 10, "four slots lit")  # type: ignore[attr-defined]
                shown = dict(node.workflow.lit)  # type: ignore[attr-defined]
                # The uplink stops moving: replies and PUBACKs for the broker's copies wait;
                # the OMS, answered by nobody, resends every 0.3 s; the node's 4 in-flight
                # slots are soon all taken.
                proxy.stall("up")
                pings = [oms.send(NODE, "ping", {}) for _ in range(8)]
                # An OMS that resends every unanswered command on a plain timer (the old
                # documented rule, still what a simple OMS does): copies pile up.
                sent = [0]
                copies = asyncio.create_task(_resend_on_a_timer(oms, 0.3, sent))
                await _until(lambda: copies.done() or sent[0] >= 40, 30, "40 copies resent")
                before = node.stats["inputs"]
                for slot in SLOTS:
                    await _press(running, slot)
                await _until(
                    lambda: node.stats["inputs"] >= before + 4, 20, "the presses were handled"
                )
                assert node.stats["duplicates"] >= 4  # the link carried copies all along
                confirmed = {s: t for s, t in shown.items() if t not in node.workflow.tasks}  # type: ignore[attr-defined]
                assert confirmed == shown  # each press confirmed what its slot showed
                proxy.flow("up")
                await asyncio.wait_for(asyncio.gather(*pings), 30)
                copies.cancel()
                assert sorted(await _picked(oms, 4)) == sorted(shown.values())
                # Exactly those: the next line of each slot is lit and open.
                assert all(node.workflow.lit[s] != shown[s] for s in SLOTS)  # type: ignore[attr-defined]
                assert len(node.workflow.tasks) == 8  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_a_press_queued_behind_a_slow_commit_does_not_confirm_the_next_line(
    tmp_path: Path, broker: LocalBroker
) -> None:
    """Two presses on one slot while the disk is slow: the second one saw the first line."""

    async def scenario() -> None:
        path = node_file(tmp_path, broker)
        text = path.read_text().replace(
            'kind = "gpio_slots"', 'kind = "gpio_slots"\ndouble_press_s = 0'
        )
        path.write_text(text)
        async with oms_for(broker) as oms, node_in_process(path) as running:
            node = running.node
            await _online(oms)
            reply = await oms.call(NODE, "pick", {"tasks": [t.model_dump() for t in _tasks(3)]})
            assert reply.status == "accepted"
            await _until(lambda: len(node.workflow.lit) == 4, 10, "four slots lit")  # type: ignore[attr-defined]
            first = node.workflow.lit["A1"]  # type: ignore[attr-defined]
            await _until(lambda: running.floor.shown("A1") == first, 10, f"{first} shown")
            # A slow SD card: the store thread is busy, so the first press's commit (and
            # the relight after it) waits; the picker presses again, still seeing `first`.
            gate = threading.Event()
            stuck = asyncio.ensure_future(node.store.call(gate.wait, 30))
            before = node.stats["inputs"]
            await _press(running, "A1")
            await _until(lambda: node.stats["inputs"] >= before + 1, 10, "first press")
            second = node.workflow.lit["A1"]  # type: ignore[attr-defined]
            assert second != first  # the workflow moved on; the light has not yet
            await _press(running, "A1")
            await _until(lambda: node.stats["inputs"] >= before + 2, 10, "second press")
            gate.set()
            await stuck
            assert await _picked(oms, 1) == [first]
            await _until(
                lambda: node.ignored.get("stale_press", 0) >= 1, 10, "the stale press counted"
            )
            assert second in node.workflow.tasks  # type: ignore[attr-defined]
            assert node.workflow.lit["A1"] == second  # type: ignore[attr-defined]
            # The next press, made while `second` is shown, confirms it.
            await _until(lambda: running.floor.shown("A1") == second, 10, "second shown")
            await _press(running, "A1")
            assert await _picked(oms, 1) == [second]
            await _until(lambda: node.workflow.lit["A1"] != second, 10, "third lit")  # type: ignore[attr-defined]
            # A press older than [input] press_max_age_s (5 s) when handled: nothing.
            third = node.workflow.lit["A1"]  # type: ignore[attr-defined]
            node.submit_input(
                ButtonPress("shelf", "A1", Button.CONFIRM, time.monotonic() - 6, shown=third)
            )
            await _until(lambda: node.ignored.get("press_too_old") == 1, 10, "too old counted")
            assert third in node.workflow.tasks  # type: ignore[attr-defined]
            state = await asyncio.to_thread(_state, running)
            assert state["inputs_ignored"] == {"stale_press": 1, "press_too_old": 1}

    asyncio.run(scenario())
