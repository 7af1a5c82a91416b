"""Returns station: the state machine driven directly (every refusal, flags, policy, restore)."""

from __future__ import annotations

from typing import Any

import pytest

from agent.errors import ConfigError
from agent.store import StoredTask
from agent.wire.messages import Envelope
from agent.workflows.base import Light, Print, Step
from agent.workflows.returns import DEFAULT_POLICY, ReturnsSettings, ReturnsWorkflow, RmaCommand
from devices.events import Button, ButtonPress, Scan

ENV = Envelope(v=1, id="c1", ts=0, body={})
GTIN_MUG = "4006381333931"
GTIN_VASE = "5901234123457"
GTIN_OTHER = "4012345000009"
BINS = {
    "restock": "B1",
    "refurbish": "B2",
    "quarantine": "B3",
    "return_to_vendor": "B4",
    "dispose": "B5",
}


def rma(rma_id: str = "RMA-1", **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rma": rma_id,
        "order": "WEB-1001",
        "tracking": "JD0002",
        "lines": [
            {"sku": "MUG", "qty": 2, "barcodes": [GTIN_MUG], "reason": "defective"},
            {"sku": "VASE", "qty": 1, "barcodes": [GTIN_VASE], "reason": "size_or_fit"},
        ],
    }
    out.update(kw)
    return out


def station(*rmas: dict[str, Any], printer: str | None = None) -> ReturnsWorkflow:
    w = ReturnsWorkflow(ReturnsSettings(bins=BINS), label_printer=printer)  # type: ignore[arg-type]
    if rmas:
        body = RmaCommand.model_validate({"rmas": list(rmas)})
        assert w.on_command("rma", ENV, body, Step(), 1).status == "accepted"
    return w


def feed(w: ReturnsWorkflow, event: object, now: int = 100) -> Step:
    step = Step()
    w.on_input(event, step, now)
    return step


def scan(text: str, **kw: Any) -> Scan:
    return Scan("scanner", text, **kw)


def press(slot: str) -> ButtonPress:
    return ButtonPress("bins", slot, Button.CONFIRM)


def events(step: Step) -> list[tuple[str, dict[str, Any]]]:
    return [
        (e.name, e.body if isinstance(e.body, dict) else e.body.model_dump())
        for e in step.unit.events
    ]


def refusal(step: Step) -> dict[str, Any]:
    [(name, body)] = events(step)
    assert name == "return_refused"
    return body


def lights(step: Step) -> dict[str, tuple[str | None, str | None]]:
    return {a.location: (a.colour, a.text) for a in step.actions if isinstance(a, Light)}


def unit(w: ReturnsWorkflow, code: str, reason: str, grade: str, now: int = 100) -> Step:
    """Scan a unit, its reason and grade; the step of the last scan (the bin lights)."""
    feed(w, scan(code), now)
    feed(w, scan(f"REASON-{reason}"), now)
    return feed(w, scan(f"GRADE-{grade}"), now)


def test_a_whole_return_opened_by_tracking_graded_put_away_and_closed() -> None:
    w = station(rma(), printer="label")
    [(name, opened)] = events(feed(w, scan("JD0002"), 10))
    assert (name, opened["rma"], opened["expected"], opened["reference"]) == (
        "return_opened",
        "RMA-1",
        True,
        "JD0002",
    )
    feed(w, scan(GTIN_MUG), 20)
    assert w.snapshot()["phase"] == "judge"
    assert w.snapshot()["return"]["unit"]["stated_reason"] == "defective"
    feed(w, scan("GRADE-B"), 30)  # grade first, then reason: either order
    step = feed(w, scan("REASON-defective"), 40)
    assert lights(step) == {"B2": ("sky_blue", "rEFb")}  # B x defective -> refurbish
    assert w.snapshot()["phase"] == "put"
    step = feed(w, press("B2"), 50)
    [(name, got)] = events(step)
    assert name == "return_received"
    assert got == {
        "rma": "RMA-1",
        "order": "WEB-1001",
        "unit": 1,
        "sku": "MUG",
        "code": GTIN_MUG,
        "flag": None,
        "stated_reason": "defective",
        "reason": "defective",
        "grade": "B",
        "disposition": "refurbish",
        "bin": "B2",
        "hazardous": False,
        "label_job": "RMA-1-u1",
        "scanned_at": 20,
        "received_at": 50,
    }
    [label] = [a for a in step.actions if isinstance(a, Print)]
    assert label.printer == "label" and label.job_id == "RMA-1-u1"
    assert b"^FDMUG^FS" in label.data and b"Grade B  refurbish" in label.data
    assert lights(step) == {"B2": (None, None)}
    step = unit(w, GTIN_VASE, "size_or_fit", "A", 60)
    assert lights(step) == {"B1": ("bluish_green", "rStk")}
    feed(w, press("B1"), 70)
    [(name, closed)] = events(feed(w, scan("CLOSE"), 80))
    assert name == "return_closed"
    assert closed["lines"] == [
        {"sku": "MUG", "expected": 2, "received": 1, "missing": 1},
        {"sku": "VASE", "expected": 1, "received": 1, "missing": 0},
    ]
    assert (closed["units_expected"], closed["units_received"], closed["units_missing"]) == (
        3,
        2,
        1,
    )
    assert (closed["opened_at"], closed["closed_at"], closed["expected_return"]) == (10, 80, True)
    assert w.current is None and "RMA-1" not in w.returns


def test_open_by_rma_label_or_order_number() -> None:
    for code in ("RMA-1", "WEB-1001"):
        w = station(rma())
        [(name, body)] = events(feed(w, scan(code)))
        assert (name, body["rma"]) == ("return_opened", "RMA-1")


def test_a_unit_not_in_the_rma_and_a_surplus_unit_are_flagged_not_lost() -> None:
    w = station(
        rma(),
        rma(
            "RMA-2",
            order="WEB-2",
            tracking=None,
            lines=[{"sku": "LAMP", "qty": 1, "barcodes": [GTIN_OTHER]}],
        ),
    )
    feed(w, scan("RMA-1"))
    unit(w, GTIN_VASE, "no_longer_needed", "A")
    feed(w, press("B1"))
    unit(w, GTIN_VASE, "no_longer_needed", "A")  # a second vase: the RMA says one
    assert w.snapshot()["return"]["unit"]["flag"] == "surplus"
    [(_, surplus)] = events(feed(w, press("B1")))
    assert (surplus["flag"], surplus["sku"]) == ("surplus", "VASE")
    unit(w, GTIN_OTHER, "wrong_item_sent", "A")  # in another RMA: its SKU is known
    [(_, other)] = events(feed(w, press("B1")))
    assert (other["flag"], other["sku"], other["stated_reason"]) == ("not_in_rma", "LAMP", None)
    unit(w, "0" + "4000000000006"[:12] + "6", "other", "D")  # a GTIN nobody knows
    [(_, unknown)] = events(feed(w, press("B5")))
    assert (unknown["flag"], unknown["sku"], unknown["disposition"]) == (
        "not_in_rma",
        None,
        "dispose",
    )
    [(_, closed)] = events(feed(w, scan("CLOSE")))
    assert [(e["sku"], e["qty"], e["flag"]) for e in closed["extra"]] == [
        ("VASE", 1, "surplus"),
        ("LAMP", 1, "not_in_rma"),
        (None, 1, "not_in_rma"),
    ]
    assert closed["units_received"] == 4 and closed["units_missing"] == 2


def test_an_unknown_code_opens_an_unexpected_return_that_is_processed() -> None:
    w = station()
    [(name, opened)] = events(feed(w, scan("1Z 999 AA1")))
    assert (name, opened["rma"], opened["expected"], opened["order"]) == (
        "return_opened",
        "X-1Z999AA1",
        False,
        None,
    )
    unit(w, GTIN_MUG, "wrong_item_sent", "B")
    [(_, got)] = events(feed(w, press("B1")))
    assert (got["rma"], got["flag"], got["disposition"]) == ("X-1Z999AA1", "not_in_rma", "restock")
    [(_, closed)] = events(feed(w, scan("CLOSE")))
    assert closed["expected_return"] is False and closed["units_received"] == 1


def test_policy_table_and_hazardous_goods_never_restocked() -> None:
    settings = ReturnsSettings(bins=BINS)  # type: ignore[arg-type]
    assert settings.disposition("A", "no_longer_needed", False) == "restock"
    assert settings.disposition("A", "defective", False) == "quarantine"
    assert settings.disposition("C", "damaged_in_transit", False) == "quarantine"
    assert settings.disposition("C", "size_or_fit", False) == "refurbish"
    assert settings.disposition("D", "defective", False) == "return_to_vendor"
    assert settings.disposition("D", "other", False) == "dispose"
    assert settings.disposition("A", "size_or_fit", True) == "quarantine"
    assert settings.disposition("D", "other", True) == "dispose"
    battery = {"sku": "BATT", "qty": 1, "barcodes": [GTIN_OTHER], "hazardous": True}
    w = station(rma(lines=[battery]))
    feed(w, scan("RMA-1"))
    assert lights(unit(w, GTIN_OTHER, "no_longer_needed", "A")) == {"B3": ("orange", "QUAr")}
    [(_, got)] = events(feed(w, press("B3")))
    assert (got["hazardous"], got["disposition"]) == (True, "quarantine")


def test_every_refusal_names_its_reason_and_changes_nothing() -> None:
    w = station(rma(), rma("RMA-2", order="WEB-2", tracking=None))
    assert refusal(feed(w, scan(GTIN_MUG)))["reason"] == "no_return"
    assert refusal(feed(w, scan("REASON-defective")))["reason"] == "not_now"
    assert refusal(feed(w, scan("GRADE-A")))["reason"] == "not_now"
    assert refusal(feed(w, scan("CLOSE")))["reason"] == "not_now"
    assert refusal(feed(w, press("B1")))["reason"] == "not_now"
    body = refusal(feed(w, scan("RMA-1", error="bad check digit")))
    assert (body["reason"], body["detail"]) == ("unreadable", "bad check digit")
    feed(w, scan("RMA-1"))
    assert refusal(feed(w, scan("RMA-2")))["reason"] == "return_in_progress"
    assert refusal(feed(w, scan("PALLET-7")))["reason"] == "unknown_code"
    feed(w, scan(GTIN_MUG))
    assert refusal(feed(w, scan(GTIN_VASE)))["reason"] == "put_first"
    assert refusal(feed(w, scan("CLOSE")))["reason"] == "put_first"
    assert refusal(feed(w, scan("REASON-broken")))["reason"] == "unknown_reason"
    assert refusal(feed(w, scan("GRADE-E")))["reason"] == "unknown_grade"
    feed(w, scan("REASON-defective"))
    feed(w, scan("GRADE-A"))  # -> quarantine, B3 ...
    step = feed(w, scan("GRADE-D"))  # ... corrected before the put: return to vendor, B4
    assert events(step) == [] and lights(step) == {"B3": (None, None), "B4": ("yellow", "rtv")}
    body = refusal(feed(w, press("B1")))
    assert (body["reason"], body["bin"], body["rma"]) == ("wrong_bin", "B1", "RMA-1")
    assert "B4" in body["detail"]
    assert [n for n, _ in events(feed(w, press("B4")))] == ["return_received"]
    feed(w, scan("CLOSE"))
    assert refusal(feed(w, scan("RMA-1")))["reason"] == "already_closed"
    assert w.counts["return_refusals"] == 14


def test_an_rma_sent_again_or_already_closed_is_not_changed() -> None:
    w = station(rma())
    feed(w, scan("RMA-1"))
    unit(w, GTIN_MUG, "defective", "A")
    again = RmaCommand.model_validate(
        {"rmas": [rma(lines=[{"sku": "X", "qty": 9, "barcodes": ["X"]}])]}
    )
    w.on_command("rma", ENV, again, Step(), 5)
    assert [ln.sku for ln in w.returns["RMA-1"].lines] == ["MUG", "VASE"]
    feed(w, press("B3"))
    feed(w, scan("CLOSE"))
    step = Step()
    w.on_command("rma", ENV, RmaCommand.model_validate({"rmas": [rma()]}), step, 6)
    assert not step.unit.puts and "RMA-1" not in w.returns


def test_restore_mid_unit_lights_the_bin_again_and_carries_on() -> None:
    w = station(rma())
    rows: dict[str, StoredTask] = {}

    def keep(step: Step) -> None:
        for task_id in step.unit.drops:
            rows.pop(task_id, None)
        rows.update(step.unit.puts)

    first = Step()
    w.on_command("rma", ENV, RmaCommand.model_validate({"rmas": [rma("RMA-9")]}), first, 1)
    keep(first)
    for code in ("RMA-9", GTIN_MUG, "REASON-defective", "GRADE-C"):
        keep(feed(w, scan(code), 10))
    again = station()
    step = Step()
    again.restore(list(rows.values()), step, 20)
    assert lights(step)["B4"] == ("yellow", "rtv")
    assert again.current == "RMA-9" and again.snapshot()["phase"] == "put"
    [(name, got)] = events(feed(again, press("B4"), 30))
    assert (name, got["unit"], got["disposition"], got["scanned_at"]) == (
        "return_received",
        1,
        "return_to_vendor",
        10,
    )


def test_settings_need_a_bin_for_every_disposition_and_a_default_per_grade() -> None:
    with pytest.raises(ValueError, match="no bin for dispose"):
        ReturnsSettings(bins={k: v for k, v in BINS.items() if k != "dispose"})  # type: ignore[arg-type]
    policy = {**DEFAULT_POLICY, "D": {"defective": "return_to_vendor"}}
    with pytest.raises(ValueError, match=r"policy\.D"):
        ReturnsSettings(bins=BINS, policy=policy)  # type: ignore[arg-type]
    small = {
        "A": {"*": "restock"},
        "B": {"*": "restock"},
        "C": {"*": "quarantine"},
        "D": {"*": "quarantine"},
    }
    ReturnsSettings(bins={"restock": "B1", "quarantine": "B2"}, policy=small)  # type: ignore[arg-type]

    class Floor:
        kinds: dict[str, str] = {}

        def locations(self) -> list[str]:
            return ["B1", "B2", "B3", "B4"]

    from agent.config import parse_config

    config = parse_config(
        {"site": "s", "node": "r1", "role": "returns", "settings": {"bins": BINS}}, "x", env={}
    )
    with pytest.raises(ConfigError, match="B5"):
        ReturnsWorkflow.from_config(config, Floor())


def test_two_rmas_of_one_order_open_by_the_order_one_after_the_other() -> None:
    w = station(rma("R-A", tracking=None), rma("R-B", tracking=None))
    assert events(feed(w, scan("WEB-1001")))[0][1]["rma"] == "R-A"
    feed(w, scan("CLOSE"))
    assert events(feed(w, scan("WEB-1001")))[0][1]["rma"] == "R-B"


def test_an_unexpected_return_closed_is_not_opened_again_by_the_same_label() -> None:
    w = station()
    feed(w, scan("LABEL-77"))
    feed(w, scan("CLOSE"))
    assert refusal(feed(w, scan("LABEL-77")))["reason"] == "already_closed"
