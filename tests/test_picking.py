"""Zone picking as a plain state machine: every behaviour and its exceptions, exact effects."""

from __future__ import annotations

from typing import Any

import pytest

from agent.config import parse_config
from agent.errors import ConfigError
from agent.store import StoredTask
from agent.wire.messages import CancelCommand, Envelope, PickCommand, PickTask, WaveCommand
from agent.workflows.base import Light, Step
from agent.workflows.picking import (
    ZONE_LAMP,
    PickingWorkflow,
    PickSettings,
)
from agent.workflows.scans import gtin14
from devices.events import Button, ButtonPress, Scan

ENV = Envelope(v=1, id="c1", ts=0, body={})
SLOTS = ["A1", "A2", "A3", "T1", "T2"]


def task(tid: str, location: str = "A1", **kw: Any) -> PickTask:
    fields: dict[str, Any] = {"order": "o1", "sku": "S1", "qty": 3, **kw}
    return PickTask(task=tid, location=location, **fields)


def wf(**settings: Any) -> PickingWorkflow:
    return PickingWorkflow(SLOTS, PickSettings(**settings))


def send(w: PickingWorkflow, *tasks: PickTask, now: int = 1) -> Step:
    step = Step()
    w.on_command("pick", ENV, PickCommand(tasks=list(tasks)), step, now)
    return step


def press(w: PickingWorkflow, slot: str, button: Button = Button.CONFIRM, now: int = 2) -> Step:
    step = Step()
    w.on_input(ButtonPress("shelf", slot, button), step, now)
    return step


def scan(w: PickingWorkflow, text: str, now: int = 2, **kw: Any) -> Step:
    step = Step()
    w.on_input(Scan("scanner", text, **kw), step, now)
    return step


def events(step: Step) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for e in step.unit.events:
        body = e.body if isinstance(e.body, dict) else e.body.model_dump(exclude_defaults=True)
        out.append((e.name, body))
    return out


def names(step: Step) -> list[str]:
    return [e.name for e in step.unit.events]


# --- settings ------------------------------------------------------------------------


def _config(settings: str) -> Any:
    import tomllib

    raw = tomllib.loads(f'site = "dc1"\nnode = "z"\nrole = "pick"\n[settings]\n{settings}\n')
    return parse_config(raw, "z.toml", env={})


class _Floor:
    kinds: dict[str, str] = {}

    def locations(self) -> list[str]:
        return ["A1"]


def test_settings_come_from_the_node_file() -> None:
    w = PickingWorkflow.from_config(_config('confirm = "scan"\nbadge_prefix = "B:"'), _Floor())
    assert w.settings.confirm == "scan" and w.settings.badge_prefix == "B:"
    assert w.locations() == ["A1"]


@pytest.mark.parametrize(
    ("line", "field", "reason"),
    [
        ('confirm = "blink"', "settings.confirm", "Input should be 'button', 'scan'"),
        (
            "counters_every_s = -1",
            "settings.counters_every_s",
            "Input should be greater than or equal to 0",
        ),
        ("colour = 1", "settings.colour", "Extra inputs are not permitted"),
        ('default_reason = "lost"', "settings.default_reason", "Input should be 'empty'"),
    ],
)
def test_a_bad_setting_is_a_config_error_naming_the_field(
    line: str, field: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        PickingWorkflow.from_config(_config(line), _Floor())
    assert info.value.file == "z.toml"  # caught when the file is read, before devices open
    assert info.value.field == field
    assert info.value.reason.startswith(reason)


# --- confirm by button -----------------------------------------------------------------


def test_button_confirm_sends_picked_with_times() -> None:
    w = wf()
    assert send(w, task("t1", qty=2, wave=None), now=10).actions == [
        Light("A1", "blue", "steady", 2)
    ]
    step = press(w, "A1", now=25)
    assert step.actions == [Light("A1", None)]
    assert events(step) == [
        (
            "picked",
            {
                "task": "t1",
                "order": "o1",
                "location": "A1",
                "sku": "S1",
                "qty": 2,
                "picked": 2,
                "lit_at": 10,
                "confirmed_at": 25,
            },
        )
    ]
    assert step.unit.drops == {"t1"}
    assert step.unit.counters == {
        "lines_confirmed": 1,
        "units_requested": 2,
        "units_picked": 2,
        "line_ms": 15,
        "lines_picked": 1,
    }


def test_express_lines_blink_reddish_purple_and_light_first() -> None:
    w = wf()
    step = send(
        w, task("t1", priority=5), task("t2", priority=5, express=True, qty=4, location="A2")
    )
    assert sorted(step.actions, key=lambda a: a.location) == [
        Light("A1", "blue", "steady", 3),
        Light("A2", "reddish_purple", "slow_blink", 4),
    ]
    w2 = wf()
    step = send(w2, task("t1", priority=5), task("t2", priority=0, express=True, qty=4))
    assert step.actions == [Light("A1", "reddish_purple", "slow_blink", 4)]


def test_a_task_for_an_unknown_slot_or_past_its_deadline_is_refused() -> None:
    w = wf()
    step = Step()
    verdict = w.on_command(
        "pick",
        ENV,
        PickCommand(tasks=[task("t1", "Z9"), task("t2", deadline=5), task("t3")]),
        step,
        10,
    )
    assert [(i.id, i.status, i.reason) for i in verdict.items] == [
        ("t1", "rejected", "unknown_location"),
        ("t2", "rejected", "expired"),
    ]
    assert set(w.tasks) == {"t3"}


# --- confirm by scan -------------------------------------------------------------------


def test_gtin_normalisation() -> None:
    assert gtin14("4006381333931") == "04006381333931"
    assert gtin14("(01)04006381333931") == "04006381333931"
    assert gtin14("0104006381333931") is None  # all digits, 16 long: not a GTIN by itself
    assert gtin14("ABC") is None


def test_item_scan_confirms_by_gs1_gtin_or_plain_text() -> None:
    w = wf(confirm="scan")
    send(w, task("t1", barcodes=["4006381333931"]), task("t2", "A2", barcodes=["BOX-7"]))
    # Confirm button alone does nothing in scan mode.
    assert press(w, "A1").unit.events == []
    gs1 = "0104006381333931" + "10LOT1"
    step = scan(w, gs1, gtin="04006381333931", fields={"01": "04006381333931"})
    assert [(n, b["task"]) for n, b in events(step)] == [("picked", "t1")]
    step = scan(w, "BOX-7")
    assert [(n, b["task"]) for n, b in events(step)] == [("picked", "t2")]


def test_wrong_item_shows_the_error_sends_misscan_and_keeps_the_line() -> None:
    w = wf(confirm="scan")
    send(w, task("t1", barcodes=["4006381333931"]))
    step = scan(w, "9999999999994", gtin="09999999999994", now=7)
    assert step.actions == [Light("A1", "vermillion", "fast_blink", None, "Err")]
    assert events(step) == [
        (
            "misscan",
            {
                "code": "9999999999994",
                "reason": "wrong_item",
                "expected": ["4006381333931"],
                "location": "A1",
                "task": "t1",
                "at": 7,
            },
        )
    ]
    assert "t1" in w.tasks
    step = scan(w, "4006381333931", gtin="04006381333931")
    assert step.actions == [Light("A1", "blue", "steady", 3), Light("A1", None)]
    assert names(step) == ["picked"]


def test_unreadable_scan_is_a_misscan() -> None:
    w = wf(confirm="scan")
    send(w, task("t1", barcodes=["X"]))
    step = scan(w, "40063813339", error="bad check digit")
    assert [(n, b["reason"]) for n, b in events(step)] == [("misscan", "unreadable")]
    assert step.unit.counters == {"scans": 1, "misscans": 1}


def test_location_then_item() -> None:
    w = wf(confirm="location_then_item", location_prefix="LOC-")
    send(w, task("t1", barcodes=["I1"]), task("t2", "A2", barcodes=["I2"]))
    step = scan(w, "I1")
    assert [(n, b["reason"]) for n, b in events(step)] == [("misscan", "location_first")]
    step = scan(w, "LOC-A3")  # nothing lit there
    assert [(n, b["reason"], b["location"]) for n, b in events(step)] == [
        ("misscan", "wrong_location", "A3")
    ]
    assert scan(w, "LOC-A2").unit.events == []
    step = scan(w, "I1")  # the item of another slot
    assert [(n, b["reason"], b["expected"]) for n, b in events(step)] == [
        ("misscan", "wrong_item", ["I2"])
    ]
    assert step.actions == [Light("A2", "vermillion", "fast_blink", None, "Err")]
    step = scan(w, "I2")
    assert [(n, b["task"]) for n, b in events(step)] == [("picked", "t2")]
    assert step.actions == [Light("A2", "blue", "steady", 3), Light("A2", None)]


def test_button_mode_scan_of_an_unknown_code_is_a_misscan_but_a_lit_item_is_not() -> None:
    w = wf()
    send(w, task("t1", barcodes=["I1"]))
    assert scan(w, "I1").unit.events == []
    assert [(n, b["reason"]) for n, b in events(scan(w, "ZZZ"))] == [("misscan", "unknown_code")]


# --- short picks -----------------------------------------------------------------------


def test_minus_plus_adjust_and_confirm_sends_short_with_reason() -> None:
    w = wf()
    send(w, task("t1", qty=3))
    assert press(w, "A1", Button.MINUS).actions == [Light("A1", "blue", "steady", 2)]
    assert press(w, "A1", Button.MINUS).actions == [Light("A1", "blue", "steady", 1)]
    assert press(w, "A1", Button.PLUS).actions == [Light("A1", "blue", "steady", 2)]
    scan(w, "REASON-damaged")
    step = press(w, "A1", now=9)
    assert [(n, b["qty"], b["picked"], b["reason"]) for n, b in events(step)] == [
        ("short", 3, 2, "damaged")
    ]
    assert step.unit.counters["lines_short"] == 1


def test_quantity_stays_within_zero_and_the_asked_quantity_and_short_scan_sets_it() -> None:
    w = wf()
    send(w, task("t1", qty=2))
    assert press(w, "A1", Button.PLUS).actions == [Light("A1", "blue", "steady", 2)]
    scan(w, "SHORT")
    assert w.tasks["t1"].picked == 1
    scan(w, "SHORT-0")
    assert press(w, "A1", Button.MINUS).actions == [Light("A1", "blue", "steady", 0)]
    step = press(w, "A1")
    assert [(n, b["picked"], b["reason"]) for n, b in events(step)] == [("short", 0, "empty")]


def test_short_code_without_a_line_to_apply_to_is_a_misscan() -> None:
    w = wf()
    send(w, task("t1"), task("t2", "A2"))
    assert [(n, b["reason"]) for n, b in events(scan(w, "SHORT"))] == [("misscan", "no_line")]


def test_in_scan_mode_the_button_confirms_a_short() -> None:
    w = wf(confirm="scan")
    send(w, task("t1", qty=1, barcodes=["I1"]))
    press(w, "A1", Button.MINUS)
    assert [(n, b["picked"]) for n, b in events(press(w, "A1"))] == [("short", 0)]


def test_a_tag_reporting_its_adjusted_quantity_picks_short_with_the_reason() -> None:
    w = wf()
    send(w, task("t1", qty=5), task("t2", "A2", qty=4), task("t3", "A3", qty=2))
    scan(w, "REASON-damaged")  # focus is none: no line to apply to (misscan), then:
    step = Step()
    w.on_input(ButtonPress("atop-1", "A1", Button.CONFIRM, qty=3), step, 5)
    assert [(n, b["qty"], b["picked"], b["reason"]) for n, b in events(step)] == [
        ("short", 5, 3, "empty")
    ]
    step = Step()  # the tag reports what was shown: a plain pick
    w.on_input(ButtonPress("atop-1", "A2", Button.CONFIRM, qty=4), step, 6)
    assert [(n, b["picked"]) for n, b in events(step)] == [("picked", 4)]
    step = Step()  # more than asked is not a pick of more: the asked quantity
    w.on_input(ButtonPress("atop-1", "A3", Button.CONFIRM, qty=9), step, 7)
    assert [(n, b["picked"]) for n, b in events(step)] == [("picked", 2)]


def test_in_scan_mode_a_tag_short_confirms_but_a_plain_press_does_not() -> None:
    w = wf(confirm="scan")
    send(w, task("t1", qty=3, barcodes=["I1"]))
    step = Step()
    w.on_input(ButtonPress("atop-1", "A1", Button.CONFIRM, qty=3), step, 5)
    assert events(step) == []
    w.on_input(ButtonPress("atop-1", "A1", Button.CONFIRM, qty=1), step, 6)
    assert [(n, b["picked"]) for n, b in events(step)] == [("short", 1)]


# --- waves ---------------------------------------------------------------------------


def _wave(w: PickingWorkflow, name: str, wave: str, now: int = 1) -> tuple[Step, Any]:
    step = Step()
    verdict = w.on_command(name, ENV, WaveCommand(wave=wave), step, now)
    return step, verdict


def test_waves_hold_then_light_in_release_order_priority_first() -> None:
    w = wf()
    _wave(w, "wave_begin", "w2")
    _wave(w, "wave_begin", "w1")
    assert send(w, task("a", wave="w2", qty=2), task("b", wave="w1", qty=1)).actions == []
    step, _ = _wave(w, "wave_release", "w1")
    assert step.actions == [Light("A1", "blue", "steady", 1)]
    step, _ = _wave(w, "wave_release", "w2")
    assert step.actions == []  # w1's line is shown until confirmed
    assert press(w, "A1").actions == [Light("A1", "blue", "steady", 2)]
    # A released wave cannot be begun again.
    _, verdict = _wave(w, "wave_begin", "w1")
    assert (verdict.status, verdict.reason) == ("rejected", "wave_released")


def test_priority_wins_over_release_order() -> None:
    w = wf()
    send(w, task("a", qty=1, priority=5))
    assert send(w, task("b", qty=2, priority=1)).actions == [Light("A1", "blue", "steady", 2)]


def test_cancel_reply_says_what_was_open_done_or_unknown() -> None:
    w = wf()
    send(w, task("t1", wave="w"), task("t2", "A2", wave="w"), task("t3", "A3"))
    press(w, "A1")
    step = Step()
    verdict = w.on_command("cancel", ENV, CancelCommand(tasks=["t3", "t1", "nope"]), step, 3)
    assert [(i.id, i.status) for i in verdict.items] == [
        ("t3", "cancelled"),
        ("t1", "done"),
        ("nope", "unknown"),
    ]
    assert step.actions == [Light("A3", None)]
    step, verdict = _wave(w, "wave_cancel", "w")
    assert [(i.id, i.status) for i in verdict.items] == [("t2", "cancelled"), ("t1", "done")]
    assert step.actions == [Light("A2", None)]
    assert w.waves == {} and step.unit.drops >= {"t2", "wave:w"}


# --- pickers -------------------------------------------------------------------------


def test_login_gives_distinct_colours_and_lines_take_their_pickers_colour() -> None:
    w = wf()
    send(w, task("t1", order="o1"), task("t2", "A2", order="o2"), task("t3", "A3", order="o1"))
    step = scan(w, "BADGE-ann", now=5)
    assert events(step) == [("login", {"picker": "ann", "colour": "orange", "orders": 2, "at": 5})]
    assert sorted(step.actions, key=lambda a: a.location) == [
        Light("A1", "orange", "steady", 3),
        Light("A2", "orange", "steady", 3),
        Light("A3", "orange", "steady", 3),
    ]
    step = scan(w, "BADGE-bob")
    assert events(step)[0][1]["colour"] == "sky_blue"
    assert step.actions == []  # ann keeps her orders
    # New orders go to the picker with the fewest open orders.
    step = send(w, task("t4", "T1", order="o3"))
    assert step.actions == [Light("T1", "sky_blue", "steady", 3)]
    step = press(w, "T1")
    assert events(step)[0][1]["picker"] == "bob"


def test_logout_hands_orders_on_and_frees_the_colour() -> None:
    w = wf()
    send(w, task("t1", order="o1"))
    scan(w, "BADGE-ann")
    scan(w, "BADGE-bob")
    step = scan(w, "BADGE-ann", now=8)
    assert events(step) == [("logout", {"picker": "ann", "colour": "orange", "at": 8})]
    assert step.actions == [Light("A1", "sky_blue", "steady", 3)]
    step = scan(w, "BADGE-cy")
    assert events(step)[0][1]["colour"] == "orange"
    scan(w, "BADGE-bob")
    step = scan(w, "BADGE-cy")
    assert step.actions == [Light("A1", "blue", "steady", 3)]  # nobody left: unassigned


def test_login_refused_when_no_colour_is_free() -> None:
    w = wf(picker_colours=["orange"])
    scan(w, "BADGE-ann")
    step = scan(w, "BADGE-bob", now=4)
    assert events(step) == [("login", {"picker": "bob", "reason": "no_free_colour", "at": 4})]
    assert set(w.pickers) == {"ann"}


# --- batch and pick-and-pass -------------------------------------------------------------


def test_batch_colours_per_order_and_put_light_on_the_tote() -> None:
    w = wf(colour_by="order", tote_slots={"tote-9": "T2"})
    step = send(
        w,
        task("t1", order="o1", container="T1", qty=2),
        task("t2", "A2", order="o2", container="tote-9", qty=1),
    )
    assert step.actions == [
        Light("A1", "orange", "steady", 2),
        Light("A2", "sky_blue", "steady", 1),
    ]
    step = press(w, "A1")
    assert step.actions[:2] == [Light("A1", None), Light("T1", "orange", "steady", 2)]
    step = press(w, "A2")
    assert step.actions[:2] == [Light("A2", None), Light("T2", "sky_blue", "steady", 1)]
    # The tote's confirm turns its put light off.
    assert press(w, "T1").actions == [Light("T1", None)]


def test_zone_done_when_the_last_line_of_a_tote_is_confirmed() -> None:
    w = wf()
    send(w, task("t1", container="c1"), task("t2", "A2", container="c1"), task("t3", "A3"))
    step = press(w, "A1")
    assert "zone_done" not in names(step)
    press(w, "A2", Button.MINUS)
    step = press(w, "A2", now=30)
    assert names(step) == ["short", "zone_done"]
    assert events(step)[1] == (
        "zone_done",
        {"order": "o1", "container": "c1", "lines": 2, "short": 1, "at": 30},
    )
    assert Light(ZONE_LAMP, "bluish_green", "steady", None, "donE") in step.actions
    # The next tasks turn the zone lamp off; a line without a tote never lights it.
    assert Light(ZONE_LAMP, None) in send(w, task("t4", container="c2")).actions
    assert names(press(w, "A3")) == ["picked"]


# --- deadline, counters, restore -----------------------------------------------------


def test_a_line_past_its_deadline_goes_dark_and_is_reported() -> None:
    w = wf()
    send(w, task("t1", deadline=100), task("t2", deadline=100, priority=9), now=10)
    step = Step()
    w.on_tick(step, 99)
    assert step.unit.events == []
    step = Step()
    w.on_tick(step, 100)
    assert [(n, b["task"], b["deadline"]) for n, b in events(step)] == [
        ("expired", "t1", 100),
        ("expired", "t2", 100),
    ]
    assert step.actions == [Light("A1", None)]
    assert w.tasks == {}


def test_counters_are_published_periodically() -> None:
    w = wf(counters_every_s=60)
    send(w, task("t1"))
    press(w, "A1")
    step = Step()
    w.on_tick(step, 1_000)
    assert step.unit.events == []
    step = Step()
    w.on_tick(step, 61_000)
    assert names(step) == ["counters"]
    body = events(step)[0][1]
    assert body["counts"]["lines_picked"] == 1 and body["open_lines"] == 0


def test_restore_clears_every_light_then_relights_with_progress_and_pickers() -> None:
    w = wf()
    send(w, task("t1", container="c1"), task("t2", "A2", order="o2"), now=5)
    scan(w, "BADGE-ann")
    press(w, "A1", Button.MINUS)
    rows = {line.task: line.stored() for line in w.tasks.values()}
    rows["picker:ann"] = StoredTask(
        "picker:ann", "picker", None, {"colour": "orange", "since": 1, "seq": 0}
    )
    again = wf()
    step = Step()
    again.restore(list(rows.values()), step, 1000)
    offs = [Light(s, None) for s in SLOTS] + [Light(ZONE_LAMP, None)]
    assert step.actions[: len(offs)] == offs
    assert sorted(step.actions[len(offs) :], key=lambda a: a.location) == [
        Light("A1", "orange", "steady", 2),
        Light("A2", "orange", "steady", 3),
    ]
    assert again.tasks["t1"].lit_at == 5  # the original lit time survives
    assert [(n, b.get("picked"), b["picker"]) for n, b in events(press(again, "A1"))] == [
        ("short", 2, "ann"),
        ("zone_done", None, "ann"),
    ]
    assert again.snapshot()["pickers"] == {"ann": {"colour": "orange", "since": 1}}


def test_restore_reads_rows_of_the_older_format() -> None:
    row = StoredTask(
        "t1",
        "pick",
        None,
        {
            "task": {"task": "t1", "order": "o", "location": "A1", "sku": "s", "qty": 2},
            "arrival": 0,
            "released": True,
            "lit_at": 3,
        },
    )
    w = wf()
    step = Step()
    w.restore([row], step, 10)
    assert step.actions[-1] == Light("A1", "blue", "steady", 2)


def test_snapshot_lists_open_lines_pickers_and_waves() -> None:
    w = wf()
    _wave(w, "wave_begin", "w1")
    send(w, task("t1"), task("t2"), task("t3", wave="w1"))
    snap = w.snapshot()
    assert snap["open_lines"] == 3
    assert snap["waves"] == {"w1": "begun"}
    assert snap["locations"]["A1"]["open"] == 3
    assert snap["locations"]["A1"]["shown"]["task"] == "t1"


# --- a press is bound to what its slot showed -------------------------------------------


def bound(w: PickingWorkflow, slot: str, shown: str, button: Button = Button.CONFIRM) -> Step:
    """A press as the floor hands it over: with what its slot showed when it was pressed."""
    step = Step()
    w.on_input(ButtonPress("shelf", slot, button, shown=shown), step, 2)
    return step


def test_lights_name_the_line_they_show() -> None:
    w = wf(tote_slots={"c1": "T1"})
    step = send(w, task("t1", container="c1", qty=2), task("t2", "A2"))
    assert [(a.location, a.shows) for a in step.actions if isinstance(a, Light)] == [
        ("A1", "t1"),
        ("A2", "t2"),
    ]
    step = bound(w, "A1", "t1")
    assert [(a.location, a.shows) for a in step.actions if isinstance(a, Light)] == [
        ("A1", None),  # off: the floor notes the slot as dark
        ("T1", "tote:2"),
        (ZONE_LAMP, None),
    ]


def test_a_queued_press_does_not_confirm_the_slots_next_line() -> None:
    """Five presses made while t1 was lit, handled late: t1 is confirmed, nothing else."""
    w = wf()
    send(w, *(task(f"t{i}", order=f"o{i}", priority=i) for i in range(1, 6)))
    assert w.lit["A1"] == "t1"
    first = bound(w, "A1", "t1")
    assert names(first) == ["picked"] and first.ignored == []
    for _ in range(4):
        step = bound(w, "A1", "t1")
        assert names(step) == [] and step.actions == []
        assert step.ignored == ["stale_press"]
    assert w.lit["A1"] == "t2" and set(w.tasks) == {"t2", "t3", "t4", "t5"}
    # Plus and minus are bound too; a press made for t2 confirms t2.
    assert bound(w, "A1", "t1", Button.MINUS).ignored == ["stale_press"]
    assert w.tasks["t2"].picked is None
    assert names(bound(w, "A1", "t2")) == ["picked"]


def test_a_press_on_a_dark_slot_does_not_confirm_a_line_lit_since() -> None:
    w = wf()
    send(w, task("t1", "A2"))
    step = bound(w, "A1", "")  # dark when pressed, and still dark: nothing to do
    assert step.ignored == [] and names(step) == []
    send(w, task("t2"))
    step = bound(w, "A1", "")  # dark when pressed; t2 lit since
    assert step.ignored == ["stale_press"] and "t2" in w.tasks


def test_a_press_for_a_cancelled_line_confirms_nothing() -> None:
    w = wf()
    send(w, task("t1"), task("t2", priority=9))
    w.on_command("cancel", ENV, CancelCommand(tasks=["t1"]), Step(), 3)
    assert w.lit["A1"] == "t2"
    assert bound(w, "A1", "t1").ignored == ["stale_press"]
    assert set(w.tasks) == {"t2"}


def test_a_press_the_floor_could_not_bind_is_taken_for_what_is_shown() -> None:
    """Input not made through the floor (a test, a tool) has no ``shown``: as before."""
    w = wf()
    send(w, task("t1"), task("t2", priority=9))
    assert names(press(w, "A1")) == ["picked"]
    assert names(press(w, "A1")) == ["picked"]


def test_a_tote_press_confirms_only_the_quantity_it_showed() -> None:
    w = wf(tote_slots={"c1": "T1"})
    send(w, task("t1", container="c1", qty=2), task("t2", "A2", container="c1", qty=1))
    bound(w, "A1", "t1")  # put 2 into T1
    bound(w, "A2", "t2")  # put 1 more: T1 now says 3
    assert bound(w, "T1", "tote:2").ignored == ["stale_press"]
    assert press(w, "T1").actions == [Light("T1", None)]
