"""What a scan is: a GTIN-14 whatever the symbology, and whether it is one of a line's codes.

Shared by every role that scans items (picking, put wall, packing, dispatch, returns).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from devices.events import Scan

_GTIN_IN_TEXT = re.compile(r"^\(?01\)?(\d{14})")


def gtin14(code: str) -> str | None:
    """``code`` as a 14-digit GTIN when it is one (EAN-8/UPC-A/EAN-13/GTIN-14, or AI 01)."""
    if code.isdigit() and len(code) in (8, 12, 13, 14):
        return code.zfill(14)
    match = _GTIN_IN_TEXT.match(code)
    if match is not None and not code.isdigit():
        return match.group(1)
    return None


def scan_matches(scan: Scan, barcodes: Iterable[str]) -> bool:
    """Whether ``scan`` is one of ``barcodes``: same text, or the same GTIN-14."""
    gtin = scan.gtin or gtin14(scan.text)
    for barcode in barcodes:
        if scan.text == barcode:
            return True
        if gtin is not None and gtin14(barcode) == gtin:
            return True
    return False
