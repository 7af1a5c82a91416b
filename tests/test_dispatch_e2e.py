"""Dispatch station end to end: the node as a child process, a real broker, the simulated
scanner (pty) and lane lights and buttons (MockFactory pins) driven and read only through
the node's HTTP control API; a SIGKILL in the middle of loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.oms import NodeEvent, OmsClient
from agent.oms.demo.broker import LocalBroker
from tests.harness import SITE, NodeProcess, oms_for
from tests.test_picking_e2e import DARK, Control, body, next_events, run, wait_online

pytestmark = pytest.mark.broker

NODE = "dock-e1"
SKIP = ("reply",)
SSCCS = [f"37610425{n:09d}" for n in range(1, 9)]


def sscc(n: int) -> str:
    """The n-th test SSCC with its GS1 check digit."""
    digits = SSCCS[n]
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return digits + str((10 - total % 10) % 10)


def dock_node_file(tmp_path: Path, broker: LocalBroker) -> Path:
    """Two lanes (LED and button each) for DPD and UPS, and a scanner."""
    lines = [
        f'site = "{SITE}"',
        f'node = "{NODE}"',
        'role = "dispatch"',
        f'state_dir = "{tmp_path / NODE}"',
        "[broker]",
        f'urls = ["{broker.url}"]',
        "keepalive_s = 5",
        "backoff_initial_s = 0.05",
        "backoff_max_s = 0.5",
        "[settings]",
        "near_cutoff_min = 30",
        "[[settings.lanes]]",
        'id = "L1"',
        'carrier = "DPD"',
        "[[settings.lanes]]",
        'id = "L2"',
        'carrier = "UPS"',
        "[[devices]]",
        'name = "shelf"',
        'kind = "gpio_slots"',
        "double_press_s = 0",
        "[[devices.slots]]",
        'id = "L1"',
        "rgb = [2, 3, 4]",
        "confirm = 5",
        "[[devices.slots]]",
        'id = "L2"',
        "rgb = [6, 12, 13]",
        "confirm = 16",
        "[[devices]]",
        'name = "scanner"',
        'kind = "serial_scanner"',
        'port = "/dev/zone-agent-sim"',
        "dedupe_window_s = 0",
    ]
    path = tmp_path / f"{NODE}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def parcels(*rows: tuple[int, str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "parcels": [
            {"sscc": sscc(n), "carrier": carrier, "order": f"O-{n}", **kw}
            for n, carrier, kw in rows
        ]
    }


async def started(node: NodeProcess, control: Control, oms: OmsClient) -> None:
    node.start()
    assert node.proc is not None
    await control.connect(node.proc.pid)
    await wait_online(oms, NODE)


async def workflow(control: Control) -> dict[str, Any]:
    return (await control.get("/api/state"))["workflow"]  # type: ignore[no-any-return]


def test_loads_refusals_express_light_and_manifest_close(
    tmp_path: Path, broker: LocalBroker
) -> None:
    node = NodeProcess(dock_node_file(tmp_path, broker))
    control = Control(tmp_path / NODE)

    async def scenario() -> None:
        async with oms_for(broker) as oms:
            await oms.wait_connected()
            await started(node, control, oms)
            assert oms.nodes[NODE].state.role == "dispatch"  # type: ignore[union-attr]
            assert oms.nodes[NODE].state.locations == ["L1", "L2"]  # type: ignore[union-attr]
            reply = await oms.call(
                NODE,
                "load",
                parcels(
                    (0, "DPD", {"tracking": "DPD-TRACK-0"}),
                    (1, "UPS", {"express": True}),
                    (2, "FedEx", {}),
                ),
            )
            assert (reply.status, reply.items) == ("accepted", [])
            # A GS1-128 SSCC label, as the scanner sends it (AIM ]C1, AI 00).
            await control.scan("00" + sscc(1), symbology="]C1")
            await control.wait_slot("L2", {"on": True, "colour": "reddish_purple"})
            await control.wait_slot("L1", DARK)
            await control.press("L1")  # the DPD lane: wrong
            await control.press("L2")
            await control.scan("DPD-TRACK-0")
            await control.wait_slot("L1", {"on": True, "colour": "blue"})
            await control.scan("LANE-L1")
            await control.scan(sscc(0))  # again: already loaded
            await control.scan(sscc(2))  # FedEx: no lane here
            await control.scan(sscc(5))  # nobody announced it
            got = await next_events(oms, 6, skip=SKIP)
            summary = [(e.name, body(e).get("reason"), body(e)["parcel"]) for e in got]
            assert summary == [
                ("load_refused", "wrong_lane", sscc(1)),
                ("loaded", None, sscc(1)),
                ("loaded", None, sscc(0)),
                ("load_refused", "already_loaded", sscc(0)),
                ("load_refused", "no_lane", sscc(2)),
                ("load_refused", "unknown_parcel", None),
            ]
            assert body(got[1])["confirmed_by"] == "button"
            assert body(got[2])["confirmed_by"] == "scan"
            screen = await workflow(control)
            assert screen["notice"]["reason"] == "unknown_parcel"
            assert [r["reason"] for r in screen["refusals"]][:2] == ["unknown_parcel", "no_lane"]
            reply = await oms.call(NODE, "manifest_close", {"carrier": "UPS"})
            assert reply.status == "accepted"
            closed, shipped = await next_events(oms, 2, skip=SKIP)
            assert closed.name == "manifest_closed" and body(closed)["loaded"] == [sscc(1)]
            assert (shipped.name, body(shipped)["order"]) == ("shipped", "O-1")
            await control.scan("CLOSE-L1")
            closed, shipped = await next_events(oms, 2, skip=SKIP)
            assert body(closed)["manifest"] == "DPD-0001" and body(closed)["closed_by"] == "scan"
            assert body(shipped)["sscc"] == sscc(0) and body(shipped)["tracking"] == "DPD-TRACK-0"

    run(node, scenario)


def test_sigkill_mid_load_loses_nothing_and_ships_nothing_twice(
    tmp_path: Path, broker: LocalBroker
) -> None:
    node = NodeProcess(dock_node_file(tmp_path, broker))
    control = Control(tmp_path / NODE)

    async def scenario() -> None:
        async with oms_for(broker, resend_s=0.5) as oms:
            await oms.wait_connected()
            await started(node, control, oms)
            await oms.call(NODE, "load", parcels(*((n, "DPD", {}) for n in range(6))))
            delivered: list[NodeEvent] = []
            for n in range(3):
                await control.scan(sscc(n))
                await control.wait_slot("L1", {"on": True})
                await control.scan("LANE-L1")
                delivered += await next_events(oms, 1, skip=SKIP)
            await control.scan(sscc(3))
            await control.wait_slot("L1", {"on": True})
            await control.scan("LANE-L1")
            node.kill()  # the load of parcel 3 may or may not be on disk
            late = oms.send(NODE, "load", parcels((6, "DPD", {}), (7, "DPD", {})))
            await started(node, control, oms)
            await control.wait_slot("L1", DARK)
            assert (await late).status == "accepted"  # resent until the node answered
            await oms.call(NODE, "ping", {})
            while not oms.events.empty():
                event = oms.events.get_nowait()
                if event.name not in SKIP:
                    delivered.append(event)
            loaded = {body(e)["sscc"] for e in delivered if e.name == "loaded"}
            assert loaded in ({sscc(0), sscc(1), sscc(2)}, {sscc(0), sscc(1), sscc(2), sscc(3)})
            for n in (3, 4, 6):
                await control.scan(sscc(n))
                if sscc(n) in loaded:
                    [refused] = await next_events(oms, 1, skip=SKIP)
                    assert body(refused)["reason"] == "already_loaded"
                    continue
                await control.wait_slot("L1", {"on": True})
                await control.scan("LANE-L1")
                [event] = await next_events(oms, 1, skip=SKIP)
                assert event.name == "loaded"
                loaded.add(body(event)["sscc"])
            await control.scan("CLOSE-L1")
            closed, *shipped = await next_events(oms, 7, skip=SKIP)
            assert body(closed)["loaded"] == [sscc(n) for n in (0, 1, 2, 3, 4, 6)]
            assert body(closed)["missing"] == [sscc(5), sscc(7)]
            assert sorted(body(e)["sscc"] for e in shipped) == sorted(loaded)
            # Nothing more: no load or shipment came twice.
            await oms.call(NODE, "ping", {})
            rest = [oms.events.get_nowait() for _ in range(oms.events.qsize())]
            assert [e.name for e in rest if e.name not in SKIP] == []

    run(node, scenario)
