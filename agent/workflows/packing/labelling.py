"""Which printer prints an order's label, in which format, and the carrier documents kept.

A pack station may have a ZPL printer (a Zebra on TCP 9100), an IPP printer (any printer
the OS drives, PDF and PNG), or both. The OMS sends one of:

* ``carrier_zpl`` or ``carrier_label`` with ``format = "zpl"``: printed byte for byte on a
  ``zpl_printer``;
* ``carrier_label`` with ``format = "pdf"`` or ``"png"``: sent by IPP to an ``ipp_printer``
  whose ``formats`` include it;
* ``label`` (fields): the station's own 4x6 label on the ``label_printer`` setting's
  printer (else the first label printer): ZPL on a Zebra, rendered to the IPP printer's
  ``own_label`` format (PDF or PNG) on an IPP printer.

A carrier label no printer of the node can print is refused with the command
(``no_printer_for_format``, the detail says which formats the station prints), so the OMS
learns it before the order reaches the bench. The preferred printer wins when it can print
the format; otherwise the first printer of the node file that can.

Carrier documents of ``carrier_label`` (PDF and PNG run to hundreds of kilobytes) are kept
as store tasks of their own (``pack_label_doc``), written once with the command, so saving
the order after every scan does not rewrite them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from agent.config import NodeConfig
from agent.store import StoredTask
from agent.workflows.base import Print, PrintLabel, Step
from agent.workflows.labels import LabelData, build_sscc, shipping_label
from agent.workflows.packing.messages import OwnLabel, PackCommand
from agent.workflows.packing.settings import PackSettings

Format = Literal["zpl", "pdf", "png"]
DOC = "pack_label_doc"
LABEL_PRINTER_KINDS = frozenset({"zpl_printer", "ipp_printer"})


@dataclass(frozen=True, slots=True)
class LabelPrinter:
    """A printer that can print shipping labels.

    Attributes:
        name: the device name.
        kind: ``zpl_printer`` or ``ipp_printer``.
        formats: what it prints: ``zpl``, or some of ``pdf`` and ``png``.
        own: the format of the station's own label on it.
        dpi: its resolution, for the station's own label rendered as PDF or PNG.
    """

    name: str
    kind: str
    formats: frozenset[str]
    own: Format
    dpi: Literal[203, 300] = 203


class LabelRouting:
    """The node's label printers, and which one prints what.

    Args:
        printers: the label printers in node file order.
        preferred: the ``label_printer`` setting's printer (else the first).
    """

    def __init__(self, printers: list[LabelPrinter], preferred: str | None = None) -> None:
        self.printers = printers
        self.preferred = preferred or (printers[0].name if printers else None)

    @classmethod
    def zpl_only(cls, name: str) -> LabelRouting:
        """One ZPL printer called ``name`` (the workflow's default, for tests)."""
        return cls([LabelPrinter(name, "zpl_printer", frozenset({"zpl"}), "zpl")])

    @classmethod
    def from_config(cls, config: NodeConfig, preferred: str | None) -> LabelRouting:
        """The label printers of the node file (``zpl_printer`` and ``ipp_printer``)."""
        printers: list[LabelPrinter] = []
        for device in config.devices:
            if device.kind == "zpl_printer":
                printers.append(LabelPrinter(device.name, device.kind, frozenset({"zpl"}), "zpl"))
            elif device.kind == "ipp_printer":
                fields: dict[str, Any] = device.model_dump()
                printers.append(
                    LabelPrinter(
                        device.name,
                        device.kind,
                        frozenset(fields["formats"]),
                        fields["own_label"],
                        fields["dpi"],
                    )
                )
        return cls(printers, preferred)

    def _ordered(self) -> list[LabelPrinter]:
        first = [p for p in self.printers if p.name == self.preferred]
        return first + [p for p in self.printers if p.name != self.preferred]

    def for_format(self, fmt: str) -> LabelPrinter | None:
        """The printer that prints a carrier label in ``fmt``, or ``None``."""
        return next((p for p in self._ordered() if fmt in p.formats), None)

    def own(self) -> LabelPrinter:
        """The printer of the station's own label."""
        return self._ordered()[0]

    def refusal(self, fmt: str) -> str | None:
        """Why a carrier label in ``fmt`` cannot be printed here, or ``None`` when it can."""
        if self.for_format(fmt) is not None:
            return None
        here = "; ".join(
            f"{p.name} ({p.kind}) prints {', '.join(sorted(p.formats))}" for p in self.printers
        )
        return (
            f"the carrier label is {fmt.upper()} and no printer here prints it ({here}); send "
            "it in a format one of them prints, or the fields of the station's own label"
        )

    def names(self) -> list[str]:
        """Every label printer's name."""
        return [p.name for p in self.printers]


class CarrierDocuments:
    """The ``carrier_label`` documents of the queued orders, one store task each."""

    def __init__(self) -> None:
        self._docs: dict[str, tuple[str, bytes]] = {}

    def restore(self, tasks: Iterable[StoredTask]) -> None:
        """Reload the documents kept before a restart."""
        self._docs = {
            row.id.removeprefix("pack-doc:"): (row.data["format"], row.data["data"])
            for row in tasks
            if row.kind == DOC
        }

    def get(self, order: str) -> tuple[str, bytes] | None:
        """``(format, data)`` of the order's carrier document, or ``None``."""
        return self._docs.get(order)

    def same(self, body: PackCommand) -> bool:
        """Whether ``body`` carries the document already kept for its order (or none)."""
        return self._docs.get(body.order) == _document(body)

    def keep(self, step: Step, body: PackCommand) -> None:
        """Keep (or replace, or forget) the order's document as ``body`` says."""
        document = _document(body)
        if document is None:
            self.forget(step, body.order)
        elif self._docs.get(body.order) != document:
            self._docs[body.order] = document
            step.unit.put_task(
                StoredTask(
                    f"pack-doc:{body.order}",
                    DOC,
                    None,
                    {"format": document[0], "data": document[1]},
                )
            )

    def forget(self, step: Step, order: str) -> None:
        """Drop the order's document (packed, cancelled, or updated without one)."""
        if self._docs.pop(order, None) is not None:
            step.unit.drop_task(f"pack-doc:{order}")


def _document(body: PackCommand) -> tuple[str, bytes] | None:
    if body.carrier_label is None:
        return None
    return body.carrier_label.format, body.carrier_label.data


def own_label(
    order: str, label: dict[str, Any], express: bool, settings: PackSettings
) -> LabelData:
    """The station's own label of an order from its stored ``label`` fields."""
    fields = OwnLabel.model_validate(label)
    sscc = fields.sscc
    if sscc is None:
        prefix = fields.company_prefix or settings.gs1_company_prefix or ""
        sscc = build_sscc(fields.extension, prefix, fields.serial_reference or "")
    return LabelData(
        order=order,
        name=fields.ship_to.name,
        address=fields.ship_to.address,
        postcode=fields.ship_to.postcode,
        city=fields.ship_to.city,
        country=fields.ship_to.country,
        carrier=fields.carrier,
        service=fields.service,
        sscc=sscc,
        express=express,
        ship_from=settings.ship_from,
    )


def label_action(
    printer: LabelPrinter,
    job_id: str,
    *,
    carrier: tuple[str, bytes] | None,
    own: LabelData | None,
    zpl_dpi: Literal[203, 300],
) -> Print | PrintLabel:
    """The print action of an order's label on ``printer``.

    A carrier document goes as it is; the station's own label is ZPL on a Zebra, or a
    ``PrintLabel`` the floor renders to PDF or PNG for an IPP printer.
    """
    if carrier is not None:
        return Print(printer.name, job_id, carrier[1])
    assert own is not None
    if printer.own == "zpl":
        return Print(printer.name, job_id, shipping_label(own, zpl_dpi))
    return PrintLabel(printer.name, job_id, own, printer.own, printer.dpi)
