"""The demo's simulated people: pickers, a put-wall operator, a packer, a loader, a clerk.

They work only through what a person at the node has: what its lights and screen show
(``/api/state``) and its simulated devices (``/sim/...``: the scanner, the buttons, the
scale, the printers). They never talk to the broker or read the OMS's mind.

Some things go wrong on purpose, so the KPIs have something to count:

* each picker's first line starts with a mis-scan (an item from the other zone), and
  after that about one line in 25;
* the catalogue's ``on_shelf`` says how many units really are in a slot: a picker who
  finds fewer lowers the quantity with the minus button and confirms a short pick;
* the packer's first order gets a scan of an item that is not in it (refused);
* the second parcel weighs too much at first (a spare roll of tape left in the box): the
  check-weigh fails, the packer takes it out and weighs again;
* the label printer runs out of paper before the third parcel's label; the packer waits
  until the station says the label is late, then loads paper and the held label prints;
* the loader at the dock puts the first parcel on the wrong lane (refused) before the right
  one, and closes a carrier's manifest once its lane has had nothing to load for a while
  (the truck leaves);
* the returns clerk opens each return the OMS announced, scans what is really in the
  parcel (a customer sent back the wrong item we had sent them: it is not in the RMA),
  records the customer's reason and the grade they find, and first presses the wrong bin
  once.

A parcel weighs what the station's own model predicts (items + box + packaging,
``agent.workflows.cartons``) give or take 1 %: the simulation has no other physics.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.oms.demo.site import Control
from agent.oms.fulfilment import CatalogueItem, ReturnEntry
from agent.workflows.cartons import DEFAULT_BOXES, MATERIALS, Item, expected_weight_g

Say = Callable[[str], None]
WAIT_S = 15.0


@dataclass
class Pace:
    """Human pace: ``await pace(seconds)`` sleeps about ``seconds / speed``."""

    speed: float
    rng: random.Random

    async def __call__(self, seconds: float) -> None:
        """Sleep a jittered ``seconds`` at the demo's speed."""
        await asyncio.sleep(max(0.0, seconds * self.rng.uniform(0.7, 1.3) / self.speed))


@dataclass
class Incidents:
    """What the simulated people did wrong or ran into (for the summary and the tests)."""

    misscans: int = 0
    shorts: int = 0
    wrong_pack_scans: int = 0
    weigh_failures: int = 0
    paper_outs: int = 0
    wrong_lanes: int = 0
    manifests: int = 0
    wrong_bins: int = 0
    units_returned: int = 0
    stuck: list[str] = field(default_factory=list)


async def wait_for(
    control: Control,
    done: Callable[[dict[str, Any]], bool],
    what: str,
    incidents: Incidents,
    timeout: float = WAIT_S,
) -> dict[str, Any]:
    """Poll the node's screen until ``done(workflow)``; note it when it never comes."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        workflow = await control.workflow()
        if done(workflow) or loop.time() > end:
            if not done(workflow):
                incidents.stuck.append(what)
            return workflow
        await asyncio.sleep(0.05)


async def wait_lit(
    control: Control,
    location: str,
    qty: int,
    what: str,
    incidents: Incidents,
    timeout: float = WAIT_S,
) -> None:
    """Poll the node's lights until ``location`` shows ``qty``; note it when it never does."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while ((await control.lights()).get(location) or {}).get("qty") != qty:
        if loop.time() > end:
            incidents.stuck.append(what)
            return
        await asyncio.sleep(0.05)


class Catalogue:
    """The catalogue as the people on the floor know it: what is where, and its codes."""

    def __init__(self, items: dict[str, CatalogueItem]) -> None:
        self.items = items
        self.at = {item.location: sku for sku, item in items.items()}
        self.on_shelf = {item.location: item.on_shelf for item in items.values()}

    def barcode(self, sku: str) -> str:
        """The code printed on the item."""
        return self.items[sku].barcodes[0]

    def elsewhere(self, locations: list[str], rng: random.Random) -> str:
        """The barcode of an item kept in none of ``locations`` (a wrong grab)."""
        others = sorted(s for s, i in self.items.items() if i.location not in locations)
        return self.barcode(rng.choice(others or sorted(self.items)))


async def picker(
    name: str,
    control: Control,
    device: str | Mapping[str, str],
    locations: list[str],
    confirm_by_scan: bool,
    catalogue: Catalogue,
    pace: Pace,
    incidents: Incidents,
    say: Say,
    *,
    tag_keys: bool = False,
) -> None:
    """Log in, then pick whatever the zone shows, express lines first, until cancelled.

    ``device`` is the light device, or the device of each location (a zone on several
    ATOP controllers); with ``tag_keys`` a short is the tag's up/down keys set to what
    was found, then its shortage key, instead of minus presses and confirm.
    """
    rng = pace.rng
    await control.scan(f"BADGE-{name}")
    first = True
    while True:
        workflow = await control.workflow()
        shown = [
            (location, info["shown"])
            for location, info in sorted(workflow.get("locations", {}).items())
            if info.get("shown")
        ]
        if not shown:
            await asyncio.sleep(0.1)
            continue
        express = [s for s in shown if s[1].get("express")]
        location, line = rng.choice(express or shown)
        task, sku, qty = line["task"], line["sku"], int(line["qty"])
        await pace(2.0)  # walk to the slot, read the display
        if first or rng.random() < 0.04:
            await control.scan(catalogue.elsewhere(locations, rng))
            incidents.misscans += 1
            say(f"{name} scanned the wrong item at {location} (mis-scan)")
            await pace(1.0)
        first = False
        available = catalogue.on_shelf.get(location)
        take = qty if available is None else min(qty, available)
        light = device if isinstance(device, str) else device[location]
        if take < qty and tag_keys:
            await control.press(light, location, "short", qty=take)
            incidents.shorts += 1
            say(f"{name} found {take} of {qty} {sku} at {location}: short pick on the tag")
        elif take < qty:
            for _ in range(qty - take):
                await control.press(light, location, "minus")
                await asyncio.sleep(0.08)  # over the shelf's double-press guard
            await control.press(light, location, "confirm")
            incidents.shorts += 1
            say(f"{name} found {take} of {qty} {sku} at {location}: short pick")
        elif confirm_by_scan:
            await control.scan(catalogue.barcode(sku))
        else:
            await control.press(light, location, "confirm")
        if available is not None:
            catalogue.on_shelf[location] = available - take
        await wait_for(
            control,
            functools.partial(_moved_on, location, task),
            f"{name}: line {task} not confirmed",
            incidents,
        )


def _moved_on(location: str, task: str, workflow: dict[str, Any]) -> bool:
    """Whether ``location`` no longer shows ``task`` (it was confirmed)."""
    shown = (workflow.get("locations", {}).get(location) or {}).get("shown") or {}
    return bool(shown.get("task") != task)


async def put_wall_operator(
    control: Control, catalogue: Catalogue, pace: Pace, incidents: Incidents, say: Say
) -> None:
    """Put every item into its lit cubby; empty cubbies whose order is complete."""
    while True:
        workflow = await control.workflow()
        done_slots = workflow.get("done_slots") or []
        if done_slots:
            await pace(1.0)
            await control.press("shelf", done_slots[0])  # taken out the back to packing
            await asyncio.sleep(0.1)
            continue
        todo = [
            sku
            for info in workflow.get("orders", {}).values()
            for sku, item in info["items"].items()
            if item["put"] < item["qty"]
        ]
        if not todo:
            await asyncio.sleep(0.1)
            continue
        await pace(1.5)  # take it from the tote
        await control.scan(catalogue.barcode(todo[0]))
        workflow = await wait_for(
            control,
            lambda w: w.get("pending") is not None,
            f"put wall: no cubby lit for {todo[0]}",
            incidents,
        )
        pending = workflow.get("pending")
        if pending is None:
            continue
        slot = workflow["orders"][pending["order"]]["slot"]
        # A person presses the cubby that lights up, not the one the screen names: its light
        # comes on once the node has stored the scan (slow under load), and a press on a
        # cubby still dark confirms nothing (the node logs a stale press).
        lit = f"put wall: cubby {slot} not lit"
        await wait_lit(control, slot, pending["qty"], lit, incidents)
        await pace(1.0)
        await control.press("shelf", slot)
        await wait_for(
            control,
            lambda w: w.get("pending") is None,
            f"put wall: put into {slot} not taken",
            incidents,
        )


def parcel_weight(order: dict[str, Any], catalogue: Catalogue, rng: random.Random) -> float:
    """What the closed parcel weighs: the station's own model, give or take 1 %."""
    boxes = {box.name: box for box in DEFAULT_BOXES}
    box = boxes[order["box"]["chosen"] or order["box"]["suggested"]]
    items = []
    for line in order["lines"]:
        known = catalogue.items[line["sku"]]
        items.append(
            Item(line["sku"], line["qty"], known.unit_weight_g, known.dims_mm, known.fragile)
        )
    expected = expected_weight_g(box, items, MATERIALS[order["material"]["name"]])
    return round(expected * rng.uniform(0.99, 1.01), 1)


class Packer:
    """The packer at ``pack-1``: scans, boxes, weighs and labels each queued order."""

    def __init__(
        self,
        control: Control,
        catalogue: Catalogue,
        pace: Pace,
        incidents: Incidents,
        say: Say,
    ) -> None:
        self.control = control
        self.catalogue = catalogue
        self.pace = pace
        self.incidents = incidents
        self.say = say
        self.parcels = 0

    async def _wait(self, done: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        return await wait_for(self.control, done, what, self.incidents)

    async def _weigh(self, grams: float) -> None:
        scale = "/sim/scale/set"
        await self.control.post(scale, {"grams": round(grams * 1.3, 1), "mode": "moving"})
        await self.pace(0.6)
        await self.control.post(scale, {"grams": grams, "mode": "stable"})

    async def run(self) -> None:
        """Pack until cancelled."""
        await self.control.post("/sim/scale/set", {"grams": 0, "mode": "stable"})
        while True:
            workflow = await self.control.workflow()
            queue = workflow.get("queue") or []
            if workflow.get("order") is None and queue:
                await self.pack(queue[0])
            else:
                await asyncio.sleep(0.1)

    async def pack(self, entry: dict[str, Any]) -> None:
        """One order, from its tote on the bench to the labelled parcel off the scale."""
        self.parcels += 1
        order_id = entry["order"]
        control, pace, say = self.control, self.pace, self.say
        await pace(2.0)
        await control.scan(entry.get("tote") or order_id)
        workflow = await self._wait(
            lambda w: (w.get("order") or {}).get("order") == order_id, f"{order_id} not started"
        )
        order = workflow.get("order")
        if order is None:
            return
        if self.parcels == 1:
            skus = {line["sku"] for line in order["lines"]}
            stray = next(s for s in sorted(self.catalogue.items) if s not in skus)
            await control.scan(self.catalogue.barcode(stray))
            self.incidents.wrong_pack_scans += 1
            say(f"packer scanned {stray}, which is not in {order_id} (refused)")
        for line in order["lines"]:
            for _ in range(line["qty"] - line["scanned"]):
                await pace(0.8)
                await control.scan(self.catalogue.barcode(line["sku"]))
        workflow = await self._wait(
            lambda w: (w.get("order") or {}).get("phase") == "carton", f"{order_id} not verified"
        )
        await pace(1.0)
        await control.scan("CONFIRM")  # the suggested box
        workflow = await self._wait(
            lambda w: (w.get("order") or {}).get("phase") == "weigh", f"{order_id} box not taken"
        )
        order = workflow.get("order") or order
        grams = parcel_weight(order, self.catalogue, pace.rng)
        paper_out = self.parcels == 3
        if paper_out:
            await control.post("/sim/label/set", {"state": "paper_out"})
            self.incidents.paper_outs += 1
            say("label printer: out of paper")
        await pace(1.5)  # close the box
        if self.parcels == 2:
            await self._weigh(grams + 350)
            await self._wait(
                lambda w: (w.get("order") or {}).get("phase") == "weigh_failed",
                f"{order_id} check-weigh did not fail",
            )
            self.incidents.weigh_failures += 1
            say(f"check-weigh failed for {order_id}: a spare tape roll was left in the box")
            await pace(1.5)
            await control.post("/sim/scale/set", {"grams": 0, "mode": "stable"})
            await pace(1.0)
        await self._weigh(grams)
        if paper_out:
            await self._wait(
                lambda w: ((w.get("order") or {}).get("label") or {}).get("late", False),
                f"{order_id}: no late-label notice",
            )
            await pace(2.0)
            await control.post("/sim/label/set", {"state": "ready"})
            say("label printer: paper loaded, the held label prints")
        await self._wait(
            lambda w: (w.get("order") or {}).get("order") != order_id, f"{order_id} not packed"
        )
        await pace(0.5)
        await control.post("/sim/scale/set", {"grams": 0, "mode": "stable"})  # parcel off


class Loader:
    """The loader at ``dock-1``: each waiting parcel onto its lane, then the manifests."""

    def __init__(
        self,
        control: Control,
        pace: Pace,
        incidents: Incidents,
        say: Say,
        *,
        idle_s: float = 6.0,
    ) -> None:
        self.control = control
        self.pace = pace
        self.incidents = incidents
        self.say = say
        self.idle_s = idle_s
        self.loads = 0

    async def _wait(self, done: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        return await wait_for(self.control, done, what, self.incidents)

    async def run(self) -> None:
        """Load until cancelled; close a lane's manifest when it has been idle a while."""
        loop = asyncio.get_running_loop()
        idle_since: dict[str, float] = {}
        while True:
            workflow = await self.control.workflow()
            waiting = [p for p in workflow.get("waiting") or [] if p.get("has_lane")]
            if waiting:
                idle_since.clear()
                await self.load(waiting[0], workflow)
                continue
            for lane in workflow.get("lanes") or []:
                if not lane["loaded"]:
                    continue
                since = idle_since.setdefault(lane["id"], loop.time())
                if loop.time() - since >= self.idle_s / self.pace.speed:
                    await self.control.scan(lane["close_barcode"])
                    self.incidents.manifests += 1
                    self.say(f"loader closed the {lane['carrier']} manifest: the truck leaves")
                    await self._wait(
                        functools.partial(_lane_empty, lane["id"]),
                        f"manifest of lane {lane['id']} not closed",
                    )
                    idle_since.pop(lane["id"], None)
            await asyncio.sleep(0.1)

    async def load(self, parcel: dict[str, Any], workflow: dict[str, Any]) -> None:
        """Scan one parcel's label and put it on its lane."""
        self.loads += 1
        await self.pace(1.5)  # pick the parcel up from the outfeed
        await self.control.scan(parcel["sscc"] or parcel["parcel"])
        seen = await self._wait(
            lambda w: (w.get("pending") or {}).get("parcel") == parcel["parcel"],
            f"dock: no lane lit for {parcel['parcel']}",
        )
        pending = seen.get("pending")
        if pending is None:
            return
        lanes = {lane["id"]: lane for lane in workflow["lanes"]}
        right = pending["lanes"][0]
        await self.pace(2.0)  # walk to the lane
        if self.loads == 1:
            wrong = next(lane for lane in lanes if lane != right)
            await self.control.scan(lanes[wrong]["barcode"])
            self.incidents.wrong_lanes += 1
            self.say(f"loader scanned lane {wrong} for {parcel['order']}: wrong lane (refused)")
            await self.pace(1.0)
        if self.loads % 2:
            await self.control.scan(lanes[right]["barcode"])
        else:
            await self.control.press("lanes", right)
        await self._wait(
            lambda w: (
                w.get("pending") is None
                and all(p["parcel"] != parcel["parcel"] for p in w.get("waiting") or [])
            ),
            f"dock: {parcel['parcel']} not loaded",
        )


def _lane_empty(lane_id: str, workflow: dict[str, Any]) -> bool:
    """Whether the dock's lane ``lane_id`` holds no loaded parcel (its manifest closed)."""
    return all(lane["loaded"] == 0 for lane in workflow["lanes"] if lane["id"] == lane_id)


class ReturnsClerk:
    """The clerk at ``returns-1``: opens, receives, grades and puts away each return."""

    def __init__(
        self,
        control: Control,
        catalogue: Catalogue,
        returns: dict[str, ReturnEntry],
        pace: Pace,
        incidents: Incidents,
        say: Say,
    ) -> None:
        self.control = control
        self.catalogue = catalogue
        self.returns = returns
        self.pace = pace
        self.incidents = incidents
        self.say = say
        self.done = 0

    async def _wait(self, done: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        return await wait_for(self.control, done, what, self.incidents)

    async def run(self) -> None:
        """Work through the announced returns until cancelled."""
        while True:
            workflow = await self.control.workflow()
            announced = [r for r in workflow.get("announced") or [] if r in self.returns]
            if workflow.get("return") is None and announced:
                await self.receive(self.returns[announced[0]])
            else:
                await asyncio.sleep(0.1)

    async def receive(self, entry: ReturnEntry) -> None:
        """One return parcel, from its label to the closed RMA."""
        control, pace = self.control, self.pace
        self.done += 1
        await pace(2.0)  # open the parcel
        await control.scan(entry.tracking or entry.rma)
        await self._wait(
            lambda w: (w.get("return") or {}).get("rma") == entry.rma, f"{entry.rma} not opened"
        )
        stated = {line.sku: line.reason for line in entry.lines}
        contents = entry.contents or [ln.sku for ln in entry.lines for _ in range(ln.qty)]
        for n, sku in enumerate(contents):
            reason = stated.get(sku, entry.lines[0].reason)
            await pace(1.5)  # look the unit over
            await control.scan(self.catalogue.barcode(sku))
            await control.scan(f"REASON-{reason}")
            await control.scan(f"GRADE-{entry.grade}")
            seen = await self._wait(
                lambda w: ((w.get("return") or {}).get("unit") or {}).get("bin") is not None,
                f"{entry.rma}: no bin lit for {sku}",
            )
            unit = (seen.get("return") or {}).get("unit") or {}
            if not unit:
                return
            if unit.get("flag") == "not_in_rma":
                self.say(f"returns: {sku} in {entry.rma} is not what the RMA says ({reason})")
            await pace(1.0)
            if self.done == 1 and n == 0:
                wrong = next(b for b in seen["bins"].values() if b != unit["bin"])
                await control.press("bins", wrong)
                self.incidents.wrong_bins += 1
                self.say(f"returns clerk pressed bin {wrong}, not {unit['bin']} (refused)")
                await pace(1.0)
            await control.press("bins", unit["bin"])
            await self._wait(
                lambda w: ((w.get("return") or {}).get("unit")) is None,
                f"{entry.rma}: put into {unit['bin']} not taken",
            )
            self.incidents.units_returned += 1
        await pace(1.0)
        await control.scan("CLOSE")
        await self._wait(lambda w: w.get("return") is None, f"{entry.rma} not closed")
