"""The station's own 4x6 label as PNG and PDF (for IPP printers)."""

from __future__ import annotations

import io
import re
from dataclasses import replace

import pytest
from PIL import Image

from devices.printers.render import ShippingLabel, label_image, render_pdf, render_png

LABEL = ShippingLabel(
    order="o-4711",
    name="Ann Example",
    address=("12 High Street", "Flat 3"),
    postcode="EC1A 1BB",
    city="London",
    country="United Kingdom",
    carrier="DPD",
    service="Next day",
    sscc="376104250021234569",
    express=True,
    ship_from=("ACME Fulfilment",),
)

# Code 128 symbol patterns (ISO/IEC 15417 table 1), bar = 1: Start C (105), FNC1 (102),
# and the stop pattern (106 plus the final bar).
START_C = "11010011100"
FNC1 = "11110101110"
STOP = "1100011101011"


def _modules(image: Image.Image, module: int, x0: int, y: int) -> str:
    width = image.width
    row = [image.getpixel((x, y)) == 0 for x in range(width)]
    last = max(i for i, dark in enumerate(row) if dark)
    return "".join("1" if row[x] else "0" for x in range(x0, last + 1, module))


@pytest.mark.parametrize(
    ("dpi", "size", "module", "x0", "y"),
    [(203, (812, 1218), 4, 90, 900), (300, (1200, 1800), 6, 133, 1300)],
)
def test_label_is_4x6_at_the_printers_dots_with_a_gs1_128_sscc(
    dpi: int, size: tuple[int, int], module: int, x0: int, y: int
) -> None:
    image = label_image(LABEL, dpi)  # type: ignore[arg-type]
    assert (image.size, image.mode) == (size, "1")
    bars = _modules(image, module, x0, y)
    assert bars.startswith(START_C + FNC1)
    assert bars.endswith(STOP)
    # Start, FNC1, 10 digit pairs (AI 00 and the 18 digits), check symbol, stop.
    assert len(bars) == 11 * 13 + 13


def test_png_records_its_resolution() -> None:
    image = Image.open(io.BytesIO(render_png(LABEL)))
    assert image.size == (812, 1218)
    assert tuple(round(v) for v in image.info["dpi"]) == (203, 203)


def test_pdf_page_is_4x6_inches() -> None:
    pdf = render_pdf(LABEL, 300)
    assert pdf.startswith(b"%PDF-")
    box = re.search(rb"/MediaBox \[ ?0 0 ([\d.]+) ([\d.]+) ?\]", pdf)
    assert box is not None
    assert (float(box[1]), float(box[2])) == (288.0, 432.0)  # points: 4 x 6 in


def test_bad_sscc_and_dpi_are_refused() -> None:
    with pytest.raises(ValueError, match="18 digits"):
        label_image(replace(LABEL, sscc="123"))
    with pytest.raises(ValueError, match="dpi"):
        label_image(LABEL, 600)  # type: ignore[arg-type]
