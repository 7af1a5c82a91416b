"""A pack station whose scale is a USB HID shipping scale, end to end through the broker.

The node is a child process under ``--simulate``: its ``hid_pos`` scale is the simulator
streaming HID POS scale reports into the fake hidraw backend, driven only through the
control API as the serial scales are (docs/simulation.md). The parcel is weighed in ounces
on the scale's display; the label goes to the existing (simulated) ZPL printer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.oms.demo.broker import LocalBroker
from tests.harness import NodeProcess, oms_for
from tests.test_pack_scale_e2e import _until_scale
from tests.test_packing_e2e import (
    GTIN_A,
    NODE,
    SKIP,
    named,
    order,
    pack_node_file,
    scans,
    started,
    wait_for,
    workflow,
)
from tests.test_picking_e2e import Control, next_events, run

pytestmark = pytest.mark.broker

MT_SICS_SCALE = """name = "scale"
kind = "mt_sics"
port = "/dev/zone-agent-sim-scale"
poll_interval = 0.05
"""
HID_SCALE = """name = "scale"
kind = "hid_pos"
device = "auto"
reconnect_min_s = 0.1
reconnect_max_s = 0.5
"""


def hid_pack_node_file(tmp_path: Path, broker: LocalBroker) -> Path:
    """The pack station of tests/test_packing_e2e.py with a USB HID scale for its MT-SICS."""
    path = pack_node_file(tmp_path, broker)
    text = path.read_text()
    assert MT_SICS_SCALE in text
    path.write_text(text.replace(MT_SICS_SCALE, HID_SCALE))
    return path


def test_pack_with_a_usb_hid_scale_in_ounces_unplugged_mid_weigh(
    tmp_path: Path, broker: LocalBroker
) -> None:
    node = NodeProcess(hid_pack_node_file(tmp_path, broker))
    control = Control(tmp_path / NODE)

    async def scenario() -> None:
        async with oms_for(broker) as oms:
            await started(node, control, oms)
            state = await control.get("/api/state")
            assert state["devices"]["scale"]["kind"] == "hid_pos"
            assert (await oms.call(NODE, "pack", order("o1"))).status == "accepted"
            await scans(control, "T-o1", GTIN_A, GTIN_A, "S2-CODE", "CONFIRM")
            [verified] = await next_events(oms, 1, SKIP)
            assert verified.name == "verified"
            await wait_for(control, lambda w: w["phase"] == "weigh")

            # The packer's scale shows ounces; the parcel is put down and still moving.
            await control.post("/sim/scale/set", {"unit": "oz", "grams": 1300.0, "mode": "moving"})
            shown = await wait_for(control, lambda w: (w["weight"] or {}).get("stable") is False)
            assert shown["weight"]["grams"] == pytest.approx(1300.0, abs=2.9)
            assert shown["order"]["check"] is None

            # The USB cable is pulled: the scale is unavailable, nothing is weighed.
            await control.post("/sim/scale/unplug", {})
            state = await _until_scale(control, "unavailable")
            assert state["workflow"]["order"]["check"] is None
            assert state["online"] is True

            # Plugged back in with the parcel settled: 29.8 oz (844.8 g) passes.
            await control.post("/sim/scale/set", {"grams": 845.0, "mode": "stable"})
            await control.post("/sim/scale/replug", {})
            await _until_scale(control, "ok")
            events = named(await next_events(oms, 3, SKIP))
            weighed = events["weighed"]
            assert weighed["verdict"] == "pass"
            assert weighed["actual_g"] == pytest.approx(298 * 2.8349523125, abs=0.001)
            assert events["packed"]["check"] == "pass"
            assert len((await control.get("/sim/label"))["jobs"]) == 1
            assert (await workflow(control))["order"] is None

            # Over the scale's limit: a fault on the screen and in the birth's health.
            await control.post("/sim/scale/set", {"mode": "overload"})
            state = await _until_scale(control, "fault")
            assert state["devices"]["scale"]["detail"] == "overload"
            assert node.terminate() == 0

    run(node, scenario)
