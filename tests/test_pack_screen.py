"""The pack screen in a real headless browser (Debian's chromium), updated live over SSE.

``--dump-dom`` dumps once, right after load, so it cannot see a live update. These tests
keep one page open (``tests.browser.browser``) and read its DOM repeatedly: load the page,
act on the simulated devices through the control API, then wait until the page shows it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agent.oms.demo.broker import LocalBroker
from tests.browser import browser, needs_chromium
from tests.harness import NodeProcess, oms_for
from tests.test_packing_e2e import (
    GTIN_A,
    GTIN_B,
    NODE,
    order,
    pack_node_file,
    scale,
    scans,
    started,
    wait_for,
)
from tests.test_picking_e2e import Control, run

pytestmark = pytest.mark.broker


def test_pack_page_is_served_with_its_state(tmp_path: Path, broker: LocalBroker) -> None:
    node = NodeProcess(pack_node_file(tmp_path, broker))
    control = Control(tmp_path / NODE)

    async def scenario() -> None:
        async with oms_for(broker) as oms:
            await started(node, control, oms)
            page = await control.get("/api/state")
            assert page["role"] == "pack"
            assert page["workflow"]["phase"] == "idle"
            assert page["workflow"]["devices"] == {
                "label_printer": "label",
                "slip_printer": None,
                "scale": "scale",
            }

    run(node, scenario)


@needs_chromium
def test_pack_screen_shows_progress_refusals_weight_verdict_and_printer_live(
    tmp_path: Path, broker: LocalBroker
) -> None:
    node = NodeProcess(pack_node_file(tmp_path, broker, slip=True))
    control = Control(tmp_path / NODE)

    async def scenario() -> None:
        async with oms_for(broker) as oms:
            await started(node, control, oms)
            await oms.call(
                NODE, "pack", order("o1", gift_note="Happy birthday!", packing_slip=True)
            )
            with browser() as page:
                await asyncio.to_thread(page.open, control.url + "/")
                wait = asyncio.to_thread
                await wait(page.wait_text, "#queue", "o1 (tote T-o1), 3 items")
                await wait(page.wait_text, "#prompt", "Scan an order or tote barcode")
                # Live: each scan changes the page without a reload.
                await scans(control, "T-o1", GTIN_A)
                progress = await wait(page.wait_text, '[data-sku="S1"] .progress', "1 / 2")
                assert progress == "1 / 2"
                await wait(page.wait_text, "#special", "Gift note: Happy birthday!")
                await wait(page.wait_text, "#box", "Take box M")
                await wait(page.wait_text, "#box", "Air pillows (90 % protection)")
                await wait(page.wait_text, '[data-sku="S2"]', "FRAGILE")
                await scans(control, GTIN_B)
                await wait(page.wait_text, "#notice", f"{GTIN_B} is not in order o1. Put it aside.")
                assert "level-error" in page.html("#notice")
                await wait(page.wait_text, "#notice .tag", "STOP")
                await wait(page.wait_text, "#refusals", "is not in order o1")
                await scans(control, GTIN_A, "S2-CODE", "S2-CODE")
                await wait(page.wait_text, "#notice", "S2: the one ordered is already scanned")
                await wait(page.wait_text, "#slip-job", "packing slip printed: put it in the box")
                await wait(page.wait_text, "#slip-printer", "ready")
                assert 'class="line done"' in page.html('[data-sku="S1"]')
                # The scale: moving, then a stable overweight reading and its verdict.
                await control.scan("CONFIRM")
                await scale(control, 1400.0, "moving")
                await wait(page.wait_text, "#scale-state", "waiting for a stable weight")
                await scale(control, 1400.0)
                await wait(page.wait_text, "#check", "TOO HEAVY")
                await wait(page.wait_text, "#check", "expected 847 g ± 50 g, weighed 1,400 g")
                await wait(page.wait_text, "#notice", "Too heavy by 553 g")
                await scale(control, 2_000_000.0, "overload")
                await wait(page.wait_text, "#scale-state", "SCALE OVERLOADED")
                # The printer: out of paper while the label waits, then back.
                await control.post("/sim/label/set", {"state": "paper_out"})
                await scale(control, 850.0)
                await wait(page.wait_text, "#check", "WEIGHT OK")
                await wait(page.wait_text, "#printer", "PROBLEM")
                await wait(page.wait_text, "#label-job", "o1-label: NOT PRINTED YET")
                await wait(page.wait_text, "#notice", "Label not printed yet")
                await control.post("/sim/label/set", {"state": "ready"})
                await wait(page.wait_text, "#notice", "Order o1 packed")
                assert "level-ok" in page.html("#notice")
                await wait(page.wait_text, "#printer", "ready")
                await wait(page.wait_text, "#order-head", "No order open")
                # o1 is done: its refusal leaves the screen, and the parcel still on the
                # scale is no order's weight.
                assert await wait(page.wait_text, "#refusals", "none") == "none"
                assert await wait(page.wait_text, "#weight", "—") == "—"
            await wait_for(control, lambda w: w["counts"].get("orders_packed") == 1)

    run(node, scenario)


def _one_unit_order(order_id: str) -> dict[str, Any]:
    body = order(order_id)
    body["lines"] = body["lines"][1:]  # the vase alone: one unit
    return body


VIEWPORT = (800, 480)  # the Raspberry Pi 7-inch touch display


@needs_chromium
def test_pack_screen_at_800x480_shows_printers_slips_and_queue_without_scrolling(
    tmp_path: Path, broker: LocalBroker
) -> None:
    node = NodeProcess(pack_node_file(tmp_path, broker, slip=True, idle_poll_s=0.2))
    control = Control(tmp_path / NODE)
    width, height = VIEWPORT

    async def scenario() -> None:
        async with oms_for(broker) as oms:
            await started(node, control, oms)
            await oms.call(NODE, "pack", order("o1", gift_note="Happy birthday!"))
            await oms.call(NODE, "pack", order("o2", express=True))
            await oms.call(NODE, "pack", _one_unit_order("o3"))
            with browser() as page:
                await asyncio.to_thread(page.open, control.url + "/")
                page.viewport(width, height)
                wait = asyncio.to_thread
                # No order open: the orders waiting are what the packer takes next.
                await wait(page.wait_text, "#lines", "o3 (tote T-o3), 1 item")
                last = "document.querySelector('#lines .line:last-child').innerText"
                assert page.evaluate(last) == "o3 (tote T-o3), 1 item"  # not "1 items"
                await scans(control, "T-o1", GTIN_A, GTIN_B)
                await wait(page.wait_text, "#notice", f"{GTIN_B} is not in order o1")
                await wait(page.wait_text, "#order-head", "1 of 3 items scanned")
                # The label printer runs out of paper while idle: it must be in view.
                await control.post("/sim/label/set", {"state": "paper_out"})
                await wait(page.wait_text, "#printer", "PROBLEM")
                assert page.evaluate("innerWidth") == width
                assert page.evaluate("innerHeight") == height
                # The printer's fault is one line on top, named in words.
                await wait(page.wait_text, "#banner", "DEVICE FAULT: label: ")
                # The banners (node line, fault, notice, prompt) are a slim strip, not 40 %.
                assert page.rect("#prompt")["bottom"] <= 0.3 * height
                # Nothing needs a scroll: not the page, and not what a packer must see.
                assert page.evaluate("document.documentElement.scrollHeight") <= height
                assert page.evaluate("document.documentElement.scrollWidth") <= width
                for selector in (
                    "#notice",
                    "#lines",
                    "#box",
                    "#weight",
                    "#printer",
                    "#slip-printer",
                    "#refusals li",
                ):
                    box = page.rect(selector)
                    assert box["height"] > 0, selector
                    assert box["top"] >= 0 and box["bottom"] <= height, (selector, box)
                    assert box["left"] >= 0 and box["right"] <= width, (selector, box)

    run(node, scenario)
