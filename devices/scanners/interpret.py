"""What a barcode means: GS1 element strings, GTINs, SSCCs, or plain text.

``interpret`` is a pure function shared by every scanner driver. It never raises: data it
cannot trust comes back as a ``Scan`` whose ``error`` says why, so a misread never matches
an item.

The rules, in order:

1. Garbage is an error: empty data, more than ``MAX_TEXT_LENGTH`` characters, or control
   characters other than GS (0x1D), including bytes that were not valid in the encoding.
2. A GS1 symbology identifier (``]C1`` GS1-128, ``]e0`` DataBar, ``]d2`` DataMatrix, ``]Q3``
   QR, ``]J1`` DotCode) says the data *is* a GS1 element string: it must parse.
3. An EAN/UPC identifier (``]E0``, ``]E3``, ``]E4``, ``]I1``) says the data *is* a GTIN.
4. Any other identifier (``]C0``, ``]A0``, ``]Q1``, ...) says the data is plain text.
5. Without an identifier (most scanners ship with them off) the data itself decides:

   * all digits, 8/12/13/14 long: a GTIN (an 8-digit UPC-E is accepted when it is not a
     valid GTIN-8); a wrong check digit is an error, because these lengths are what EAN/UPC
     symbols carry and a misread must never pass as another number;
   * all digits, 18 long: an SSCC, check digit verified the same way;
   * contains a real GS: only GS1 uses GS, so it must parse as an element string;
   * starts with AI 00, 01 or 02 and parses as an element string (``gs_substitute`` read
     as GS): GS1, a GS1-128 read without its identifier;
   * anything else, including other numeric strings (order numbers, ``12345``): plain text.

Within GS1 data, check digits of AI 00, 01 and 02 are verified, dates must be real dates,
and an AI repeated with different values is an error. ``Scan.gtin`` comes from AI 01 only:
AI 02 names the *contents* of a logistic unit and stays in ``fields``.
"""

from __future__ import annotations

import re
import unicodedata

from devices.events import Scan
from devices.scanners.gs1lib import (
    GS1DigitalLinkURI,
    GS1Message,
    Gtin,
    ParseConfig,
    ParseError,
    Upc,
    gs1_standard_check_digit,
)

GS = "\x1d"
MAX_TEXT_LENGTH = 4096
"""Longer than any symbology carries (a GS1 DataMatrix holds at most ~2300 characters)."""

GS1_MESSAGE_SYMBOLOGIES = frozenset({"]C1", "]e0", "]e1", "]e2", "]d2", "]Q3", "]J1"})
GTIN_SYMBOLOGIES = frozenset({"]E0", "]E3", "]E4", "]I1"})
GTIN_LENGTHS = (8, 12, 13, 14)
SSCC_LENGTH = 18
# Without a symbology identifier, only these AIs make a string "look like" GS1: they are the
# keys warehouse labels start with, and each carries a check digit that confirms the guess.
_GS1_LEADING_AIS = ("00", "01", "02")
_CHECKED_AIS = {"00": "SSCC", "01": "GTIN", "02": "GTIN"}
_PREVIEW = 40
_DIGITS = re.compile(r"[0-9]+")


def interpret(
    device: str,
    data: str,
    symbology: str | None,
    *,
    at: float,
    gs_substitute: str | None = None,
) -> Scan:
    """Interpret one barcode read.

    Args:
        device: the scanner's name, copied into the scan.
        data: the read with prefix, suffix, terminator and symbology identifier removed.
        symbology: the AIM identifier the scanner sent (``"]C1"``), or ``None``.
        at: monotonic time of the read, copied into the scan.
        gs_substitute: a printable stand-in the scanner sends for GS (keyboard wedges cannot
            type GS); it is read as GS when the data is GS1, and left alone in plain text.

    Returns:
        The scan; ``error`` is set when the code cannot be trusted, never an exception.
    """
    data = data.strip(" ")
    garbage = _garbage_reason(data)
    if garbage is not None:
        return Scan(device, _printable(data), symbology, error=garbage, at=at)

    if symbology in GS1_MESSAGE_SYMBOLOGIES:
        text = _with_gs(data, gs_substitute)
        return _gs1_scan(device, text, symbology, at)
    if symbology in GTIN_SYMBOLOGIES:
        return _gtin_scan(device, data, symbology, at)
    if symbology is not None:
        return Scan(device, data, symbology, at=at)

    if _DIGITS.fullmatch(data):
        if len(data) in GTIN_LENGTHS:
            return _gtin_scan(device, data, None, at)
        if len(data) == SSCC_LENGTH:
            return _sscc_scan(device, data, at)
    text = _with_gs(data, gs_substitute)
    if GS in data:
        return _gs1_scan(device, text, None, at)
    if text.startswith(_GS1_LEADING_AIS):
        elements = _gs1_elements(text)
        if not isinstance(elements, str):
            return _element_strings_scan(device, text, None, at, elements)
        # It does not parse as GS1 at all: an internal code that happens to start with 0.
    if data.startswith(("http://", "https://")):
        return _digital_link_scan(device, data, at)
    return Scan(device, data, None, at=at)


def _garbage_reason(data: str) -> str | None:
    if not data:
        return "empty read (a terminator with no data)"
    if len(data) > MAX_TEXT_LENGTH:
        return f"{len(data)} characters is longer than any barcode (limit {MAX_TEXT_LENGTH})"
    for position, char in enumerate(data):
        if char == GS:
            continue
        if 0xDC80 <= ord(char) <= 0xDCFF:  # a byte that did not decode (surrogateescape)
            return f"byte 0x{ord(char) - 0xDC00:02x} at position {position} is not valid text"
        if unicodedata.category(char) in ("Cc", "Cs", "Co", "Cn"):
            return f"control character 0x{ord(char):02x} at position {position}"
    return None


def _printable(data: str) -> str:
    """The data with control characters escaped and cut short, safe to log and publish."""
    shown = data[:_PREVIEW]
    out = []
    for char in shown:
        code = ord(char)
        if char == GS or char.isprintable():
            out.append(char)
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}")
    return "".join(out) + ("..." if len(data) > _PREVIEW else "")


def _with_gs(data: str, gs_substitute: str | None) -> str:
    return data.replace(gs_substitute, GS) if gs_substitute else data


def _check_digit_error(kind: str, number: str) -> str | None:
    expected = gs1_standard_check_digit(number[:-1])
    if int(number[-1]) == expected:
        return None
    return f"bad {kind} check digit in {number}: expected {expected}, got {number[-1]}"


def _gtin_scan(device: str, data: str, symbology: str | None, at: float) -> Scan:
    number = data
    if symbology == "]E3" and _DIGITS.fullmatch(data) and len(data) in (15, 18):
        number = data[:13]  # EAN-13 followed by its 2- or 5-digit add-on
    if not _DIGITS.fullmatch(number) or len(number) not in GTIN_LENGTHS:
        why = f"{symbology} says GTIN, but {_printable(data)!r} is not 8, 12, 13 or 14 digits"
        return Scan(device, data, symbology, error=why, at=at)
    error = _check_digit_error("GTIN", number)
    if error is not None and len(number) == 8:
        upc_e = _upc_e_as_gtin(number)
        if upc_e is not None:
            return Scan(device, data, symbology, gtin=upc_e, at=at)
    if error is not None:
        return Scan(device, data, symbology, error=error, at=at)
    gtin = Gtin.parse(number).as_gtin_14()
    return Scan(device, data, symbology, gtin=gtin, at=at)


def _upc_e_as_gtin(number: str) -> str | None:
    try:
        return Upc.parse(number).as_gtin_14()
    except ParseError:
        return None


def _sscc_scan(device: str, data: str, at: float) -> Scan:
    error = _check_digit_error("SSCC", data)
    if error is not None:
        return Scan(device, data, None, error=error, at=at)
    return Scan(device, data, None, sscc=data, at=at)


def _gs1_elements(text: str) -> list[tuple[str, str]] | str:
    """The (AI, value) pairs of a GS1 element string, or why it is not one."""
    try:
        message = GS1Message.parse(text, config=ParseConfig(separator_chars=(GS,)))
    except ParseError as exc:
        return f"not a valid GS1 element string: {exc}"
    return [(e.ai.ai, e.value) for e in message.element_strings]


def _gs1_scan(device: str, text: str, symbology: str | None, at: float) -> Scan:
    elements = _gs1_elements(text)
    if isinstance(elements, str):
        return Scan(device, text, symbology, error=elements, at=at)
    return _element_strings_scan(device, text, symbology, at, elements)


def _element_strings_scan(
    device: str, text: str, symbology: str | None, at: float, elements: list[tuple[str, str]]
) -> Scan:
    fields: dict[str, str] = {}
    for ai, value in elements:
        if ai in fields and fields[ai] != value:
            why = f"AI ({ai}) appears twice with different values"
            return Scan(device, text, symbology, error=why, at=at)
        fields[ai] = value
        kind = _CHECKED_AIS.get(ai)
        error = _check_digit_error(kind, value) if kind else None
        if error is not None:
            return Scan(device, text, symbology, error=f"AI ({ai}): {error}", at=at)
    return Scan(
        device,
        text,
        symbology,
        gtin=fields.get("01"),
        sscc=fields.get("00"),
        fields=fields,
        at=at,
    )


def _digital_link_scan(device: str, data: str, at: float) -> Scan:
    try:
        link = GS1DigitalLinkURI.parse(data)
    except (ParseError, ValueError):
        return Scan(device, data, None, at=at)  # an ordinary URL is plain text
    elements = [(e.ai.ai, e.value) for e in link.element_strings]
    return _element_strings_scan(device, data, None, at, elements)
