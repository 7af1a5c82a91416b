"""Zebra (ZPL II) label printers over raw TCP 9100 or a device file.

Status comes from ``~HS`` (host status): the printer answers three strings
``<STX>…<ETX><CR><LF>``; this driver reads all three (reading up to the first ETX, as some
libraries do, gets only the first). Zebra printers send *nothing* to ``~HS`` while media is
out, the head is open or the ribbon is out, so silence within ``status_timeout_s`` is a
fault, not just "offline".
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Literal

from devices.backends.devfile import DeviceFileLink
from devices.backends.tcp import TcpLink
from devices.context import DeviceContext
from devices.errors import DeviceProtocolError
from devices.printers.base import Printer, PrinterConfig, PrinterLink, PrinterStatus
from devices.printers.sim import ZplSimulator

HOST_STATUS = b"~HS"
_FRAME = re.compile(rb"\x02([^\x02\x03]*)\x03")


class ZplPrinterConfig(PrinterConfig):
    """A ZPL label printer (``kind = "zpl_printer"``); see ``PrinterConfig`` for fields.

    Example node file entry::

        [[devices]]
        name = "label1"
        kind = "zpl_printer"
        host = "10.0.0.5"        # or: device = "/dev/usb/lp0"
    """

    kind: Literal["zpl_printer"] = "zpl_printer"


def _flag(field: bytes, what: str) -> bool:
    if field not in (b"0", b"1"):
        raise DeviceProtocolError(f"~HS {what} flag is {field!r}, not 0 or 1")
    return field == b"1"


def parse_host_status(reply: bytes) -> PrinterStatus:
    """Decode the three ``~HS`` strings.

    String 1 ``aaa,b,c,…``: b paper out, c pause. String 2 ``mmm,n,o,p,…``: o head up,
    p ribbon out. String 3 (password, static RAM) must be present but is not used.

    Raises:
        DeviceProtocolError: not three STX/ETX strings, or a flag that is not 0/1.
    """
    frames = _FRAME.findall(reply)
    if len(frames) != 3:
        raise DeviceProtocolError(f"~HS reply has {len(frames)} of 3 strings: {reply[:80]!r}")
    first = frames[0].split(b",")
    second = frames[1].split(b",")
    if len(first) < 3 or len(second) < 4:
        raise DeviceProtocolError(f"~HS strings too short: {reply[:80]!r}")
    return PrinterStatus.from_flags(
        paper_out=_flag(first[1], "paper out"),
        paused=_flag(first[2], "pause"),
        head_open=_flag(second[2], "head up"),
        ribbon_out=_flag(second[3], "ribbon out"),
    )


def _field_text(text: str) -> str:
    # ^ and ~ start commands even inside ^FD; drop them rather than print a broken label.
    return text.replace("^", "").replace("~", "")


def sample_label(text: str = "zone-agent test label") -> bytes:
    """A small 2x1 inch label with a line of text and a Code 128 barcode."""
    line = _field_text(text)
    return (
        "^XA\n^CI28\n^PW406\n^LL203\n"
        "^FO20,20^A0N,30,30^FDzone-agent^FS\n"
        f"^FO20,60^A0N,24,24^FD{line}^FS\n"
        "^FO20,100^BY2^BCN,60,Y,N,N^FDTEST123^FS\n"
        "^XZ\n"
    ).encode()


class ZplPrinter(Printer):
    """A Zebra ZPL printer: jobs go out as raw ZPL; status via ``~HS``.

    Set-up: on the printer enable raw TCP printing on port 9100 (default on ZebraNet
    cards) and give it a fixed address; or connect it by USB (it appears as
    ``/dev/usb/lp0``, the service user needs the ``lp`` group) or by serial cable (set
    ``baudrate`` to the printer's, 8N1). With ``device`` and ``readback = false`` the job
    counts as printed once written, since nothing can be read back.

    Example::

        config = ZplPrinterConfig(name="label1", host="10.0.0.5")
        async with ZplPrinter.from_config(config, DeviceContext()) as printer:
            await printer.submit("order-4711", b"^XA^FO20,20^A0N,30,30^FDHi^FS^XZ")
            result = await printer.next_result()

    Args:
        config: the validated config.
        link: the byte connection (``TcpLink``, ``DeviceFileLink`` or a fake).
        clock: time source for job ages (tests inject one).
        printed_ids: ids persisted as printed, never printed again.
    """

    def __init__(
        self,
        config: ZplPrinterConfig,
        link: PrinterLink,
        *,
        clock: Callable[[], float] = time.monotonic,
        printed_ids: Iterable[str] = (),
    ) -> None:
        super().__init__(config.name, config, clock=clock, printed_ids=printed_ids)
        self.link = link

    @classmethod
    def from_config(cls, config: ZplPrinterConfig, context: DeviceContext) -> ZplPrinter:
        """Build the printer with a TCP or device-file link from ``config``."""
        return cls(config, _link_for(config))

    def describe(self) -> str:
        """Kind and connection, for the start-up log."""
        return f"ZPL printer {self.name} on {self.link.target}"

    async def _connect(self) -> None:
        await self.link.open()

    async def _disconnect(self) -> None:
        await self.link.close()

    def _alive(self) -> bool:
        return self.link.is_open

    async def _write(self, data: bytes) -> None:
        await self.link.write(data)

    async def _read_status(self) -> PrinterStatus | None:
        if not self.link.can_read:
            return replace(PrinterStatus.from_flags(), detail="ready (no status read-back)")
        self.link.discard_input()
        await self.link.write(HOST_STATUS)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.status_timeout_s
        reply = b""
        for _ in range(3):
            frame = await self.link.read_until(b"\x03", max(deadline - loop.time(), 0.0))
            if frame is None:
                if not reply and not self.link.pending_input():
                    return None
                raise DeviceProtocolError(
                    f"~HS reply cut short: {(reply + self.link.pending_input())[:80]!r}"
                )
            reply += frame
        return parse_host_status(reply)


def _link_for(config: PrinterConfig) -> PrinterLink:
    if config.host is not None:
        return TcpLink(config.host, config.port, config.connect_timeout_s)
    assert config.device is not None  # the config validator guarantees one of them
    return DeviceFileLink(config.device, readback=config.readback, baudrate=config.baudrate)


CONFIG = ZplPrinterConfig
DRIVER = ZplPrinter
SIMULATOR = ZplSimulator
