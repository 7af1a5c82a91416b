"""Pack station end to end: the node as a child process, a real broker, and its simulated
scanner (pty), MT-SICS scale (pty) and Zebra printer (TCP) driven and read only through the
node's HTTP control API (docs/simulation.md, "Pack station"). The packing slip test runs the
node in this process, to read the bytes its simulated ESC/POS printer kept."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agent.app import device_context
from agent.config import load_config
from agent.floor import DeviceFloor
from agent.oms import NodeEvent, OmsClient
from agent.oms.demo.broker import LocalBroker
from agent.workflows.base import Print, PrintSlip, Slip
from agent.workflows.packing import PackingWorkflow
from devices.printers.base import PrintResult
from devices.printers.sim import EscposSimulator
from tests.harness import SITE, NodeProcess, Running, node_in_process, oms_for
from tests.test_picking_e2e import Control, body, next_events, run

pytestmark = pytest.mark.broker

NODE = "pack-e1"
GTIN_A = "4006381333931"
GTIN_B = "5901234123457"
SSCC = "376104250021234569"
SKIP = ("reply", "pack_counters")


def pack_node_file(
    tmp_path: Path,
    broker: LocalBroker,
    *,
    node: str = NODE,
    label_timeout_s: float = 1,
    idle_poll_s: float = 30,
    slip: bool = False,
) -> Path:
    """A pack station: serial scanner, MT-SICS scale, ZPL printer and, with ``slip``, an
    ESC/POS slip printer (all simulated); ``idle_poll_s``: the printers' idle status poll."""
    lines = [
        f'site = "{SITE}"',
        f'node = "{node}"',
        'role = "pack"',
        f'state_dir = "{tmp_path / node}"',
        "[broker]",
        f'urls = ["{broker.url}"]',
        "keepalive_s = 5",
        "backoff_initial_s = 0.05",
        "backoff_max_s = 0.5",
        "[settings]",
        f"label_timeout_s = {label_timeout_s}",
        "counters_every_s = 0",
        'gs1_company_prefix = "7610425"',
        "[settings.supervisors]",
        '"SUP-7731" = "maria"',
        "[[devices]]",
        'name = "scanner"',
        'kind = "serial_scanner"',
        'port = "/dev/zone-agent-sim"',
        "dedupe_window_s = 0",
        "[[devices]]",
        'name = "scale"',
        'kind = "mt_sics"',
        'port = "/dev/zone-agent-sim-scale"',
        "poll_interval = 0.05",
        "[[devices]]",
        'name = "label"',
        'kind = "zpl_printer"',
        'host = "127.0.0.1"',
        "status_timeout_s = 0.5",
        "retry_initial_s = 0.1",
        "retry_max_s = 0.5",
        f"idle_poll_s = {idle_poll_s}",
    ]
    if slip:
        lines += [
            "[[devices]]",
            'name = "slip"',
            'kind = "escpos_printer"',
            'host = "127.0.0.1"',
            "port = 9101",  # the simulator listens on a free port of its own
            "status_timeout_s = 0.5",
            "retry_initial_s = 0.1",
            "retry_max_s = 0.5",
            f"idle_poll_s = {idle_poll_s}",
        ]
    path = tmp_path / f"{node}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def order(order_id: str, **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "order": order_id,
        "tote": f"T-{order_id}",
        "lines": [
            {
                "sku": "S1",
                "qty": 2,
                "barcodes": [GTIN_A],
                "unit_weight_g": 200,
                "dims_mm": [100, 80, 50],
                "description": "Mug",
            },
            {
                "sku": "S2",
                "qty": 1,
                "barcodes": ["S2-CODE"],
                "unit_weight_g": 150,
                "dims_mm": [120, 100, 60],
                "fragile": True,
                "description": "Vase",
            },
        ],
        "label": {
            "ship_to": {"name": "Ann Smith", "address": ["1 High St"], "city": "Leeds"},
            "carrier": "DPD",
            "service": "Next day",
            "sscc": SSCC,
        },
    }
    out.update(kw)
    return out


async def wait_online(oms: OmsClient, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not (oms.nodes.get(NODE) and oms.nodes[NODE].online):
            await asyncio.sleep(0.02)


async def started(node: NodeProcess, control: Control, oms: OmsClient) -> None:
    node.start()
    assert node.proc is not None
    await control.connect(node.proc.pid)
    await wait_online(oms)


async def workflow(control: Control) -> dict[str, Any]:
    return (await control.get("/api/state"))["workflow"]  # type: ignore[no-any-return]


async def wait_for(control: Control, check: Any, timeout: float = 10) -> dict[str, Any]:
    """Poll the node's state until ``check(workflow)`` holds."""
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


async def scale(control: Control, grams: float, mode: str = "stable") -> None:
    await control.post("/sim/scale/set", {"grams": grams, "mode": mode})


async def empty_scale(control: Control) -> None:
    await scale(control, 0)
    await wait_for(control, lambda w: w["weight"] is not None and w["weight"]["grams"] == 0)


async def scans(control: Control, *codes: str) -> None:
    for code in codes:
        await control.scan(code)


def named(events: list[NodeEvent]) -> dict[str, dict[str, Any]]:
    return {e.name: body(e) for e in events}


def test_pack_station_orders_refusals_override_and_paper_out(
    tmp_path: Path, broker: LocalBroker
) -> None:
    node = NodeProcess(pack_node_file(tmp_path, broker))
    control = Control(tmp_path / NODE)
    carrier = "^XA\n^FO50,50^A0N,40,40^FDDPD label for o2^FS\n^BCN,100^FD123^FS\n^XZ"

    async def scenario() -> None:
        async with oms_for(broker) as oms:
            await started(node, control, oms)
            # --- a correct order with a wrong, a surplus and a GS1 scan ---------------
            assert (await oms.call(NODE, "pack", order("o1"))).status == "accepted"
            await scans(control, "T-o1", GTIN_A, GTIN_B)
            [refused] = await next_events(oms, 1, SKIP)
            assert (refused.name, body(refused)["reason"]) == ("pack_refused", "wrong_item")
            await control.scan(f"01{GTIN_A.zfill(14)}10LOT42", "]d2")  # GS1 DataMatrix
            await scans(control, "S2-CODE", "S2-CODE")
            verified, surplus = await next_events(oms, 2, SKIP)
            assert (verified.name, body(verified)["units"]) == ("verified", 3)
            assert (surplus.name, body(surplus)["reason"]) == ("pack_refused", "surplus")
            shown = await workflow(control)
            assert [ln["scanned"] for ln in shown["order"]["lines"]] == [2, 1]
            assert shown["order"]["box"]["suggested"] == "M"
            await control.scan("CONFIRM")
            await scale(control, 850.0)
            events = named(await next_events(oms, 3, SKIP))
            assert events["weighed"]["verdict"] == "pass"
            assert events["weighed"]["expected_g"] == 847.4
            assert events["label_printed"]["job_id"] == "o1-label"
            packed = events["packed"]
            assert (packed["box"], packed["weight_g"], packed["check"]) == ("M", 850.0, "pass")
            assert packed["started_at"] <= packed["verified_at"] <= packed["weighed_at"]
            assert packed["weighed_at"] <= packed["labelled_at"]
            jobs = (await control.get("/sim/label"))["jobs"]
            assert len(jobs) == 1 and f"^FD>;>800{SSCC}^FS" in jobs[0]

            # --- an overweight parcel released by a supervisor; carrier ZPL as sent ---
            await empty_scale(control)
            await oms.call(NODE, "pack", order("o2", label=None, carrier_zpl=carrier.encode()))
            await scans(control, "o2", GTIN_A, GTIN_A, "S2-CODE", "BOX-M")
            await scale(control, 1300.0)
            verified, weighed = await next_events(oms, 2, SKIP)
            assert (weighed.name, body(weighed)["verdict"]) == ("weighed", "over")
            await wait_for(control, lambda w: w["phase"] == "weigh_failed")
            await scans(control, "SUP-7731", "REASON-extra_packaging")
            events = named(await next_events(oms, 3, SKIP))
            override = events["weighed"]
            assert (override["verdict"], override["supervisor"], override["reason"]) == (
                "override",
                "maria",
                "extra_packaging",
            )
            assert events["packed"]["check"] == "override"
            jobs = (await control.get("/sim/label"))["jobs"]
            assert jobs[1:] == [carrier]  # byte for byte

            # --- printer out of paper, then recovered: printed exactly once ---------
            await empty_scale(control)
            await control.post("/sim/label/set", {"state": "paper_out"})
            await oms.call(NODE, "pack", order("o3"))
            await scans(control, "T-o3", GTIN_A, GTIN_A, "S2-CODE", "CONFIRM")
            await scale(control, 845.0)
            verified, weighed, delayed = await next_events(oms, 3, SKIP, timeout=20)
            assert body(weighed)["verdict"] == "pass"
            assert (delayed.name, body(delayed)["job_id"]) == ("print_delayed", "o3-label")
            state = await control.get("/api/state")
            assert state["devices"]["label"]["status"] == "fault"
            assert state["workflow"]["order"]["label"]["late"] is True
            await control.post("/sim/label/set", {"state": "ready"})
            events = named(await next_events(oms, 2, SKIP, timeout=20))
            assert events["label_printed"]["job_id"] == "o3-label"
            assert events["packed"]["order"] == "o3"
            jobs = (await control.get("/sim/label"))["jobs"]
            assert len(jobs) == 3 and "o3" in jobs[2]
            await asyncio.sleep(0.5)
            assert len((await control.get("/sim/label"))["jobs"]) == 3
            assert node.terminate() == 0

    run(node, scenario)


def test_pack_station_restart_mid_order(tmp_path: Path, broker: LocalBroker) -> None:
    node = NodeProcess(pack_node_file(tmp_path, broker))
    control = Control(tmp_path / NODE)

    async def scenario() -> None:
        async with oms_for(broker) as oms:
            await started(node, control, oms)
            await oms.call(NODE, "pack", order("o4"))
            await scans(control, "T-o4", GTIN_A, "BOX-L")
            await wait_for(control, lambda w: w["order"] and w["order"]["box"]["chosen"] == "L")
            await asyncio.sleep(0.2)  # the screen may show a step before its commit ends
            node.kill()
            node.start()
            assert node.proc is not None
            await control.connect(node.proc.pid)
            shown = await wait_for(control, lambda w: w["order"] is not None)
            assert shown["phase"] == "verify"
            assert [ln["scanned"] for ln in shown["order"]["lines"]] == [1, 0]
            assert shown["order"]["box"]["chosen"] == "L"
            await wait_online(oms)
            await scans(control, GTIN_A, "S2-CODE", "BOX-M")
            await scale(control, 850.0)
            events = named(await next_events(oms, 4, SKIP))
            assert set(events) == {"verified", "weighed", "label_printed", "packed"}
            assert events["packed"]["box"] == "M" and events["packed"]["units"] == 3
            assert len((await control.get("/sim/label"))["jobs"]) == 1

    run(node, scenario)


def test_label_printer_fault_is_reported_at_once_and_the_held_label_prints_once(
    tmp_path: Path, broker: LocalBroker
) -> None:
    # label_timeout_s is 10 minutes: a print_delayed within the test comes from the health.
    path = pack_node_file(tmp_path, broker, label_timeout_s=600, idle_poll_s=0.2)
    node = NodeProcess(path)
    control = Control(tmp_path / NODE)
    no_reply = "printer fault: no status reply: media out, head open or offline"

    async def label_status(status: str) -> None:
        async with asyncio.timeout(10):
            while (await control.get("/api/state"))["devices"]["label"]["status"] != status:
                await asyncio.sleep(0.02)

    async def scenario() -> None:
        async with oms_for(broker) as oms:
            await started(node, control, oms)
            # --- the media runs out while the label prints: the printer holds it -------
            await oms.call(NODE, "pack", order("p1"))
            await scans(control, "T-p1", GTIN_A, GTIN_A, "S2-CODE", "CONFIRM")
            await control.post("/sim/label/set", {"state": "paper_out", "after_formats": 1})
            await scale(control, 850.0)
            verified, weighed, delayed = await next_events(oms, 3, SKIP, timeout=20)
            assert (verified.name, weighed.name, body(weighed)["verdict"]) == (
                "verified",
                "weighed",
                "pass",
            )
            problem = body(delayed)
            assert (delayed.name, problem["job_id"], problem["document"]) == (
                "print_delayed",
                "p1-label",
                "label",
            )
            assert problem["reason"] == no_reply
            shown = await wait_for(control, lambda w: w["notice"]["level"] == "error")
            assert shown["notice"]["message"]["id"] == "pack.label_late"  # why: in the event
            assert shown["order"]["label"]["late"] is True
            assert (await control.get("/api/state"))["devices"]["label"]["status"] == "fault"
            assert (await control.get("/sim/label"))["pending"] == 1
            await control.post("/sim/label/set", {"state": "ready"})
            events = named(await next_events(oms, 2, SKIP, timeout=20))
            assert events["label_printed"]["job_id"] == "p1-label"
            assert events["packed"]["order"] == "p1"
            # --- already out of paper when the label is due: told with the submission -
            await empty_scale(control)
            await oms.call(NODE, "pack", order("p2"))
            await scans(control, "T-p2", GTIN_A, GTIN_A, "S2-CODE", "CONFIRM")
            await control.post("/sim/label/set", {"state": "paper_out"})
            await label_status("fault")  # the idle poll saw it
            await scale(control, 845.0)
            verified, weighed, delayed = await next_events(oms, 3, SKIP, timeout=20)
            assert (weighed.name, delayed.name) == ("weighed", "print_delayed")
            assert (body(delayed)["job_id"], body(delayed)["reason"]) == ("p2-label", no_reply)
            await control.post("/sim/label/set", {"state": "ready"})
            events = named(await next_events(oms, 2, SKIP, timeout=20))
            assert events["label_printed"]["job_id"] == "p2-label"
            await label_status("ok")
            await asyncio.sleep(0.5)  # several status polls later: still one label each
            jobs = (await control.get("/sim/label"))["jobs"]
            assert [("p1" in j, "p2" in j) for j in jobs] == [(True, False), (False, True)]
            assert (await control.get("/sim/label"))["pending"] == 0
            assert node.terminate() == 0

    run(node, scenario)


async def oms_events(oms: OmsClient, count: int, timeout: float = 15) -> dict[str, dict[str, Any]]:
    return named(await next_events(oms, count, SKIP, timeout=timeout))


def test_packing_slip_prints_on_the_escpos_printer_once(
    tmp_path: Path, broker: LocalBroker
) -> None:
    path = pack_node_file(tmp_path, broker, slip=True)

    async def scan(running: Running, *codes: str) -> None:
        for code in codes:
            await running.floor.simulators["scanner"].control("scan", {"code": code})

    async def weigh(running: Running, grams: float) -> None:
        await running.floor.simulators["scale"].control("set", {"grams": grams, "mode": "stable"})

    def slip_bytes(running: Running) -> bytes:
        sim = running.floor.simulators["slip"]
        assert isinstance(sim, EscposSimulator)
        return bytes(sim.received)

    def screen(running: Running) -> dict[str, Any]:
        assert isinstance(running.node.workflow, PackingWorkflow)
        return running.node.workflow.snapshot()

    async def slip_printed(running: Running, text: bytes) -> None:
        async with asyncio.timeout(10):
            while text not in slip_bytes(running):
                await asyncio.sleep(0.02)

    async def scenario() -> None:
        async with oms_for(broker) as oms:
            async with node_in_process(path) as running:
                await wait_online(oms)
                gift = order("s1", packing_slip=True, gift_note="Happy birthday!")
                assert (await oms.call(NODE, "pack", gift)).status == "accepted"
                assert (await oms.call(NODE, "pack", order("s2", packing_slip=True))).status == (
                    "accepted"
                )
                await scan(running, "T-s1", GTIN_A, GTIN_A, "S2-CODE")
                assert (await oms_events(oms, 1))["verified"]["order"] == "s1"
                await slip_printed(running, b"Order s1")
                printed = slip_bytes(running)
                assert b"  2 x S1  Mug" in printed and b"  1 x S2  Vase" in printed
                assert b"Happy birthday!" in printed
                # The same order sent again, a surplus scan, the box, the weight, the label:
                # none of them prints the slip again.
                assert (await oms.call(NODE, "pack", gift)).status == "accepted"
                await scan(running, "S2-CODE", "CONFIRM")
                await weigh(running, 850.0)
                events = await oms_events(oms, 4)
                assert events["pack_refused"]["reason"] == "surplus"
                assert events["packed"]["order"] == "s1"
                assert screen(running)["order"] is None
                assert slip_bytes(running).count(b"Order s1") == 1
                # s2: verified, then the node stops before its slip's result is known.
                await weigh(running, 0.0)
                await scan(running, "T-s2", GTIN_A, GTIN_A, "S2-CODE")
                assert (await oms_events(oms, 1))["verified"]["order"] == "s2"
                await slip_printed(running, b"Order s2")
                assert slip_bytes(running).count(b"Order s1") == 1
                async with asyncio.timeout(10):
                    while screen(running)["order"]["slip"] != "printed":
                        await asyncio.sleep(0.02)
                await asyncio.sleep(0.2)  # the screen may show a step before its commit ends
            async with node_in_process(path) as running:
                # A restart: s2's slip is not printed again (the new simulator keeps all).
                shown = screen(running)
                assert (shown["order"]["order"], shown["order"]["slip"]) == ("s2", "printed")
                await wait_online(oms)
                await scan(running, "CONFIRM")
                await weigh(running, 850.0)
                assert (await oms_events(oms, 3))["packed"]["order"] == "s2"
                await asyncio.sleep(0.3)
                assert b"Order" not in slip_bytes(running)

    asyncio.run(scenario())


def test_a_job_no_printer_takes_comes_back_failed(tmp_path: Path, broker: LocalBroker) -> None:
    """A print the floor cannot hand to a printer is a failed result, not a silent wait."""
    config = load_config(pack_node_file(tmp_path, broker, slip=True), env={})

    async def scenario() -> list[PrintResult]:
        async with DeviceFloor(config, device_context(True), simulate=True) as floor:
            slip = Slip("ACME", "o9", ((1, "S1", "Mug"),), "o9")
            await floor.perform(
                [Print("nope", "o9-label", b"^XA^XZ"), PrintSlip("gone", "o9-slip", slip)]
            )
            results: list[PrintResult] = []
            async with asyncio.timeout(10):
                async for event in floor.inputs():
                    if isinstance(event, PrintResult):
                        results.append(event)
                        if len(results) == 2:
                            return results
            return results

    first, second = asyncio.run(scenario())
    assert (first.job_id, first.ok) == ("o9-label", False)
    assert first.reason == "no printer 'nope' on this node"
    assert (second.job_id, second.ok) == ("o9-slip", False)
    assert second.reason == "no printer 'gone' on this node"
