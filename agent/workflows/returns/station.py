"""The returns station's state machine (see the package docstring for the whole flow).

Every announced or open return is a store task (``rma:{id}``) holding its lines, what was
received, the units nobody expected and the unit in hand with its reason, grade and bin,
so a restart in the middle of a unit lights that bin again and carries on. ``returns:meta``
remembers the ids of closed returns (a second scan of one is refused).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

from agent.config import NodeConfig
from agent.errors import ConfigError
from agent.i18n import Message, msg, render
from agent.store import StoredTask
from agent.wire.messages import Envelope, Wire
from agent.workflows.base import (
    STALE_PRESS,
    FloorInfo,
    Print,
    Step,
    Verdict,
    press_saw,
    settings_from,
)
from agent.workflows.labels import field_text
from agent.workflows.returns.messages import (
    GRADES,
    REASONS,
    Disposition,
    ExtraUnits,
    Flag,
    Grade,
    LineResult,
    Reason,
    ReturnClosed,
    ReturnOpened,
    ReturnReceived,
    ReturnRefused,
    Rma,
    RmaCommand,
)
from agent.workflows.returns.screen import ReturnsScreen, ReturnView
from agent.workflows.returns.settings import ReturnsSettings
from agent.workflows.scans import gtin14, scan_matches
from agent.workflows.station import UNREADABLE, Notice, notice_view, refusal_views, unknown_code
from devices.events import Button, ButtonPress, Scan
from devices.lights.palette import Colour, Pattern

RETURN = "return"
META = "returns_meta"
META_ID = "returns:meta"
MAX_REFUSALS_SHOWN = 5
MAX_RECENT_SHOWN = 8

BIN_LIGHT: dict[str, tuple[Colour, str]] = {
    "restock": (Colour.BLUISH_GREEN, "rStk"),
    "refurbish": (Colour.SKY_BLUE, "rEFb"),
    "quarantine": (Colour.ORANGE, "QUAr"),
    "return_to_vendor": (Colour.YELLOW, "rtv"),
    "dispose": (Colour.VERMILLION, "diSP"),
}
"""What a bin shows while a unit waits to go in: colour and display text per disposition."""


@dataclass(slots=True)
class RLine:
    """One RMA line and how many of it came."""

    sku: str
    qty: int
    barcodes: list[str]
    reason: str
    hazardous: bool
    description: str
    received: int = 0


@dataclass(slots=True)
class Unit:
    """The unit in the operator's hand."""

    n: int
    code: str
    sku: str | None
    line: int | None
    flag: str | None
    hazardous: bool
    stated_reason: str | None
    scanned_at: int
    reason: str | None = None
    grade: str | None = None
    disposition: str | None = None
    bin: str | None = None


def _name(ret: Return, unit: Unit) -> str:
    """The unit's item name as its RMA line gives it ("" when the RMA does not know it)."""
    return ret.lines[unit.line].description if unit.line is not None else ""


@dataclass(slots=True)
class Return:
    """An announced or open return."""

    rma: str
    order: str | None
    tracking: str | None
    lines: list[RLine]
    expected: bool = True
    opened_at: int | None = None
    units: int = 0
    extra: dict[str, list[Any]] = field(default_factory=dict)  # key -> [sku, code, qty, flag]
    unit: Unit | None = None

    def stored(self) -> StoredTask:
        """The store row of this return."""
        return StoredTask(f"rma:{self.rma}", RETURN, None, asdict(self))

    @classmethod
    def from_stored(cls, row: StoredTask) -> Return:
        """Rebuild from a store row."""
        d: dict[str, Any] = dict(row.data)
        d["lines"] = [RLine(**line) for line in d["lines"]]
        d["unit"] = None if d["unit"] is None else Unit(**d["unit"])
        return cls(**d)


def _safe_id(code: str) -> str:
    """``code`` made a valid wire id (printable ASCII, no spaces, at most 62 characters)."""
    kept = "".join(c for c in code if "!" <= c <= "~")[:62]
    return kept or "unreadable"


class ReturnsWorkflow:
    """Receiving, grading and putting away customer returns.

    Args:
        settings: the node's returns settings (bins and policy).
        label_printer: the ZPL printer's device name, or ``None`` for no unit labels.
    """

    commands: Mapping[str, type[Wire]] = {"rma": RmaCommand}

    @classmethod
    def from_config(cls, config: NodeConfig, floor: FloorInfo) -> ReturnsWorkflow:
        """The workflow of a returns node, over its bins and its label printer (if any).

        Raises:
            ConfigError: a ``[settings]`` value is invalid, or a bin has no light.
        """
        settings: ReturnsSettings = settings_from(ReturnsSettings, config.settings)
        known = set(floor.locations())
        for disposition, slot in settings.bins.items():
            if slot not in known:
                raise ConfigError(
                    "(node file)",
                    f"settings.bins.{disposition}",
                    f"bin {slot!r} is not a slot of the node's lights",
                )
        printer = settings.label_printer
        if printer is not None and floor.kinds.get(printer) != "zpl_printer":
            raise ConfigError(
                "(node file)",
                "settings.label_printer",
                f"no device {printer!r} of kind zpl_printer",
            )
        if printer is None:
            printer = next((n for n, k in floor.kinds.items() if k == "zpl_printer"), None)
        return cls(settings, label_printer=printer if settings.print_labels else None)

    def __init__(self, settings: ReturnsSettings, *, label_printer: str | None = None) -> None:
        self.settings = settings
        self.label_printer = label_printer
        self._bin_of = dict(settings.bins)
        self._bins = {slot: disposition for disposition, slot in settings.bins.items()}
        self._reasons = {settings.reason_prefix + r: r for r in REASONS}
        self._grades = {settings.grade_prefix + g: g for g in GRADES}
        self.returns: dict[str, Return] = {}
        self._refs: dict[str, str] = {}  # tracking / order -> rma
        self.current: str | None = None
        self.closed: OrderedDict[str, None] = OrderedDict()
        self.notice = Notice("info", msg("returns.prompt_idle"), 0)
        self.refusals: list[Notice] = []
        self.recent: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}

    def locations(self) -> list[str]:
        """The bins (slots of the node's lights)."""
        return list(self._bins)

    # --- helpers -------------------------------------------------------------------

    def _count(self, step: Step, name: str, delta: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + delta
        step.unit.count(name, delta)

    def _say(self, level: Literal["info", "ok", "error"], message: Message, now: int) -> None:
        self.notice = Notice(level, message, now)

    def _meta(self) -> StoredTask:
        return StoredTask(META_ID, META, None, {"closed": list(self.closed)})

    def _refuse(
        self,
        step: Step,
        now: int,
        code: str,
        reason: str,
        message: Message,
        *,
        detail: str = "",
        bin_: str | None = None,
    ) -> None:
        notice = Notice("error", message, now, reason)
        self.notice = notice
        self.refusals = [notice, *self.refusals][:MAX_REFUSALS_SHOWN]
        step.emit(
            "return_refused",
            ReturnRefused(
                rma=self.current,
                code=code[:128],
                reason=reason,
                detail=detail[:256],
                bin=bin_,
                at=now,
            ),
            ts=now,
        )
        self._count(step, "return_refusals")

    def _index(self, ret: Return) -> None:
        for ref in (ret.tracking, ret.order):
            if ref:
                self._refs.setdefault(ref, ret.rma)

    def _light_bin(self, unit: Unit, step: Step) -> None:
        assert unit.disposition is not None and unit.bin is not None
        colour, text = BIN_LIGHT[unit.disposition]
        step.light(unit.bin, colour.value, Pattern.STEADY.value, text=text, shows=self._shows(unit))

    def _shows(self, unit: Unit) -> str:
        """What a bin's light stands for: the current return's unit."""
        return f"{self.current}:{unit.n}"

    def _bin_shows(self, slot: str) -> str | None:
        """What the light of bin ``slot`` stands for now (None: dark)."""
        ret = self.returns.get(self.current) if self.current else None
        unit = None if ret is None else ret.unit
        return self._shows(unit) if unit is not None and unit.bin == slot else None

    # --- restore and commands ------------------------------------------------------

    def restore(self, tasks: list[StoredTask], step: Step, now: int) -> None:
        """Reload returns; the open one carries on, its unit's bin lit again."""
        for row in tasks:
            if row.kind == RETURN:
                ret = Return.from_stored(row)
                self.returns[ret.rma] = ret
                self._index(ret)
            elif row.kind == META:
                self.closed.update(dict.fromkeys(row.data["closed"]))
        for slot in self._bins:
            step.off(slot)
        open_ = [r for r in self.returns.values() if r.opened_at is not None]
        if open_:
            ret = max(open_, key=lambda r: r.opened_at or 0)
            self.current = ret.rma
            if ret.unit is not None and ret.unit.bin is not None:
                self._light_bin(ret.unit, step)
            self._say("info", msg("returns.still_open", rma=ret.rma), now)

    def on_command(
        self, name: str, envelope: Envelope, body: Wire, step: Step, now: int
    ) -> Verdict:
        """Announce expected returns."""
        assert isinstance(body, RmaCommand)
        for rma in body.rmas:
            if rma.rma in self.returns or rma.rma in self.closed:
                continue  # sent again, or already received: not changed
            ret = self._new(rma)
            self.returns[ret.rma] = ret
            self._index(ret)
            step.unit.put_task(ret.stored())
            self._count(step, "rmas_announced")
        return Verdict.accepted()

    @staticmethod
    def _new(rma: Rma) -> Return:
        lines = [
            RLine(ln.sku, ln.qty, list(ln.barcodes), ln.reason, ln.hazardous, ln.description)
            for ln in rma.lines
        ]
        return Return(rma.rma, rma.order, rma.tracking, lines)

    # --- input ---------------------------------------------------------------------

    def on_input(self, event: object, step: Step, now: int) -> None:
        """Scans (return, unit, reason, grade, close) and bin buttons."""
        if isinstance(event, Scan):
            self._scan(event, step, now)
        elif (
            isinstance(event, ButtonPress)
            and event.button is Button.CONFIRM
            and event.slot in self._bins
        ):
            if not press_saw(event, self._bin_shows(event.slot)):
                step.ignored.append(STALE_PRESS)  # pressed for another unit, or none
                return
            self._press(event.slot, step, now)

    def _scan(self, scan: Scan, step: Step, now: int) -> None:
        self._count(step, "return_scans")
        text = scan.text
        ret = self.returns.get(self.current) if self.current else None
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
        if text == self.settings.close_barcode:
            self._close(text, ret, step, now)
            return
        if text in self._reasons or text in self._grades:
            self._judge(text, ret, step, now)
            return
        for prefix, reason in (
            (self.settings.reason_prefix, "unknown_reason"),
            (self.settings.grade_prefix, "unknown_grade"),
        ):
            if text.startswith(prefix):
                self._refuse(
                    step,
                    now,
                    text,
                    reason,
                    msg("returns.not_a_code", code=text[:40]),
                )
                return
        target = self.returns.get(text) or self.returns.get(self._refs.get(text, ""))
        if target is not None:
            self._open(text, target, ret, step, now)
            return
        if text in self.closed or f"X-{_safe_id(text)}" in self.closed:
            self._refuse(
                step,
                now,
                text,
                "already_closed",
                msg("returns.already_closed", rma=text[:40]),
            )
            return
        product = scan.gtin is not None or gtin14(text) is not None
        if ret is None:
            if product:
                self._refuse(
                    step,
                    now,
                    text,
                    "no_return",
                    msg("returns.return_first"),
                )
                return
            unexpected = Return(f"X-{_safe_id(text)}", None, None, [], expected=False)
            self.returns[unexpected.rma] = unexpected
            self._open(text, unexpected, None, step, now)
            return
        self._unit(scan, ret, product, step, now)

    def _open(self, code: str, target: Return, ret: Return | None, step: Step, now: int) -> None:
        if ret is not None and ret is not target:
            self._refuse(
                step,
                now,
                code,
                "return_in_progress",
                msg("returns.close_first", rma=ret.rma, close=self.settings.close_barcode),
            )
            return
        if ret is target:
            self._say("info", msg("returns.already_open", rma=target.rma), now)
            return
        target.opened_at = now
        self.current = target.rma
        step.unit.put_task(target.stored())
        step.emit(
            "return_opened",
            ReturnOpened(
                rma=target.rma,
                order=target.order,
                reference=code[:128],
                expected=target.expected,
                at=now,
            ),
            ts=now,
        )
        self._count(step, "returns_opened")
        if not target.expected:
            self._count(step, "returns_unexpected")
            self._say("error", msg("returns.unexpected_opened", code=code[:40]), now)
        else:
            self._say("info", msg("returns.opened", rma=target.rma, order=target.order or ""), now)

    def _unit(self, scan: Scan, ret: Return, product: bool, step: Step, now: int) -> None:
        if ret.unit is not None:
            self._refuse(
                step,
                now,
                scan.text,
                "put_first",
                msg("returns.finish_unit"),
            )
            return
        matches = [i for i, ln in enumerate(ret.lines) if scan_matches(scan, ln.barcodes)]
        if not matches and not product:
            self._refuse(step, now, scan.text, "unknown_code", unknown_code(scan.text))
            return
        line = next((i for i in matches if ret.lines[i].received < ret.lines[i].qty), None)
        flag: str | None = None
        if line is None:
            flag = "surplus" if matches else "not_in_rma"
        known = ret.lines[matches[0]] if matches else self._anywhere(scan)
        ret.units += 1
        ret.unit = Unit(
            n=ret.units,
            code=scan.text[:128],
            sku=None if known is None else known.sku,
            line=line,
            flag=flag,
            hazardous=False if known is None else known.hazardous,
            stated_reason=None if not matches else ret.lines[matches[0]].reason,
            scanned_at=now,
        )
        step.unit.put_task(ret.stored())
        what = ret.unit.sku or scan.text[:40]
        if flag == "surplus":
            self._say("error", msg("returns.unit_surplus", item=what), now)
        elif flag == "not_in_rma":
            self._say("error", msg("returns.unit_not_in_rma", item=what), now)
        else:
            self._say("info", msg("returns.unit_scanned", item=what), now)

    def _anywhere(self, scan: Scan) -> RLine | None:
        """The line of any announced return that knows this code (for an unknown unit's SKU)."""
        for ret in self.returns.values():
            for ln in ret.lines:
                if scan_matches(scan, ln.barcodes):
                    return ln
        return None

    def _judge(self, code: str, ret: Return | None, step: Step, now: int) -> None:
        unit = None if ret is None else ret.unit
        if ret is None or unit is None:
            self._refuse(step, now, code, "not_now", msg("returns.unit_first"))
            return
        if code in self._reasons:
            unit.reason = self._reasons[code]
        else:
            unit.grade = self._grades[code]
        if unit.reason is not None and unit.grade is not None:
            # A reason or grade scanned again before the put corrects it: the bin may move.
            disposition = self.settings.disposition(unit.grade, unit.reason, unit.hazardous)
            if unit.bin is not None and unit.bin != self._bin_of[disposition]:
                step.off(unit.bin)
            unit.disposition = disposition
            unit.bin = self._bin_of[disposition]
            self._light_bin(unit, step)
            where = msg(f"disposition.{disposition}")
            self._say("info", msg("returns.put_in_bin", bin=unit.bin, disposition=where), now)
        else:
            self._say("info", self._prompt(), now)
        step.unit.put_task(ret.stored())

    def _press(self, slot: str, step: Step, now: int) -> None:
        ret = self.returns.get(self.current) if self.current else None
        unit = None if ret is None else ret.unit
        if ret is None or unit is None or unit.bin is None:
            self._refuse(
                step, now, slot, "not_now", msg("returns.bin_not_yet", bin=slot), bin_=slot
            )
            return
        if slot != unit.bin:
            where = msg(f"disposition.{unit.disposition}")
            self._refuse(
                step,
                now,
                slot,
                "wrong_bin",
                msg("returns.wrong_bin", bin=unit.bin, disposition=where, pressed=slot),
                detail=f"the unit's bin is {unit.bin}",
                bin_=slot,
            )
            return
        assert unit.reason is not None and unit.grade is not None
        assert unit.disposition is not None
        if unit.line is not None:
            ret.lines[unit.line].received += 1
        else:
            key = f"{unit.flag}:{unit.sku or unit.code}"
            entry = ret.extra.setdefault(key, [unit.sku, unit.code, 0, unit.flag])
            entry[2] += 1
        job = None
        if self.label_printer is not None:
            job = f"{ret.rma}-u{unit.n}"
            step.actions.append(Print(self.label_printer, job, self._label(ret, unit)))
        step.emit(
            "return_received",
            ReturnReceived(
                rma=ret.rma,
                order=ret.order,
                unit=unit.n,
                sku=unit.sku,
                code=unit.code,
                flag=cast(Flag | None, unit.flag),
                stated_reason=unit.stated_reason,
                reason=cast(Reason, unit.reason),
                grade=cast(Grade, unit.grade),
                disposition=cast(Disposition, unit.disposition),
                bin=slot,
                hazardous=unit.hazardous,
                label_job=job,
                scanned_at=unit.scanned_at,
                received_at=now,
            ),
            ts=now,
        )
        self._count(step, "units_received")
        self._count(step, f"disposition_{unit.disposition}")
        if unit.flag is not None:
            self._count(step, "units_flagged")
        step.off(slot)
        self.recent = [
            {
                "rma": ret.rma,
                "sku": unit.sku,
                "description": _name(ret, unit),
                "code": unit.code,
                "reason": unit.reason,
                "grade": unit.grade,
                "disposition": unit.disposition,
                "bin": slot,
                "flag": unit.flag,
                "at": now,
            },
            *self.recent,
        ][:MAX_RECENT_SHOWN]
        ret.unit = None
        step.unit.put_task(ret.stored())
        close = self.settings.close_barcode
        self._say("ok", msg("returns.unit_in_bin", unit=unit.n, bin=slot, close=close), now)

    @staticmethod
    def _label(ret: Return, unit: Unit) -> bytes:
        """A small unit label (2 x 1 in at 203 dpi): SKU, grade and disposition, RMA."""
        sku = field_text(unit.sku or unit.code, 24)
        where = field_text(unit.disposition or "", 20)
        lines = [
            "^XA^CI28^PW406^LL203",
            f"^FO16,16^A0N,34,34^FH_^FD{sku}^FS",
            f"^FO16,58^A0N,28,28^FH_^FDGrade {unit.grade}  {where}^FS",
            f"^FO16,94^A0N,24,24^FH_^FDRMA {field_text(ret.rma, 28)}^FS",
            f"^FO16,126^BY2^BCN,56,N,N,N^FH_^FD{field_text(ret.rma, 28)}-{unit.n}^FS",
            "^XZ",
        ]
        return "\n".join(lines).encode()

    def _close(self, code: str, ret: Return | None, step: Step, now: int) -> None:
        if ret is None:
            self._refuse(step, now, code, "not_now", msg("returns.no_return_open"))
            return
        if ret.unit is not None:
            self._refuse(step, now, code, "put_first", msg("returns.finish_unit"))
            return
        lines = [
            LineResult(
                sku=ln.sku,
                expected=ln.qty,
                received=ln.received,
                missing=max(0, ln.qty - ln.received),
            )
            for ln in ret.lines
        ]
        extra = [
            ExtraUnits(sku=sku, code=c, qty=qty, flag=flag)
            for sku, c, qty, flag in ret.extra.values()
        ]
        expected = sum(ln.qty for ln in ret.lines)
        received = sum(ln.received for ln in ret.lines) + sum(e.qty for e in extra)
        missing = sum(line.missing for line in lines)
        assert ret.opened_at is not None
        step.emit(
            "return_closed",
            ReturnClosed(
                rma=ret.rma,
                order=ret.order,
                expected_return=ret.expected,
                lines=lines,
                extra=extra,
                units_expected=expected,
                units_received=received,
                units_missing=missing,
                opened_at=ret.opened_at,
                closed_at=now,
            ),
            ts=now,
        )
        self._count(step, "returns_closed")
        del self.returns[ret.rma]
        for ref in (ret.tracking, ret.order):
            if ref and self._refs.get(ref) == ret.rma:
                del self._refs[ref]
        for other in self.returns.values():  # another RMA of the same order opens by it now
            self._index(other)
        step.unit.drop_task(f"rma:{ret.rma}")
        self.current = None
        if self.settings.closed_memory:
            self.closed[ret.rma] = None
            while len(self.closed) > self.settings.closed_memory:
                self.closed.popitem(last=False)
            step.unit.put_task(self._meta())
        if missing:
            short = msg("returns.missing", n=missing)
            closed = msg("returns.closed_missing", rma=ret.rma, n=received, missing=short)
        else:
            closed = msg("returns.closed", rma=ret.rma, n=received)
        self._say("ok", closed, now)

    def on_tick(self, step: Step, now: int) -> None:
        """Nothing periodic at a returns station."""

    # --- screen --------------------------------------------------------------------

    def _prompt(self) -> Message:
        ret = self.returns.get(self.current) if self.current else None
        if ret is None:
            return msg("returns.prompt_idle")
        unit = ret.unit
        if unit is None:
            return msg("returns.prompt_unit", close=self.settings.close_barcode)
        if unit.bin is not None:
            return msg("returns.prompt_put", bin=unit.bin)
        if unit.reason is None and unit.grade is None:
            return msg("returns.prompt_judge_both")
        return msg(
            "returns.prompt_judge_reason" if unit.reason is None else "returns.prompt_judge_grade"
        )

    def snapshot(self) -> ReturnsScreen:
        """What the operator's screen shows (see docs/simulation.md, "Returns station")."""
        ret = self.returns.get(self.current) if self.current else None
        current: ReturnView | None = None
        if ret is not None:
            unit = ret.unit
            current = {
                "rma": ret.rma,
                "order": ret.order,
                "expected": ret.expected,
                "lines": [
                    {
                        "sku": ln.sku,
                        "description": ln.description,
                        "qty": ln.qty,
                        "received": ln.received,
                        "reason": ln.reason,
                        "hazardous": ln.hazardous,
                    }
                    for ln in ret.lines
                ],
                "extra": [
                    {"sku": sku, "code": c, "qty": qty, "flag": flag}
                    for sku, c, qty, flag in ret.extra.values()
                ],
                "unit": None
                if unit is None
                else {
                    "n": unit.n,
                    "sku": unit.sku,
                    "description": _name(ret, unit),
                    "code": unit.code,
                    "flag": unit.flag,
                    "hazardous": unit.hazardous,
                    "stated_reason": unit.stated_reason,
                    "reason": unit.reason,
                    "grade": unit.grade,
                    "disposition": unit.disposition,
                    "bin": unit.bin,
                },
            }
        return {
            "phase": "idle"
            if ret is None
            else "unit"
            if ret.unit is None
            else "put"
            if ret.unit.bin is not None
            else "judge",
            "prompt": render(self._prompt()),
            "prompt_message": self._prompt(),
            "notice": notice_view(self.notice),
            "refusals": refusal_views(list(self.refusals)),
            "return": current,
            "announced": sorted(r.rma for r in self.returns.values() if r.opened_at is None)[:50],
            "bins": {d: slot for d, slot in self._bin_of.items()},
            "codes": {
                "reasons": {r: self.settings.reason_prefix + r for r in REASONS},
                "grades": {g: self.settings.grade_prefix + g for g in GRADES},
                "close": self.settings.close_barcode,
            },
            "recent": list(self.recent),
            "counts": dict(self.counts),
        }
