"""Pack station check-weigh end to end: an unstable scale, a scale answering nonsense, an
underweight parcel, a re-weigh that passes. The node is a child process; its simulated
MT-SICS scale is driven only through the control API (docs/simulation.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agent.oms.demo.broker import LocalBroker
from tests.harness import NodeProcess, oms_for
from tests.test_packing_e2e import (
    GTIN_A,
    NODE,
    SKIP,
    empty_scale,
    named,
    order,
    pack_node_file,
    scale,
    scans,
    started,
    wait_for,
    workflow,
)
from tests.test_picking_e2e import Control, body, next_events, run

pytestmark = pytest.mark.broker


def test_unstable_and_nonsense_readings_never_weigh_and_an_underweight_parcel_is_reweighed(
    tmp_path: Path, broker: LocalBroker
) -> None:
    node = NodeProcess(pack_node_file(tmp_path, broker))
    control = Control(tmp_path / NODE)

    async def scenario() -> None:
        async with oms_for(broker) as oms:
            await started(node, control, oms)
            assert (await oms.call(NODE, "pack", order("o1"))).status == "accepted"
            await scans(control, "T-o1", GTIN_A, GTIN_A, "S2-CODE", "CONFIRM")
            [verified] = await next_events(oms, 1, SKIP)
            assert verified.name == "verified"
            await wait_for(control, lambda w: w["phase"] == "weigh")

            # The parcel is still moving: the screen shows the weight, nothing is judged.
            await scale(control, 1300.0, "moving")
            shown = await wait_for(control, lambda w: (w["weight"] or {}).get("grams") == 1300.0)
            assert shown["weight"]["stable"] is False
            assert shown["order"]["check"] is None
            assert "stable" in shown["prompt"]

            # The scale answers nonsense for a while: its health says so, nothing is
            # judged, and the node keeps going.
            await control.post("/sim/scale/set", {"mode": "garbage"})
            state = await _until_scale(control, "fault")
            assert state["devices"]["scale"]["detail"] != ""
            assert state["online"] is True
            assert state["workflow"]["order"]["check"] is None

            # Settled, but 247 g light (a unit missing): under, the label is held.
            await scale(control, 600.0, "stable")
            await _until_scale(control, "ok")
            [under] = await next_events(oms, 1, SKIP)
            assert under.name == "weighed"
            got = body(under)
            assert (got["verdict"], got["actual_g"], got["expected_g"]) == ("under", 600.0, 847.4)
            assert (got["diff_g"], got["attempt"]) == (-247.4, 1)
            failed = await wait_for(control, lambda w: w["phase"] == "weigh_failed")
            assert failed["order"]["label"] is None
            assert "Too light" in failed["notice"]["text"]
            assert (await control.get("/sim/label"))["jobs"] == []

            # The packer adds the missing unit and weighs again: pass, labelled, packed.
            await empty_scale(control)
            await scale(control, 845.0, "stable")
            events = named(await next_events(oms, 3, SKIP))
            assert (events["weighed"]["verdict"], events["weighed"]["attempt"]) == ("pass", 2)
            assert events["packed"]["check"] == "pass"
            assert events["packed"]["weight_g"] == 845.0
            assert len((await control.get("/sim/label"))["jobs"]) == 1
            assert (await workflow(control))["order"] is None
            assert node.terminate() == 0

    run(node, scenario)


async def _until_scale(control: Control, status: str) -> dict[str, Any]:
    """Poll the node's state until the scale's health is ``status``."""
    for _ in range(500):
        state: dict[str, Any] = await control.get("/api/state")
        if state["devices"]["scale"]["status"] == status:
            return state
        await asyncio.sleep(0.02)
    raise AssertionError(f"the scale never became {status}: {state['devices']}")
