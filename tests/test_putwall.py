"""Put wall: the state machine driven directly, then end to end through the broker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agent.oms.demo.broker import LocalBroker
from agent.wire.messages import CancelCommand, Envelope
from agent.workflows.base import Light, Step
from agent.workflows.putwall import PutCommand, PutWallWorkflow
from devices.events import Button, ButtonPress, Scan
from tests.harness import NodeProcess
from tests.test_picking_e2e import (
    DARK,
    GTIN,
    Control,
    body,
    lit,
    next_events,
    oms_for,
    pick_node_file,
    run,
)

ENV = Envelope(v=1, id="c1", ts=0, body={})


def order(order_id: str, slot: str, *items: tuple[str, int, list[str]]) -> dict[str, Any]:
    return {
        "order": order_id,
        "slot": slot,
        "items": [{"sku": s, "qty": q, "barcodes": b} for s, q, b in items],
    }


def wall() -> PutWallWorkflow:
    w = PutWallWorkflow(["A1", "A2", "A3"])
    first = {
        "orders": [
            order("o1", "A1", ("S1", 2, [GTIN]), ("S2", 1, ["BOX"])),
            order("o2", "A2", ("S1", 1, [GTIN])),
            order("o3", "Z9", ("S1", 1, [])),
        ]
    }
    second = {"orders": [order("o4", "A1", ("S1", 1, []))]}
    refused = []
    for command in (first, second):
        verdict = w.on_command("put", ENV, PutCommand.model_validate(command), Step(), 1)
        refused += [(i.id, i.reason) for i in verdict.items]
    assert refused == [("o3", "unknown_location"), ("o4", "slot_busy")]
    return w


def feed(w: PutWallWorkflow, event: object, now: int = 5) -> Step:
    step = Step()
    w.on_input(event, step, now)
    return step


def names(step: Step) -> list[str]:
    return [e.name for e in step.unit.events]


def test_scan_lights_the_order_slot_and_the_press_puts_until_complete() -> None:
    w = wall()
    step = feed(w, Scan("sc", GTIN, gtin="0" + GTIN), now=5)
    assert step.actions == [Light("A1", "blue", "steady", 2)]
    assert feed(w, ButtonPress("wall", "A2", Button.CONFIRM)).unit.events == []  # wrong cubby
    step = feed(w, ButtonPress("wall", "A1", Button.CONFIRM), now=9)
    assert [(e.name, e.body.model_dump()) for e in step.unit.events] == [  # type: ignore[union-attr]
        (
            "put",
            {
                "order": "o1",
                "slot": "A1",
                "sku": "S1",
                "qty": 2,
                "expected": 2,
                "remaining": 0,
                "scanned_at": 5,
                "confirmed_at": 9,
            },
        )
    ]
    assert step.actions == [Light("A1", None)]
    # o1 no longer expects S1: the next S1 goes to o2.
    assert feed(w, Scan("sc", GTIN)).actions == [Light("A2", "blue", "steady", 1)]
    step = feed(w, Scan("sc", "BOX"))
    assert step.actions == [Light("A2", None), Light("A1", "blue", "steady", 1)]
    step = feed(w, ButtonPress("wall", "A1", Button.CONFIRM), now=12)
    assert names(step) == ["put", "order_complete"]
    assert step.unit.events[1].body.model_dump() == {  # type: ignore[union-attr]
        "order": "o1",
        "slot": "A1",
        "units": 3,
        "at": 12,
    }
    assert step.actions == [Light("A1", "bluish_green", "steady", None, "donE")]
    assert feed(w, ButtonPress("wall", "A1", Button.CONFIRM)).actions == [Light("A1", None)]


def test_minus_puts_fewer_and_the_rest_stays_expected() -> None:
    w = wall()
    feed(w, Scan("sc", GTIN))
    assert feed(w, ButtonPress("wall", "A1", Button.MINUS)).actions == [
        Light("A1", "blue", "steady", 1)
    ]
    step = feed(w, ButtonPress("wall", "A1", Button.CONFIRM))
    assert step.unit.events[0].body.model_dump()["remaining"] == 1  # type: ignore[union-attr]
    assert feed(w, Scan("sc", GTIN)).actions == [Light("A1", "blue", "steady", 1)]


def test_an_item_no_order_expects_is_a_misscan() -> None:
    w = wall()
    step = feed(w, Scan("sc", "NOPE"), now=3)
    assert [(e.name, e.body.model_dump()) for e in step.unit.events] == [  # type: ignore[union-attr]
        (
            "misscan",
            {
                "code": "NOPE",
                "reason": "unknown_code",
                "expected": [],
                "location": None,
                "task": None,
                "picker": None,
                "at": 3,
            },
        )
    ]
    assert step.actions == []


def test_cancel_and_restore() -> None:
    w = wall()
    feed(w, Scan("sc", GTIN))
    feed(w, ButtonPress("wall", "A1", Button.CONFIRM))
    rows = [o.stored() for o in w.orders.values()]
    step = Step()
    verdict = w.on_command("cancel", ENV, CancelCommand(tasks=["o2", "zz"]), step, 3)
    assert [(i.id, i.status) for i in verdict.items] == [("o2", "cancelled"), ("zz", "unknown")]
    again = PutWallWorkflow(["A1", "A2", "A3"])
    step = Step()
    again.restore(rows, step, 10)
    assert step.actions == [Light("A1", None), Light("A2", None), Light("A3", None)]
    assert again.snapshot()["orders"]["o1"]["items"] == {
        "S1": {"qty": 2, "put": 2},
        "S2": {"qty": 1, "put": 0},
    }


def test_a_repeated_order_id_or_slot_in_one_command_is_invalid() -> None:
    with pytest.raises(ValueError, match="appears twice"):
        PutCommand.model_validate(
            {"orders": [order("o1", "A1", ("S", 1, [])), order("o1", "A2", ("S", 1, []))]}
        )


# --- end to end ----------------------------------------------------------------------------


@pytest.mark.broker
def test_put_wall_end_to_end(tmp_path: Path, broker: LocalBroker) -> None:
    node_name = "wall-1"
    node = NodeProcess(pick_node_file(tmp_path, broker, node=node_name, role="put_wall"))
    control = Control(tmp_path / node_name)

    async def scenario() -> None:
        async with oms_for(broker) as oms:
            await oms.wait_connected()
            node.start()
            assert node.proc is not None
            await control.connect(node.proc.pid)
            async with asyncio.timeout(20):
                while not (oms.nodes.get(node_name) and oms.nodes[node_name].online):
                    await asyncio.sleep(0.02)
            reply = await oms.call(
                node_name,
                "put",
                {"orders": [order("o1", "A2", ("S1", 2, [GTIN]), ("S2", 1, ["BOX"]))]},
            )
            assert (reply.status, reply.items) == ("accepted", [])
            await control.scan(GTIN)
            await control.wait_slot("A2", lit("blue", "steady", 2))
            await control.press("A2")
            [put] = await next_events(oms, 1)
            assert (put.name, body(put)["sku"], body(put)["qty"], body(put)["remaining"]) == (
                "put",
                "S1",
                2,
                0,
            )
            await control.wait_slot("A2", DARK)
            await control.scan("WRONG")
            [miss] = await next_events(oms, 1)
            assert (miss.name, body(miss)["code"]) == ("misscan", "WRONG")
            await control.scan("BOX")
            await control.wait_slot("A2", lit("blue", "steady", 1))
            await control.press("A2")
            put, done = await next_events(oms, 2)
            assert (put.name, done.name, body(done)["units"]) == ("put", "order_complete", 3)
            await control.wait_slot("A2", {"on": True, "colour": "bluish_green"})
            assert (await control.slot("A2"))["display"] == "donE"
            await control.press("A2")
            await control.wait_slot("A2", DARK)

    run(node, scenario)


def test_a_press_made_for_an_earlier_put_confirms_nothing() -> None:
    """The floor binds a press to what its cubby showed; a later put is not confirmed."""
    w = wall()
    feed(w, Scan("sc", GTIN))  # A1 shows "put S1"
    assert names(feed(w, ButtonPress("wall", "A1", Button.CONFIRM, shown="put:S1"))) == ["put"]
    feed(w, Scan("sc", "BOX"))  # A1 shows the next put
    step = feed(w, ButtonPress("wall", "A1", Button.CONFIRM, shown="put:S1"))
    assert names(step) == [] and step.ignored == ["stale_press"]
    assert names(feed(w, ButtonPress("wall", "A1", Button.CONFIRM, shown="put:S2"))) == [
        "put",
        "order_complete",
    ]
