"""Returns station end to end: the node as a child process, a real broker, the simulated
scanner (pty), bin lights and buttons (MockFactory pins) and Zebra printer (TCP), driven
and read only through the node's HTTP control API; a SIGKILL in the middle of a return."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agent.oms import OmsClient
from agent.oms.demo.broker import LocalBroker
from tests.harness import SITE, NodeProcess, oms_for
from tests.test_picking_e2e import DARK, Control, body, next_events, run, wait_online

pytestmark = pytest.mark.broker

NODE = "returns-e1"
SKIP = ("reply",)
GTIN_MUG = "4006381333931"
GTIN_VASE = "5901234123457"
BINS = ["restock", "refurbish", "quarantine", "return_to_vendor", "dispose"]


def returns_node_file(tmp_path: Path, broker: LocalBroker) -> Path:
    """Five bins (LED and button each) for the five dispositions, a scanner, a ZPL printer."""
    lines = [
        f'site = "{SITE}"',
        f'node = "{NODE}"',
        'role = "returns"',
        f'state_dir = "{tmp_path / NODE}"',
        "[broker]",
        f'urls = ["{broker.url}"]',
        "keepalive_s = 5",
        "backoff_initial_s = 0.05",
        "backoff_max_s = 0.5",
        "[settings.bins]",
        *(f'{d} = "B{n}"' for n, d in enumerate(BINS, 1)),
        "[[devices]]",
        'name = "shelf"',
        'kind = "gpio_slots"',
        "double_press_s = 0",
    ]
    for n in range(5):
        lines += ["[[devices.slots]]", f'id = "B{n + 1}"', f"led = {2 + 2 * n}"]
        lines += [f"confirm = {3 + 2 * n}"]
    lines += [
        "[[devices]]",
        'name = "scanner"',
        'kind = "serial_scanner"',
        'port = "/dev/zone-agent-sim"',
        "dedupe_window_s = 0",
        "[[devices]]",
        'name = "label"',
        'kind = "zpl_printer"',
        'host = "127.0.0.1"',
        "status_timeout_s = 0.5",
        "retry_initial_s = 0.1",
        "retry_max_s = 0.5",
        "idle_poll_s = 30",
    ]
    path = tmp_path / f"{NODE}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def rmas(*ids: str) -> dict[str, Any]:
    return {
        "rmas": [
            {
                "rma": rma_id,
                "order": f"O-{rma_id}",
                "tracking": f"TRK-{rma_id}",
                "lines": [
                    {"sku": "MUG", "qty": 2, "barcodes": [GTIN_MUG], "reason": "defective"},
                    {"sku": "VASE", "qty": 1, "barcodes": [GTIN_VASE]},
                ],
            }
            for rma_id in ids
        ]
    }


async def started(node: NodeProcess, control: Control, oms: OmsClient) -> None:
    node.start()
    assert node.proc is not None
    await control.connect(node.proc.pid)
    await wait_online(oms, NODE)


async def workflow(control: Control) -> dict[str, Any]:
    return (await control.get("/api/state"))["workflow"]  # type: ignore[no-any-return]


async def wait_for(control: Control, check: Any, timeout: float = 10) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                seen = await workflow(control)
                if check(seen):
                    return seen
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"the node's state never got there: {seen}") from None


def test_a_return_with_flags_refusals_labels_and_the_closing_summary(
    tmp_path: Path, broker: LocalBroker
) -> None:
    node = NodeProcess(returns_node_file(tmp_path, broker))
    control = Control(tmp_path / NODE)

    async def scenario() -> None:
        async with oms_for(broker) as oms:
            await oms.wait_connected()
            await started(node, control, oms)
            assert oms.nodes[NODE].state.role == "returns"  # type: ignore[union-attr]
            assert (await oms.call(NODE, "rma", rmas("R1"))).status == "accepted"
            await control.scan(GTIN_MUG)  # nothing open: refused
            await control.scan("TRK-R1")
            await control.scan("01" + "0" + GTIN_MUG, symbology="]d2")  # GS1 DataMatrix
            await control.scan("REASON-defective")
            await control.scan("GRADE-C")  # C x defective -> return to vendor, B4
            await control.wait_slot("B4", {"on": True})
            await control.press("B1")  # wrong bin
            await control.press("B4")
            await control.wait_slot("B4", DARK)
            for _ in range(2):  # the vase, then a second one nobody announced
                await control.scan(GTIN_VASE)
                await control.scan("GRADE-A")
                await control.scan("REASON-no_longer_needed")
                await control.wait_slot("B1", {"on": True})
                await control.press("B1")
                await control.wait_slot("B1", DARK)
            await control.scan("CLOSE")
            got = await next_events(oms, 7, skip=SKIP)
            assert [(e.name, body(e).get("reason")) for e in got] == [
                ("return_refused", "no_return"),
                ("return_opened", None),
                ("return_refused", "wrong_bin"),
                ("return_received", "defective"),
                ("return_received", "no_longer_needed"),
                ("return_received", "no_longer_needed"),
                ("return_closed", None),
            ]
            first, vase, extra = (body(e) for e in got[3:6])
            assert (first["sku"], first["disposition"], first["bin"]) == (
                "MUG",
                "return_to_vendor",
                "B4",
            )
            assert (vase["flag"], extra["flag"], extra["sku"]) == (None, "surplus", "VASE")
            closed = body(got[6])
            assert (closed["units_received"], closed["units_missing"]) == (3, 1)
            printer = await control.get("/sim/label")
            assert len(printer["jobs"]) == 3 and "RMA R1" in printer["jobs"][0]

    run(node, scenario)


def test_sigkill_mid_return_loses_nothing_and_receives_nothing_twice(
    tmp_path: Path, broker: LocalBroker
) -> None:
    node = NodeProcess(returns_node_file(tmp_path, broker))
    control = Control(tmp_path / NODE)

    async def scenario() -> None:
        async with oms_for(broker, resend_s=0.5) as oms:
            await oms.wait_connected()
            await started(node, control, oms)
            await oms.call(NODE, "rma", rmas("R1", "R2"))
            await control.scan("R1")
            await control.scan(GTIN_MUG)
            await control.scan("REASON-size_or_fit")
            await control.scan("GRADE-A")
            await control.wait_slot("B1", {"on": True})
            await control.press("B1")  # the first unit: received
            await control.scan(GTIN_MUG)
            await control.scan("REASON-defective")
            await control.scan("GRADE-B")  # the second: graded, its bin B2 lit ...
            # The light, not the screen: the node lights only after the commit, while the
            # screen shows the workflow's state at once (a kill in between loses the grade
            # scan, as a power cut may lose input not yet on disk, but no event).
            await control.wait_slot("B2", {"on": True})
            node.kill()  # ... and the power goes
            late = oms.send(NODE, "rma", rmas("R3"))
            await started(node, control, oms)
            await control.wait_slot("B2", {"on": True})  # lit again from the store
            assert (await late).status == "accepted"
            screen = await workflow(control)
            assert screen["phase"] == "put" and screen["return"]["rma"] == "R1"
            await control.press("B2")
            await control.scan(GTIN_VASE)
            await control.scan("REASON-other")
            await control.scan("GRADE-D")
            await control.wait_slot("B5", {"on": True})
            await control.press("B5")
            await control.scan("CLOSE")
            await control.scan("R1")  # closed: refused
            got = await next_events(oms, 6, skip=SKIP)
            assert [e.name for e in got] == [
                "return_opened",
                "return_received",
                "return_received",
                "return_received",
                "return_closed",
                "return_refused",
            ]
            units = [body(e) for e in got if e.name == "return_received"]
            assert [(u["unit"], u["sku"], u["disposition"]) for u in units] == [
                (1, "MUG", "restock"),
                (2, "MUG", "refurbish"),
                (3, "VASE", "dispose"),
            ]
            assert body(got[4])["units_missing"] == 0
            assert body(got[5])["reason"] == "already_closed"
            await oms.call(NODE, "ping", {})
            rest = [oms.events.get_nowait() for _ in range(oms.events.qsize())]
            assert [e.name for e in rest if e.name not in SKIP] == []
            assert len((await control.get("/sim/label"))["jobs"]) == 2  # since the restart

    run(node, scenario)
