"""The pack station's state machine (see the package docstring for the whole flow).

The queued orders and the one at the bench live here, each a store task (``pack_order``),
so a restart in the middle of an order carries on where it was.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Literal

from agent.config import NodeConfig
from agent.i18n import Message, msg
from agent.store import StoredTask
from agent.wire.messages import Envelope, ItemResult, Wire
from agent.workflows.base import FloorInfo, PrintSlip, Slip, Step, Verdict, settings_from
from agent.workflows.cartons import (
    BoxSize,
    Material,
    Suggestion,
    expected_weight_g,
    suggest_box,
)
from agent.workflows.labels import build_sscc
from agent.workflows.packing.devices import station_devices
from agent.workflows.packing.labelling import (
    CarrierDocuments,
    LabelPrinter,
    LabelRouting,
    label_action,
    own_label,
)
from agent.workflows.packing.messages import (
    LabelPrinted,
    PackCancel,
    PackCommand,
    PackCounters,
    PackRefused,
    PrintProblem,
    Verified,
    Weighed,
)
from agent.workflows.packing.model import ORDER, PackOrder, check_weight
from agent.workflows.packing.screen import PackScreen, snapshot
from agent.workflows.packing.settings import PackSettings
from agent.workflows.scans import gtin14, scan_matches
from agent.workflows.station import Notice, PeriodicCounters, unknown_code
from devices.events import DeviceHealthChanged, Scan, Weight
from devices.printers.base import PrintResult

MAX_REFUSALS_SHOWN = 5


def _grams(value: float) -> Message:
    return msg("pack.grams", g=round(value))


class PackingWorkflow:
    """The pack station's state machine (see the package docstring).

    Args:
        settings: the node's pack settings.
        label_printer: the label printer's device name (the only one, unless ``labels``).
        scale: the scale's device name (weights from other devices are ignored).
        slip_printer: the ESC/POS printer's device name, or ``None``.
        labels: the node's label printers and which prints what (default: one ZPL
            printer called ``label_printer``).
    """

    commands: Mapping[str, type[Wire]] = {"pack": PackCommand, "pack_cancel": PackCancel}

    @classmethod
    def from_config(cls, config: NodeConfig, floor: FloorInfo) -> PackingWorkflow:
        """The workflow of a pack node, over its printers and scale.

        Raises:
            ConfigError: a ``[settings]`` value is invalid, or a device is missing.
        """
        settings: PackSettings = settings_from(PackSettings, config.settings)

        label, scale, slip = station_devices(settings, floor)
        labels = LabelRouting.from_config(config, label)
        return cls(settings, label_printer=label, scale=scale, slip_printer=slip, labels=labels)

    def __init__(
        self,
        settings: PackSettings | None = None,
        *,
        label_printer: str = "label",
        scale: str = "scale",
        slip_printer: str | None = None,
        labels: LabelRouting | None = None,
    ) -> None:
        self.settings = settings or PackSettings()
        self.labels = labels or LabelRouting.zpl_only(label_printer)
        self.label_printer = label_printer
        self._docs = CarrierDocuments()
        self.slip_printer = slip_printer
        self.scale = scale
        self.boxes = {b.name: b for b in self.settings.boxes}
        self.materials = self.settings.material_table()
        self._box_codes = {b.barcode: b for b in self.settings.boxes}
        self._reasons = {self.settings.reason_prefix + r: r for r in self.settings.override_reasons}
        self.orders: dict[str, PackOrder] = {}
        self.current: str | None = None
        self.weight: Weight | None = None
        self.weight_at: int | None = None
        self._evaluated: Weight | None = None
        self.scale_clear = True
        self.health: dict[str, tuple[str, str]] = {}
        self.notice = Notice("info", msg("pack.prompt_idle"), 0)
        self.refusals: list[Notice] = []
        self._done: OrderedDict[str, None] = OrderedDict()
        self._arrivals = 0
        self.counters = PeriodicCounters(self.settings.counters_every_s)
        self.counts = self.counters.counts

    def locations(self) -> list[str]:
        """A pack station lights no slots."""
        return []

    # --- helpers -------------------------------------------------------------------

    def _count(self, step: Step, name: str, delta: int = 1) -> None:
        self.counters.count(step, name, delta)

    def _say(self, level: Literal["info", "ok", "error"], message: Message, now: int) -> None:
        self.notice = Notice(level, message, now)

    def refusals_now(self) -> list[Notice]:
        """The refusals made while the order open now was (or, with none open, none was)."""
        return [n for n in self.refusals if n.order == self.current]

    def _save(self, order: PackOrder, step: Step) -> None:
        step.unit.put_task(order.stored())

    def suggestion(self, order: PackOrder) -> Suggestion:
        """The box and packing material suggested for ``order``."""
        s = self.settings
        return suggest_box(
            order.items(),
            s.boxes,
            fragile_material=s.fragile_material,
            standard_material=s.standard_material,
            fragile_padding_mm=s.fragile_padding_mm,
            standard_padding_mm=s.standard_padding_mm,
            fill_ratio=s.fill_ratio,
            materials=self.materials,
        )

    def _material(self, order: PackOrder) -> Material:
        return self.suggestion(order).material

    def _expected(self, order: PackOrder, box: BoxSize) -> float:
        material = self._material(order)
        density = self.settings.packaging_g_per_litre.get(material.name)
        return expected_weight_g(box, order.items(), material, density)

    def _refuse(
        self,
        step: Step,
        now: int,
        scan: Scan,
        reason: str,
        message: Message,
        *,
        detail: str = "",
        sku: str | None = None,
    ) -> None:
        notice = Notice("error", message, now, reason, self.current)
        self.notice = notice
        self.refusals = [notice, *self.refusals_now()][:MAX_REFUSALS_SHOWN]
        step.emit(
            "pack_refused",
            PackRefused(
                order=self.current,
                code=scan.text[:128],
                reason=reason,
                detail=detail[:256],
                sku=sku,
                at=now,
            ),
            ts=now,
        )
        self._count(step, "pack_refusals")

    # --- restore and commands ------------------------------------------------------

    def restore(self, tasks: list[StoredTask], step: Step, now: int) -> None:
        """Reload the queue; a label whose result the restart lost waits for the packer."""
        self.counters.since = now
        self._docs.restore(tasks)
        started: list[PackOrder] = []
        for row in tasks:
            if row.kind != ORDER:
                continue
            order = PackOrder.from_stored(row)
            self.orders[order.order] = order
            self._arrivals = max(self._arrivals, order.arrival + 1)
            if order.phase == "override_reason":
                order.phase = "weigh_failed"  # the supervisor scans their badge again
                order.supervisor = None
            if order.phase == "label":
                order.phase = "label_unknown"
                self._save(order, step)
            if order.slip_state in ("submitted", "delayed"):
                order.slip_state = "unknown"
                self._save(order, step)
            if order.phase != "queued":
                started.append(order)
        if started:
            current = max(started, key=lambda o: o.started_at or 0)
            self.current = current.order
            if current.phase == "label_unknown":
                restarted = msg("pack.restart_label", job=current.label_job or "")
                self._say("error", restarted, now)
            else:
                self._say("info", msg("pack.carry_on", order=current.order), now)

    def on_command(
        self, name: str, envelope: Envelope, body: Wire, step: Step, now: int
    ) -> Verdict:
        """Queue an order (``pack``) or remove orders (``pack_cancel``)."""
        if isinstance(body, PackCancel):
            return self._cancel(body.orders, step, now)
        assert isinstance(body, PackCommand)
        if body.order in self._done:
            return Verdict.rejected("already_packed", f"order {body.order} is packed")
        carrier = body.carrier_document()
        if carrier is not None and (why := self.labels.refusal(carrier[0])) is not None:
            return Verdict.rejected("no_printer_for_format", why)
        if body.label is not None and body.label.sscc is None:
            prefix = body.label.company_prefix or self.settings.gs1_company_prefix
            if prefix is None:
                return Verdict.rejected(
                    "invalid_body",
                    "label: no sscc, and no company_prefix here or in the node's settings",
                )
            try:
                build_sscc(body.label.extension, prefix, body.label.serial_reference or "")
            except ValueError as exc:
                return Verdict.rejected("invalid_body", f"label: {exc}")
        existing = self.orders.get(body.order)
        order = self._new_order(body, now)
        if existing is not None:
            same = existing.stored().data | {"arrival": 0, "received_at": 0, "lines": 0}
            fresh = order.stored().data | {"arrival": 0, "received_at": 0, "lines": 0}
            same_lines = [(ln.sku, ln.qty, ln.barcodes) for ln in existing.lines]
            fresh_lines = [(ln.sku, ln.qty, ln.barcodes) for ln in order.lines]
            if existing.phase == "queued":
                if same == fresh and same_lines == fresh_lines:
                    return Verdict.accepted()
                order.arrival = existing.arrival  # an update keeps its place in the queue
            elif (
                same_lines == fresh_lines
                and existing.carrier_zpl == order.carrier_zpl
                and self._docs.same(body)
            ):
                return Verdict.accepted()  # sent again while being packed
            else:
                return Verdict.rejected("in_progress", f"order {body.order} is being packed")
        self.orders[order.order] = order
        self._save(order, step)
        self._docs.keep(step, body)
        self._count(step, "orders_received")
        return Verdict.accepted()

    def _new_order(self, body: PackCommand, now: int) -> PackOrder:
        self._arrivals += 1
        return PackOrder.from_command(body, self._arrivals - 1, now)

    def _cancel(self, order_ids: list[str], step: Step, now: int) -> Verdict:
        items: list[ItemResult] = []
        for order_id in order_ids:
            order = self.orders.pop(order_id, None)
            if order is None:
                status: Literal["done", "unknown"] = "done" if order_id in self._done else "unknown"
                items.append(ItemResult(id=order_id, status=status))
                continue
            step.unit.drop_task(f"pack:{order_id}")
            self._docs.forget(step, order_id)
            if self.current == order_id:
                self.current = None
                self._evaluated = None
                self._say("error", msg("pack.cancelled", order=order_id), now)
            items.append(ItemResult(id=order_id, status="cancelled"))
            self._count(step, "orders_cancelled")
        return Verdict.accepted(items)

    # --- input ---------------------------------------------------------------------

    def on_input(self, event: object, step: Step, now: int) -> None:
        """Scans, weights, print results and device health changes."""
        if isinstance(event, Scan):
            self._scan(event, step, now)
        elif isinstance(event, Weight):
            self._weight(event, step, now)
        elif isinstance(event, DeviceHealthChanged):
            self._health(event, step, now)
        elif isinstance(event, PrintResult):
            self._print_result(event.job_id, event.ok, event.reason, step, now)

    def _scan(self, scan: Scan, step: Step, now: int) -> None:
        self._count(step, "pack_scans")
        text = scan.text
        order = self.orders.get(self.current) if self.current else None
        if scan.error is not None:
            self._refuse(
                step,
                now,
                scan,
                "unreadable",
                msg("pack.unreadable"),
                detail=scan.error,
            )
            return
        if text in self.settings.supervisors:
            self._supervisor(scan, self.settings.supervisors[text], order, step, now)
            return
        if text in self._reasons:
            self._reason(scan, self._reasons[text], order, step, now)
            return
        if (
            text.startswith(self.settings.reason_prefix)
            and order is not None
            and order.phase == "override_reason"
        ):
            self._refuse(
                step,
                now,
                scan,
                "unknown_reason",
                msg("pack.not_a_reason", code=text[:40]),
            )
            return
        if text == self.settings.confirm_barcode:
            self._confirm(scan, order, step, now)
            return
        started = self._order_for(text)
        if started is not None:
            self._order_scan(scan, started, order, step, now)
            return
        box = self._box_codes.get(text)
        if box is not None:
            self._box(scan, box, order, step, now)
            return
        self._item(scan, order, step, now)

    def _order_for(self, text: str) -> PackOrder | None:
        order = self.orders.get(text)
        if order is not None:
            return order
        return next((o for o in self.orders.values() if o.tote == text), None)

    def _order_scan(
        self, scan: Scan, target: PackOrder, order: PackOrder | None, step: Step, now: int
    ) -> None:
        if order is not None and order is not target:
            self._refuse(
                step,
                now,
                scan,
                "order_in_progress",
                msg("pack.finish_first", order=order.order),
            )
            return
        if order is target:
            if target.phase in ("label_failed", "label_unknown"):
                self._print_label(target, step, now, reprint=True)
                return
            self._say(
                "info",
                msg("pack.already_open", order=target.order),
                now,
            )
            return
        target.phase = "verify"
        target.started_at = now
        self.current = target.order
        self._evaluated = None
        self._count(step, "orders_started")
        self._save(target, step)
        self._say("info", msg("pack.opened", order=target.order), now)

    def _item(self, scan: Scan, order: PackOrder | None, step: Step, now: int) -> None:
        product = scan.gtin is not None or gtin14(scan.text) is not None
        if order is None:
            if product or any(
                scan_matches(scan, ln.barcodes) for o in self.orders.values() for ln in o.lines
            ):
                self._refuse(step, now, scan, "no_order", msg("pack.order_first"))
            else:
                self._refuse(step, now, scan, "unknown_code", unknown_code(scan.text))
            return
        matches = [ln for ln in order.lines if scan_matches(scan, ln.barcodes)]
        if not matches:
            if product:
                self._refuse(
                    step,
                    now,
                    scan,
                    "wrong_item",
                    msg("pack.not_in_order", code=scan.text[:40], order=order.order),
                )
            else:
                self._refuse(step, now, scan, "unknown_code", unknown_code(scan.text))
            return
        line = next((ln for ln in matches if ln.scanned < ln.qty), None)
        if line is None or order.phase not in ("verify",):
            done = matches[0]
            self._refuse(
                step,
                now,
                scan,
                "surplus",
                msg("pack.surplus", sku=done.sku, n=done.qty),
                sku=done.sku,
            )
            return
        line.scanned += 1
        self._count(step, "units_verified")
        if order.scanned < order.units:
            self._save(order, step)
            progress = msg("pack.line_progress", sku=line.sku, scanned=line.scanned, qty=line.qty)
            self._say("ok", progress, now)
            return
        order.verified_at = now
        assert order.started_at is not None
        step.emit(
            "verified",
            Verified(
                order=order.order,
                tote=order.tote,
                lines=len(order.lines),
                units=order.units,
                started_at=order.started_at,
                verified_at=now,
            ),
            ts=now,
        )
        self._count(step, "orders_verified")
        self._print_slip(order, step, now)
        if order.box is None:
            order.phase = "carton"
            self._save(order, step)
            box = self.suggestion(order).box
            confirm = self.settings.confirm_barcode
            pack = msg("pack.all_scanned", box=box.name, barcode=box.barcode, confirm=confirm)
            self._say("ok", pack, now)
            return
        self._to_weigh(order, step, now)

    def _box(self, scan: Scan, box: BoxSize, order: PackOrder | None, step: Step, now: int) -> None:
        if order is None or order.phase not in ("verify", "carton", "weigh", "weigh_failed"):
            self._refuse(
                step,
                now,
                scan,
                "not_now",
                msg("pack.box_not_now")
                if order is None
                else msg("pack.box_too_late", order=order.order),
            )
            return
        suggested = self.suggestion(order).box
        order.box = box.name
        if box.name != suggested.name:
            self._count(step, "box_overrides")
        if order.phase == "verify":
            self._save(order, step)
            self._say("ok", msg("pack.box_then_items", box=box.name), now)
            return
        if order.phase == "weigh_failed":
            self._evaluated = None  # the same reading is judged again against the new box
        self._to_weigh(order, step, now)

    def _confirm(self, scan: Scan, order: PackOrder | None, step: Step, now: int) -> None:
        if order is not None and order.phase in ("verify", "carton"):
            box = self.suggestion(order).box
            self._box(scan, box, order, step, now)
            return
        if order is not None and order.phase in ("label_failed", "label_unknown"):
            self._label_done(order, step, now, confirmed_by="packer")
            return
        self._refuse(step, now, scan, "not_now", msg("pack.nothing_to_confirm"))

    def _supervisor(
        self, scan: Scan, name: str, order: PackOrder | None, step: Step, now: int
    ) -> None:
        if order is None or order.phase not in ("weigh_failed", "override_reason"):
            self._refuse(
                step,
                now,
                scan,
                "not_now",
                msg("pack.no_release_needed"),
                detail=f"supervisor {name}",
            )
            return
        order.phase = "override_reason"
        order.supervisor = name
        self._save(order, step)
        self._say("info", msg("pack.supervisor_reason", name=name, order=order.order), now)

    def _reason(
        self, scan: Scan, reason: str, order: PackOrder | None, step: Step, now: int
    ) -> None:
        if order is None or order.phase != "override_reason" or order.supervisor is None:
            self._refuse(
                step,
                now,
                scan,
                "not_now",
                msg("pack.badge_first"),
            )
            return
        assert order.box is not None and order.actual_g is not None
        assert order.expected_g is not None
        _, allowed = check_weight(
            order.actual_g, order.expected_g, self.settings.tolerance_pct, self.settings.tolerance_g
        )
        step.emit(
            "weighed",
            Weighed(
                order=order.order,
                attempt=order.attempts,
                actual_g=order.actual_g,
                expected_g=order.expected_g,
                diff_g=round(order.actual_g - order.expected_g, 1),
                allowed_g=allowed,
                verdict="override",
                box=order.box,
                material=self._material(order).name,
                supervisor=order.supervisor,
                reason=reason,
                at=now,
            ),
            ts=now,
        )
        self._count(step, "checkweigh_overrides")
        order.verdict = "override"
        order.extra["override_reason"] = reason
        order.weighed_at = now
        self._print_label(order, step, now)

    # --- weighing ------------------------------------------------------------------

    def _weight(self, weight: Weight, step: Step, now: int) -> None:
        if weight.device != self.scale:
            return
        self.weight = weight
        self.weight_at = now
        if weight.grams < self.settings.min_weight_g:
            self.scale_clear = True
        order = self.orders.get(self.current) if self.current else None
        if order is not None and order.phase in ("weigh", "weigh_failed"):
            self._try_weigh(order, step, now)

    def _to_weigh(self, order: PackOrder, step: Step, now: int) -> None:
        order.phase = "weigh" if order.phase != "weigh_failed" else "weigh_failed"
        self._save(order, step)
        if not self._try_weigh(order, step, now) and order.phase == "weigh":
            assert order.box is not None
            self._say("info", msg("pack.close_and_weigh", box=order.box), now)

    def _try_weigh(self, order: PackOrder, step: Step, now: int) -> bool:
        weight = self.weight
        if weight is None or not weight.stable or weight is self._evaluated:
            return False
        if weight.grams < self.settings.min_weight_g:
            return False
        if not self.scale_clear:
            self._say("error", msg("pack.scale_not_clear"), now)
            return False
        assert order.box is not None
        self._evaluated = weight
        box = self.boxes[order.box]
        expected = self._expected(order, box)
        verdict, allowed = check_weight(
            weight.grams, expected, self.settings.tolerance_pct, self.settings.tolerance_g
        )
        order.attempts += 1
        order.actual_g = weight.grams
        order.expected_g = expected
        order.verdict = verdict
        diff = round(weight.grams - expected, 1)
        step.emit(
            "weighed",
            Weighed(
                order=order.order,
                attempt=order.attempts,
                actual_g=weight.grams,
                expected_g=expected,
                diff_g=diff,
                allowed_g=allowed,
                verdict=verdict,
                box=box.name,
                material=self._material(order).name,
                at=now,
            ),
            ts=now,
        )
        if verdict == "pass":
            self._count(step, "checkweigh_pass")
            order.weighed_at = now
            self._print_label(order, step, now)
            return True
        self._count(step, "checkweigh_fail")
        order.phase = "weigh_failed"
        self._save(order, step)
        # The screen's scale box shows the figures (expected, allowed, weighed).
        failed = msg(
            "pack.too_heavy" if verdict == "over" else "pack.too_light", diff=_grams(abs(diff))
        )
        self._say("error", failed, now)
        return True

    # --- printing ------------------------------------------------------------------

    def _print_label(
        self, order: PackOrder, step: Step, now: int, *, reprint: bool = False
    ) -> None:
        printer = self._printer_for(order)
        own, sscc = None, None
        if order.label is not None:
            own = own_label(order.order, order.label, order.express, self.settings)
            sscc = own.sscc
        carrier = self._docs.get(order.order)
        if order.carrier_zpl is not None:
            carrier = ("zpl", order.carrier_zpl)
        order.label_attempt += 1
        suffix = "" if order.label_attempt == 1 else f"-{order.label_attempt}"
        order.label_job = f"{order.order}-label{suffix}"
        order.label_submitted_at = now
        order.label_reason = None
        order.label_late = False
        order.phase = "label"
        order.extra["sscc"] = sscc
        order.extra["label_printer"] = printer.name
        self._save(order, step)
        step.actions.append(
            label_action(
                printer, order.label_job, carrier=carrier, own=own, zpl_dpi=self.settings.dpi
            )
        )
        if reprint:
            self._count(step, "label_reprints")
        self._say("info", msg("pack.printing", order=order.order), now)
        down = self._printer_down(printer.name)
        if down is not None:
            # The printer will hold the job: no need to wait for label_timeout_s to say so.
            self._late(order, step, now, down)

    def _print_slip(self, order: PackOrder, step: Step, now: int) -> None:
        if not order.slip:
            return
        if self.slip_printer is None:
            order.slip_state = "no_printer"
            return
        order.slip_job = f"{order.order}-slip"
        order.slip_state = "submitted"
        lines = tuple((ln.qty, ln.sku, ln.description) for ln in order.lines)
        footer = order.gift_note[:120]
        slip = Slip(self.settings.slip_title, order.order, lines, order.order, footer=footer)
        step.actions.append(PrintSlip(self.slip_printer, order.slip_job, slip))
        down = self._printer_down(self.slip_printer)
        if down is not None:
            self._slip_late(order, step, now, down)

    def _printer_for(self, order: PackOrder) -> LabelPrinter:
        """The printer of the order's label: by the carrier label's format, else the own."""
        fmt = "zpl" if order.carrier_zpl is not None else order.carrier_format
        printer = None if fmt is None else self.labels.for_format(fmt)
        # None only if the node file changed since the order came: that printer refuses it.
        return printer or self.labels.own()

    def _label_printer_of(self, order: PackOrder) -> str:
        """The printer the order's label went to."""
        return str(order.extra.get("label_printer", self.label_printer))

    def _printer_down(self, device: str) -> str | None:
        """Why ``device`` cannot print now (its last health), or ``None`` when it may."""
        status, detail = self.health.get(device, ("starting", ""))
        if status in ("fault", "unavailable"):
            return f"printer {status}: {detail}"
        return None

    def _find_job(self, job_id: str) -> tuple[PackOrder, str] | None:
        for order in self.orders.values():
            if order.label_job == job_id:
                return order, "label"
            if order.slip_job == job_id:
                return order, "slip"
        return None

    def _print_result(
        self, job_id: str, ok: bool, reason: str | None, step: Step, now: int
    ) -> None:
        found = self._find_job(job_id)
        if found is None:
            return
        order, document = found
        if document == "slip":
            order.slip_state = "printed" if ok else "failed"
            self._save(order, step)
            if not ok:
                self._problem(step, "print_failed", order, job_id, "slip", reason or "", now)
                self._say("error", msg("pack.slip_did_not_print"), now)
            return
        if order.phase != "label":
            return  # a late result for a job the packer already decided about
        if ok:
            self._label_done(order, step, now, confirmed_by="printer")
            return
        order.phase = "label_failed"
        order.label_reason = reason
        self._save(order, step)
        self._count(step, "label_failures")
        self._problem(step, "print_failed", order, job_id, "label", reason or "", now)
        self._say("error", msg("pack.label_failed"), now)

    def _problem(
        self,
        step: Step,
        name: str,
        order: PackOrder,
        job_id: str,
        document: Literal["label", "slip"],
        reason: str,
        now: int,
    ) -> None:
        printer = (
            self._label_printer_of(order) if document == "label" else (self.slip_printer or "")
        )
        step.emit(
            name,
            PrintProblem(
                order=order.order,
                job_id=job_id,
                printer=printer,
                document=document,
                reason=reason[:256],
                at=now,
            ),
            ts=now,
        )

    def _label_done(
        self, order: PackOrder, step: Step, now: int, *, confirmed_by: Literal["printer", "packer"]
    ) -> None:
        assert order.label_job is not None
        step.emit(
            "label_printed",
            LabelPrinted(
                order=order.order,
                job_id=order.label_job,
                printer=self._label_printer_of(order),
                source="own" if order.label is not None else "carrier",
                sscc=order.extra.get("sscc"),
                attempt=order.label_attempt,
                confirmed_by=confirmed_by,
                at=now,
            ),
            ts=now,
        )
        self._count(step, "labels_printed")
        box_suggested = self.suggestion(order).box.name
        material = self._material(order).name
        step.emit("packed", order.packed(box_suggested, material, now), ts=now)
        self._count(step, "orders_packed")
        self._count(step, "units_packed", order.units)
        del self.orders[order.order]
        step.unit.drop_task(f"pack:{order.order}")
        self._docs.forget(step, order.order)
        if self.settings.done_memory:
            self._done[order.order] = None
            while len(self._done) > self.settings.done_memory:
                self._done.popitem(last=False)
        self.current = None
        self.scale_clear = False
        self._evaluated = None
        self._say("ok", msg("pack.packed", order=order.order), now)

    def _health(self, event: DeviceHealthChanged, step: Step, now: int) -> None:
        self.health[event.device] = (event.status, event.detail)
        down = self._printer_down(event.device)
        order = self.orders.get(self.current) if self.current else None
        if down is None or order is None:
            return
        if (
            event.device == self._label_printer_of(order)
            and order.phase == "label"
            and not order.label_late
        ):
            self._late(order, step, now, down)
        if event.device == self.slip_printer and order.slip_state == "submitted":
            self._slip_late(order, step, now, down)

    def _slip_late(self, order: PackOrder, step: Step, now: int, reason: str) -> None:
        # The screen's slip line says so; the notice stays on the parcel, which may go on.
        assert order.slip_job is not None
        order.slip_state = "delayed"
        self._save(order, step)
        self._problem(step, "print_delayed", order, order.slip_job, "slip", reason, now)

    def _late(self, order: PackOrder, step: Step, now: int, reason: str) -> None:
        assert order.label_job is not None
        order.label_late = True
        self._save(order, step)
        self._count(step, "labels_late")
        self._problem(step, "print_delayed", order, order.label_job, "label", reason, now)
        self._say("error", msg("pack.label_late"), now)

    # --- clock ---------------------------------------------------------------------

    def on_tick(self, step: Step, now: int) -> None:
        """Report a late label; publish the counters when due."""
        self.counters.started(now)
        order = self.orders.get(self.current) if self.current else None
        if (
            order is not None
            and order.phase == "label"
            and not order.label_late
            and order.label_submitted_at is not None
            and now - order.label_submitted_at >= self.settings.label_timeout_s * 1000
        ):
            waited = (now - order.label_submitted_at) / 1000
            self._late(order, step, now, f"no result from the printer after {waited:.0f} s")
        if self.counters.due(now):
            assert self.counters.since is not None
            step.emit(
                "pack_counters",
                PackCounters(
                    since=self.counters.since,
                    at=now,
                    counts=dict(self.counts),
                    queued=sum(1 for o in self.orders.values() if o.phase == "queued"),
                ),
                ts=now,
            )

    # --- screen --------------------------------------------------------------------

    def snapshot(self) -> PackScreen:
        """What the packer's screen shows (``screen.snapshot``)."""
        return snapshot(self)
