"""Dispatch station: the state machine driven directly (every refusal, manifests, restore)."""

from __future__ import annotations

from typing import Any

import pytest

from agent.errors import ConfigError
from agent.store import PendingEvent, StoredTask
from agent.wire.messages import Envelope
from agent.workflows.base import Light, Step
from agent.workflows.dispatch import (
    DispatchSettings,
    DispatchWorkflow,
    LoadCommand,
    ManifestClose,
)
from devices.events import Button, ButtonPress, Scan

ENV = Envelope(v=1, id="c1", ts=0, body={})
SSCC_1 = "376104250021234569"
SSCC_2 = "376104250021234576"
SSCC_3 = "376104250021234583"
SSCC_4 = "376104250021234590"
MIN = 60_000
SETTINGS = {
    "near_cutoff_min": 30,
    "lanes": [
        {"id": "L1", "carrier": "DPD", "name": "Door 1"},
        {"id": "L2", "carrier": "UPS"},
    ],
}


def parcel(sscc: str, carrier: str = "DPD", **kw: Any) -> dict[str, Any]:
    return {"sscc": sscc, "carrier": carrier, "order": f"O-{sscc[-3:]}", **kw}


def station(*parcels: dict[str, Any]) -> DispatchWorkflow:
    w = DispatchWorkflow(DispatchSettings.model_validate(SETTINGS))
    if parcels:
        verdict = command(w, "load", {"parcels": list(parcels)})
        assert verdict.status == "accepted" and not verdict.items
    return w


def command(w: DispatchWorkflow, name: str, body: dict[str, Any], now: int = 1) -> Any:
    model = {"load": LoadCommand, "manifest_close": ManifestClose}[name]
    step = Step()
    verdict = w.on_command(name, ENV, model.model_validate(body), step, now)
    command.last = step  # type: ignore[attr-defined]
    return verdict


def feed(w: DispatchWorkflow, event: object, now: int = 1000) -> Step:
    step = Step()
    w.on_input(event, step, now)
    return step


def scan(text: str, **kw: Any) -> Scan:
    return Scan("scanner", text, **kw)


def events(step: Step) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for e in step.unit.events:
        assert isinstance(e, PendingEvent)
        body = e.body if isinstance(e.body, dict) else e.body.model_dump()
        out.append((e.name, body))
    return out


def lights(step: Step) -> dict[str, tuple[str | None, str, str | None]]:
    return {a.location: (a.colour, a.pattern, a.text) for a in step.actions if isinstance(a, Light)}


def refusal(step: Step) -> dict[str, Any]:
    [(name, body)] = events(step)
    assert name == "load_refused"
    return body


def test_scan_lights_the_carriers_lane_and_the_lane_barcode_loads() -> None:
    w = station(parcel(SSCC_1, tracking="1Z999"))
    step = feed(w, scan("00" + SSCC_1, sscc=SSCC_1), now=1000)
    assert lights(step) == {"L1": ("blue", "steady", "LoAd")}
    assert events(step) == []
    step = feed(w, scan("LANE-L1"), now=2000)
    [(name, body)] = events(step)
    assert name == "loaded"
    assert body["parcel"] == body["sscc"] == SSCC_1 and body["tracking"] == "1Z999"
    assert body["lane"] == "L1" and body["confirmed_by"] == "scan"
    assert (body["scanned_at"], body["loaded_at"], body["late"]) == (1000, 2000, False)
    assert lights(step) == {"L1": (None, "steady", None)}
    assert step.unit.puts[f"parcel:{SSCC_1}"].data[8] == "L1"
    assert w.snapshot()["lanes"][0]["loaded"] == 1


def test_the_lane_button_loads_too_and_a_tracking_number_finds_the_parcel() -> None:
    w = station(parcel(SSCC_2, carrier="UPS", tracking="1Z999AA10123456784"))
    feed(w, scan("1Z999AA10123456784"))
    step = feed(w, ButtonPress("dock", "L2", Button.CONFIRM))
    [(name, body)] = events(step)
    assert (name, body["sscc"], body["confirmed_by"]) == ("loaded", SSCC_2, "button")


def test_a_parcel_with_only_a_tracking_number_is_known_by_it() -> None:
    w = station(parcel("", tracking="JJD000390007", order="AMZ-1") | {"sscc": None})
    feed(w, scan("JJD000390007"))
    [(name, body)] = events(feed(w, scan("LANE-L1")))
    assert (name, body["parcel"], body["sscc"], body["order"]) == (
        "loaded",
        "JJD000390007",
        None,
        "AMZ-1",
    )
    got = events(feed(w, scan("CLOSE-L1")))
    assert got[0][1]["loaded"] == ["JJD000390007"] and got[1][1]["parcel"] == "JJD000390007"
    assert refusal(feed(w, scan("JJD000390007")))["reason"] == "already_loaded"
    with pytest.raises(ValueError, match="sscc or its tracking"):
        LoadCommand.model_validate({"parcels": [{"carrier": "DPD", "order": "O"}]})


def test_wrong_lane_is_refused_and_the_parcel_stays_waiting_for_its_own() -> None:
    w = station(parcel(SSCC_1))
    feed(w, scan(SSCC_1))
    step = feed(w, ButtonPress("dock", "L2", Button.CONFIRM))
    body = refusal(step)
    assert (body["reason"], body["lane"], body["parcel"]) == ("wrong_lane", "L2", SSCC_1)
    assert "Door 1" in w.notice.text and w.pending is not None
    step = feed(w, scan("LANE-L2"))
    assert refusal(step)["reason"] == "wrong_lane"
    step = feed(w, scan("LANE-L1"))
    assert [n for n, _ in events(step)] == ["loaded"]


def test_a_parcel_loaded_twice_is_refused_saying_where() -> None:
    w = station(parcel(SSCC_1))
    feed(w, scan(SSCC_1))
    feed(w, scan("LANE-L1"), now=1500)
    step = feed(w, scan(SSCC_1))
    body = refusal(step)
    assert body["reason"] == "already_loaded" and body["lane"] == "L1"
    assert "1500" in body["detail"] and "Door 1" in w.notice.text
    assert lights(step) == {}


def test_a_parcel_shipped_on_a_closed_manifest_is_refused_with_the_manifest() -> None:
    w = station(parcel(SSCC_1))
    feed(w, scan(SSCC_1))
    feed(w, scan("LANE-L1"))
    feed(w, scan("CLOSE-L1"))
    body = refusal(feed(w, scan(SSCC_1)))
    assert body["reason"] == "already_loaded" and "DPD-0001" in body["detail"]


def test_a_parcel_nobody_announced_and_a_product_code_are_refused() -> None:
    w = station(parcel(SSCC_1))
    body = refusal(feed(w, scan(SSCC_3, sscc=SSCC_3)))
    assert (body["reason"], body["code"]) == ("unknown_parcel", SSCC_3)
    body = refusal(feed(w, scan("4006381333931", gtin="04006381333931")))
    assert body["reason"] == "unknown_code"
    assert w.pending is None


def test_a_carrier_with_no_lane_is_refused() -> None:
    w = station(parcel(SSCC_4, carrier="FedEx"))
    step = feed(w, scan(SSCC_4))
    body = refusal(step)
    assert (body["reason"], body["carrier"]) == ("no_lane", "FedEx")
    assert lights(step) == {} and w.pending is None


def test_a_lane_with_nothing_scanned_and_an_unreadable_code_are_refused() -> None:
    w = station(parcel(SSCC_1))
    assert refusal(feed(w, ButtonPress("dock", "L1", Button.CONFIRM)))["reason"] == "no_parcel"
    assert refusal(feed(w, scan("LANE-L1")))["reason"] == "no_parcel"
    body = refusal(feed(w, scan("0037610425", error="bad check digit")))
    assert (body["reason"], body["detail"]) == ("unreadable", "bad check digit")
    assert w.counts["load_refusals"] == 3


def test_express_and_near_cutoff_parcels_stand_out_and_a_late_load_says_so() -> None:
    now = 100 * MIN
    w = station(
        parcel(SSCC_1, express=True),
        parcel(SSCC_2, cutoff=now + 20 * MIN),
        parcel(SSCC_3, cutoff=now + 60 * MIN),
    )
    assert lights(feed(w, scan(SSCC_1), now)) == {"L1": ("reddish_purple", "slow_blink", "Prio")}
    assert w.snapshot()["pending"]["urgency"] == "express"
    assert lights(feed(w, scan(SSCC_2), now))["L1"] == ("orange", "fast_blink", "Cut")
    step = feed(w, scan(SSCC_3), now)
    assert lights(step)["L1"] == ("blue", "steady", "LoAd")
    # The clock moves on while it waits: 25 minutes to the cut-off, it turns orange.
    step = Step()
    w.on_tick(step, now + 35 * MIN)
    assert lights(step)["L1"] == ("orange", "fast_blink", "Cut")
    [(_, body)] = events(feed(w, scan("LANE-L1"), now + 61 * MIN))
    assert body["late"] is True and body["cutoff"] == now + 60 * MIN
    waiting = w.snapshot()["waiting"]
    assert [p["sscc"] for p in waiting] == [SSCC_2, SSCC_1]  # cut-off first, then express


def test_closing_a_manifest_ships_the_loaded_and_lists_the_missing() -> None:
    w = station(parcel(SSCC_1, tracking="T1", service="Next day"), parcel(SSCC_2), parcel(SSCC_3))
    for sscc, at in ((SSCC_1, 1000), (SSCC_3, 3000)):
        feed(w, scan(sscc), at - 10)
        feed(w, scan("LANE-L1"), at)
    step = feed(w, scan("CLOSE-L1"), 5000)
    got = events(step)
    assert [n for n, _ in got] == ["manifest_closed", "shipped", "shipped"]
    manifest = got[0][1]
    assert manifest["manifest"] == "DPD-0001" and manifest["carrier"] == "DPD"
    assert manifest["loaded"] == [SSCC_1, SSCC_3] and manifest["missing"] == [SSCC_2]
    assert (manifest["opened_at"], manifest["closed_at"], manifest["closed_by"]) == (
        1000,
        5000,
        "scan",
    )
    shipped = got[1][1]
    assert shipped == {
        "order": "O-569",
        "parcel": SSCC_1,
        "sscc": SSCC_1,
        "tracking": "T1",
        "carrier": "DPD",
        "service": "Next day",
        "manifest": "DPD-0001",
        "lane": "L1",
        "loaded_at": 1000,
        "at": 5000,
    }
    assert step.unit.drops == {f"parcel:{SSCC_1}", f"parcel:{SSCC_3}"}
    # The missing parcel stays announced for the next manifest, numbered on.
    feed(w, scan(SSCC_2))
    feed(w, scan("LANE-L1"))
    verdict = command(w, "manifest_close", {"carrier": "DPD"}, 9000)
    assert verdict.status == "accepted"
    got = events(command.last)  # type: ignore[attr-defined]
    assert got[0][1]["manifest"] == "DPD-0002" and got[0][1]["closed_by"] == "command"


def test_closing_with_nothing_loaded_or_for_an_unknown_carrier_is_refused() -> None:
    w = station(parcel(SSCC_1))
    assert refusal(feed(w, scan("CLOSE-L1")))["reason"] == "nothing_loaded"
    verdict = command(w, "manifest_close", {"carrier": "DPD"})
    assert (verdict.status, verdict.reason) == ("rejected", "nothing_loaded")
    verdict = command(w, "manifest_close", {"carrier": "DHL"})
    assert (verdict.status, verdict.reason) == ("rejected", "unknown_carrier")


def test_announcing_again_keeps_the_parcel_and_a_shipped_one_is_refused() -> None:
    w = station(parcel(SSCC_1))
    feed(w, scan(SSCC_1))
    feed(w, scan("LANE-L1"))
    verdict = command(w, "load", {"parcels": [parcel(SSCC_1)]})
    assert verdict.items == [] and w.parcels[SSCC_1].lane == "L1"
    feed(w, scan("CLOSE-L1"))
    verdict = command(w, "load", {"parcels": [parcel(SSCC_1), parcel(SSCC_2)]})
    assert [(i.id, i.reason) for i in verdict.items] == [(SSCC_1, "already_shipped")]


def test_restore_keeps_loads_manifests_and_shipped_parcels_with_every_lane_dark() -> None:
    w = station(parcel(SSCC_1), parcel(SSCC_2), parcel(SSCC_3))
    rows: dict[str, StoredTask] = {}

    def keep(step: Step) -> None:
        for task_id in step.unit.drops:
            rows.pop(task_id, None)
        rows.update(step.unit.puts)

    keep(command.last)  # type: ignore[attr-defined]
    for s in (SSCC_1, SSCC_2):
        keep(feed(w, scan(s)))
        keep(feed(w, scan("LANE-L1"), 2000))
    keep(feed(w, scan("CLOSE-L1"), 3000))
    keep(feed(w, scan(SSCC_3)))
    keep(feed(w, scan("LANE-L1"), 4000))
    keep(feed(w, scan(SSCC_1)))  # refused, changes nothing
    again = station()
    step = Step()
    again.restore(list(rows.values()), step, 5000)
    assert lights(step) == {"L1": (None, "steady", None), "L2": (None, "steady", None)}
    assert again.parcels[SSCC_3].lane == "L1" and SSCC_1 not in again.parcels
    assert refusal(feed(again, scan(SSCC_1)))["reason"] == "already_loaded"
    got = events(feed(again, scan("CLOSE-L1"), 6000))
    assert got[0][1]["manifest"] == "DPD-0002" and got[0][1]["opened_at"] == 4000


def test_settings_refuse_a_lane_twice_and_a_lane_without_a_light() -> None:
    with pytest.raises(ValueError, match="lane id appears twice"):
        DispatchSettings.model_validate({"lanes": [{"id": "L1", "carrier": "A"}] * 2})

    class Floor:
        kinds: dict[str, str] = {}

        def locations(self) -> list[str]:
            return ["L1"]

    from agent.config import parse_config

    config = parse_config(
        {"site": "s", "node": "d1", "role": "dispatch", "settings": SETTINGS}, "x.toml", env={}
    )
    with pytest.raises(ConfigError, match="L2"):
        DispatchWorkflow.from_config(config, Floor())
