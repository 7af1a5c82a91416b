"""The dispatch station's state machine (see the package docstring for the whole flow).

State that must survive a restart is in the store: one task per announced parcel
(``parcel:{id}``: its SSCC, else its tracking number; with the lane and time once loaded)
and one ``dispatch:meta`` task
(manifest numbers, when each carrier's open manifest got its first parcel, and the shipped
parcels remembered for "already loaded" refusals). A parcel scanned but not yet confirmed
is not stored: after a restart every lane is dark and the loader scans it again.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from agent.config import NodeConfig
from agent.errors import ConfigError
from agent.i18n import Message, msg, render
from agent.store import StoredTask
from agent.wire.messages import Envelope, ItemResult, Wire
from agent.workflows.base import STALE_PRESS, FloorInfo, Step, Verdict, press_saw, settings_from
from agent.workflows.dispatch.messages import (
    LoadCommand,
    Loaded,
    LoadRefused,
    ManifestClose,
    ManifestClosed,
    Parcel,
    Shipped,
)
from agent.workflows.dispatch.screen import DispatchScreen, PendingParcel
from agent.workflows.dispatch.settings import DispatchSettings, Lane
from agent.workflows.scans import gtin14
from agent.workflows.station import UNREADABLE, Notice, notice_view, refusal_views
from devices.events import Button, ButtonPress, Scan
from devices.lights.palette import Colour, Pattern

PARCEL = "dock_parcel"
META = "dock_meta"
META_ID = "dispatch:meta"
MAX_REFUSALS_SHOWN = 5
MAX_RECENT_SHOWN = 8
Urgency = Literal["normal", "express", "cutoff", "late"]


@dataclass(slots=True)
class DockParcel:
    """An announced parcel, with where and when it was loaded.

    ``id`` is its SSCC, or the carrier's tracking number when it has no SSCC (a carrier's
    own label): the key of the parcel in the store, in manifests and in refusals.
    """

    id: str
    sscc: str | None
    tracking: str | None
    carrier: str
    service: str
    order: str
    express: bool
    cutoff: int | None
    arrival: int
    lane: str | None = None
    loaded_at: int | None = None
    scanned_at: int | None = None

    def stored(self) -> StoredTask:
        """The store row of this parcel."""
        return StoredTask(
            f"parcel:{self.id}",
            PARCEL,
            None,
            [
                self.sscc,
                self.tracking,
                self.carrier,
                self.service,
                self.order,
                self.express,
                self.cutoff,
                self.arrival,
                self.lane,
                self.loaded_at,
                self.scanned_at,
            ],
        )

    @classmethod
    def from_stored(cls, row: StoredTask) -> DockParcel:
        """Rebuild from a store row."""
        sscc, t, c, s, o, e, cut, arr, lane, at, scanned = row.data
        key = row.id.removeprefix("parcel:")
        return cls(key, sscc, t, c, s, o, e, cut, arr, lane, at, scanned)


@dataclass(slots=True)
class Pending:
    """A parcel scanned, waiting for its lane to be confirmed."""

    parcel: str
    scanned_at: int
    shown: Urgency


def urgency(parcel: DockParcel, now: int, near_ms: float) -> Urgency:
    """How a parcel stands out: past its cut-off, near it, express, or not at all."""
    if parcel.cutoff is not None:
        if now > parcel.cutoff:
            return "late"
        if parcel.cutoff - now <= near_ms:
            return "cutoff"
    return "express" if parcel.express else "normal"


class DispatchWorkflow:
    """Load verification at the dock: parcels onto carrier lanes, manifests closed.

    Args:
        settings: the node's dispatch settings (its lanes).
        locations: the slots the node's lights cover; every lane must be one of them.
    """

    commands: Mapping[str, type[Wire]] = {"load": LoadCommand, "manifest_close": ManifestClose}

    @classmethod
    def from_config(cls, config: NodeConfig, floor: FloorInfo) -> DispatchWorkflow:
        """The workflow of a dispatch node.

        Raises:
            ConfigError: a ``[settings]`` value is invalid, or a lane has no light.
        """
        settings: DispatchSettings = settings_from(DispatchSettings, config.settings)
        known = set(floor.locations())
        for n, lane in enumerate(settings.lanes):
            if lane.id not in known:
                raise ConfigError(
                    "(node file)",
                    f"settings.lanes[{n}].id",
                    f"lane {lane.id!r} is not a slot of the node's lights",
                )
        return cls(settings)

    def __init__(self, settings: DispatchSettings) -> None:
        self.settings = settings
        self.lanes: dict[str, Lane] = {lane.id: lane for lane in settings.lanes}
        self._lane_codes = {lane.scan_code: lane for lane in settings.lanes}
        self._close_codes = {lane.close_code: lane for lane in settings.lanes}
        self._carrier_lanes: dict[str, list[Lane]] = {}
        for lane in settings.lanes:
            self._carrier_lanes.setdefault(lane.carrier, []).append(lane)
        self._near_ms = settings.near_cutoff_min * 60_000
        self.parcels: dict[str, DockParcel] = {}
        self._tracking: dict[str, str] = {}
        self.pending: Pending | None = None
        self.numbers: dict[str, int] = {}
        self.opened: dict[str, int] = {}
        self.shipped: OrderedDict[str, tuple[str, str, int]] = OrderedDict()
        self.notice = Notice("info", msg("dispatch.prompt_idle"), 0)
        self.refusals: list[Notice] = []
        self.recent: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}
        self._arrivals = 0
        self._now = 0

    def locations(self) -> list[str]:
        """The lanes (slots of the node's lights)."""
        return list(self.lanes)

    # --- helpers -------------------------------------------------------------------

    def _count(self, step: Step, name: str, delta: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + delta
        step.unit.count(name, delta)

    def _say(self, level: Literal["info", "ok", "error"], message: Message, now: int) -> None:
        self.notice = Notice(level, message, now)

    def _meta(self) -> StoredTask:
        return StoredTask(
            META_ID,
            META,
            None,
            {
                "numbers": dict(self.numbers),
                "opened": dict(self.opened),
                "shipped": [[s, m, lane, at] for s, (m, lane, at) in self.shipped.items()],
            },
        )

    def _refuse(
        self,
        step: Step,
        now: int,
        code: str,
        reason: str,
        message: Message,
        *,
        detail: str = "",
        parcel: DockParcel | None = None,
        lane: str | None = None,
    ) -> None:
        notice = Notice("error", message, now, reason)
        self.notice = notice
        self.refusals = [notice, *self.refusals][:MAX_REFUSALS_SHOWN]
        step.emit(
            "load_refused",
            LoadRefused(
                code=code[:128],
                reason=reason,
                detail=detail[:256],
                parcel=None if parcel is None else parcel.id,
                order=None if parcel is None else parcel.order,
                carrier=None if parcel is None else parcel.carrier,
                lane=lane,
                at=now,
            ),
            ts=now,
        )
        self._count(step, "load_refusals")

    def _light(self, parcel: DockParcel, step: Step, now: int) -> Urgency:
        shown = urgency(parcel, now, self._near_ms)
        colour, pattern, text = {
            "normal": (self.settings.colour, Pattern.STEADY, "LoAd"),
            "express": (Colour.REDDISH_PURPLE, Pattern.SLOW_BLINK, "Prio"),
            "cutoff": (Colour.ORANGE, Pattern.FAST_BLINK, "Cut"),
            "late": (Colour.VERMILLION, Pattern.FAST_BLINK, "LAtE"),
        }[shown]
        for lane in self._carrier_lanes.get(parcel.carrier, []):
            step.light(lane.id, colour.value, pattern.value, text=text, shows=parcel.id)
        return shown

    def _lane_shows(self, lane: str) -> str | None:
        """The parcel a lane's light stands for now (None: dark)."""
        parcel = None if self.pending is None else self.parcels.get(self.pending.parcel)
        if parcel is None or lane not in {x.id for x in self._carrier_lanes[parcel.carrier]}:
            return None
        return parcel.id

    def _dark(self, step: Step) -> None:
        if self.pending is None:
            return
        parcel = self.parcels.get(self.pending.parcel)
        if parcel is not None:
            for lane in self._carrier_lanes.get(parcel.carrier, []):
                step.off(lane.id)
        self.pending = None

    # --- restore and commands ------------------------------------------------------

    def restore(self, tasks: list[StoredTask], step: Step, now: int) -> None:
        """Reload announced and loaded parcels and the manifests; every lane dark."""
        self._now = now
        for row in tasks:
            if row.kind == PARCEL:
                parcel = DockParcel.from_stored(row)
                self.parcels[parcel.id] = parcel
                if parcel.tracking:
                    self._tracking[parcel.tracking] = parcel.id
                self._arrivals = max(self._arrivals, parcel.arrival + 1)
            elif row.kind == META:
                self.numbers = dict(row.data["numbers"])
                self.opened = dict(row.data["opened"])
                for sscc, manifest, lane, at in row.data["shipped"]:
                    self.shipped[sscc] = (manifest, lane, at)
        for lane in self.lanes:
            step.off(lane)

    def on_command(
        self, name: str, envelope: Envelope, body: Wire, step: Step, now: int
    ) -> Verdict:
        """Announce parcels, or close a carrier's manifest."""
        self._now = now
        if isinstance(body, ManifestClose):
            if body.carrier not in self._carrier_lanes:
                return Verdict.rejected("unknown_carrier", f"no lane for {body.carrier}")
            if not self._close(body.carrier, "command", step, now):
                return Verdict.rejected("nothing_loaded", f"nothing loaded for {body.carrier}")
            return Verdict.accepted()
        assert isinstance(body, LoadCommand)
        items: list[ItemResult] = []
        for p in body.parcels:
            key = p.key
            if key in self.parcels:
                continue  # sent again: already held
            if key in self.shipped:
                items.append(ItemResult(id=key, status="rejected", reason="already_shipped"))
                continue
            parcel = self._new(p)
            self.parcels[parcel.id] = parcel
            if parcel.tracking:
                self._tracking[parcel.tracking] = parcel.id
            step.unit.put_task(parcel.stored())
            self._count(step, "parcels_announced")
        return Verdict.accepted(items)

    def _new(self, p: Parcel) -> DockParcel:
        self._arrivals += 1
        return DockParcel(
            p.key,
            p.sscc,
            p.tracking,
            p.carrier,
            p.service,
            p.order,
            p.express,
            p.cutoff,
            self._arrivals,
        )

    # --- input ---------------------------------------------------------------------

    def on_input(self, event: object, step: Step, now: int) -> None:
        """A scan (parcel, lane, close code) or a lane's button."""
        self._now = now
        if isinstance(event, Scan):
            self._scan(event, step, now)
        elif isinstance(event, ButtonPress) and event.button is Button.CONFIRM:
            lane = self.lanes.get(event.slot)
            if lane is not None:
                if not press_saw(event, self._lane_shows(lane.id)):
                    step.ignored.append(STALE_PRESS)  # pressed for another parcel, or none
                    return
                self._confirm(lane, "button", event.slot, step, now)

    def _find(self, scan: Scan) -> str:
        """The parcel a scan names (its SSCC: AI 00 or 18 digits; its tracking), else its text."""
        if scan.sscc is not None:
            return scan.sscc
        text = scan.text
        if len(text) == 20 and text.startswith("00") and text.isdigit():
            return text[2:]
        return self._tracking.get(text, text)

    def _scan(self, scan: Scan, step: Step, now: int) -> None:
        self._count(step, "dispatch_scans")
        text = scan.text
        if scan.error is not None:
            self._refuse(
                step,
                now,
                text,
                "unreadable",
                UNREADABLE,
                detail=scan.error,
            )
            return
        lane = self._lane_codes.get(text)
        if lane is not None:
            self._confirm(lane, "scan", text, step, now)
            return
        lane = self._close_codes.get(text)
        if lane is not None:
            if not self._close(lane.carrier, "scan", step, now):
                self._refuse(
                    step,
                    now,
                    text,
                    "nothing_loaded",
                    msg("dispatch.nothing_loaded", carrier=lane.carrier),
                    lane=lane.id,
                )
            return
        key = self._find(scan)
        parcel = self.parcels.get(key)
        if parcel is None:
            if key in self.shipped:
                manifest, where, at = self.shipped[key]
                self._dark(step)
                self._refuse(
                    step,
                    now,
                    text,
                    "already_loaded",
                    msg(
                        "dispatch.already_left",
                        parcel=key,
                        manifest=manifest,
                        lane=self._name(where),
                    ),
                    detail=f"shipped on manifest {manifest} from lane {where} at {at}",
                    lane=where,
                )
                return
            product = scan.gtin is not None or gtin14(text) is not None
            self._dark(step)
            self._refuse(
                step,
                now,
                text,
                "unknown_code" if product else "unknown_parcel",
                msg("dispatch.product_code", code=text[:40])
                if product
                else msg("dispatch.not_announced", parcel=text[:40]),
            )
            return
        if parcel.lane is not None:
            self._dark(step)
            self._refuse(
                step,
                now,
                text,
                "already_loaded",
                msg("dispatch.already_loaded", parcel=parcel.id, lane=self._name(parcel.lane)),
                detail=f"loaded on lane {parcel.lane} at {parcel.loaded_at}",
                parcel=parcel,
                lane=parcel.lane,
            )
            return
        lanes = self._carrier_lanes.get(parcel.carrier)
        if not lanes:
            self._dark(step)
            self._refuse(
                step,
                now,
                text,
                "no_lane",
                msg("dispatch.no_lane_for", carrier=parcel.carrier, parcel=parcel.id),
                parcel=parcel,
            )
            return
        self._dark(step)
        shown = self._light(parcel, step, now)
        self.pending = Pending(parcel.id, now, shown)
        names = [self._name(lane.id) for lane in lanes]
        load = msg("dispatch.load_onto", carrier=parcel.carrier, lanes=names)
        if shown != "normal":  # the lane's badge, said: EXPRESS, CUT-OFF NEAR, PAST CUT-OFF
            urgent = msg(f"dispatch.urgency_{shown}")
            load = msg(
                "dispatch.load_onto_urgent", carrier=parcel.carrier, lanes=names, urgency=urgent
            )
        self._say("info", load, now)

    def _name(self, lane_id: str) -> str:
        lane = self.lanes.get(lane_id)
        return lane.name or lane.id if lane is not None else lane_id

    def _confirm(
        self, lane: Lane, by: Literal["scan", "button"], code: str, step: Step, now: int
    ) -> None:
        pending = self.pending
        parcel = None if pending is None else self.parcels.get(pending.parcel)
        if pending is None or parcel is None:
            self._refuse(
                step,
                now,
                code,
                "no_parcel",
                msg("dispatch.parcel_first", lane=self._name(lane.id)),
                lane=lane.id,
            )
            return
        if parcel.carrier != lane.carrier:
            right = ", ".join(self._name(x.id) for x in self._carrier_lanes[parcel.carrier])
            self._refuse(
                step,
                now,
                code,
                "wrong_lane",
                msg(
                    "dispatch.wrong_lane",
                    lane=self._name(lane.id),
                    carrier=lane.carrier,
                    parcel=parcel.id,
                    right=right,
                    parcel_carrier=parcel.carrier,
                ),
                detail=f"lane {lane.id} takes {lane.carrier}; the parcel's lane is {right}",
                parcel=parcel,
                lane=lane.id,
            )
            return
        self._dark(step)
        parcel.lane, parcel.loaded_at, parcel.scanned_at = lane.id, now, pending.scanned_at
        late = parcel.cutoff is not None and now > parcel.cutoff
        step.unit.put_task(parcel.stored())
        if parcel.carrier not in self.opened:
            self.opened[parcel.carrier] = now
            step.unit.put_task(self._meta())
        step.emit(
            "loaded",
            Loaded(
                parcel=parcel.id,
                sscc=parcel.sscc,
                tracking=parcel.tracking,
                order=parcel.order,
                carrier=parcel.carrier,
                lane=lane.id,
                express=parcel.express,
                cutoff=parcel.cutoff,
                late=late,
                confirmed_by=by,
                scanned_at=pending.scanned_at,
                loaded_at=now,
            ),
            ts=now,
        )
        self._count(step, "parcels_loaded")
        if late:
            self._count(step, "parcels_late")
        self.recent = [
            {"parcel": parcel.id, "order": parcel.order, "lane": lane.id, "late": late, "at": now},
            *self.recent,
        ][:MAX_RECENT_SHOWN]
        self._say("ok", msg("dispatch.loaded", parcel=parcel.id, lane=self._name(lane.id)), now)

    def _close(self, carrier: str, by: Literal["scan", "command"], step: Step, now: int) -> bool:
        """Close ``carrier``'s manifest; ``False`` (nothing done) when nothing is loaded."""
        mine = sorted(
            (p for p in self.parcels.values() if p.carrier == carrier), key=lambda p: p.arrival
        )
        loaded = [p for p in mine if p.lane is not None]
        if not loaded:
            return False
        missing = [p.id for p in mine if p.lane is None]
        number = self.numbers.get(carrier, 0) + 1
        self.numbers[carrier] = number
        slug = re.sub(r"[^A-Za-z0-9]+", "-", carrier).strip("-") or "CARRIER"
        manifest = f"{slug}-{number:04d}"
        late = sum(1 for p in loaded if p.cutoff is not None and (p.loaded_at or 0) > p.cutoff)
        step.emit(
            "manifest_closed",
            ManifestClosed(
                manifest=manifest,
                carrier=carrier,
                lanes=[lane.id for lane in self._carrier_lanes.get(carrier, [])],
                loaded=[p.id for p in loaded],
                missing=missing,
                late=late,
                closed_by=by,
                opened_at=self.opened.pop(carrier, None),
                closed_at=now,
            ),
            ts=now,
        )
        for p in loaded:
            assert p.lane is not None and p.loaded_at is not None
            step.emit(
                "shipped",
                Shipped(
                    order=p.order,
                    parcel=p.id,
                    sscc=p.sscc,
                    tracking=p.tracking,
                    carrier=carrier,
                    service=p.service,
                    manifest=manifest,
                    lane=p.lane,
                    loaded_at=p.loaded_at,
                    at=now,
                ),
                ts=now,
            )
            del self.parcels[p.id]
            if p.tracking:
                self._tracking.pop(p.tracking, None)
            step.unit.drop_task(f"parcel:{p.id}")
            if self.settings.shipped_memory:
                self.shipped[p.id] = (manifest, p.lane, p.loaded_at)
        while len(self.shipped) > self.settings.shipped_memory:
            self.shipped.popitem(last=False)
        step.unit.put_task(self._meta())
        self._count(step, "manifests_closed")
        self._count(step, "parcels_shipped", len(loaded))
        if missing:
            left = msg("dispatch.not_loaded", n=len(missing))
            closed = msg(
                "dispatch.manifest_closed_missing", manifest=manifest, n=len(loaded), missing=left
            )
        else:
            closed = msg("dispatch.manifest_closed", manifest=manifest, n=len(loaded))
        self._say("ok", closed, now)
        return True

    def on_tick(self, step: Step, now: int) -> None:
        """A parcel waiting on its lane whose cut-off comes near changes how it shows."""
        self._now = now
        if self.pending is None:
            return
        parcel = self.parcels.get(self.pending.parcel)
        if parcel is not None and urgency(parcel, now, self._near_ms) != self.pending.shown:
            self.pending.shown = self._light(parcel, step, now)

    # --- screen --------------------------------------------------------------------

    def _prompt(self) -> Message:
        parcel = None if self.pending is None else self.parcels.get(self.pending.parcel)
        if parcel is None:
            return msg("dispatch.prompt_idle")
        names = [self._name(x.id) for x in self._carrier_lanes.get(parcel.carrier, [])]
        return msg("dispatch.prompt_lane", lanes=names)

    def snapshot(self) -> DispatchScreen:
        """What the loader's screen shows (see docs/simulation.md, "Dispatch station")."""
        now = self._now
        pending: PendingParcel | None = None
        if self.pending is not None and self.pending.parcel in self.parcels:
            p = self.parcels[self.pending.parcel]
            pending = {
                "parcel": p.id,
                "sscc": p.sscc,
                "order": p.order,
                "carrier": p.carrier,
                "service": p.service,
                "express": p.express,
                "cutoff": p.cutoff,
                "urgency": urgency(p, now, self._near_ms),
                "lanes": [x.id for x in self._carrier_lanes.get(p.carrier, [])],
                "scanned_at": self.pending.scanned_at,
            }
        waiting = sorted(
            (p for p in self.parcels.values() if p.lane is None),
            key=lambda p: (p.cutoff is None, p.cutoff or 0, not p.express, p.arrival),
        )
        return {
            "phase": "idle" if pending is None else "lane",
            "prompt": render(self._prompt()),
            "prompt_message": self._prompt(),
            "notice": notice_view(self.notice),
            "refusals": refusal_views(list(self.refusals)),
            "pending": pending,
            "lanes": [
                {
                    "id": lane.id,
                    "name": lane.name or lane.id,
                    "carrier": lane.carrier,
                    "barcode": lane.scan_code,
                    "close_barcode": lane.close_code,
                    "loaded": sum(1 for p in self.parcels.values() if p.lane == lane.id),
                    "waiting": sum(
                        1
                        for p in self.parcels.values()
                        if p.lane is None and p.carrier == lane.carrier
                    ),
                    "manifest_open_since": self.opened.get(lane.carrier),
                }
                for lane in self.settings.lanes
            ],
            "waiting": [
                {
                    "parcel": p.id,
                    "sscc": p.sscc,
                    "order": p.order,
                    "carrier": p.carrier,
                    "express": p.express,
                    "cutoff": p.cutoff,
                    "urgency": urgency(p, now, self._near_ms),
                    "has_lane": p.carrier in self._carrier_lanes,
                }
                for p in waiting[:50]
            ],
            "waiting_total": len(waiting),
            "recent": list(self.recent),
            "counts": dict(self.counts),
        }
