"""The zone screen in a real headless browser: slots, lights and pickers, live from the node."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from pathlib import Path

import pytest

from agent.link.memory import MemoryBroker
from agent.wire.messages import PickTask
from tests.browser import browser, dump_dom, needs_chromium
from tests.harness import Broker, node_file, node_in_process, oms_for


@pytest.fixture
def broker(memory_broker: MemoryBroker) -> MemoryBroker:
    """This module's nodes and OMS run on the in-process broker (the fast tier)."""
    return memory_broker


def test_state_api_and_page_are_served_on_localhost(tmp_path: Path, broker: Broker) -> None:
    async def scenario() -> None:
        async with node_in_process(node_file(tmp_path, broker)) as running:
            url = json.loads((running.config.state_dir / "control.json").read_text())["url"]
            assert url.startswith("http://127.0.0.1:")
            page = await asyncio.to_thread(lambda: urllib.request.urlopen(url + "/").read())
            assert b'id="slots"' in page
            state = json.loads(
                await asyncio.to_thread(lambda: urllib.request.urlopen(url + "/api/state").read())
            )
            assert state["node"] == "zone-a1" and set(state["lights"]) == {"A1", "A2", "A3", "A4"}

    asyncio.run(scenario())


@needs_chromium
def test_zone_screen_shows_lit_slots_and_pickers(tmp_path: Path, broker: Broker) -> None:
    async def scenario() -> None:
        async with oms_for(broker) as oms, node_in_process(node_file(tmp_path, broker)) as running:
            await asyncio.wait_for(running.node.online.wait(), 10)
            url = json.loads((running.config.state_dir / "control.json").read_text())["url"]
            tasks = [PickTask(task="t1", order="ORD-9", location="A2", sku="SKU-77", qty=7)]
            await oms.call("zone-a1", "pick", {"tasks": [t.model_dump() for t in tasks]})
            dom = await asyncio.to_thread(dump_dom, url + "/")
            slot = re.search(r'<div class="slot" data-slot="A2".*?</div></div>', dom, re.S)
            assert slot is not None, dom[-3000:]
            card = slot.group(0)
            assert "var(--blue)" in card and "lit steady c-blue" in card  # as the shelf shows it
            assert '<div class="loc">A2</div>' in card and ">7</span>" in card
            assert '<div class="name">SKU-77</div>' in card  # no item name sent: its SKU
            assert "ORD-9" in card
            assert 'data-slot="A1"' not in dom, "a dark slot is not drawn"
            assert "zone-a1" in dom and ">online<" in dom

    asyncio.run(scenario())


@needs_chromium
def test_zone_screen_at_800x480_fits_without_scrolling(tmp_path: Path, broker: Broker) -> None:
    """On the Pi 7-inch display: every lit slot, the pickers and the zone lamp in view."""
    width, height = 800, 480

    async def scenario() -> None:
        path = node_file(tmp_path, broker, slots=8)
        async with oms_for(broker) as oms, node_in_process(path) as running:
            await asyncio.wait_for(running.node.online.wait(), 10)
            url = json.loads((running.config.state_dir / "control.json").read_text())["url"]
            tasks = [
                PickTask(task=f"t{i}", order=f"ORD-{i}", location=f"A{i}", sku=f"SKU-{i}", qty=i)
                for i in range(1, 7)
            ]
            await oms.call("zone-a1", "pick", {"tasks": [t.model_dump() for t in tasks]})
            with browser() as page:
                await asyncio.to_thread(page.open, url + "/")
                page.viewport(width, height)
                await asyncio.to_thread(page.wait_text, '[data-slot="A6"]', "ORD-6")
                assert page.evaluate("document.documentElement.scrollHeight") <= height
                assert page.evaluate("document.documentElement.scrollWidth") <= width
                assert page.rect("header")["bottom"] <= 0.1 * height
                selectors = [f'[data-slot="A{i}"]' for i in range(1, 7)]
                for selector in [*selectors, "#pickers", "#zone"]:
                    box = page.rect(selector)
                    assert box["height"] > 0, selector
                    assert box["top"] >= 0 and box["bottom"] <= height, (selector, box)
                    assert box["left"] >= 0 and box["right"] <= width, (selector, box)

    asyncio.run(scenario())


def test_stream_sends_each_change(tmp_path: Path, broker: Broker) -> None:
    """The screen updates live: /api/stream sends the state again when it changes."""

    async def scenario() -> None:
        async with oms_for(broker) as oms, node_in_process(node_file(tmp_path, broker)) as running:
            await asyncio.wait_for(running.node.online.wait(), 10)
            url = json.loads((running.config.state_dir / "control.json").read_text())["url"]
            host, port = url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n")

            async def next_state() -> dict:
                while True:
                    line = await asyncio.wait_for(reader.readline(), 5)
                    if line.startswith(b"data: "):
                        return json.loads(line[6:])

            first = await next_state()
            assert first["lights"]["A3"] is None
            tasks = [PickTask(task="t9", order="o9", location="A3", sku="S", qty=4)]
            await oms.call("zone-a1", "pick", {"tasks": [t.model_dump() for t in tasks]})
            update = await next_state()
            while update["lights"]["A3"] is None:
                update = await next_state()
            lit = {"colour": "blue", "pattern": "steady", "qty": 4, "text": None}
            assert update["lights"]["A3"] == lit
            writer.close()

    asyncio.run(scenario())
