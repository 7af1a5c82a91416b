"""python-escpos behind a small async interface: the only module that imports ``escpos``.

``escpos`` is imported inside functions, when an ESC/POS printer is built or a slip is
rendered, so a node without receipt printers never loads it (nor its Pillow, qrcode and
python-barcode dependencies). Every python-escpos call blocks, so each one runs in a worker
thread through ``asyncio.to_thread``; its exceptions end here as ``DeviceUnavailable``.

Slips are described with the small block values below and turned into bytes by
``render_blocks`` on escpos's ``Dummy`` printer; the driver then sends those bytes like any
job. That keeps rendering pure and testable, and keeps one write path for all jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import os
import select
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from devices.errors import DeviceUnavailable


@dataclass(frozen=True, slots=True)
class TextLine:
    """One line of text (wrapped by the printer when too long)."""

    text: str
    bold: bool = False
    center: bool = False
    double: bool = False


@dataclass(frozen=True, slots=True)
class Code128:
    """A Code 128 barcode (code set B), printed by the printer's own barcode engine."""

    data: str
    height: int = 64


@dataclass(frozen=True, slots=True)
class QrCode:
    """A QR code, printed natively (``GS ( k``), model 2."""

    data: str
    size: int = 4


@dataclass(frozen=True, slots=True)
class Cut:
    """Feed and cut the paper."""


Block = TextLine | Code128 | QrCode | Cut


def _printer_module() -> Any:
    # The one import of python-escpos (with Pillow, qrcode, python-barcode behind it).
    import escpos.printer

    return escpos.printer


def _escpos_errors() -> tuple[type[BaseException], ...]:
    import escpos.exceptions

    return (escpos.exceptions.Error, OSError, ValueError)


def render_blocks(blocks: Sequence[Block]) -> bytes:
    """The ESC/POS bytes for ``blocks``, produced by escpos's ``Dummy`` printer."""
    dummy = _printer_module().Dummy()
    # python-escpos 3.1 print()s "Using hardware barcode renderer" to stdout; keep that out
    # of our output (a CLI's --json).
    with contextlib.redirect_stdout(io.StringIO()):
        dummy.hw("INIT")  # ESC @: start from the printer's defaults, whatever came before
        for block in blocks:
            if isinstance(block, TextLine):
                dummy.set(
                    align="center" if block.center else "left",
                    bold=block.bold,
                    double_height=block.double,
                    double_width=block.double,
                )
                dummy.textln(block.text)
            elif isinstance(block, Code128):
                dummy.set(align="center")
                dummy.barcode("{B" + block.data, "CODE128", height=block.height, function_type="B")
            elif isinstance(block, QrCode):
                dummy.qr(block.data, size=block.size, native=True, center=False)
            else:
                dummy.cut()
        dummy.set_with_default()
    return bytes(dummy.output)


@dataclass(frozen=True, slots=True)
class NetworkTarget:
    """A printer on raw TCP (``escpos.printer.Network``)."""

    host: str
    port: int = 9100


@dataclass(frozen=True, slots=True)
class SerialTarget:
    """A printer on a serial port (``escpos.printer.Serial``), 8N1."""

    path: str
    baudrate: int = 9600


@dataclass(frozen=True, slots=True)
class UsbTarget:
    """A printer on USB, found by vendor and product id (``escpos.printer.Usb``, pyusb)."""

    vendor_id: int
    product_id: int
    in_ep: int = 0x82
    out_ep: int = 0x01


@dataclass(frozen=True, slots=True)
class FileTarget:
    """A write-only device file such as ``/dev/usb/lp0`` (``escpos.printer.File``)."""

    path: str


Target = NetworkTarget | SerialTarget | UsbTarget | FileTarget

USB_SETUP = "docs/operating.md, USB receipt printers"


def _usb_reason(exc: BaseException, text: str) -> str:
    """What went wrong with a printer on libusb, in words that say what to do."""
    if isinstance(exc, RuntimeError) and "usb library" in text:
        return (
            "USB printing needs pyusb, which is not installed "
            "(pip install 'python-escpos[usb]'; zone-agent's own install has it)"
        )
    if type(exc).__name__ == "NoBackendError":
        # pyusb found no libusb it could start: missing, or libusb_init refused (under the
        # unit: no netlink socket for its hotplug monitor).
        return (
            "libusb cannot start: install libusb-1.0-0, and under systemd the "
            f"usb-printer.conf drop-in ({USB_SETUP})"
        )
    if isinstance(exc, OSError) and exc.errno == errno.EPERM:
        return f"blocked by the service's device policy: install usb-printer.conf ({USB_SETUP})"
    if isinstance(exc, OSError) and exc.errno == errno.EACCES:
        return f"{text}: the service user may not write the device: add the udev rule ({USB_SETUP})"
    return text


class EscposConnection:
    """A connection to an ESC/POS printer through python-escpos.

    Building one imports python-escpos (in the calling thread: once per process).

    Args:
        target: where the printer is.
        timeout: seconds to wait for a status reply.
        connect_timeout: seconds to wait for a TCP connection.
    """

    def __init__(self, target: Target, timeout: float = 2.0, connect_timeout: float = 5.0) -> None:
        self.target_spec = target
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._module = _printer_module()
        self._errors = _escpos_errors()
        self._printer: Any = None

    @property
    def target(self) -> str:
        """Where the printer is, for logs."""
        t = self.target_spec
        if isinstance(t, NetworkTarget):
            return f"tcp {t.host}:{t.port}"
        if isinstance(t, SerialTarget):
            return f"serial {t.path} at {t.baudrate} baud"
        if isinstance(t, UsbTarget):
            return f"usb {t.vendor_id:04x}:{t.product_id:04x}"
        return f"file {t.path}"

    @property
    def can_read(self) -> bool:
        """Whether status replies can be read (not through a write-only file)."""
        return not isinstance(self.target_spec, FileTarget)

    @property
    def is_open(self) -> bool:
        """Whether the connection is open."""
        return self._printer is not None

    def _unavailable(self, exc: BaseException) -> DeviceUnavailable:
        text = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(self.target_spec, UsbTarget):
            text = _usb_reason(exc, text)
        return DeviceUnavailable(f"{self.target}: {text}")

    def _open_blocking(self) -> Any:
        m, t = self._module, self.target_spec
        if isinstance(t, NetworkTarget):
            printer = m.Network(t.host, port=t.port, timeout=self.connect_timeout)
        elif isinstance(t, SerialTarget):
            printer = m.Serial(t.path, baudrate=t.baudrate, timeout=self.timeout, dsrdtr=False)
        elif isinstance(t, UsbTarget):
            printer = m.Usb(
                t.vendor_id, t.product_id, timeout=int(self.timeout * 1000), in_ep=t.in_ep,
                out_ep=t.out_ep,
            )  # fmt: skip
        else:
            # File opens with "wb": it would create a plain file where the unplugged
            # printer's device node should be.
            if not os.path.exists(t.path):
                raise FileNotFoundError(errno.ENOENT, "no such device (unplugged?)", t.path)
            printer = m.File(t.path)
        printer.open()
        if isinstance(t, NetworkTarget):
            printer.device.settimeout(self.timeout)
        return printer

    async def open(self) -> None:
        """Connect; raises ``DeviceUnavailable`` with the reason."""
        await self.close()
        try:
            self._printer = await asyncio.to_thread(self._open_blocking)
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        except RuntimeError as exc:
            # python-escpos raises a bare RuntimeError when pyusb cannot be imported.
            if not isinstance(self.target_spec, UsbTarget):
                raise
            raise self._unavailable(exc) from exc

    def _check(self) -> Any:
        if self._printer is None:
            raise DeviceUnavailable(f"{self.target}: not connected")
        return self._printer

    async def write(self, data: bytes) -> None:
        """Send raw ESC/POS bytes."""
        printer = self._check()
        try:
            # _raw is python-escpos's transport primitive; every public method ends in it.
            await asyncio.to_thread(printer._raw, data)
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    def _query_blocking(self, printer: Any, request: bytes) -> bytes | None:
        t = self.target_spec
        if isinstance(t, NetworkTarget):
            sock: socket.socket = printer.device
            # Drop a late reply to an earlier request, or it would answer this one.
            while select.select([sock], [], [], 0)[0]:
                if not sock.recv(4096):
                    raise ConnectionError("connection closed by the printer")
            sock.sendall(request)
            try:
                data = sock.recv(16)
            except TimeoutError:
                return None
            if not data:
                raise ConnectionError("connection closed by the printer")
            return data
        if isinstance(t, SerialTarget):
            port = printer.device
            port.reset_input_buffer()
            port.write(request)
            # read(16) would wait the whole timeout for 16 bytes; the reply is one byte.
            first: bytes = port.read(1)
            return first + port.read(port.in_waiting) if first else None
        if isinstance(t, UsbTarget):
            printer._raw(request)
            try:
                return bytes(printer.device.read(t.in_ep, 16, int(self.timeout * 1000)))
            except self._errors:
                return None
        return None

    async def query(self, request: bytes) -> bytes | None:
        """Send a real-time request; the reply, or ``None`` when none came in time."""
        printer = self._check()
        if not self.can_read:
            return None
        try:
            return await asyncio.to_thread(self._query_blocking, printer, request)
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    async def close(self) -> None:
        """Close the connection; safe to call twice."""
        printer, self._printer = self._printer, None
        if printer is not None:
            with contextlib.suppress(*self._errors):
                await asyncio.to_thread(printer.close)
