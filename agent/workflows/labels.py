"""The pack station's own 4x6 inch shipping label in ZPL II, and SSCC numbers (pure).

Used when the OMS sends no carrier label: the node prints ship-to, carrier, service and the
parcel's SSCC as a GS1-128 barcode. Carrier labels are never built here: they are printed
byte for byte as the carrier made them.

Sizes: 4x6 in at 203 dpi is 812 x 1218 dots, at 300 dpi 1200 x 1800 dots; the layout is
drawn for 203 dpi and scaled. The barcode is ``^BC`` (Code 128) with ``>;`` (start in
subset C) and ``>8`` (FNC1, which makes it GS1-128) followed by AI ``00`` and the 18
digits; its module is 4 dots at 203 dpi and 6 dots at 300 dpi (0.50 mm, within GS1's 0.495
to 1.016 mm for logistic labels) and it is 32 mm tall, GS1's minimum for SSCC labels.

Field data is escaped: ``^`` and ``~`` start commands even inside ``^FD``, so every text
field is written with ``^FH_`` and those characters (and the ``_`` escape itself) as
``_5E``, ``_7E`` and ``_5F``; ``^CI28`` makes the printer read UTF-8.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Dpi = Literal[203, 300]

SIZES: dict[int, tuple[int, int]] = {203: (812, 1218), 300: (1200, 1800)}
"""Label width and length in dots for each resolution (4 x 6 inches)."""

LINE_CHARS = 40
"""Longest text line kept at the label's address font size (Odoo notes ~55 at a smaller one)."""


def gs1_check_digit(digits: str) -> int:
    """The GS1 mod-10 check digit of ``digits`` (weights 3, 1, 3, ... from the right).

    Raises:
        ValueError: ``digits`` is empty or not all digits.
    """
    if not digits or not digits.isdigit():
        raise ValueError(f"{digits!r} is not a string of digits")
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return (10 - total % 10) % 10


def sscc_error(sscc: str) -> str | None:
    """Why ``sscc`` is not a valid SSCC (18 digits, last one the check digit), or ``None``."""
    if len(sscc) != 18 or not sscc.isdigit():
        return f"an SSCC is 18 digits, not {sscc[:24]!r}"
    expected = gs1_check_digit(sscc[:17])
    if int(sscc[17]) != expected:
        return f"bad SSCC check digit in {sscc}: expected {expected}, got {sscc[17]}"
    return None


def build_sscc(extension: int, company_prefix: str, serial_reference: str) -> str:
    """The SSCC of extension digit + GS1 company prefix + serial reference + check digit.

    The serial reference is zero-padded on the left to fill the 16 digits after the
    extension digit.

    Raises:
        ValueError: not digits, a prefix not 7 to 10 digits, or the whole too long.
    """
    if not 0 <= extension <= 9:
        raise ValueError("the extension digit is 0 to 9")
    if not company_prefix.isdigit() or not 7 <= len(company_prefix) <= 10:
        raise ValueError(f"a GS1 company prefix is 7 to 10 digits, not {company_prefix!r}")
    if not serial_reference.isdigit():
        raise ValueError(f"the serial reference must be digits, not {serial_reference!r}")
    room = 16 - len(company_prefix)
    if len(serial_reference) > room:
        raise ValueError(
            f"a serial reference after a {len(company_prefix)}-digit prefix has at most "
            f"{room} digits, not {len(serial_reference)}"
        )
    body = f"{extension}{company_prefix}{serial_reference.zfill(room)}"
    return body + str(gs1_check_digit(body))


def human_sscc(sscc: str) -> str:
    """The SSCC as printed under its barcode: ``(00) 3 4012345 123456789 8``-style."""
    return f"(00) {sscc[0]} {sscc[1:8]} {sscc[8:17]} {sscc[17]}"


def field_text(text: str, limit: int = LINE_CHARS) -> str:
    """``text`` made safe for ``^FH_^FD...^FS``.

    Control characters become spaces, the text is cut to ``limit`` characters, and ``_``,
    ``^`` and ``~`` are hex-escaped.
    """
    clean = "".join(
        " " if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") else c
        for c in text
    ).strip()[:limit]
    return clean.replace("_", "_5F").replace("^", "_5E").replace("~", "_7E")


@dataclass(frozen=True, slots=True)
class LabelData:
    """What the station's own label shows.

    Attributes:
        order: the order id (printed small, for the packer).
        name: the addressee.
        address: street lines (at most 4 are printed).
        postcode: postal code.
        city: city.
        country: country name or code.
        carrier: the carrier's name.
        service: the service (``Next day``).
        sscc: the parcel's 18-digit SSCC.
        express: prints an ``EXPRESS`` block.
        ship_from: the sender's lines (at most 3 are printed).
    """

    order: str
    name: str
    address: Sequence[str]
    postcode: str
    city: str
    country: str
    carrier: str
    service: str
    sscc: str
    express: bool = False
    ship_from: Sequence[str] = ()


def shipping_label(data: LabelData, dpi: Dpi = 203) -> bytes:
    """The 4x6 inch ZPL label of ``data`` at ``dpi`` (203 or 300), UTF-8.

    Raises:
        ValueError: the SSCC is not valid, or ``dpi`` is not 203 or 300.
    """
    error = sscc_error(data.sscc)
    if error is not None:
        raise ValueError(error)
    if dpi not in SIZES:
        raise ValueError(f"dpi must be 203 or 300, not {dpi}")
    width, length = SIZES[dpi]
    k = dpi / 203

    def d(value: float) -> int:
        return round(value * k)

    out = ["^XA", "^CI28", f"^PW{width}", f"^LL{length}", "^LH0,0"]

    def text(x: int, y: int, size: int, value: str, limit: int = LINE_CHARS) -> None:
        out.append(f"^FO{d(x)},{d(y)}^A0N,{d(size)},{d(size)}^FH_^FD{field_text(value, limit)}^FS")

    def rule(y: int) -> None:
        out.append(f"^FO{d(30)},{d(y)}^GB{d(752)},{d(3)},{d(3)}^FS")

    y = 30
    for line in list(data.ship_from)[:3]:
        text(30, y, 26, line, 55)
        y += 32
    rule(140)
    text(30, 160, 28, "SHIP TO:")
    y = 200
    text(30, y, 50, data.name, 30)
    y += 60
    for line in list(data.address)[:4]:
        text(30, y, 40, line)
        y += 48
    text(30, y, 56, f"{data.postcode} {data.city}", 26)
    y += 66
    text(30, y, 40, data.country)
    rule(620)
    text(30, 645, 50, data.carrier, 28)
    text(30, 705, 40, data.service, 34)
    if data.express:
        out.append(f"^FO{d(560)},{d(640)}^GB{d(222)},{d(100)},{d(100)}^FS")
        out.append(f"^FO{d(575)},{d(670)}^A0N,{d(48)},{d(48)}^FR^FDEXPRESS^FS")
    text(30, 760, 30, f"Order {data.order}", 50)
    rule(805)
    text(30, 825, 28, "SSCC")
    module, height = (6, 384) if dpi == 300 else (4, 260)
    out.append(f"^FO{d(90)},{d(865)}^BY{module}^BCN,{height},N,N,N^FD>;>800{data.sscc}^FS")
    text(30, 1145, 40, human_sscc(data.sscc))
    out.append("^XZ")
    return ("\n".join(out) + "\n").encode("utf-8")
