"""ESC/POS receipt printers (packing slips) through python-escpos.

Importing this module does not import python-escpos: ``devices.backends.escpos`` loads it
when a printer is built (``from_config``) or a slip is rendered. Status comes from the
real-time requests ``DLE EOT 1`` (printer: bit 3 offline), ``DLE EOT 4`` (roll paper:
``0x72`` all set = paper out, ``0x1E`` all set = near end) and, when offline, ``DLE EOT 2``
(bit 2 cover open). Each reply is one byte whose fixed bits read ``0xx1xx10``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Literal, Protocol, Self

from pydantic import Field, model_validator

from devices.backends.escpos import (
    Block,
    Code128,
    Cut,
    EscposConnection,
    FileTarget,
    NetworkTarget,
    QrCode,
    SerialTarget,
    Target,
    TextLine,
    UsbTarget,
    render_blocks,
)
from devices.context import DeviceContext
from devices.errors import DeviceProtocolError
from devices.printers.base import Printer, PrinterConfig, PrinterStatus
from devices.printers.sim import EscposSimulator

STATUS_PRINTER = b"\x10\x04\x01"
STATUS_OFFLINE_CAUSE = b"\x10\x04\x02"
STATUS_PAPER = b"\x10\x04\x04"
MASK_OFFLINE = 0x08
MASK_PAPER_OUT = 0x72
MASK_PAPER_NEAR_END = 0x1E
MASK_COVER_OPEN = 0x04
_FIXED_MASK, _FIXED_BITS = 0x93, 0x12  # bits 0 and 7 clear, bits 1 and 4 set
SLIP_WIDTH = 32  # characters of font A on 58 mm paper; 80 mm paper fits 48


class EscposPrinterConfig(PrinterConfig):
    """An ESC/POS receipt printer (``kind = "escpos_printer"``).

    Attributes:
        usb_vendor_id: USB vendor id, with ``usb_product_id``, instead of host or device.
        usb_product_id: USB product id.
        serial: whether ``device`` is a serial port (``None``: a ``/dev/tty*`` or
            ``/dev/serial/*`` path is one; anything else, like ``/dev/usb/lp0``, is a
            write-only file).

    Example node file entry::

        [[devices]]
        name = "slip1"
        kind = "escpos_printer"
        host = "10.0.0.6"
    """

    kind: Literal["escpos_printer"] = "escpos_printer"
    usb_vendor_id: int | None = Field(default=None, ge=0, le=0xFFFF)
    usb_product_id: int | None = Field(default=None, ge=0, le=0xFFFF)
    serial: bool | None = None

    def _connections(self) -> int:
        return super()._connections() + (self.usb_vendor_id is not None)

    def _choices(self) -> str:
        return "host (TCP), device (file or serial port) or usb_vendor_id and usb_product_id"

    @model_validator(mode="after")
    def _usb_pair(self) -> Self:
        if (self.usb_vendor_id is None) != (self.usb_product_id is None):
            raise ValueError("give both usb_vendor_id and usb_product_id, or neither")
        return self

    def claims(self) -> list[str]:
        """The printer's TCP endpoint, device file or USB id."""
        if self.usb_vendor_id is not None and self.usb_product_id is not None:
            return [f"usb:{self.usb_vendor_id:04x}:{self.usb_product_id:04x}"]
        return super().claims()

    def is_serial(self) -> bool:
        """Whether ``device`` is a serial port."""
        if self.serial is not None:
            return self.serial
        path = self.device or ""
        return path.startswith(("/dev/tty", "/dev/serial/", "/dev/rfcomm"))

    def target(self) -> Target:
        """Where the printer is, for the backend."""
        if self.host is not None:
            return NetworkTarget(self.host, self.port)
        if self.usb_vendor_id is not None and self.usb_product_id is not None:
            return UsbTarget(self.usb_vendor_id, self.usb_product_id)
        assert self.device is not None  # the validator guarantees one way
        if self.is_serial():
            return SerialTarget(self.device, self.baudrate)
        return FileTarget(self.device)


@dataclass(frozen=True, slots=True)
class PackingSlip:
    """What a packing slip shows.

    Attributes:
        title: the heading (the site or shop name).
        order_id: the order number, printed under the title.
        lines: ``(quantity, sku, description)`` per order line.
        barcode: Code 128 content (usually the order id or the parcel's tracking id).
        qr: QR content (a return or tracking URL); empty for none.
        footer: a closing line; empty for none.
    """

    title: str
    order_id: str
    lines: tuple[tuple[int, str, str], ...]
    barcode: str
    qr: str = ""
    footer: str = ""


def slip_blocks(slip: PackingSlip, width: int = SLIP_WIDTH) -> list[Block]:
    """The printable blocks of ``slip`` (text lines, barcode, QR, cut)."""
    rule = "-" * width
    blocks: list[Block] = [
        TextLine(slip.title, bold=True, center=True, double=True),
        TextLine(f"Order {slip.order_id}", center=True),
        TextLine(rule),
    ]
    for qty, sku, description in slip.lines:
        blocks.append(TextLine(f"{qty:>3} x {sku}  {description}"[:width]))
    blocks.append(TextLine(rule))
    if slip.barcode:
        blocks.append(Code128(slip.barcode))
    if slip.qr:
        blocks.append(QrCode(slip.qr))
    if slip.footer:
        blocks.append(TextLine(slip.footer, center=True))
    blocks.append(Cut())
    return blocks


def render_slip(slip: PackingSlip) -> bytes:
    """The ESC/POS bytes of ``slip``, ready for ``submit``."""
    return render_blocks(slip_blocks(slip))


def sample_slip() -> bytes:
    """A short slip for commissioning (``zone-agent printer test``)."""
    return render_slip(
        PackingSlip(
            title="zone-agent",
            order_id="TEST",
            lines=((1, "TEST-SKU", "printer test"),),
            barcode="TEST123",
            qr="zone-agent test",
            footer="test slip",
        )
    )


def _check_byte(reply: bytes, request: str) -> int:
    if len(reply) != 1:
        raise DeviceProtocolError(f"{request} reply is {len(reply)} bytes, not 1: {reply[:16]!r}")
    value = reply[0]
    if value & _FIXED_MASK != _FIXED_BITS:
        raise DeviceProtocolError(f"{request} reply 0x{value:02x} is not a status byte")
    return value


def decode_status(
    printer: bytes, paper: bytes, offline_cause: bytes | None = None
) -> PrinterStatus:
    """Decode the replies to ``DLE EOT 1``, ``DLE EOT 4`` and (optional) ``DLE EOT 2``.

    Raises:
        DeviceProtocolError: a reply that is not one status byte.
    """
    printer_byte = _check_byte(printer, "DLE EOT 1")
    paper_byte = _check_byte(paper, "DLE EOT 4")
    cause = _check_byte(offline_cause, "DLE EOT 2") if offline_cause is not None else 0
    paper_out = paper_byte & MASK_PAPER_OUT == MASK_PAPER_OUT
    return PrinterStatus.from_flags(
        offline=bool(printer_byte & MASK_OFFLINE),
        paper_out=paper_out,
        paper_near_end=not paper_out and paper_byte & MASK_PAPER_NEAR_END == MASK_PAPER_NEAR_END,
        head_open=bool(cause & MASK_COVER_OPEN),
    )


class EscposTransport(Protocol):
    """What the ESC/POS driver needs from its backend (``EscposConnection`` or a fake)."""

    @property
    def target(self) -> str:
        """Where the printer is, for logs."""
        ...

    @property
    def can_read(self) -> bool:
        """Whether status replies can be read."""
        ...

    @property
    def is_open(self) -> bool:
        """Whether the connection is open."""
        ...

    async def open(self) -> None:
        """Connect; ``DeviceUnavailable`` with the reason."""

    async def close(self) -> None:
        """Disconnect; safe to call twice."""

    async def write(self, data: bytes) -> None:
        """Send raw bytes."""

    async def query(self, request: bytes) -> bytes | None:
        """A real-time request's reply, or ``None`` when none came in time."""


class EscposPrinter(Printer):
    """An ESC/POS receipt printer for packing slips.

    Set-up: a network printer needs raw TCP on port 9100 and a fixed address; a serial
    printer 8N1 at ``baudrate`` (match its DIP switches); a USB printer either by
    ``usb_vendor_id``/``usb_product_id`` (pyusb and libusb-1.0; under systemd the unit's
    ``systemd/usb-printer.conf`` drop-in, a udev rule letting the service user write the
    device, and the usblp module must not hold it) or as ``/dev/usb/lp0`` (write-only:
    no status, a job counts as printed once written). Star printers must be switched to
    ESC/POS emulation.

    Example::

        config = EscposPrinterConfig(name="slip1", host="10.0.0.6")
        async with EscposPrinter.from_config(config, DeviceContext()) as printer:
            await printer.print_slip("slip-4711", PackingSlip(
                title="ACME", order_id="4711", lines=((2, "SKU-1", "Widget"),),
                barcode="4711", qr="https://acme.example/r/4711"))
            result = await printer.next_result()

    Args:
        config: the validated config.
        transport: the backend (``EscposConnection`` or a fake).
        clock: time source for job ages (tests inject one).
        printed_ids: ids persisted as printed, never printed again.
    """

    def __init__(
        self,
        config: EscposPrinterConfig,
        transport: EscposTransport,
        *,
        clock: Callable[[], float] = time.monotonic,
        printed_ids: Iterable[str] = (),
    ) -> None:
        super().__init__(config.name, config, clock=clock, printed_ids=printed_ids)
        self.transport = transport

    @classmethod
    def from_config(cls, config: EscposPrinterConfig, context: DeviceContext) -> EscposPrinter:
        """Build the printer (this imports python-escpos)."""
        connection = EscposConnection(
            config.target(), timeout=config.status_timeout_s,
            connect_timeout=config.connect_timeout_s,
        )  # fmt: skip
        return cls(config, connection)

    def describe(self) -> str:
        """Kind and connection, for the start-up log."""
        return f"ESC/POS printer {self.name} on {self.transport.target}"

    async def print_slip(self, job_id: str, slip: PackingSlip) -> None:
        """Render ``slip`` and queue it as ``job_id`` (see ``submit``)."""
        await self.submit(job_id, render_slip(slip))

    async def _connect(self) -> None:
        await self.transport.open()

    async def _disconnect(self) -> None:
        await self.transport.close()

    def _alive(self) -> bool:
        return self.transport.is_open

    async def _write(self, data: bytes) -> None:
        await self.transport.write(data)

    async def _read_status(self) -> PrinterStatus | None:
        if not self.transport.can_read:
            return replace(PrinterStatus.from_flags(), detail="ready (no status read-back)")
        printer = await self.transport.query(STATUS_PRINTER)
        if printer is None:
            return None
        paper = await self.transport.query(STATUS_PAPER)
        if paper is None:
            raise DeviceProtocolError("no reply to DLE EOT 4 after a reply to DLE EOT 1")
        cause = None
        if _check_byte(printer, "DLE EOT 1") & MASK_OFFLINE:
            cause = await self.transport.query(STATUS_OFFLINE_CAUSE)
        return decode_status(printer, paper, cause)


CONFIG = EscposPrinterConfig
DRIVER = EscposPrinter
SIMULATOR = EscposSimulator
