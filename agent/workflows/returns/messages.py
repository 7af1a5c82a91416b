"""The returns station's commands and events (registered in the wire tables on import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from agent.wire.messages import (
    MAX_BARCODES_PER_TASK,
    Barcode,
    Id,
    Text,
    Wire,
    register_command,
    register_event,
)

MAX_RMAS_PER_COMMAND = 200
MAX_LINES = 100

Reason = Literal[
    "defective",
    "wrong_item_sent",
    "damaged_in_transit",
    "size_or_fit",
    "not_as_described",
    "no_longer_needed",
    "other",
]
REASONS: tuple[str, ...] = Reason.__args__  # type: ignore[attr-defined]
Grade = Literal["A", "B", "C", "D"]
GRADES: tuple[str, ...] = Grade.__args__  # type: ignore[attr-defined]
Disposition = Literal["restock", "refurbish", "quarantine", "return_to_vendor", "dispose"]
DISPOSITIONS: tuple[str, ...] = Disposition.__args__  # type: ignore[attr-defined]
Flag = Literal["not_in_rma", "surplus"]


class ReturnLine(Wire):
    """One line of an RMA: what the customer said they send back, and why.

    Attributes:
        sku: the SKU.
        qty: how many units are expected.
        barcodes: codes that count as this SKU (EAN/UPC/GTIN compare as GTIN-14).
        reason: the reason the customer stated (the operator records the one found).
        hazardous: hazardous goods (lithium batteries, aerosols): never restocked here.
        description: what the operator reads.
    """

    sku: Id
    qty: int = Field(ge=1, le=9999)
    barcodes: list[Barcode] = Field(min_length=1, max_length=MAX_BARCODES_PER_TASK)
    reason: Reason = "other"
    hazardous: bool = False
    description: Text = ""


class Rma(Wire):
    """An expected return (return merchandise authorisation)."""

    rma: Id
    order: Id
    tracking: Id | None = None
    lines: list[ReturnLine] = Field(min_length=1, max_length=MAX_LINES)

    @model_validator(mode="after")
    def _one_line_per_sku(self) -> Rma:
        skus = [line.sku for line in self.lines]
        if len(set(skus)) != len(skus):
            raise ValueError("a sku appears twice in one RMA: give one line per sku")
        return self


class RmaCommand(Wire):
    """Announce expected returns; an RMA already held (or already closed) is not changed."""

    rmas: list[Rma] = Field(min_length=1, max_length=MAX_RMAS_PER_COMMAND)

    @model_validator(mode="after")
    def _unique(self) -> RmaCommand:
        ids = [r.rma for r in self.rmas]
        if len(set(ids)) != len(ids):
            raise ValueError("an RMA appears twice in one command")
        return self


class ReturnOpened(Wire):
    """The operator opened a return; ``expected`` is false for an unexpected return."""

    rma: str
    order: str | None = None
    reference: str
    expected: bool
    at: int


class ReturnReceived(Wire):
    """One unit physically received, graded and put away: the OMS may refund it now.

    ``flag``: ``not_in_rma`` (no line of the RMA has this code; ``sku`` is then ``None``
    unless another announced return knows the code) or ``surplus`` (more than the line's
    quantity). ``stated_reason`` is the customer's, ``reason`` the operator's.
    """

    rma: str
    order: str | None = None
    unit: int
    sku: str | None = None
    code: str
    flag: Flag | None = None
    stated_reason: str | None = None
    reason: Reason
    grade: Grade
    disposition: Disposition
    bin: str
    hazardous: bool
    label_job: str | None = None
    scanned_at: int
    received_at: int


class LineResult(Wire):
    """Expected, received and missing units of one RMA line."""

    sku: str
    expected: int
    received: int
    missing: int


class ExtraUnits(Wire):
    """Units nobody expected: by SKU when known, else by the code scanned."""

    sku: str | None = None
    code: str
    qty: int
    flag: Flag


class ReturnClosed(Wire):
    """A return is closed: what was expected, what came and what is missing."""

    rma: str
    order: str | None = None
    expected_return: bool
    lines: list[LineResult]
    extra: list[ExtraUnits]
    units_expected: int
    units_received: int
    units_missing: int
    opened_at: int
    closed_at: int


class ReturnRefused(Wire):
    """A scan or press the station refused; nothing changed.

    ``reason``: ``unreadable`` (the scanner flagged the read), ``no_return`` (a product
    scanned with no return open), ``return_in_progress`` (another RMA scanned: close the
    open one first), ``already_closed`` (that RMA was received and closed), ``not_now`` (a
    reason, grade, close or bin with nothing to apply it to), ``put_first`` (a unit or close
    scanned while the unit in hand waits for its bin; a reason or grade scanned then
    corrects it instead), ``unknown_reason`` / ``unknown_grade`` (the prefix
    but not one of the codes), ``unknown_code`` (not a product, RMA or station code while
    a return is open), ``wrong_bin`` (``bin``: the one pressed; ``detail``: the right one).
    """

    rma: str | None = None
    code: str
    reason: str
    detail: str = ""
    bin: str | None = None
    at: int


register_command("rma", RmaCommand)
register_event("return_opened", ReturnOpened)
register_event("return_received", ReturnReceived)
register_event("return_closed", ReturnClosed)
register_event("return_refused", ReturnRefused)
