"""Zone picking's state machine (see the package docstring for the whole flow).

The open lines, the logged-in pickers and the order assignment live here; what survives a
restart is in the store (one task per line, per begun wave and per logged-in picker).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Literal

from agent.config import NodeConfig
from agent.store import StoredTask
from agent.wire.messages import (
    CancelCommand,
    Envelope,
    ItemResult,
    PickCommand,
    WaveCommand,
    Wire,
)
from agent.workflows.base import (
    STALE_PRESS,
    ZONE_LAMP,
    FloorInfo,
    Step,
    Verdict,
    press_saw,
    settings_from,
)
from agent.workflows.picking.messages import (
    Counters,
    Expired,
    Misscan,
    Picked,
    PickerChange,
    Short,
    ZoneDone,
)
from agent.workflows.picking.model import TASK, Line, Picker
from agent.workflows.picking.screen import LocationView, PickScreen
from agent.workflows.picking.settings import PickSettings
from agent.workflows.scans import scan_matches
from devices.events import Button, ButtonPress, Scan
from devices.lights.palette import DONE, ERROR, Colour, express

WAVE = "wave"
PICKER = "picker"

DEFAULT = Colour.BLUE.value
"""Colour of a line nobody is assigned to."""


def _tote_shows(qty: int) -> str:
    """What a tote's put light stands for: the quantity to put (a press confirms that)."""
    return f"tote:{qty}"


# --- the workflow ------------------------------------------------------------------------


class PickingWorkflow:
    """Zone picking on a node's slots.

    Args:
        locations: the slots this node lights (from its light devices).
        settings: the node's pick settings (defaults: confirm by button).
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
        """The workflow of a pick node, over the slots its light devices cover.

        Raises:
            ConfigError: a ``[settings]`` value is invalid.
        """
        settings: PickSettings = settings_from(PickSettings, config.settings)
        return cls(floor.locations(), settings)

    def __init__(self, locations: list[str], settings: PickSettings | None = None) -> None:
        self.settings = settings or PickSettings()
        self._locations = list(locations)
        self._known = set(locations)
        self.tasks: dict[str, Line] = {}
        self._at: dict[str, dict[str, Line]] = {loc: {} for loc in locations}
        # location -> the line _next_for would pick, when known: a wave of 10,000 lines on
        # 8 slots would otherwise rescan every open line of a slot on each relight.
        self._best: dict[str, Line | None] = {}
        self.waves: dict[str, str] = {}  # wave -> "begun" | "released"
        self.lit: dict[str, str] = {}  # location -> task id shown there
        self.pickers: dict[str, Picker] = {}
        self.orders: dict[str, str] = {}  # order -> picker it is assigned to
        self._open_orders: dict[str, int] = {}  # order -> open lines
        self._groups: dict[tuple[str, str | None], list[int]] = {}  # [open, done, short]
        self._order_colour: dict[str, int] = {}
        self._errors: set[str] = set()  # locations showing ERROR
        self._totes: dict[str, tuple[str, int]] = {}  # tote slot -> (colour, qty to put)
        self._armed: str | None = None  # location scanned, waiting for its item
        self._focus: str | None = None  # the line short codes apply to
        self._done: OrderedDict[str, str | None] = OrderedDict()  # finished id -> wave
        self._deadlines: set[str] = set()
        self._zone_lit = False
        self._zone_tote: tuple[str, str] | None = None  # (order, tote) the zone lamp is for
        self._arrivals = 0
        self._releases = 0
        self._logins = 0
        self.counts: dict[str, int] = {}
        self._since: int | None = None
        self._counters_at: int | None = None

    def locations(self) -> list[str]:
        """Slots of this node."""
        return list(self._locations)

    # --- restore -------------------------------------------------------------------

    def restore(self, tasks: list[StoredTask], step: Step, now: int) -> None:
        """Reload lines, waves and pickers; clear every light, then light what is open."""
        self._since = now
        pickers: list[tuple[str, dict[str, Any]]] = []
        for row in tasks:
            if row.kind == WAVE:
                self.waves[row.id.removeprefix("wave:")] = row.data["state"]
            elif row.kind == PICKER:
                pickers.append((row.id.removeprefix("picker:"), row.data))
            elif row.kind == TASK:
                line = Line.from_stored(row)
                if line.location not in self._known:
                    continue  # the node file lost the slot: the line cannot be shown
                self._hold(line)
                self._arrivals = max(self._arrivals, line.arrival + 1)
                self._releases = max(self._releases, line.release + 1)
        for seq, (picker_id, data) in enumerate(sorted(pickers, key=lambda p: p[1]["seq"])):
            self.pickers[picker_id] = Picker(Colour(data["colour"]), data["since"], data["seq"])
            self._logins = max(self._logins, seq, data["seq"]) + 1
        for line in self.tasks.values():
            if line.picker is not None and line.picker in self.pickers:
                self.orders[line.order] = line.picker
            if line.colour is not None:
                self._order_colour[line.order] = line.colour
        for location in self._locations:
            step.off(location)
        step.off(ZONE_LAMP)
        for location in sorted({line.location for line in self.tasks.values()}):
            self._relight(location, step, now)

    def _hold(self, line: Line) -> None:
        self.tasks[line.task] = line
        self._at[line.location][line.task] = line
        self._offer(line)
        self._open_orders[line.order] = self._open_orders.get(line.order, 0) + 1
        self._groups.setdefault(line.group, [0, 0, 0])[0] += 1
        if line.deadline is not None:
            self._deadlines.add(line.task)

    def _release_line(self, line: Line, step: Step) -> Line:
        """Forget ``line``: it was confirmed, cancelled or expired."""
        del self.tasks[line.task]
        del self._at[line.location][line.task]
        if self._best.get(line.location, line) is line:
            self._best.pop(line.location, None)  # recomputed on the next _next_for
        self._deadlines.discard(line.task)
        left = self._open_orders[line.order] - 1
        if left:
            self._open_orders[line.order] = left
        else:
            del self._open_orders[line.order]
            self.orders.pop(line.order, None)
            self._order_colour.pop(line.order, None)
        self._groups[line.group][0] -= 1
        if self._focus == line.location:
            self._focus = None
        if self._armed == line.location:
            self._armed = None
        step.unit.drop_task(line.task)
        if self.settings.done_memory:
            self._done[line.task] = line.wave
            while len(self._done) > self.settings.done_memory:
                self._done.popitem(last=False)
        return line

    def _forget_group(self, line: Line) -> None:
        """A tote with nothing open left after a cancel or expiry: no ``zone_done``."""
        group = self._groups.get(line.group)
        if group is not None and group[0] == 0:
            del self._groups[line.group]

    def _count(self, step: Step, name: str, delta: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + delta
        step.unit.count(name, delta)

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
            waiting = sorted(
                (t for t in self.tasks.values() if t.wave == body.wave and not t.released),
                key=lambda t: t.arrival,
            )
            touched = set()
            for line in waiting:
                line.release = self._releases
                self._releases += 1
                self._offer(line)
                self._assign(line)
                step.unit.put_task(line.stored())
                touched.add(line.location)
            if touched:
                self._zone_off(step)
            for location in sorted(touched):
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
            if task.deadline is not None and task.deadline <= now:
                items.append(ItemResult(id=task.task, status="rejected", reason="expired"))
                continue
            released = task.wave is None or self.waves.get(task.wave, "released") == "released"
            line = Line.of(task, self._arrivals, self._releases if released else -1)
            self._arrivals += 1
            if released:
                self._releases += 1
            self._hold(line)
            if released:
                self._assign(line)
            step.unit.put_task(line.stored())
            touched.add(task.location)
        if touched:
            self._zone_off(step)
        for location in sorted(touched):
            self._relight(location, step, now)
        return Verdict.accepted(items)

    def _cancel(self, task_ids: list[str], wave: str | None, step: Step, now: int) -> Verdict:
        targets = list(dict.fromkeys(task_ids))
        if wave is not None:
            chosen = set(targets)
            targets += [
                t for t, line in self.tasks.items() if line.wave == wave and t not in chosen
            ]
            chosen.update(targets)
            targets += [t for t, w in self._done.items() if w == wave and t not in chosen]
        items: list[ItemResult] = []
        touched: set[str] = set()
        for task_id in targets:
            line = self.tasks.get(task_id)
            if line is None:
                status: Literal["done", "unknown"] = "done" if task_id in self._done else "unknown"
                items.append(ItemResult(id=task_id, status=status))
                continue
            self._release_line(line, step)
            self._forget_group(line)
            self._done.pop(task_id, None)  # cancelled, not done
            self._count(step, "lines_cancelled")
            items.append(ItemResult(id=task_id, status="cancelled"))
            touched.add(line.location)
        for location in sorted(touched):
            self._relight(location, step, now)
        return Verdict.accepted(items)

    # --- pickers and colours ---------------------------------------------------------

    def _assign(self, line: Line) -> None:
        """Give a released line's order a picker (and, in batch mode, a colour)."""
        if self.settings.colour_by == "order" and line.colour is None:
            index = self._order_colour.get(line.order)
            if index is None:
                used = set(self._order_colour.values())
                index = next(i for i in range(len(used) + 1) if i not in used)
                self._order_colour[line.order] = index
            line.colour = index
        if not self.pickers:
            line.picker = None
            return
        owner = self.orders.get(line.order)
        if owner is None:
            owner = self._least_loaded()
            self.orders[line.order] = owner
        line.picker = owner

    def _least_loaded(self) -> str:
        load = dict.fromkeys(self.pickers, 0)
        for picker in self.orders.values():
            if picker in load:
                load[picker] += 1
        return min(load, key=lambda p: (load[p], self.pickers[p].seq))

    def _colour_of(self, line: Line) -> str:
        if self.settings.colour_by == "order" and line.colour is not None:
            colours = self.settings.picker_colours
            return colours[line.colour % len(colours)].value
        if line.picker is not None and line.picker in self.pickers:
            return self.pickers[line.picker].colour.value
        return DEFAULT

    def _login(self, picker_id: str, step: Step, now: int) -> None:
        if picker_id in self.pickers:
            self._logout(picker_id, step, now)
            return
        taken = {p.colour for p in self.pickers.values()}
        free = [c for c in self.settings.picker_colours if c not in taken]
        if not free:
            step.emit(
                "login",
                PickerChange(picker=picker_id, reason="no_free_colour", at=now),
                ts=now,
            )
            return
        picker = Picker(free[0], now, self._logins)
        self._logins += 1
        self.pickers[picker_id] = picker
        step.unit.put_task(
            StoredTask(
                f"picker:{picker_id}",
                PICKER,
                None,
                {"colour": picker.colour.value, "since": now, "seq": picker.seq},
            )
        )
        self._count(step, "logins")
        self._reassign(step, now)
        orders = sum(1 for p in self.orders.values() if p == picker_id)
        step.emit(
            "login",
            PickerChange(picker=picker_id, colour=picker.colour.value, orders=orders, at=now),
            ts=now,
        )

    def _logout(self, picker_id: str, step: Step, now: int) -> None:
        picker = self.pickers.pop(picker_id)
        step.unit.drop_task(f"picker:{picker_id}")
        for order in [o for o, p in self.orders.items() if p == picker_id]:
            del self.orders[order]
        self._count(step, "logouts")
        self._reassign(step, now)
        step.emit(
            "logout", PickerChange(picker=picker_id, colour=picker.colour.value, at=now), ts=now
        )

    def _reassign(self, step: Step, now: int) -> None:
        """Give every released line without a logged-in picker one, and relight changes."""
        touched: set[str] = set()
        for line in sorted(self.tasks.values(), key=lambda t: t.release):
            if not line.released:
                continue
            if line.picker is not None and line.picker in self.pickers:
                continue
            before = line.picker
            self._assign(line)
            if line.picker != before:
                step.unit.put_task(line.stored())
                touched.add(line.location)
        for location in sorted(touched):
            self.lit.pop(location, None)  # force the new colour out
            self._relight(location, step, now)

    # --- lights ----------------------------------------------------------------------

    def _offer(self, line: Line) -> None:
        """Keep the known best line of ``line``'s location up to date with ``line``."""
        if line.release < 0 or line.location not in self._best:
            return
        best = self._best[line.location]
        if best is None or (line.priority, line.release, line.arrival) < (
            best.priority,
            best.release,
            best.arrival,
        ):
            self._best[line.location] = line

    def _next_for(self, location: str) -> Line | None:
        """The released line ``location`` shows: most urgent, then released, then received."""
        if location in self._best:
            return self._best[location]
        best: Line | None = None
        for line in self._at[location].values():
            if line.release < 0:
                continue
            if best is None or (line.priority, line.release, line.arrival) < (
                best.priority,
                best.release,
                best.arrival,
            ):
                best = line
        self._best[location] = best
        return best

    def _show(self, line: Line, step: Step) -> None:
        colour = self._colour_of(line)
        qty, task = line.to_pick, line.task
        if line.express:
            if colour == DEFAULT:
                shown = express(qty)
                step.light(line.location, shown.colour.value, shown.pattern.value, qty, shows=task)
            else:
                step.light(line.location, colour, "slow_blink", qty, shows=task)
        else:
            step.light(line.location, colour, "steady", qty, shows=task)

    def _relight(self, location: str, step: Step, now: int, *, force: bool = False) -> None:
        if location in self._totes:
            return  # the tote's put light wins until it is confirmed
        line = self._next_for(location)
        shown = self.lit.get(location)
        if line is None:
            if shown is not None or force:
                self.lit.pop(location, None)
                step.off(location)
            return
        if shown == line.task and not force:
            return
        self.lit[location] = line.task
        if line.lit_at is None:
            line.lit_at = now
            step.unit.put_task(line.stored())
        self._show(line, step)

    def _error(self, location: str | None, step: Step) -> None:
        if location is None:
            return
        self._errors.add(location)
        step.light(location, ERROR.colour.value, ERROR.pattern.value, text=ERROR.text)

    def _clear_errors(self, step: Step, now: int) -> None:
        errors, self._errors = self._errors, set()
        for location in errors:
            self._relight(location, step, now, force=True)

    def _zone_off(self, step: Step) -> None:
        if self._zone_lit:
            self._zone_lit = False
            step.off(ZONE_LAMP)

    # --- input -------------------------------------------------------------------------

    def on_input(self, event: object, step: Step, now: int) -> None:
        """Buttons confirm and adjust lines; scans confirm, log pickers in, or set shorts."""
        if isinstance(event, ButtonPress):
            self._press(event, step, now)
        elif isinstance(event, Scan):
            self._scan(event, step, now)

    def _press(self, event: ButtonPress, step: Step, now: int) -> None:
        slot = event.slot
        if event.button is Button.CONFIRM and slot in self._totes:
            if not press_saw(event, _tote_shows(self._totes[slot][1])):
                step.ignored.append(STALE_PRESS)  # a put light that has grown since
                return
            del self._totes[slot]
            self._clear_errors(step, now)
            self.lit.pop(slot, None)
            self._relight(slot, step, now, force=True)
            return
        task_id = self.lit.get(slot)
        if slot in self._known and not press_saw(event, task_id):
            # Pressed for a line this slot no longer shows (the press waited, or the light
            # changed under the finger): it confirms nothing nobody saw (docs/protocol.md).
            step.ignored.append(STALE_PRESS)
            return
        if task_id is None:
            return
        line = self.tasks[task_id]
        self._clear_errors(step, now)
        self._focus = slot  # a press says where the picker stands: misscans show there
        if event.button is Button.CONFIRM:
            if event.qty is not None and event.qty != line.to_pick:
                # A tag's up/down keys set what was picked and the key reported it (an
                # ATOP shortage or confirm): a short pick of that quantity.
                picked = max(0, min(line.qty, event.qty))
                line.picked = None if picked == line.qty else picked
                if line.picked is not None and line.reason is None:
                    line.reason = self.settings.default_reason
            if self.settings.confirm != "button" and line.picked is None:
                return  # scan modes: the button only confirms a short pick
            self._confirm(line, step, now)
            return
        delta = 1 if event.button is Button.PLUS else -1
        self._adjust(line, line.to_pick + delta, step)

    def _adjust(self, line: Line, picked: int, step: Step) -> None:
        picked = max(0, min(line.qty, picked))
        line.picked = None if picked == line.qty else picked
        if line.picked is not None and line.reason is None:
            line.reason = self.settings.default_reason
        step.unit.put_task(line.stored())
        self._show(line, step)

    def _confirm(self, line: Line, step: Step, now: int) -> None:
        self._release_line(line, step)
        picked = line.to_pick
        common: dict[str, Any] = {
            "task": line.task,
            "order": line.order,
            "location": line.location,
            "sku": line.sku,
            "qty": line.qty,
            "picked": picked,
            "wave": line.wave,
            "container": line.container,
            "lit_at": line.lit_at,
            "confirmed_at": now,
            "picker": line.picker,
            "express": line.express,
        }
        group = self._groups[line.group]
        self._count(step, "lines_confirmed")
        self._count(step, "units_requested", line.qty)
        self._count(step, "units_picked", picked)
        if line.lit_at is not None:
            self._count(step, "line_ms", max(0, now - line.lit_at))
        if picked < line.qty:
            reason = line.reason or self.settings.default_reason
            step.emit("short", Short(**common, reason=reason), ts=now)
            self._count(step, "lines_short")
            group[2] += 1
        else:
            step.emit("picked", Picked(**common), ts=now)
            self._count(step, "lines_picked")
        group[1] += 1
        if group[0]:
            self._zone_off(step)
        self._relight(line.location, step, now)
        if picked > 0:
            self._to_tote(line, picked, step)
        if group[0] == 0:
            del self._groups[line.group]
            if line.container is None:
                return  # no tote to pass on
            self._zone_lit = True
            self._zone_tote = (line.order, line.container)
            step.light(ZONE_LAMP, DONE.colour.value, DONE.pattern.value, text=DONE.text)
            step.emit(
                "zone_done",
                ZoneDone(
                    order=line.order,
                    container=line.container,
                    lines=group[1],
                    short=group[2],
                    picker=line.picker,
                    at=now,
                ),
                ts=now,
            )
            self._count(step, "zone_done")

    def _to_tote(self, line: Line, picked: int, step: Step) -> None:
        if line.container is None:
            return
        slot = self.settings.tote_slots.get(line.container)
        if slot is None and line.container in self._known:
            slot = line.container
        if slot is None or slot not in self._known:
            return
        colour = self._colour_of(line)
        _, before = self._totes.get(slot, (colour, 0))
        self._totes[slot] = (colour, before + picked)
        self.lit.pop(slot, None)
        step.light(
            slot, colour, "steady", min(before + picked, 9999), shows=_tote_shows(before + picked)
        )

    # --- scans -------------------------------------------------------------------------

    def _scan(self, scan: Scan, step: Step, now: int) -> None:
        s = self.settings
        text = scan.text
        self._count(step, "scans")
        if scan.error is not None:
            self._misscan(text, "unreadable", [], None, None, step, now)
            return
        if text.startswith(s.badge_prefix) and len(text) > len(s.badge_prefix):
            self._clear_errors(step, now)
            self._login(text[len(s.badge_prefix) :][:64], step, now)
            return
        if s.short_barcode is not None and (
            text == s.short_barcode or text.startswith(s.short_barcode + "-")
        ):
            self._short_code(text[len(s.short_barcode) + 1 :], text, step, now)
            return
        if s.reason_prefix is not None and text.startswith(s.reason_prefix):
            self._reason_code(text[len(s.reason_prefix) :], text, step, now)
            return
        if s.confirm == "location_then_item":
            location = text[len(s.location_prefix) :] if text.startswith(s.location_prefix) else ""
            if location in self._known:
                if location in self.lit:
                    self._clear_errors(step, now)
                    self._armed = self._focus = location
                else:
                    self._misscan(text, "wrong_location", [], location, None, step, now)
                return
            if self._armed is None:
                self._misscan(text, "location_first", [], None, None, step, now)
                return
            armed = self.lit.get(self._armed)
            if armed is None:
                self._armed = None
                self._misscan(text, "location_first", [], None, None, step, now)
                return
            line = self.tasks[armed]
            if scan_matches(scan, line.barcodes):
                self._clear_errors(step, now)
                self._confirm(line, step, now)
            else:
                self._misscan(text, "wrong_item", list(line.barcodes), line, None, step, now)
            return
        candidates = [
            self.tasks[task_id]
            for task_id in self.lit.values()
            if scan_matches(scan, self.tasks[task_id].barcodes)
        ]
        if s.confirm == "button":
            if not candidates:
                self._misscan(text, "unknown_code", [], None, None, step, now)
            return  # a check scan of a lit item needs no answer
        if candidates:
            line = min(
                candidates,
                key=lambda t: (t.location != self._focus, t.priority, t.release, t.arrival),
            )
            self._clear_errors(step, now)
            self._confirm(line, step, now)
            return
        focus = self._focused()
        if focus is not None:
            self._misscan(text, "wrong_item", list(focus.barcodes), focus, None, step, now)
        else:
            self._misscan(text, "unknown_code", [], None, None, step, now)

    def _focused(self) -> Line | None:
        """The line short and reason codes apply to: focused, else the only one lit."""
        location = self._armed or self._focus
        if location is None and len(self.lit) == 1:
            location = next(iter(self.lit))
        task_id = self.lit.get(location) if location is not None else None
        return self.tasks[task_id] if task_id is not None else None

    def _short_code(self, arg: str, text: str, step: Step, now: int) -> None:
        line = self._focused()
        if line is None or (arg and not arg.isdigit()):
            self._misscan(text, "no_line", [], None, None, step, now)
            return
        self._clear_errors(step, now)
        self._focus = line.location
        self._adjust(line, int(arg) if arg else line.to_pick - 1, step)

    def _reason_code(self, reason: str, text: str, step: Step, now: int) -> None:
        line = self._focused()
        if line is None or reason not in ("empty", "damaged", "not_found"):
            self._misscan(text, "no_line", [], None, None, step, now)
            return
        self._clear_errors(step, now)
        line.reason = reason
        step.unit.put_task(line.stored())

    def _misscan(
        self,
        code: str,
        reason: str,
        expected: list[str],
        at: Line | str | None,
        picker: str | None,
        step: Step,
        now: int,
    ) -> None:
        line = at if isinstance(at, Line) else None
        location = line.location if line is not None else at if isinstance(at, str) else None
        if line is not None:
            picker = line.picker
        elif picker is None and len(self.pickers) == 1:
            picker = next(iter(self.pickers))
        step.emit(
            "misscan",
            Misscan(
                code=code[:128],
                reason=reason,
                expected=expected,
                location=location,
                task=line.task if line is not None else None,
                picker=picker,
                at=now,
            ),
            ts=now,
        )
        self._count(step, "misscans")
        if location in self._known:
            self._error(location, step)

    # --- clock ---------------------------------------------------------------------

    def on_tick(self, step: Step, now: int) -> None:
        """Expire lines past their deadline; publish the counters when due."""
        if self._since is None:
            self._since = now
        expired = [
            self.tasks[t]
            for t in self._deadlines
            if (d := self.tasks[t].deadline) is not None and d <= now
        ]
        touched: set[str] = set()
        for line in sorted(expired, key=lambda t: t.arrival):
            self._release_line(line, step)
            self._forget_group(line)
            self._done.pop(line.task, None)
            assert line.deadline is not None
            step.emit(
                "expired",
                Expired(
                    task=line.task,
                    order=line.order,
                    location=line.location,
                    deadline=line.deadline,
                    lit_at=line.lit_at,
                    at=now,
                ),
                ts=now,
            )
            self._count(step, "lines_expired")
            touched.add(line.location)
        for location in sorted(touched):
            self._relight(location, step, now)
        every = self.settings.counters_every_s * 1000
        if not every:
            return
        if self._counters_at is None:
            self._counters_at = now
        elif now - self._counters_at >= every:
            self._counters_at = now
            step.emit(
                "counters",
                Counters(
                    since=self._since,
                    at=now,
                    counts=dict(self.counts),
                    open_lines=len(self.tasks),
                    pickers=len(self.pickers),
                ),
                ts=now,
            )

    # --- screen --------------------------------------------------------------------

    def snapshot(self) -> PickScreen:
        """Open lines per location (the one shown, and how many wait), pickers and waves."""
        locations: dict[str, LocationView] = {}
        for location in self._locations:
            lines = self._at[location]
            if not lines and location not in self._totes:
                continue
            task_id = self.lit.get(location)
            shown = self.tasks.get(task_id) if task_id is not None else None
            locations[location] = {
                "open": len(lines),
                "shown": None
                if shown is None
                else {
                    "task": shown.task,
                    "order": shown.order,
                    "sku": shown.sku,
                    "qty": shown.qty,
                    "picked": shown.to_pick,
                    "picker": shown.picker,
                    "express": shown.express,
                    "lit_at": shown.lit_at,
                    "description": shown.description,
                    "container": shown.container,
                },
                "tote": None
                if location not in self._totes
                else {"colour": self._totes[location][0], "qty": self._totes[location][1]},
                "error": location in self._errors,
            }
        return {
            "open_lines": len(self.tasks),
            "locations": locations,
            "pickers": {
                name: {"colour": p.colour.value, "since": p.since}
                for name, p in self.pickers.items()
            },
            "orders": dict(self.orders),
            "waves": dict(self.waves),
            "zone_done": self._zone_lit,
            "zone_done_tote": None
            if not self._zone_lit or self._zone_tote is None
            else {"order": self._zone_tote[0], "container": self._zone_tote[1]},
            "counts": dict(self.counts),
        }
