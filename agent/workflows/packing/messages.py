"""The pack station's commands and events (registered in the wire tables on import)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from agent.wire.messages import (
    MAX_BARCODES_PER_TASK,
    ArrayAsTuple,
    Barcode,
    Id,
    Text,
    Wire,
    register_command,
    register_event,
)
from agent.workflows.labels import build_sscc, sscc_error

MAX_LINES = 100
MAX_ZPL_BYTES = 60_000
MAX_LABEL_BYTES = 400_000
"""A carrier's PDF or PNG label: room under the 512 KiB payload limit for the order's lines."""

Dim = Annotated[int, Field(ge=1, le=5000)]


class PackLine(Wire):
    """One order line to verify at the bench.

    Attributes:
        sku: the SKU.
        qty: units to scan.
        barcodes: codes that count as this SKU (EAN/UPC/GTIN compare as GTIN-14).
        unit_weight_g: one unit's weight, for the check-weigh.
        dims_mm: one unit's length, width and height in millimetres, for the box choice.
        fragile: needs protective packaging.
        description: what the packer reads.
    """

    sku: Id
    qty: int = Field(ge=1, le=9999)
    barcodes: list[Barcode] = Field(min_length=1, max_length=MAX_BARCODES_PER_TASK)
    unit_weight_g: float = Field(ge=0, le=100_000)
    dims_mm: Annotated[tuple[Dim, Dim, Dim], ArrayAsTuple] | None = None
    fragile: bool = False
    description: Text = ""


class ShipTo(Wire):
    """The addressee of the station's own label."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    address: list[Annotated[str, Field(max_length=128)]] = Field(default_factory=list, max_length=4)
    postcode: Annotated[str, Field(max_length=16)] = ""
    city: Annotated[str, Field(max_length=64)] = ""
    country: Annotated[str, Field(max_length=64)] = ""


class OwnLabel(Wire):
    """The fields of the station's own label: ship-to, carrier, service and the SSCC.

    Give ``sscc`` (18 digits, check digit verified) or the data to build one:
    ``serial_reference`` with ``extension`` and ``company_prefix`` (else the node's
    ``gs1_company_prefix`` setting).
    """

    ship_to: ShipTo
    carrier: Annotated[str, Field(min_length=1, max_length=64)]
    service: Annotated[str, Field(max_length=64)] = ""
    sscc: Annotated[str, Field(pattern=r"^[0-9]{18}$")] | None = None
    extension: int = Field(default=0, ge=0, le=9)
    company_prefix: Annotated[str, Field(pattern=r"^[0-9]{7,10}$")] | None = None
    serial_reference: Annotated[str, Field(pattern=r"^[0-9]{1,9}$")] | None = None

    @model_validator(mode="after")
    def _sscc(self) -> OwnLabel:
        if (self.sscc is None) == (self.serial_reference is None):
            raise ValueError("give sscc or serial_reference (to build one), not both")
        if self.sscc is not None and (error := sscc_error(self.sscc)) is not None:
            raise ValueError(error)
        if self.serial_reference is not None and self.company_prefix is not None:
            build_sscc(self.extension, self.company_prefix, self.serial_reference)
        return self


class CarrierLabel(Wire):
    """The carrier's label as the carrier made it: a PDF, a PNG or ZPL.

    The pack station sends it to a printer of the node that prints ``format`` (ZPL to a
    ``zpl_printer``, PDF and PNG by IPP to an ``ipp_printer`` that lists the format), or
    refuses the ``pack`` command with ``no_printer_for_format``.
    """

    format: Literal["pdf", "png", "zpl"]
    data: bytes = Field(min_length=1, max_length=MAX_LABEL_BYTES)

    @model_validator(mode="after")
    def _check(self) -> CarrierLabel:
        if self.format == "pdf" and not self.data.startswith(b"%PDF-"):
            raise ValueError("data is not a PDF (it does not start with %PDF-)")
        if self.format == "png" and not self.data.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError("data is not a PNG (no PNG signature)")
        if self.format == "zpl":
            if len(self.data) > MAX_ZPL_BYTES:
                raise ValueError(f"a ZPL label is at most {MAX_ZPL_BYTES} bytes")
            if not (b"^XA" in self.data and b"^XZ" in self.data):
                raise ValueError("data is not a ZPL label (no ^XA ... ^XZ)")
        return self


class PackCommand(Wire):
    """Queue one order at the pack station.

    Exactly one of ``carrier_label`` (the carrier's label as PDF, PNG or ZPL, printed as
    it is), ``carrier_zpl`` (the same for ZPL, the older field) and ``label`` (fields for
    the station's own label).
    """

    order: Id
    tote: Id | None = None
    lines: list[PackLine] = Field(min_length=1, max_length=MAX_LINES)
    express: bool = False
    gift_note: Annotated[str, Field(max_length=500)] = ""
    bonus_item: Text = ""
    carrier_zpl: bytes | None = Field(default=None, max_length=MAX_ZPL_BYTES)
    carrier_label: CarrierLabel | None = None
    label: OwnLabel | None = None
    packing_slip: bool = False

    @model_validator(mode="after")
    def _check(self) -> PackCommand:
        skus = [line.sku for line in self.lines]
        if len(set(skus)) != len(skus):
            raise ValueError("a sku appears twice in one order: give one line per sku")
        given = [self.carrier_zpl, self.carrier_label, self.label]
        if sum(value is not None for value in given) != 1:
            raise ValueError("give carrier_label, carrier_zpl or label, exactly one")
        if self.carrier_zpl is not None and not (
            b"^XA" in self.carrier_zpl and b"^XZ" in self.carrier_zpl
        ):
            raise ValueError("carrier_zpl is not a ZPL label (no ^XA ... ^XZ)")
        return self

    def carrier_document(self) -> tuple[str, bytes] | None:
        """``(format, data)`` of the carrier's label, or ``None`` for the station's own."""
        if self.carrier_label is not None:
            return self.carrier_label.format, self.carrier_label.data
        if self.carrier_zpl is not None:
            return "zpl", self.carrier_zpl
        return None


class PackCancel(Wire):
    """Remove orders not packed yet; the reply says ``cancelled``, ``done`` or ``unknown``."""

    orders: list[Id] = Field(min_length=1, max_length=100)


class PackRefused(Wire):
    """A scan the station refused; nothing changed.

    ``reason``: ``unreadable`` (the scanner flagged the read; ``detail`` says why),
    ``no_order`` (scan the order first), ``unknown_code``, ``wrong_item`` (a product of no
    line of this order), ``surplus`` (the line is complete), ``order_in_progress`` (another
    order is open), ``not_now`` (a box, badge, reason or confirm code with nothing to
    apply it to), ``unknown_reason`` (not one of the reason codes).
    """

    order: str | None = None
    code: str
    reason: str
    detail: str = ""
    sku: str | None = None
    at: int


class Verified(Wire):
    """Every unit of the order was scanned."""

    order: str
    tote: str | None = None
    lines: int
    units: int
    started_at: int
    verified_at: int


class Weighed(Wire):
    """One check-weigh verdict: ``pass``, ``over``, ``under`` or ``override``.

    ``override``: a supervisor released a failed parcel; ``supervisor`` (the name, never the
    badge code) and ``reason`` say who and why.
    """

    order: str
    attempt: int
    actual_g: float
    expected_g: float
    diff_g: float
    allowed_g: float
    verdict: Literal["pass", "over", "under", "override"]
    box: str
    material: str
    supervisor: str | None = None
    reason: str | None = None
    at: int


class LabelPrinted(Wire):
    """The shipping label is printed.

    ``confirmed_by``: the printer, or the packer (after a failure or a restart left the
    result unknown, the packer scanned the confirm barcode: it did print).
    """

    order: str
    job_id: str
    printer: str
    source: Literal["carrier", "own"]
    sscc: str | None = None
    attempt: int
    confirmed_by: Literal["printer", "packer"] = "printer"
    at: int


class PrintProblem(Wire):
    """A label or slip did not print (``print_failed``) or is late (``print_delayed``)."""

    order: str
    job_id: str
    printer: str
    document: Literal["label", "slip"]
    reason: str
    at: int


class Packed(Wire):
    """The order is packed and labelled: ready to ship.

    Timings (ms since the epoch): ``received_at`` (the command), ``started_at`` (order
    scanned), ``verified_at`` (last unit), ``weighed_at`` (passed or released),
    ``labelled_at`` (label confirmed).
    """

    order: str
    tote: str | None = None
    box: str
    box_suggested: str
    material: str
    units: int
    weight_g: float
    expected_g: float
    check: Literal["pass", "override"]
    express: bool
    received_at: int
    started_at: int
    verified_at: int
    weighed_at: int
    labelled_at: int


class PackCounters(Wire):
    """The station's counters since ``since`` (its start), published periodically."""

    since: int
    at: int
    counts: dict[str, int]
    queued: int


register_command("pack", PackCommand)
register_command("pack_cancel", PackCancel)
register_event("pack_refused", PackRefused)
register_event("verified", Verified)
register_event("weighed", Weighed)
register_event("label_printed", LabelPrinted)
register_event("print_failed", PrintProblem)
register_event("print_delayed", PrintProblem)
register_event("packed", Packed)
register_event("pack_counters", PackCounters)


__all__ = [
    "MAX_LABEL_BYTES",
    "MAX_LINES",
    "MAX_ZPL_BYTES",
    "CarrierLabel",
    "LabelPrinted",
    "OwnLabel",
    "PackCancel",
    "PackCommand",
    "PackCounters",
    "PackLine",
    "PackRefused",
    "Packed",
    "PrintProblem",
    "ShipTo",
    "Verified",
    "Weighed",
]
