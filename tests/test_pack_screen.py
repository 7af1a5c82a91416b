"""The pack screen in a real headless browser (Debian's chromium), updated live over SSE.

``--dump-dom`` dumps once, right after load, so it cannot see a live update. These tests
keep one page open and read its DOM repeatedly through the DevTools protocol over
``--remote-debugging-pipe`` (fds 3 and 4, NUL-separated JSON): load the page, act on the
simulated devices through the control API, then wait until the page shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.localbroker import LocalBroker
from tests.browser import CHROMIUM, needs_chromium
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


class Page:
    """One headless chromium tab, driven through the DevTools protocol on a pipe."""

    def __init__(self, proc: subprocess.Popen[bytes], to_browser: int, from_browser: int) -> None:
        self.proc = proc
        self._out = to_browser
        self._in = from_browser
        self._buffer = b""
        self._id = 0
        self.session: str | None = None

    def _send(self, method: str, params: dict[str, Any], session: bool = True) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session and self.session is not None:
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            while b"\0" not in self._buffer:
                chunk = os.read(self._in, 65536)
                if not chunk:
                    raise AssertionError("chromium closed the DevTools pipe")
                self._buffer += chunk
            raw, _, self._buffer = self._buffer.partition(b"\0")
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]  # type: ignore[no-any-return]
        raise AssertionError(f"no answer to {method}")

    def open(self, url: str) -> None:
        target = self._send("Target.createTarget", {"url": url}, session=False)["targetId"]
        attached = self._send(
            "Target.attachToTarget", {"targetId": target, "flatten": True}, session=False
        )
        self.session = attached["sessionId"]

    def evaluate(self, expression: str) -> Any:
        result = self._send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result["result"].get("value")

    def wait_text(self, selector: str, expected: str, timeout: float = 15) -> str:
        """Wait until the element's text contains ``expected``; returns the text."""
        text = ""
        deadline = time.monotonic() + timeout
        query = f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''"
        while time.monotonic() < deadline:
            text = self.evaluate(query)
            if expected in text:
                return str(text)
            time.sleep(0.05)
        raise AssertionError(f"{selector} shows {text!r}, expected {expected!r}")

    def html(self, selector: str) -> str:
        query = f"(document.querySelector({json.dumps(selector)}) || {{}}).outerHTML || ''"
        return str(self.evaluate(query))


@contextlib.contextmanager
def browser() -> Iterator[Page]:
    """A headless chromium with the DevTools protocol on fds 3 (in) and 4 (out)."""
    assert CHROMIUM is not None
    to_read, to_write = os.pipe()  # chromium reads commands from its fd 3
    from_read, from_write = os.pipe()  # and writes answers to its fd 4

    def plumb() -> None:
        os.dup2(to_read, 3)
        os.dup2(from_write, 4)

    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=plumb,  # the DevTools pipe must be on fds 3 and 4
            close_fds=False,
        )
        os.close(to_read)
        os.close(from_write)
        try:
            yield Page(proc, to_write, from_read)
        finally:
            os.close(to_write)
            os.close(from_read)
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


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
                progress = await wait(page.wait_text, 'tr[data-sku="S1"] .progress', "1 / 2")
                assert progress == "1 / 2"
                await wait(page.wait_text, "#special", "Gift note: Happy birthday!")
                await wait(page.wait_text, "#box", "Take box M")
                await wait(page.wait_text, "#box", "Air pillows (90 % protection)")
                await wait(page.wait_text, 'tr[data-sku="S2"]', "FRAGILE")
                await scans(control, GTIN_B)
                await wait(page.wait_text, "#notice", f"{GTIN_B} is not in order o1. Put it aside.")
                assert "level-error" in page.html("#notice")
                await wait(page.wait_text, "#notice .tag", "STOP")
                await wait(page.wait_text, "#refusals", "is not in order o1")
                await scans(control, GTIN_A, "S2-CODE", "S2-CODE")
                await wait(page.wait_text, "#notice", "S2: all 1 already scanned")
                await wait(page.wait_text, "#slip-job", "packing slip printed: put it in the box")
                await wait(page.wait_text, "#slip-printer", "ready")
                assert 'class="done"' in page.html('tr[data-sku="S1"]')
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
                await wait(page.wait_text, "#notice", "The label has not printed")
                await control.post("/sim/label/set", {"state": "ready"})
                await wait(page.wait_text, "#notice", "Order o1 packed")
                assert "level-ok" in page.html("#notice")
                await wait(page.wait_text, "#printer", "ready")
                await wait(page.wait_text, "#order-head", "No order open")
            await wait_for(control, lambda w: w["counts"].get("orders_packed") == 1)

    run(node, scenario)
