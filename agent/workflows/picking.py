"""Zone picking: every open task's slot lights with its quantity; a confirm press picks it.

State per task: ``waiting`` (its wave has begun but is not released) or ``open``. A slot
shows one task at a time: the most urgent (priority 0 first), then the earliest received;
when it is confirmed the next task of that slot lights. Waves: ``wave_begin`` holds the
wave's tasks dark, ``wave_release`` lights them, ``wave_cancel`` cancels them; a task whose
wave was never begun is released at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.config import NodeConfig
from agent.link.messages import (
    CancelCommand,
    Envelope,
    ItemResult,
    PickCommand,
    PickTask,
    WaveCommand,
    Wire,
    register_event,
)
from agent.store import StoredTask
from agent.workflows.base import FloorInfo, Step, Verdict
from devices.events import Button, ButtonPress

TASK = "pick"
WAVE = "wave"


class Picked(Wire):
    """A pick line confirmed by the picker."""

    task: str
    order: str
    location: str
    sku: str
    qty: int
    picked: int
    wave: str | None = None
    container: str | None = None
    lit_at: int | None = None
    confirmed_at: int


register_event("picked", Picked)


@dataclass(slots=True)
class OpenTask:
    """A task the node holds."""

    task: PickTask
    arrival: int
    released: bool
    lit_at: int | None = None

    def stored(self) -> StoredTask:
        """The row the store keeps for this task."""
        data = {
            "task": self.task.model_dump(exclude_defaults=True),
            "arrival": self.arrival,
            "released": self.released,
            "lit_at": self.lit_at,
        }
        return StoredTask(self.task.task, TASK, self.task.wave, data)

    @classmethod
    def from_stored(cls, row: StoredTask) -> OpenTask:
        """Rebuild from a store row."""
        data: dict[str, Any] = row.data
        return cls(
            PickTask.model_validate(data["task"]),
            data["arrival"],
            data["released"],
            data.get("lit_at"),
        )


class PickingWorkflow:
    """Zone picking on a node's slots.

    Args:
        locations: the slots this node lights (from its light devices).
    """

    commands: Mapping[str, type[Wire]] = {
        "pick": PickCommand,
        "cancel": CancelCommand,
        "wave_begin": WaveCommand,
        "wave_release": WaveCommand,
        "wave_cancel": WaveCommand,
    }

    @classmethod
    def from_config(cls, config: NodeConfig, floor: FloorInfo) -> PickingWorkflow:
        """The workflow of a pick node, over the slots its light devices cover."""
        return cls(floor.locations())

    def __init__(self, locations: list[str]) -> None:
        self._locations = list(locations)
        self._known = set(locations)
        self.tasks: dict[str, OpenTask] = {}
        self.waves: dict[str, str] = {}  # wave -> "begun" | "released"
        self.lit: dict[str, str] = {}  # location -> task id shown there
        self._arrivals = 0

    def locations(self) -> list[str]:
        """Slots of this node."""
        return list(self._locations)

    # --- restore -------------------------------------------------------------------

    def restore(self, tasks: list[StoredTask], step: Step, now: int) -> None:
        """Reload tasks and waves; clear every light, then light the open tasks."""
        for row in tasks:
            if row.kind == WAVE:
                self.waves[row.id.removeprefix("wave:")] = row.data["state"]
            elif row.kind == TASK:
                task = OpenTask.from_stored(row)
                self.tasks[task.task.task] = task
                self._arrivals = max(self._arrivals, task.arrival + 1)
        for location in self._locations:
            step.off(location)
        for location in {t.task.location for t in self.tasks.values()}:
            self._relight(location, step, now)

    # --- commands ------------------------------------------------------------------

    def on_command(
        self, name: str, envelope: Envelope, body: Wire, step: Step, now: int
    ) -> Verdict:
        """Apply a pick, cancel or wave command."""
        if isinstance(body, PickCommand):
            return self._pick(body, step, now)
        if isinstance(body, CancelCommand):
            return self._cancel(body.tasks, body.wave, step, now)
        assert isinstance(body, WaveCommand)
        if name == "wave_begin":
            if self.waves.get(body.wave) == "released":
                return Verdict.rejected("wave_released", f"wave {body.wave} is already released")
            self._set_wave(body.wave, "begun", step)
            return Verdict.accepted()
        if name == "wave_release":
            self._set_wave(body.wave, "released", step)
            touched = set()
            for task in self.tasks.values():
                if task.task.wave == body.wave and not task.released:
                    task.released = True
                    step.unit.put_task(task.stored())
                    touched.add(task.task.location)
            for location in touched:
                self._relight(location, step, now)
            return Verdict.accepted()
        verdict = self._cancel([], body.wave, step, now)
        self.waves.pop(body.wave, None)
        step.unit.drop_task(f"wave:{body.wave}")
        return verdict

    def _set_wave(self, wave: str, state: str, step: Step) -> None:
        self.waves[wave] = state
        step.unit.put_task(StoredTask(f"wave:{wave}", WAVE, wave, {"state": state}))

    def _pick(self, body: PickCommand, step: Step, now: int) -> Verdict:
        items: list[ItemResult] = []
        touched: set[str] = set()
        for task in body.tasks:
            if task.location not in self._known:
                items.append(ItemResult(id=task.task, status="rejected", reason="unknown_location"))
                continue
            if task.task in self.tasks:
                continue  # the same task sent again by another command: already held
            released = task.wave is None or self.waves.get(task.wave, "released") == "released"
            held = OpenTask(task, self._arrivals, released)
            self._arrivals += 1
            self.tasks[task.task] = held
            step.unit.put_task(held.stored())
            touched.add(task.location)
        for location in touched:
            self._relight(location, step, now)
        return Verdict.accepted(items)

    def _cancel(self, task_ids: list[str], wave: str | None, step: Step, now: int) -> Verdict:
        targets = list(task_ids)
        if wave is not None:
            targets += [
                t for t, held in self.tasks.items() if held.task.wave == wave and t not in targets
            ]
        items: list[ItemResult] = []
        touched: set[str] = set()
        for task_id in targets:
            held = self.tasks.pop(task_id, None)
            if held is None:
                items.append(ItemResult(id=task_id, status="unknown"))
                continue
            items.append(ItemResult(id=task_id, status="cancelled"))
            step.unit.drop_task(task_id)
            touched.add(held.task.location)
        for location in touched:
            self._relight(location, step, now)
        return Verdict.accepted(items)

    # --- lights ----------------------------------------------------------------------

    def _next_for(self, location: str) -> OpenTask | None:
        candidates = [t for t in self.tasks.values() if t.task.location == location and t.released]
        if not candidates:
            return None
        return min(candidates, key=lambda t: (t.task.priority, t.arrival))

    def _relight(self, location: str, step: Step, now: int) -> None:
        task = self._next_for(location)
        shown = self.lit.get(location)
        if task is None:
            if shown is not None:
                del self.lit[location]
                step.off(location)
            return
        if shown == task.task.task:
            return
        self.lit[location] = task.task.task
        if task.lit_at is None:
            task.lit_at = now
            step.unit.put_task(task.stored())
        if task.task.express:
            step.light(location, "reddish_purple", "slow_blink", task.task.qty)
        else:
            step.light(location, "blue", "steady", task.task.qty)

    # --- input -------------------------------------------------------------------------

    def on_input(self, event: object, step: Step, now: int) -> None:
        """A confirm press picks the task shown on that slot."""
        if not isinstance(event, ButtonPress) or event.button is not Button.CONFIRM:
            return
        task_id = self.lit.get(event.slot)
        if task_id is None:
            return
        held = self.tasks.pop(task_id)
        t = held.task
        step.emit(
            "picked",
            Picked(
                task=t.task,
                order=t.order,
                location=t.location,
                sku=t.sku,
                qty=t.qty,
                picked=t.qty,
                wave=t.wave,
                container=t.container,
                lit_at=held.lit_at,
                confirmed_at=now,
            ),
            ts=now,
        )
        step.unit.drop_task(task_id)
        step.unit.count("lines_picked")
        step.unit.count("units_picked", t.qty)
        self._relight(event.slot, step, now)

    def on_tick(self, step: Step, now: int) -> None:
        """Nothing periodic yet."""
