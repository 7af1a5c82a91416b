"""Pack station: the state machine driven directly (no asyncio, broker or hardware)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from agent.errors import ConfigError
from agent.i18n import catalogue, msg, render
from agent.store import StoredTask
from agent.wire.codec import pack_local, unpack_local
from agent.wire.messages import Envelope
from agent.workflows.base import Print, PrintSlip, Step
from agent.workflows.cartons import MATERIALS, BoxSize, Item, expected_weight_g, suggest_box
from agent.workflows.labels import (
    LabelData,
    build_sscc,
    field_text,
    gs1_check_digit,
    shipping_label,
    sscc_error,
)
from agent.workflows.packing import (
    PackCancel,
    PackCommand,
    PackingWorkflow,
    PackSettings,
    check_weight,
)
from agent.workflows.picking import PickingWorkflow
from agent.workflows.putwall import PutWallWorkflow
from devices.events import DeviceHealthChanged, Weight
from devices.printers.base import PrintResult
from devices.scanners.interpret import interpret

ENV = Envelope(v=1, id="c1", ts=0, body={})
GTIN_A = "4006381333931"  # S1, EAN-13
GTIN_B = "5901234123457"  # in no line of o1
SSCC = "376104250021234569"
SUPERVISORS = {"SUP-7731": "maria"}
EXPECTED = 847.4  # 2 x 200 g + 150 g + box M 280 g + 11.605 l of air pillows at 1.5 g/l


def order(order_id: str = "o1", **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
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
            "ship_to": {
                "name": "Ann Smith",
                "address": ["1 High St"],
                "postcode": "AB1 2CD",
                "city": "Leeds",
            },
            "carrier": "DPD",
            "service": "Next day",
            "sscc": SSCC,
        },
    }
    body.update(kw)
    return body


class Station:
    """A workflow plus a store made of its own task writes (round-tripped like SQLite)."""

    def __init__(self, settings: PackSettings | None = None, tasks: dict[str, Any] | None = None):
        self.settings = settings or PackSettings(supervisors=SUPERVISORS)
        self.tasks: dict[str, bytes] = dict(tasks or {})  # a copy: each restart its own
        self.wf = PackingWorkflow(
            self.settings, label_printer="label", scale="scale", slip_printer="slip"
        )
        self.events: list[tuple[str, Any]] = []
        self.actions: list[Any] = []
        self.now = 1000
        self.restore()

    def restore(self) -> None:
        step = Step()
        rows = [StoredTask(i, "pack_order", None, unpack_local(d)) for i, d in self.tasks.items()]
        self.wf.restore(rows, step, self.now)
        self._apply(step)

    def _apply(self, step: Step) -> Step:
        for task_id in step.unit.drops:
            self.tasks.pop(task_id, None)
        for task in step.unit.puts.values():
            self.tasks[task.id] = pack_local(task.data)
        self.events += [(e.name, e.body) for e in step.unit.events]
        self.actions += step.actions
        return step

    def command(self, name: str, body: dict[str, Any]) -> Any:
        self.now += 1
        step = Step()
        model = self.wf.commands[name].model_validate(body)
        verdict = self.wf.on_command(name, ENV, model, step, self.now)
        self._apply(step)
        return verdict

    def feed(self, event: object) -> Step:
        self.now += 100
        step = Step()
        self.wf.on_input(event, step, self.now)
        return self._apply(step)

    def scan(self, code: str, symbology: str | None = None) -> Step:
        return self.feed(interpret("scanner", code, symbology, at=0.0))

    def weigh(self, grams: float, stable: bool = True) -> Step:
        return self.feed(Weight("scale", grams, stable))

    def tick(self, advance_ms: int) -> Step:
        self.now += advance_ms
        step = Step()
        self.wf.on_tick(step, self.now)
        return self._apply(step)

    def take(self) -> list[tuple[str, dict[str, Any]]]:
        out = [(n, b.model_dump()) for n, b in self.events]
        self.events.clear()
        return out

    def names(self) -> list[str]:
        return [n for n, _ in self.take()]

    def prints(self) -> list[Print]:
        out = [a for a in self.actions if isinstance(a, Print)]
        self.actions = [a for a in self.actions if not isinstance(a, Print)]
        return out

    @property
    def screen(self) -> dict[str, Any]:
        return self.wf.snapshot()


def verified_station(**kw: Any) -> Station:
    s = Station(**kw)
    assert s.command("pack", order()).status == "accepted"
    s.scan("T-o1")
    for code in (GTIN_A, GTIN_A, "S2-CODE"):
        s.scan(code)
    assert s.names() == ["verified"]
    return s


# --- verification ------------------------------------------------------------------------


def test_correct_order_verify_box_weigh_label_packed() -> None:
    s = Station()
    assert s.command("pack", order()).status == "accepted"
    assert s.screen["queue"] == [{"order": "o1", "tote": "T-o1", "express": False, "units": 3}]
    s.scan("T-o1")
    assert s.screen["phase"] == "verify"
    assert s.screen["order"]["box"]["suggested"] == "M"
    assert s.screen["order"]["material"] == {
        "name": "air_pillow",
        "label": "Air pillows",
        "protection": 90,
        "message": msg("pack.packaging", label=msg("material.air_pillow"), protection=90),
    }
    s.scan(GTIN_A)
    assert [ln["scanned"] for ln in s.screen["order"]["lines"]] == [1, 0]
    s.scan(GTIN_A)
    s.scan("S2-CODE")
    events = s.take()
    assert [n for n, _ in events] == ["verified"]
    assert events[0][1] == {
        "order": "o1",
        "tote": "T-o1",
        "lines": 2,
        "units": 3,
        "started_at": 1101,
        "verified_at": 1401,
    }
    assert s.screen["phase"] == "carton"
    s.scan("CONFIRM")
    assert s.screen["phase"] == "weigh"
    assert s.prints() == []
    s.weigh(850.0)
    name, weighed = s.take()[0]
    assert name == "weighed"
    assert weighed == {
        "order": "o1",
        "attempt": 1,
        "actual_g": 850.0,
        "expected_g": EXPECTED,
        "diff_g": 2.6,
        "allowed_g": 50.0,
        "verdict": "pass",
        "box": "M",
        "material": "air_pillow",
        "supervisor": None,
        "reason": None,
        "at": 1601,
    }
    [job] = s.prints()
    assert (job.printer, job.job_id) == ("label", "o1-label")
    assert f"^FD>;>800{SSCC}^FS".encode() in job.data
    assert b"^PW812" in job.data and b"^LL1218" in job.data
    assert s.screen["phase"] == "label"
    assert s.tasks  # the job is persisted as submitted before the print action runs
    s.feed(PrintResult("o1-label", True, None, 0.0))
    events = dict(s.take())
    assert events["label_printed"] == {
        "order": "o1",
        "job_id": "o1-label",
        "printer": "label",
        "source": "own",
        "sscc": SSCC,
        "attempt": 1,
        "confirmed_by": "printer",
        "at": 1701,
    }
    assert events["packed"] == {
        "order": "o1",
        "tote": "T-o1",
        "box": "M",
        "box_suggested": "M",
        "material": "air_pillow",
        "units": 3,
        "weight_g": 850.0,
        "expected_g": EXPECTED,
        "check": "pass",
        "express": False,
        "received_at": 1001,
        "started_at": 1101,
        "verified_at": 1401,
        "weighed_at": 1601,
        "labelled_at": 1701,
    }
    assert s.tasks == {}
    assert s.screen["phase"] == "idle"
    assert s.wf.counts["orders_packed"] == 1 and s.wf.counts["checkweigh_pass"] == 1
    assert s.command("pack", order()).reason == "already_packed"


def test_wrong_unknown_surplus_and_no_order_scans_are_refused() -> None:
    s = Station()
    s.command("pack", order())
    s.scan(GTIN_A)  # before the order
    s.scan("T-o1")
    s.scan(GTIN_B)  # a product of no line
    s.scan("HELLO")  # nothing known
    s.scan("S2-CODE")
    s.scan("S2-CODE")  # the line has its one unit
    refused = [(b["reason"], b["order"], b["sku"]) for n, b in s.take() if n == "pack_refused"]
    assert refused == [
        ("no_order", None, None),
        ("wrong_item", "o1", None),
        ("unknown_code", "o1", None),
        ("surplus", "o1", "S2"),
    ]
    assert s.screen["notice"] == {
        "level": "error",
        "text": "S2: the one ordered is already scanned. This one is extra: put it aside.",
        "message": {"id": "pack.surplus", "params": {"sku": "S2", "n": 1}},
        "at": s.now,
        "reason": "surplus",
    }
    # The screen lists o1's refusals; the one made before it opened went when it did.
    assert [r["reason"] for r in s.screen["refusals"]] == ["surplus", "unknown_code", "wrong_item"]
    assert [ln["scanned"] for ln in s.screen["order"]["lines"]] == [0, 1]
    # The order cannot go on until every unit is in: a box and a weight change nothing.
    s.scan("BOX-M")
    s.weigh(850.0)
    assert s.names() == [] and s.prints() == []
    assert s.screen["phase"] == "verify"
    s.scan(GTIN_A)
    s.scan(GTIN_A)
    assert s.names() == ["verified", "weighed"]  # the box was chosen, the parcel on the scale
    assert s.wf.counts["pack_refusals"] == 4


def test_an_orders_refusals_leave_the_screen_when_it_is_done() -> None:
    s = verified_station()
    s.scan(GTIN_B)  # after verification: still o1's refusal
    assert [r["text"] for r in s.screen["refusals"]] == [
        f"{GTIN_B} is not in order o1. Put it aside."
    ]
    s.scan("CONFIRM")
    s.weigh(850.0)
    s.feed(PrintResult("o1-label", True, None, 0.0))
    assert s.screen["order"] is None and s.screen["phase"] == "idle"
    assert s.screen["refusals"] == []  # "No order open": nothing of o1 is left
    assert s.screen["notice"]["level"] == "ok"
    s.scan(GTIN_A)  # no order open: this refusal shows until an order opens
    assert [r["reason"] for r in s.screen["refusals"]] == ["no_order"]
    s.command("pack", order("o2"))
    s.scan("T-o2")
    assert s.screen["refusals"] == []
    # A cancelled order takes its refusals along too.
    s.scan(GTIN_B)
    assert len(s.screen["refusals"]) == 1
    s.command("pack_cancel", {"orders": ["o2"]})
    assert s.screen["order"] is None and s.screen["refusals"] == []


def test_gs1_scans_count_by_gtin_and_bad_check_digits_are_refused() -> None:
    s = Station()
    s.command("pack", order())
    s.scan("T-o1")
    s.scan(f"01{GTIN_A.zfill(14)}10LOT42", "]d2")  # GS1 DataMatrix
    s.scan(f"01{GTIN_A.zfill(14)}\x1d10LOT43", "]C1")  # GS1-128
    assert [ln["scanned"] for ln in s.screen["order"]["lines"]] == [2, 0]
    s.scan("4006381333932")  # EAN-13 with a wrong check digit
    [(name, body)] = s.take()
    assert (name, body["reason"]) == ("pack_refused", "unreadable")
    assert body["detail"] == "bad GTIN check digit in 4006381333932: expected 1, got 2"
    # The worker is told to scan again; why (for the office) is in the event's detail.
    assert s.screen["notice"]["message"] == {"id": "pack.unreadable", "params": {}}
    assert "cannot be trusted: scan it again" in s.screen["notice"]["text"]


def test_a_second_order_waits_until_the_first_is_done_and_cancel() -> None:
    s = Station()
    s.command("pack", order("o1"))
    s.command("pack", order("o2", express=True))
    assert [q["order"] for q in s.screen["queue"]] == ["o2", "o1"]  # express first
    s.scan("T-o1")
    s.scan("o2")
    assert s.take()[0][1]["reason"] == "order_in_progress"
    verdict = s.command("pack_cancel", {"orders": ["o1", "o2", "o9"]})
    assert [(i.id, i.status) for i in verdict.items] == [
        ("o1", "cancelled"),
        ("o2", "cancelled"),
        ("o9", "unknown"),
    ]
    assert s.screen["phase"] == "idle" and s.tasks == {}
    assert "cancelled by the office" in s.screen["notice"]["text"]


def test_resent_and_changed_orders() -> None:
    s = Station()
    assert s.command("pack", order()).status == "accepted"
    assert s.command("pack", order()).status == "accepted"  # the same again
    changed = order()
    changed["lines"][0]["qty"] = 3
    assert s.command("pack", changed).status == "accepted"  # not started: updated
    s.scan("T-o1")
    assert s.screen["order"]["units"] == 4
    assert s.command("pack", changed).status == "accepted"
    assert s.command("pack", order()).reason == "in_progress"


def test_command_limits_and_label_choice() -> None:
    with pytest.raises(ValidationError, match="carrier_zpl or label"):
        PackCommand.model_validate(order(carrier_zpl=b"^XA^XZ"))
    with pytest.raises(ValidationError, match="bad SSCC check digit"):
        PackCommand.model_validate(order(label={**order()["label"], "sscc": SSCC[:-1] + "0"}))
    with pytest.raises(ValidationError, match="not a ZPL label"):
        PackCommand.model_validate(order(label=None, carrier_zpl=b"hello"))
    with pytest.raises(ValidationError, match="at most 100 items"):
        PackCommand.model_validate(order(lines=order()["lines"] * 51))
    with pytest.raises(ValidationError):
        PackCancel.model_validate({"orders": []})
    s = Station()
    built = order(label={**order()["label"], "sscc": None, "serial_reference": "2123456"})
    verdict = s.command("pack", built)
    assert (verdict.status, verdict.reason) == ("rejected", "invalid_body")
    assert "company_prefix" in (verdict.detail or "")
    s = Station(PackSettings(gs1_company_prefix="7610425", supervisors=SUPERVISORS))
    built["label"]["extension"] = 3
    assert s.command("pack", built).status == "accepted"


# --- carton ------------------------------------------------------------------------------


def test_box_choice_smallest_that_fits_and_material_by_fragility() -> None:
    boxes = PackSettings().boxes
    small = [Item("A", 1, 100, (100, 50, 20))]
    assert suggest_box(small, boxes).box.name == "S"
    assert suggest_box(small, boxes).material.name == "crunched_paper"
    # Fragile: 25 mm a side makes (290, 90, 70): too long for S (250), fits M.
    fragile = [Item("A", 1, 100, (240, 40, 20), fragile=True)]
    chosen = suggest_box(fragile, boxes)
    assert (chosen.box.name, chosen.material.name, chosen.fits) == ("M", "air_pillow", True)
    assert MATERIALS["air_pillow"].protection == 90
    assert MATERIALS["crunched_paper"].protection == 50
    # Volume: 30 units of 100x100x100 (+10 mm) need 39.9 l; L holds 39.4 l x 0.8.
    many = [Item("B", 30, 50, (100, 100, 100))]
    assert suggest_box(many, boxes).box.name == "XL"
    # Weight over a box's max load: the next box; over every box's: the largest, not fitting.
    weak = [
        BoxSize(
            name="A", inner_mm=(300, 300, 300), empty_weight_g=100, barcode="A", max_load_g=1000
        ),
        BoxSize(
            name="B", inner_mm=(400, 300, 300), empty_weight_g=200, barcode="B", max_load_g=5000
        ),
    ]
    assert suggest_box([Item("C", 2, 600, (100, 100, 100))], weak).box.name == "B"
    heavy = suggest_box([Item("C", 1, 6000, (100, 100, 100))], weak)
    assert (heavy.box.name, heavy.fits) == ("B", False)
    long = [Item("D", 1, 100, (900, 10, 10))]
    assert suggest_box(long, boxes).note == msg("pack.too_big", box="XL")
    unknown = suggest_box([Item("E", 1, 100)], boxes)
    assert (unknown.box.name, unknown.note) == ("S", msg("pack.no_dims", skus=["E"]))
    assert render(msg("pack.no_dims", skus=["E", "F"])) == "no dimensions for E, F: check the size"
    box = BoxSize(name="T", inner_mm=(100, 100, 100), empty_weight_g=50, barcode="T")
    assert expected_weight_g(box, [Item("F", 2, 10, (50, 50, 40))], MATERIALS["bubble_wrap"]) == (
        20 + 50 + 0.8 * 6.0
    )


def test_a_sites_own_material_is_chosen_and_shown_by_the_name_it_gave() -> None:
    settings = PackSettings.model_validate(
        {
            "fragile_material": "wood_wool",
            "materials": [
                {
                    "name": "wood_wool",
                    "label": "Holzwolle (Lager 2)",
                    "protection": 70,
                    "g_per_litre": 12,
                }
            ],
        }
    )
    s = Station(settings)
    s.command("pack", order())  # S2 is fragile
    s.scan("T-o1")
    material = s.screen["order"]["material"]
    assert (material["name"], material["label"]) == ("wood_wool", "Holzwolle (Lager 2)")
    # The site's words as written in every language; the seed's are the catalogue's.
    assert material["message"] == msg("pack.packaging", label="Holzwolle (Lager 2)", protection=70)
    assert (
        render(material["message"], catalogue("pl"), "pl")
        == "Wypełniacz: Holzwolle (Lager 2) (ochrona 70 %)"
    )
    with pytest.raises(ValidationError, match="unknown material 'straw'"):
        PackSettings.model_validate({"standard_material": "straw"})
    with pytest.raises(ValidationError, match="has the name of another material"):
        PackSettings.model_validate(
            {"materials": [{"name": "air_pillow", "label": "x", "protection": 1, "g_per_litre": 1}]}
        )


def test_packer_overrides_the_box_and_the_expected_weight_follows() -> None:
    s = Station()
    s.command("pack", order())
    s.scan("T-o1")
    s.scan("BOX-L")  # during verification
    for code in (GTIN_A, GTIN_A, "S2-CODE"):
        s.scan(code)
    assert s.screen["phase"] == "weigh"
    assert s.screen["order"]["box"]["chosen"] == "L"
    s.weigh(850.0)
    weighed = dict(s.take())["weighed"]
    # L: 39.375 l inner, 37.855 l of void at 1.5 g/l = 56.8 g; box 520 g; items 550 g.
    assert (weighed["box"], weighed["expected_g"], weighed["verdict"]) == ("L", 1126.8, "under")
    s.scan("BOX-M")  # the packer used M after all: the same reading is judged again
    weighed = dict(s.take())["weighed"]
    assert (weighed["box"], weighed["verdict"], weighed["attempt"]) == ("M", "pass", 2)
    assert s.wf.counts["box_overrides"] == 1


# --- check-weigh -------------------------------------------------------------------------


def test_tolerance_needs_both_percentage_and_grams() -> None:
    assert check_weight(300, 250, 5, 50) == ("pass", 50.0)  # 20 %, but only 50 g
    assert check_weight(301, 250, 5, 50) == ("over", 50.0)
    assert check_weight(4800, 5000, 5, 50) == ("pass", 250.0)  # 200 g, but only 4 %
    assert check_weight(4749, 5000, 5, 50) == ("under", 250.0)


def test_overweight_blocks_the_label_until_a_reweigh_passes() -> None:
    s = verified_station()
    s.scan("BOX-M")
    s.weigh(1000.0)
    weighed = dict(s.take())["weighed"]
    assert (weighed["verdict"], weighed["diff_g"], weighed["allowed_g"]) == ("over", 152.6, 50.0)
    assert s.prints() == []
    assert s.screen["phase"] == "weigh_failed"
    assert s.screen["notice"]["text"].startswith("Too heavy by 153 g: check the items")
    check = s.screen["order"]["check"]  # the figures: on the screen's scale box
    assert (check["expected_g"], check["allowed_g"], check["actual_g"]) == (847.4, 50.0, 1000.0)
    s.weigh(1000.0, stable=False)  # moving: nothing judged
    assert s.names() == []
    s.weigh(790.0)  # a re-weigh, under
    assert dict(s.take())["weighed"]["verdict"] == "under"
    s.weigh(860.0)
    assert dict(s.take())["weighed"]["attempt"] == 3
    assert [p.job_id for p in s.prints()] == ["o1-label"]
    assert s.wf.counts["checkweigh_fail"] == 2


def test_unstable_scale_waits_and_the_previous_parcel_must_leave() -> None:
    s = verified_station()
    s.weigh(850.0, stable=False)
    s.scan("CONFIRM")
    assert s.screen["prompt"] == "Waiting for a stable weight…"
    assert s.screen["weight"] == {"grams": 850.0, "stable": False, "at": s.now - 100}
    assert s.names() == []
    s.weigh(850.0)
    assert s.names() == ["weighed"]
    s.feed(PrintResult("o1-label", True, None, 0.0))
    s.take()
    # The next order: its parcel weighs nothing until the packed one leaves the scale.
    s.command("pack", order("o2"))
    for code in ("T-o2", GTIN_A, GTIN_A, "S2-CODE", "CONFIRM"):
        s.scan(code)
    s.weigh(851.0)
    assert s.names() == ["verified"]
    assert s.screen["notice"]["text"] == "Take the previous parcel off the scale."
    s.weigh(0.0)
    s.weigh(851.0)
    assert s.names() == ["weighed"]


def test_supervisor_override_with_a_reason() -> None:
    s = verified_station()
    s.scan("CONFIRM")
    s.weigh(1200.0)
    s.take()
    s.scan("REASON-scale_check")  # no badge yet
    s.scan("SUP-0000")  # not a supervisor: an unknown code
    assert [b["reason"] for _, b in s.take()] == ["not_now", "unknown_code"]
    s.scan("SUP-7731")
    assert s.screen["phase"] == "override_reason"
    s.scan("REASON-because")
    assert s.take()[0][1]["reason"] == "unknown_reason"
    s.scan("REASON-item_weight_wrong")
    weighed = dict(s.take())["weighed"]
    assert (weighed["verdict"], weighed["supervisor"], weighed["reason"]) == (
        "override",
        "maria",
        "item_weight_wrong",
    )
    assert weighed["actual_g"] == 1200.0 and weighed["attempt"] == 1
    assert "SUP-7731" not in repr(weighed)  # the badge code never leaves the node
    [job] = s.prints()
    s.feed(PrintResult(job.job_id, True, None, 0.0))
    assert dict(s.take())["packed"]["check"] == "override"
    assert s.wf.counts["checkweigh_overrides"] == 1


# --- labels and printing -----------------------------------------------------------------


def test_carrier_zpl_is_printed_byte_for_byte() -> None:
    zpl = "^XA\n^FO50,50^A0N,40,40^FDCarrier ~ label ü^FS\n^XZ".encode()
    s = Station()
    s.command("pack", order(label=None, carrier_zpl=zpl))
    for code in ("T-o1", GTIN_A, GTIN_A, "S2-CODE", "CONFIRM"):
        s.scan(code)
    s.weigh(850.0)
    [job] = s.prints()
    assert job.data == zpl
    s.feed(PrintResult(job.job_id, True, None, 0.0))
    assert dict(s.take())["label_printed"]["source"] == "carrier"


def test_printer_out_of_paper_then_recovered_never_prints_twice() -> None:
    s = verified_station()
    s.scan("CONFIRM")
    s.weigh(850.0)
    assert [p.job_id for p in s.prints()] == ["o1-label"]
    s.take()
    # Paper out: the driver holds the job; the packer and the OMS are told once.
    s.feed(DeviceHealthChanged("label", "fault", "paper out"))
    s.tick(60_000)
    [(name, problem)] = s.take()
    assert name == "print_delayed"
    assert problem["reason"] == "printer fault: paper out"
    assert "It prints by itself; do not reprint." in s.screen["notice"]["text"]
    assert s.screen["order"]["label"]["late"] is True
    s.feed(PrintResult("o1-label", True, None, 0.0))  # paper in: the held job prints
    assert s.names() == ["label_printed", "packed"]
    assert s.prints() == []


def test_a_printer_known_to_be_down_makes_the_label_late_at_once() -> None:
    s = verified_station()
    s.feed(DeviceHealthChanged("scanner", "ok"))  # not a printer: nothing to say
    s.feed(DeviceHealthChanged("label", "ok"))
    s.feed(DeviceHealthChanged("label", "unavailable", "unreachable: connection refused"))
    assert s.names() == [] and s.screen["phase"] == "carton"  # no label yet: nothing late
    s.scan("CONFIRM")
    s.weigh(850.0)
    assert [p.job_id for p in s.prints()] == ["o1-label"]  # submitted: the printer holds it
    problems = [(n, b["job_id"], b["reason"]) for n, b in s.take() if n.startswith("print")]
    assert problems == [
        ("print_delayed", "o1-label", "printer unavailable: unreachable: connection refused")
    ]
    assert s.screen["order"]["label"]["late"] is True
    assert "Label not printed yet" in s.screen["notice"]["text"]
    s.feed(DeviceHealthChanged("label", "fault", "paper out"))  # worse, but told once
    s.tick(60_000)
    assert s.names() == []
    s.feed(DeviceHealthChanged("label", "ok"))
    s.feed(PrintResult("o1-label", True, None, 0.0))
    assert s.names() == ["label_printed", "packed"]
    assert s.prints() == []


def test_a_reprint_on_a_printer_still_down_is_late_again() -> None:
    s = verified_station()
    s.feed(DeviceHealthChanged("label", "fault", "head open"))
    s.scan("CONFIRM")
    s.weigh(850.0)
    s.take()
    s.feed(PrintResult("o1-label", False, "connection lost while sending", 0.0))
    s.scan("T-o1")
    assert [p.job_id for p in s.prints()] == ["o1-label", "o1-label-2"]
    assert [(n, b["job_id"]) for n, b in s.take()] == [
        ("print_failed", "o1-label"),
        ("print_delayed", "o1-label-2"),
    ]


def test_other_roles_ignore_health_changes() -> None:
    for workflow in (PickingWorkflow(["A1"]), PutWallWorkflow(["W1"])):
        step = Step()
        workflow.on_input(DeviceHealthChanged("label", "fault", "paper out"), step, 1000)
        assert not step.unit and step.actions == []


def test_label_timeout_and_failed_job_reprint_needs_the_packer() -> None:
    s = verified_station()
    s.scan("CONFIRM")
    s.weigh(850.0)
    s.prints()
    s.take()
    s.tick(19_000)
    assert s.names() == []
    s.tick(1_000)
    assert [(n, b["reason"]) for n, b in s.take()] == [
        ("print_delayed", "no result from the printer after 20 s")
    ]
    s.feed(PrintResult("o1-label", False, "connection lost while sending", 0.0))
    [(name, failed)] = s.take()
    assert (name, failed["job_id"], failed["document"]) == ("print_failed", "o1-label", "label")
    assert s.screen["phase"] == "label_failed"
    assert s.prints() == []  # never again by itself
    s.scan("T-o1")  # the packer saw no label: print it again, as a new job
    assert [p.job_id for p in s.prints()] == ["o1-label-2"]
    s.feed(PrintResult("o1-label", True, "already printed", 0.0))  # a stale result
    assert s.names() == []
    s.feed(PrintResult("o1-label-2", True, None, 0.0))
    events = dict(s.take())
    assert events["label_printed"]["attempt"] == 2
    assert s.wf.counts["label_reprints"] == 1


# --- restart -----------------------------------------------------------------------------


def test_restart_mid_order_keeps_the_scans() -> None:
    s = Station()
    s.command("pack", order())
    s.command("pack", order("o2"))
    s.scan("T-o1")
    s.scan(GTIN_A)
    s.scan("BOX-S")
    again = Station(tasks=s.tasks)
    screen = again.screen
    assert screen["phase"] == "verify" and screen["order"]["order"] == "o1"
    assert [ln["scanned"] for ln in screen["order"]["lines"]] == [1, 0]
    assert screen["order"]["box"]["chosen"] == "S"
    assert [q["order"] for q in screen["queue"]] == ["o2"]
    again.scan(GTIN_A)
    again.scan("S2-CODE")
    again.scan(GTIN_A)
    assert [b["reason"] for n, b in again.take() if n == "pack_refused"] == ["surplus"]


def test_restart_with_a_label_in_flight_asks_the_packer() -> None:
    s = verified_station()
    s.scan("CONFIRM")
    s.weigh(850.0)
    s.take()
    again = Station(tasks=s.tasks)
    assert again.screen["phase"] == "label_unknown"
    assert "Did it print?" in again.screen["notice"]["text"]
    assert again.prints() == [] and again.names() == []
    again.feed(PrintResult("o1-label", True, None, 0.0))  # a result for the old job: too late
    assert again.names() == []
    third = Station(tasks=again.tasks)
    third.scan("CONFIRM")  # the packer: it did print
    events = dict(third.take())
    assert events["label_printed"]["confirmed_by"] == "packer"
    assert events["packed"]["order"] == "o1" and third.tasks == {}
    fourth = Station(tasks=again.tasks)
    fourth.scan("T-o1")  # or it did not: a reprint as a new job
    assert [p.job_id for p in fourth.prints()] == ["o1-label-2"]


def test_packing_slip_is_a_slip_action_when_wanted() -> None:
    s = Station()
    s.command("pack", order(packing_slip=True, gift_note="Happy birthday!"))
    for code in ("T-o1", GTIN_A, GTIN_A, "S2-CODE"):
        s.scan(code)
    [slip] = [a for a in s.actions if isinstance(a, PrintSlip)]
    assert (slip.printer, slip.job_id) == ("slip", "o1-slip")
    assert slip.slip.lines == ((2, "S1", "Mug"), (1, "S2", "Vase"))
    assert slip.slip.footer == "Happy birthday!"
    s.feed(PrintResult("o1-slip", False, "paper out", 0.0))
    failed = [b for n, b in s.take() if n == "print_failed"]
    assert [(b["job_id"], b["document"], b["reason"]) for b in failed] == [
        ("o1-slip", "slip", "paper out")
    ]
    assert s.screen["order"]["slip"] == "failed"
    assert s.screen["phase"] == "carton"  # a slip problem does not hold the parcel


def test_packing_slip_printer_fault_is_reported_and_never_holds_the_parcel() -> None:
    s = Station()
    s.command("pack", order(packing_slip=True))
    s.command("pack", order("o2", packing_slip=True))
    for code in ("T-o1", GTIN_A, GTIN_A, "S2-CODE"):
        s.scan(code)
    s.take()
    s.feed(DeviceHealthChanged("slip", "fault", "paper out"))
    s.feed(DeviceHealthChanged("slip", "fault", "paper out, cover open"))
    delayed = [(n, b["job_id"], b["document"], b["reason"]) for n, b in s.take()]
    assert delayed == [("print_delayed", "o1-slip", "slip", "printer fault: paper out")]
    assert s.screen["order"]["slip"] == "delayed"
    assert "Pack them in box M" in s.screen["notice"]["text"]  # the parcel goes on
    s.feed(PrintResult("o1-slip", True, None, 0.0))  # paper in: the held slip prints
    assert s.screen["order"]["slip"] == "printed" and s.names() == []
    s.scan("CONFIRM")
    s.weigh(850.0)
    s.feed(PrintResult("o1-label", True, None, 0.0))
    assert s.names() == ["weighed", "label_printed", "packed"]
    # o2: the slip printer is down when o2 is verified: reported at once.
    s.weigh(0.0)
    s.feed(DeviceHealthChanged("slip", "unavailable", "unreachable"))
    for code in ("T-o2", GTIN_A, GTIN_A, "S2-CODE"):
        s.scan(code)
    slips = [a for a in s.actions if isinstance(a, PrintSlip)]
    assert [a.job_id for a in slips] == ["o1-slip", "o2-slip"]  # each once
    assert [(n, b.get("job_id")) for n, b in s.take()] == [
        ("verified", None),
        ("print_delayed", "o2-slip"),
    ]
    assert s.screen["order"]["slip"] == "delayed" and s.screen["phase"] == "carton"
    again = Station(tasks=s.tasks)  # a restart: the slip's fate is unknown, never resent
    assert again.screen["order"]["slip"] == "unknown"
    assert [a for a in again.actions if isinstance(a, PrintSlip)] == []


def test_counters_event() -> None:
    s = Station(PackSettings(counters_every_s=60))
    s.command("pack", order())
    s.scan("T-o1")
    s.tick(1)
    s.tick(60_000)
    [(name, counters)] = s.take()
    assert name == "pack_counters"
    assert counters["counts"] == {"orders_received": 1, "orders_started": 1, "pack_scans": 1}
    assert counters["queued"] == 0


# --- labels ------------------------------------------------------------------------------


def test_sscc_check_digit_and_building() -> None:
    assert gs1_check_digit("37610425002123456") == 9
    assert build_sscc(3, "7610425", "2123456") == SSCC
    assert sscc_error(SSCC) is None
    assert sscc_error(SSCC[:-1] + "3") == f"bad SSCC check digit in {SSCC[:-1]}3: expected 9, got 3"
    with pytest.raises(ValueError, match="at most 9 digits"):
        build_sscc(0, "7610425", "1234567890")


def test_own_label_escapes_fields_and_scales_to_300_dpi() -> None:
    data = LabelData(
        order="o1",
        name="A^B~C_D Müller",
        address=["Straße 1\n^XZ"],
        postcode="1010",
        city="Wien",
        country="AT",
        carrier="Post",
        service="Express",
        sscc=SSCC,
        express=True,
    )
    zpl = shipping_label(data, 300).decode("utf-8")
    assert zpl.startswith("^XA\n^CI28\n^PW1200\n^LL1800\n") and zpl.endswith("^XZ\n")
    assert "^FH_^FDA_5EB_7EC_5FD Müller^FS" in zpl
    assert zpl.count("^XZ") == 1 and zpl.count("^XA") == 1 and "~" not in zpl
    assert f"^BY6^BCN,384,N,N,N^FD>;>800{SSCC}^FS" in zpl
    assert "(00) 3 7610425 002123456 9" in zpl and "EXPRESS" in zpl
    assert field_text("x" * 80) == "x" * 40
    with pytest.raises(ValueError, match="check digit"):
        shipping_label(LabelData("o", "n", [], "", "", "", "c", "s", SSCC[:-1] + "0"))


# --- configuration -----------------------------------------------------------------------


class Floor:
    def __init__(self, kinds: dict[str, str]) -> None:
        self.kinds = kinds

    def locations(self) -> list[str]:
        return []


def test_from_config_finds_the_devices_and_refuses_a_station_without_them() -> None:
    from agent.config import NodeConfig

    config = NodeConfig(site="dc1", node="pack-1", role="pack", settings={"dpi": 300})
    kinds = {"scanner": "serial_scanner", "scale": "mt_sics", "zebra": "zpl_printer"}
    wf = PackingWorkflow.from_config(config, Floor(kinds))
    assert (wf.label_printer, wf.scale, wf.slip_printer) == ("zebra", "scale", None)
    assert wf.settings.dpi == 300
    with pytest.raises(ConfigError, match="needs a zpl_printer"):
        PackingWorkflow.from_config(config, Floor({"scale": "mt_sics"}))
    bad = config.model_copy(update={"settings": {"slip_printer": "zebra"}})
    with pytest.raises(ConfigError, match="no device 'zebra' of kind escpos_printer"):
        PackingWorkflow.from_config(bad, Floor(kinds))
    wrong = config.model_copy(update={"settings": {"fragile_material": "straw"}})
    with pytest.raises(ConfigError, match="unknown material 'straw'"):
        PackingWorkflow.from_config(wrong, Floor(kinds))
