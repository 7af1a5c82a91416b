"""The pack station's own 4x6 inch shipping label as a PNG or PDF, for IPP printers.

The same layout as the ZPL label (``agent.workflows.labels.shipping_label``): sender,
ship-to, carrier and service, an ``EXPRESS`` block, the order, and the parcel's SSCC as a
GS1-128 barcode with its human-readable line. It is drawn dot for dot at the printer's
resolution (4 x 6 in is 812 x 1218 dots at 203 dpi, 1200 x 1800 at 300 dpi), one bit per
dot, so nothing is scaled or dithered on the way: the barcode's module is 4 dots at 203 dpi
and 6 at 300 dpi (0.50 mm, as on the ZPL label) and its bars are 32 mm tall.

Why Pillow: it is already installed (python-escpos needs it), draws text with its bundled
scalable font, and writes both PNG and a one-page PDF whose page is exactly 4 x 6 in (the
image at its dpi); reportlab would add a dependency and memory for a vector PDF that a
203 dpi printer rasterises anyway. python-barcode (also already there) encodes the
GS1-128 symbol (start C, FNC1, AI 00); the bars are drawn here, on whole dots.

Pillow is imported by the functions, so a node that prints carrier PDFs only never loads it.
"""

from __future__ import annotations

import io
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from PIL import Image, ImageDraw

SIZES: dict[int, tuple[int, int]] = {203: (812, 1218), 300: (1200, 1800)}
"""Label width and length in dots for each resolution (4 x 6 inches)."""


@dataclass(frozen=True, slots=True)
class ShippingLabel:
    """What the station's own label shows (the fields of ``agent.workflows.labels.LabelData``).

    Attributes:
        order: the order id.
        name: the addressee.
        address: street lines (at most 4 are printed).
        postcode: postal code.
        city: city.
        country: country name or code.
        carrier: the carrier's name.
        service: the service.
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


def _clean(text: str, limit: int) -> str:
    return "".join(
        " " if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") else c
        for c in text
    ).strip()[:limit]


def _bars(data: str) -> str:
    """The GS1-128 modules of ``data`` (AIs and values, no FNC1): ``"1"`` is a bar."""
    from barcode.codex import Gs1_128

    pattern: str = Gs1_128(data).build()[0]
    return pattern


def label_image(label: ShippingLabel, dpi: Literal[203, 300] = 203) -> Image.Image:
    """The label drawn at ``dpi``, one bit per dot (white is 1).

    Raises:
        ValueError: ``dpi`` is not 203 or 300, or the SSCC is not 18 digits.
    """
    from PIL import Image, ImageDraw, ImageFont

    if dpi not in SIZES:
        raise ValueError(f"dpi must be 203 or 300, not {dpi}")
    if len(label.sscc) != 18 or not label.sscc.isdigit():
        raise ValueError(f"an SSCC is 18 digits, not {label.sscc[:24]!r}")
    width, length = SIZES[dpi]
    k = dpi / 203
    image = Image.new("1", (width, length), 1)
    draw = ImageDraw.Draw(image)

    def d(value: float) -> int:
        return round(value * k)

    def text(x: int, y: int, size: int, value: str, limit: int = 40, fill: int = 0) -> None:
        font = ImageFont.load_default(size=d(size))
        draw.text((d(x), d(y)), _clean(value, limit), font=font, fill=fill)

    def rule(y: int) -> None:
        draw.rectangle((d(30), d(y), d(782), d(y) + d(3) - 1), fill=0)

    y = 30
    for line in list(label.ship_from)[:3]:
        text(30, y, 26, line, 55)
        y += 32
    rule(140)
    text(30, 160, 28, "SHIP TO:")
    y = 200
    text(30, y, 50, label.name, 30)
    y += 60
    for line in list(label.address)[:4]:
        text(30, y, 40, line)
        y += 48
    text(30, y, 56, f"{label.postcode} {label.city}", 26)
    y += 66
    text(30, y, 40, label.country)
    rule(620)
    text(30, 645, 50, label.carrier, 28)
    text(30, 705, 40, label.service, 34)
    if label.express:
        draw.rectangle((d(560), d(640), d(782), d(740)), fill=0)
        text(572, 668, 44, "EXPRESS", fill=1)
    text(30, 760, 30, f"Order {label.order}", 50)
    rule(805)
    text(30, 825, 28, "SSCC")
    _draw_barcode(draw, d(90), d(865), 6 if dpi == 300 else 4, 384 if dpi == 300 else 260, label)
    sscc = label.sscc
    text(30, 1145, 40, f"(00) {sscc[0]} {sscc[1:8]} {sscc[8:17]} {sscc[17]}")
    return image


def _draw_barcode(
    draw: ImageDraw.ImageDraw, x: int, y: int, module: int, height: int, label: ShippingLabel
) -> None:
    for i, bit in enumerate(_bars("00" + label.sscc)):
        if bit == "1":
            left = x + i * module
            draw.rectangle((left, y, left + module - 1, y + height - 1), fill=0)


def render_png(label: ShippingLabel, dpi: Literal[203, 300] = 203) -> bytes:
    """The label as a 1-bit PNG with its resolution recorded (``pHYs``)."""
    out = io.BytesIO()
    label_image(label, dpi).save(out, "PNG", dpi=(dpi, dpi), optimize=True)
    return out.getvalue()


def render_pdf(label: ShippingLabel, dpi: Literal[203, 300] = 203) -> bytes:
    """The label as a one-page PDF of exactly 4 x 6 in (288 x 432 pt)."""
    out = io.BytesIO()
    label_image(label, dpi).save(out, "PDF", resolution=float(dpi))
    return out.getvalue()


def render(label: ShippingLabel, fmt: Literal["pdf", "png"], dpi: Literal[203, 300] = 203) -> bytes:
    """The label as ``fmt`` (``pdf`` or ``png``)."""
    return render_pdf(label, dpi) if fmt == "pdf" else render_png(label, dpi)


SAMPLE = ShippingLabel(
    order="TEST",
    name="zone-agent test label",
    address=("If this is straight and sharp,", "the printer is set up right."),
    postcode="4x6",
    city="inch",
    country="",
    carrier="TEST",
    service="",
    sscc="000000000000000000",
)
"""The label ``zone-agent printer test --lang ipp`` prints."""
