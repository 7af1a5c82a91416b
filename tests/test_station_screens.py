"""The dispatch and returns screens in a real headless browser (Debian's chromium), updated
live over SSE while the simulated devices are driven through the control API, at the Pi
7-inch display's 800x480."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agent.oms.demo.broker import LocalBroker
from tests.browser import Page, browser, needs_chromium
from tests.harness import NodeProcess, oms_for
from tests.test_dispatch_e2e import NODE as DOCK
from tests.test_dispatch_e2e import dock_node_file, parcels, sscc
from tests.test_dispatch_e2e import started as dock_started
from tests.test_picking_e2e import Control, run
from tests.test_returns_e2e import GTIN_MUG, returns_node_file, rmas
from tests.test_returns_e2e import NODE as RETURNS
from tests.test_returns_e2e import started as returns_started

pytestmark = pytest.mark.broker

VIEWPORT = (800, 480)
GTIN_OTHER = "4012345000009"


def fits(page: Page) -> bool:
    """Whether the page needs no scrolling at the viewport's size."""
    return bool(
        page.evaluate(
            "document.documentElement.scrollHeight <= window.innerHeight"
            " && document.documentElement.scrollWidth <= window.innerWidth"
        )
    )


@needs_chromium
def test_dispatch_screen_shows_the_lane_to_load_urgency_refusals_and_loads_live(
    tmp_path: Path, broker: LocalBroker
) -> None:
    node = NodeProcess(dock_node_file(tmp_path, broker))
    control = Control(tmp_path / DOCK)

    async def scenario() -> None:
        async with oms_for(broker) as oms:
            await dock_started(node, control, oms)
            past = int(time.time() * 1000) - 60_000
            await oms.call(
                DOCK,
                "load",
                parcels((0, "DPD", {"express": True}), (1, "UPS", {"cutoff": past})),
            )
            wait = asyncio.to_thread
            with browser() as page:
                await wait(page.open, control.url + "/")
                await wait(page.viewport, *VIEWPORT)
                await wait(page.wait_text, "#waiting", "PAST CUT-OFF")
                await wait(page.wait_text, f'li[data-parcel="{sscc(0)}"]', "EXPRESS")
                await wait(page.wait_text, "#prompt", "Scan a parcel label")
                await control.scan(sscc(0))
                await wait(page.wait_text, "#pending", "DPD → lane L1")
                await wait(page.wait_text, 'tr[data-lane="L1"] .light', "Prio")
                assert "off" in await wait(page.wait_text, 'tr[data-lane="L2"] .light', "off")
                await control.press("L2")
                await wait(page.wait_text, "#notice", "Wrong lane: L2 is UPS")
                assert "level-error" in page.html("#notice")
                await wait(page.wait_text, "#refusals", "Wrong lane")
                await control.press("L1")
                await wait(page.wait_text, "#notice", f"Parcel {sscc(0)} loaded on lane L1")
                await wait(page.wait_text, 'tr[data-lane="L1"] .loaded', "1")
                await wait(page.wait_text, "#recent", "O-0 → L1")
                await control.scan(sscc(1))
                await wait(page.wait_text, 'tr[data-lane="L2"] .light', "LAtE")
                await control.scan("LANE-L2")
                await wait(page.wait_text, "#recent", "AFTER CUT-OFF")
                assert await wait(fits, page), "the dispatch screen scrolls at 800x480"
                await control.scan("CLOSE-L1")
                await wait(page.wait_text, "#notice", "Manifest DPD-0001 closed: 1 parcel shipped.")

    run(node, scenario)


@needs_chromium
def test_returns_screen_shows_the_rma_unit_flag_bin_and_summary_live(
    tmp_path: Path, broker: LocalBroker
) -> None:
    node = NodeProcess(returns_node_file(tmp_path, broker))
    control = Control(tmp_path / RETURNS)

    async def scenario() -> None:
        async with oms_for(broker) as oms:
            await returns_started(node, control, oms)
            await oms.call(RETURNS, "rma", rmas("R1"))
            wait = asyncio.to_thread
            with browser() as page:
                await wait(page.open, control.url + "/")
                await wait(page.viewport, *VIEWPORT)
                await wait(page.wait_text, "#announced", "R1")
                await control.scan("TRK-R1")
                await wait(page.wait_text, "#return-head", "Return R1 · order O-R1")
                await wait(page.wait_text, '[data-sku="MUG"]', "defective")
                await control.scan(GTIN_MUG)
                await wait(page.wait_text, "#unit", "the customer says: defective")
                await control.scan("REASON-defective")
                await control.scan("GRADE-D")
                await wait(page.wait_text, "#unit", "RETURN TO VENDOR → bin B4")
                await wait(page.wait_text, 'tr[data-bin="B4"] .light', "rtv")
                await control.press("B1")
                await wait(page.wait_text, "#notice", "Wrong bin")
                assert "level-error" in page.html("#notice")
                await control.press("B4")
                await wait(page.wait_text, '[data-sku="MUG"] .progress', "1 / 2")
                await wait(
                    page.wait_text, "#recent", "MUG → return to vendor (B4): defective, grade D, R1"
                )
                assert "REASON-" not in page.evaluate("document.body.innerText")  # words, not codes
                await control.scan(GTIN_OTHER)  # nobody's: flagged, still received
                await wait(page.wait_text, "#unit", "NOT IN THE RMA")
                await control.scan("REASON-wrong_item_sent")
                await control.scan("GRADE-A")
                await wait(page.wait_text, "#unit", "RESTOCK → bin B1")
                await control.press("B1")
                await wait(page.wait_text, "#extra", f"1 \u00d7 {GTIN_OTHER}")
                assert await wait(fits, page), "the returns screen scrolls at 800x480"
                await control.scan("CLOSE")
                await wait(
                    page.wait_text, "#notice", "Return R1 closed: 2 units received, 2 missing."
                )
                await wait(page.wait_text, "#return-head", "No return open")

    run(node, scenario)
