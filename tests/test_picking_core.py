"""The zone-picking core as a plain state machine: no broker, no asyncio, no hardware."""

from __future__ import annotations

from agent.wire.messages import Envelope, PickCommand, PickTask
from agent.workflows.base import Light, Step
from agent.workflows.picking import PickingWorkflow
from devices.events import Button, ButtonPress

ENV = Envelope(v=1, id="c1", ts=0, body={})


def test_confirm_turns_the_light_off_when_the_slot_has_nothing_left() -> None:
    wf = PickingWorkflow(["A1", "A2"])
    step = Step()
    cmd = PickCommand(tasks=[PickTask(task="t1", order="o", location="A1", sku="s", qty=3)])
    wf.on_command("pick", ENV, cmd, step, now=1)
    assert step.actions == [Light("A1", "blue", "steady", 3)]
    step = Step()
    wf.on_input(ButtonPress("shelf", "A1", Button.CONFIRM), step, now=2)
    assert step.actions == [Light("A1", None)]
    assert [e.name for e in step.unit.events] == ["picked"]
    step = Step()
    wf.on_input(ButtonPress("shelf", "A1", Button.CONFIRM), step, now=3)
    assert step.actions == [] and step.unit.events == []  # a press on a dark slot does nothing


def test_confirm_lights_the_next_task_of_the_slot() -> None:
    wf = PickingWorkflow(["A1"])
    step = Step()
    tasks = [
        PickTask(task="t1", order="o", location="A1", sku="s", qty=1),
        PickTask(task="t2", order="o", location="A1", sku="s", qty=4, priority=0),
    ]
    wf.on_command("pick", ENV, PickCommand(tasks=tasks), step, now=1)
    assert step.actions == [Light("A1", "blue", "steady", 4)]  # priority 0 first
    step = Step()
    wf.on_input(ButtonPress("shelf", "A1", Button.CONFIRM), step, now=2)
    assert step.actions == [Light("A1", "blue", "steady", 1)]
