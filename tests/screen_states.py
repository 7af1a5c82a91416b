"""Realistic node states for the station screens, made by the real workflows.

Each builder drives a role's state machine with commands and device inputs as the floor
would (8-line orders with 60-character item names, a gift note, a 300-slot zone, a wall of
120 cubbies, refused scans) and returns what ``GET /api/state`` would serve: the
workflow's ``snapshot()`` and the lights its effects set, in ``agent.status.node_state``'s
shape. ``variant`` makes the error states: ``offline`` (no broker), ``fault`` (a device
down) and ``waiting`` (nothing to do yet).
"""

from __future__ import annotations

from typing import Any

from agent.wire.messages import Envelope
from agent.workflows.base import Light, Step
from agent.workflows.dispatch import DispatchSettings, DispatchWorkflow
from agent.workflows.health import screen_devices
from agent.workflows.packing import PackingWorkflow, PackSettings
from agent.workflows.picking import ZONE_LAMP, PickingWorkflow, PickSettings
from agent.workflows.putwall import PutWallWorkflow
from agent.workflows.returns import ReturnsSettings, ReturnsWorkflow
from agent.workflows.returns.messages import REASONS
from devices.base import NO_STATUS_REPLY, PAPER_NEAR_END
from devices.events import Button, ButtonPress, Scan
from tests.test_returns import BINS

ENV = Envelope(v=1, id="c1", ts=0, body={})
VARIANTS = ("normal", "offline", "fault", "waiting")
_WORDS = (
    "Stainless steel vacuum flask, double-walled, leak-proof lid and carry loop",
    "Organic cotton bath towel set, 4 pieces, extra absorbent, stone grey colour",
    "Wireless ergonomic keyboard with numeric pad, German QWERTZ layout, USB-C",
    "Ceramic pour-over coffee dripper with 100 paper filters, size 02, matte white",
    "Children's waterproof rain jacket with reflective stripes, size 122/128 navy",
    "LED desk lamp with touch dimmer, 5 colour temperatures and USB charging port",
    "Professional chef's knife, 20 cm forged blade, full tang, beech wood handle",
    "Yoga mat, non-slip natural rubber, 183 x 61 cm, 4 mm thick, with carry strap",
)


def item_name(n: int) -> str:
    """A 60-character item name, as shops write them."""
    return _WORDS[n % len(_WORDS)][:60]


UNPLUGGED = {"status": "unavailable", "detail": "USB cable unplugged"}
PRINTER_FAULT = {"status": "fault", "detail": NO_STATUS_REPLY}


def _node(
    role: str,
    node: str,
    workflow: Any,
    lights: dict[str, Any],
    devices: dict[str, Any],
    variant: str,
) -> dict[str, Any]:
    if variant == "fault":  # the first device unplugged, a printer or light bus in a fault
        first, *rest = devices
        devices = {**devices, first: {**devices[first], **UNPLUGGED}}
        for name in rest:
            if devices[name]["kind"] in ("zpl_printer", "atop"):
                devices[name] = {**devices[name], **PRINTER_FAULT}
        if role == "pick":  # two tags of the shelf dead
            parts = {"C04-2": {"status": "unavailable", "detail": "no answer"}}
            parts["H05-3"] = {"status": "fault", "detail": "malfunction"}
            devices["shelf"] = {**devices["shelf"], "status": "ok", "detail": "", "parts": parts}
    return {
        "site": "dc-leipzig-2",
        "node": node,
        "role": role,
        "online": variant != "offline",
        "boot": 3,
        "last_seq": 1234,
        "outbox": 6,
        "inputs": 500,
        "inputs_ignored": {},
        "link_conflict": None,
        "devices": screen_devices(devices),
        "lights": lights,
        "workflow": workflow,
    }


def _ok(kind: str, detail: str = "") -> dict[str, Any]:
    return {"kind": kind, "status": "ok", "detail": detail, "parts": {}}


class _Floor:
    """The lights a workflow's effects set, as ``DeviceFloor.lights()`` shows them."""

    def __init__(self, workflow: Any, locations: list[str]) -> None:
        self.wf = workflow
        self.lights: dict[str, Any] = dict.fromkeys(locations)
        self.now = 1_767_000_000_000  # Dec 2025, ms since the epoch

    def apply(self, step: Step) -> Step:
        for action in step.actions:
            if isinstance(action, Light):
                self.lights[action.location] = (
                    None
                    if action.colour is None
                    else {
                        "colour": action.colour,
                        "pattern": action.pattern,
                        "qty": action.qty,
                        "text": action.text,
                    }
                )
        return step

    def command(self, name: str, body: dict[str, Any]) -> None:
        self.now += 1
        step = Step()
        verdict = self.wf.on_command(
            name, ENV, self.wf.commands[name].model_validate(body), step, self.now
        )
        assert verdict.status == "accepted", verdict
        self.apply(step)

    def feed(self, event: object) -> None:
        self.now += 100
        step = Step()
        self.wf.on_input(event, step, self.now)
        self.apply(step)

    def scan(self, text: str) -> None:
        self.feed(Scan("scanner", text))

    def press(self, slot: str, device: str = "shelf") -> None:
        self.feed(ButtonPress(device, slot, Button.CONFIRM))


def pick(variant: str = "normal") -> dict[str, Any]:
    """A 300-slot zone: 5 orders of 8 lines lit for 3 pickers, one tote done, one wrong scan."""
    slots = [
        f"{aisle}{bay:02d}-{level}"
        for aisle in "ABCDEFGHJK"
        for bay in range(1, 11)
        for level in (1, 2, 3)
    ]
    floor = _Floor(PickingWorkflow(slots, PickSettings(confirm="scan")), [*slots, ZONE_LAMP])
    if variant != "waiting":
        for name in ("Katarzyna", "Jürgen", "Ana"):
            floor.scan(f"BADGE-{name}")
        tasks = []
        for o in range(5):
            for line in range(8):
                n = o * 8 + line
                tasks.append(
                    {
                        "task": f"t{n}",
                        "order": f"WEB-10{o:03d}",
                        "location": slots[(n * 7) % 300],
                        "sku": f"SKU-{40000 + n}",
                        "qty": 1 + n % 4,
                        "container": f"T-{5000 + o}",
                        "barcodes": [f"PC-{n}"],
                        "description": item_name(n),
                        "express": o == 1,
                    }
                )
        floor.command("pick", {"tasks": tasks})
        for line in tasks[-8:]:  # the last order's lines are picked: its tote is done
            floor.scan(line["barcodes"][0])
        floor.press(tasks[9]["location"])  # where the picker stands: a wrong item
        floor.scan("4006381333931")
    devices = {"shelf": _ok("atop"), "scanner": _ok("hid_scanner")}
    return _node("pick", "zone-a1", floor.wf.snapshot(), floor.lights, devices, variant)


def put_wall(variant: str = "normal") -> dict[str, Any]:
    """A wall of 120 cubbies, 70 orders on it, 5 complete, an item scanned for its put."""
    cubbies = [f"W{n:03d}" for n in range(1, 121)]
    floor = _Floor(PutWallWorkflow(cubbies), cubbies)
    if variant != "waiting":
        orders = [
            {
                "order": f"WEB-2{n:04d}",
                "slot": cubbies[n],
                "items": [
                    {
                        "sku": f"SKU-{n}-{i}",
                        "qty": 1 + i % 2,
                        "barcodes": [f"CODE-{n}-{i}"],
                        "description": item_name(n + i),
                    }
                    for i in range(3)
                ],
            }
            for n in range(70)
        ]
        floor.command("put", {"orders": orders})
        for n in range(5):
            for i in range(3):
                for _ in range(1 + i % 2):
                    floor.scan(f"CODE-{n}-{i}")
                    floor.press(cubbies[n], "wall")
        floor.scan("CODE-12-1")
    devices = {"wall": _ok("atop"), "scanner": _ok("hid_scanner")}
    return _node("put_wall", "wall-1", floor.wf.snapshot(), floor.lights, devices, variant)


def pack(variant: str = "normal") -> dict[str, Any]:
    """An 8-line express order with a gift note half scanned, 3 wrong scans, 6 orders waiting."""
    wf = PackingWorkflow(PackSettings(), label_printer="label", scale="scale", slip_printer="slip")
    floor = _Floor(wf, [])

    def order(n: int, lines: int, **kw: Any) -> dict[str, Any]:
        return {
            "order": f"WEB-3{n:04d}",
            "tote": f"T-{6000 + n}",
            "lines": [
                {
                    "sku": f"SKU-{n}-{i}",
                    "qty": 1 + i % 3,
                    "barcodes": [f"PK-{n}-{i}"],
                    "unit_weight_g": 150 + 20 * i,
                    "dims_mm": [100, 80, 40],
                    "fragile": i == 2,
                    "description": item_name(n + i),
                }
                for i in range(lines)
            ],
            "label": {
                "ship_to": {
                    "name": "Zofia Wiśniewska-Kowalczyk",
                    "address": ["ul. Marszałkowska 104/122 m. 37"],
                    "postcode": "00-017",
                    "city": "Warszawa",
                },
                "carrier": "DPD",
                "service": "Next day",
                "sscc": "376104250021234569",
            },
            **kw,
        }

    if variant != "waiting":
        floor.command(
            "pack",
            order(
                1,
                8,
                express=True,
                gift_note="Happy birthday, dear Grandma! With love from Lena, Max and little "
                "Sophie. See you at Easter!",
                packing_slip=True,
            ),
        )
        for n in range(2, 8):
            floor.command("pack", order(n, 1 + n % 4))
        floor.scan("T-6001")
        for i in range(4):
            floor.scan(f"PK-1-{i}")
        for code in ("5901234123457", "PK-2-0", "0000000000000"):
            floor.scan(code)
    devices = {
        "scale": _ok("mt_sics"),
        "label": _ok("zpl_printer", PAPER_NEAR_END),
        "slip": _ok("ipp_printer"),
        "scanner": _ok("hid_scanner"),
    }
    return _node("pack", "pack-3", wf.snapshot(), {}, devices, variant)


def returns(variant: str = "normal") -> dict[str, Any]:
    """An 8-line return open, 3 units received, one judged and lit for its bin, 12 expected."""
    wf = ReturnsWorkflow(ReturnsSettings(bins=BINS), label_printer=None)  # type: ignore[arg-type]
    floor = _Floor(wf, list(BINS.values()))
    reasons = (*REASONS, REASONS[0])  # every reason the customer may give, on 8 lines
    if variant != "waiting":
        rmas = [
            {
                "rma": f"RMA-4{n:04d}",
                "order": f"WEB-4{n:04d}",
                "tracking": f"JD00{n:04d}",
                "lines": [
                    {
                        "sku": f"RS-{n}-{i}",
                        "qty": 1 + i % 2,
                        "barcodes": [f"40{n:05d}{i:05d}"],
                        "reason": reasons[i],
                        "description": item_name(n + i),
                    }
                    for i in range(8 if n == 0 else 2)
                ],
            }
            for n in range(13)
        ]
        floor.command("rma", {"rmas": rmas})
        floor.scan("JD000000")
        units = [
            (f"40{0:05d}{i:05d}", reason, grade)
            for i, (reason, grade) in enumerate(
                (("defective", "D"), ("wrong_item_sent", "A"), ("size_or_fit", "B"))
            )
        ]
        for code, reason, grade in [
            *units,
            ("4012345000009", "wrong_item_sent", "A"),
        ]:  # the last in no line: flagged, still received
            floor.scan(code)
            floor.scan(f"REASON-{reason}")
            floor.scan(f"GRADE-{grade}")
            floor.press(next(b for b, lit in floor.lights.items() if lit), "bins")
        floor.scan(f"40{0:05d}{3:05d}")
        floor.scan("REASON-not_as_described")
        floor.scan("GRADE-C")  # in hand, its bin lit
        floor.press(
            next(b for b, lit in floor.lights.items() if not lit), "bins"
        )  # wrong bin: refused
    devices = {"bins": _ok("gpio_slots"), "scanner": _ok("hid_scanner")}
    return _node("returns", "returns-1", wf.snapshot(), floor.lights, devices, variant)


def dispatch(variant: str = "normal") -> dict[str, Any]:
    """Six lanes, 60 parcels waiting (express, near and past cut-off), one in hand, a wrong lane."""
    carriers = ("DPD", "UPS", "DHL", "GLS", "FedEx", "InPost")
    settings = DispatchSettings.model_validate(
        {
            "near_cutoff_min": 30,
            "lanes": [
                {"id": f"L{i + 1}", "carrier": c, "name": f"Door {i + 1}"}
                for i, c in enumerate(carriers)
            ],
        }
    )
    wf = DispatchWorkflow(settings)
    floor = _Floor(wf, [f"L{i + 1}" for i in range(6)])
    if variant != "waiting":
        parcels = []
        for n in range(60):
            body: dict[str, Any] = {
                "sscc": f"3761042500{n:07d}0",
                "carrier": carriers[n % 6],
                "order": f"WEB-5{n:04d}",
            }
            if n % 7 == 0:
                body["express"] = True
            if n % 5 == 0:
                body["cutoff"] = floor.now + (n - 20) * 60_000
            parcels.append(_sscc(body))
        floor.command("load", {"parcels": parcels})
        for n in (1, 2, 3):
            floor.scan(parcels[n]["sscc"])
            floor.press(f"L{n % 6 + 1}", "lanes")
        floor.scan(parcels[4]["sscc"])
        floor.press("L1", "lanes")  # wrong lane: refused
    devices = {"lanes": _ok("gpio_slots"), "scanner": _ok("hid_scanner")}
    return _node("dispatch", "dock-2", wf.snapshot(), floor.lights, devices, variant)


def _sscc(body: dict[str, Any]) -> dict[str, Any]:
    """The parcel with a valid SSCC check digit in place of its last digit."""
    digits = body["sscc"][:17]
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(digits))
    return {**body, "sscc": digits + str((10 - total % 10) % 10)}


BUILDERS = {
    "pick": pick,
    "put_wall": put_wall,
    "pack": pack,
    "returns": returns,
    "dispatch": dispatch,
}
