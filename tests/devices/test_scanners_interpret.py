"""Barcode interpretation: GTINs, SSCCs, GS1 element strings, plain text and garbage."""

from __future__ import annotations

import subprocess
import sys

import pytest

from devices.events import Scan
from devices.scanners.interpret import MAX_TEXT_LENGTH, interpret

GS = "\x1d"


def scan(data: str, symbology: str | None = None, gs_substitute: str | None = None) -> Scan:
    return interpret("s1", data, symbology, at=7.5, gs_substitute=gs_substitute)


@pytest.mark.parametrize(
    ("data", "symbology", "gtin"),
    [
        ("95012346", None, "00000095012346"),  # GTIN-8 (EAN-8)
        ("95012346", "]E4", "00000095012346"),
        ("036000291452", None, "00036000291452"),  # GTIN-12 (UPC-A)
        ("9501101531000", None, "09501101531000"),  # GTIN-13 (EAN-13)
        ("0036000291452", "]E0", "00036000291452"),  # UPC-A sent as 13 digits
        ("09501101531000", None, "09501101531000"),  # GTIN-14
        ("19501101531007", "]I1", "19501101531007"),  # ITF-14 with packaging indicator
        ("950110153100012", "]E3", "09501101531000"),  # EAN-13 with a 2-digit add-on
        ("04252614", None, "00042100005264"),  # UPC-E, expanded
    ],
)
def test_valid_gtins_are_normalised_to_14_digits(data, symbology, gtin):
    result = scan(data, symbology)
    assert result == Scan("s1", data, symbology, gtin=gtin, at=7.5)


@pytest.mark.parametrize(
    ("data", "symbology", "error"),
    [
        ("95012345", None, "bad GTIN check digit in 95012345: expected 6, got 5"),
        ("036000291453", None, "bad GTIN check digit in 036000291453: expected 2, got 3"),
        ("9501101531001", None, "bad GTIN check digit in 9501101531001: expected 0, got 1"),
        ("9501101531001", "]E0", "bad GTIN check digit in 9501101531001: expected 0, got 1"),
        ("09501101531009", None, "bad GTIN check digit in 09501101531009: expected 0, got 9"),
        ("ABC123", "]E0", "]E0 says GTIN, but 'ABC123' is not 8, 12, 13 or 14 digits"),
    ],
)
def test_bad_gtin_check_digits_are_errors_never_matches(data, symbology, error):
    result = scan(data, symbology)
    assert result.error == error
    assert result.gtin is None
    assert result.fields == {}
    assert result.text == data


def test_sscc_bare_and_as_ai_00():
    assert scan("106141412345678908") == Scan(
        "s1", "106141412345678908", sscc="106141412345678908", at=7.5
    )
    result = scan("00106141412345678908", "]C1")
    assert result.sscc == "106141412345678908"
    assert result.fields == {"00": "106141412345678908"}
    assert result.error is None


@pytest.mark.parametrize("data", ["106141412345678909", "00106141412345678909"])
def test_sscc_bad_check_digit_is_an_error(data):
    result = scan(data)
    assert result.sscc is None
    assert result.error is not None
    assert "bad SSCC check digit in 106141412345678909: expected 8, got 9" in result.error


GS1_128 = "010950110153100031030012501726123110LOT42" + GS + "21SN0001"
GS1_FIELDS = {
    "01": "09501101531000",
    "3103": "001250",
    "17": "261231",
    "10": "LOT42",
    "21": "SN0001",
}


@pytest.mark.parametrize("symbology", ["]C1", "]d2", "]Q3", "]e0", None])
def test_gs1_element_string_with_gs_separator(symbology):
    result = scan(GS1_128, symbology)
    assert result == Scan(
        "s1", GS1_128, symbology, gtin="09501101531000", fields=GS1_FIELDS, at=7.5
    )


def test_gs1_with_a_printable_gs_substitute_maps_to_gs():
    sent = GS1_128.replace(GS, "^")
    result = scan(sent, "]C1", gs_substitute="^")
    assert result.text == GS1_128
    assert result.fields == GS1_FIELDS
    assert result.error is None
    # Without an identifier the GS1 shape (AI 01 first) decides.
    assert scan(sent, None, gs_substitute="^").fields == GS1_FIELDS


def test_gs_substitute_is_left_alone_in_plain_text():
    assert scan("A^B", None, gs_substitute="^") == Scan("s1", "A^B", at=7.5)


def test_without_a_separator_a_variable_field_swallows_the_rest():
    # Documents why GS matters: (10) runs to the end and (21) becomes part of the lot.
    result = scan("010950110153100010LOT4221SN0001", "]C1")
    assert result.fields == {"01": "09501101531000", "10": "LOT4221SN0001"}


def test_logistic_label_ais_00_02_37():
    data = "0010614141234567890802095011015310003712" + GS + "10LOT42"
    result = scan(data, "]C1")
    assert result.error is None
    assert result.sscc == "106141412345678908"
    assert result.gtin is None  # AI 02 names the contents; it stays in fields
    assert result.fields == {
        "00": "106141412345678908",
        "02": "09501101531000",
        "37": "12",
        "10": "LOT42",
    }


@pytest.mark.parametrize(
    ("data", "error_part"),
    [
        ("010950110153100110LOT", "AI (01): bad GTIN check digit in 09501101531001"),
        ("02095011015310013712", "AI (02): bad GTIN check digit in 09501101531001"),
        ("010950110153100017261399", "not a valid GS1 element string"),  # no 99th day
        ("0109501101531", "not a valid GS1 element string"),  # GTIN cut short
        ("LOT42", "not a valid GS1 element string"),
        ("010950110153100010A" + GS + "10B", "AI (10) appears twice with different values"),
    ],
)
def test_invalid_gs1_data_is_an_error(data, error_part):
    result = scan(data, "]C1")
    assert result.error is not None
    assert error_part in result.error
    assert result.gtin is None
    assert result.fields == {}


def test_real_gs_forces_gs1_even_without_an_identifier():
    result = scan("HELLO" + GS + "WORLD")
    assert result.error is not None
    assert result.error.startswith("not a valid GS1 element string")


@pytest.mark.parametrize(
    ("data", "symbology"),
    [
        ("A-01-03", None),
        ("BADGE-0042", None),
        ("CODE39 TEXT-$/+%", "]A0"),
        ("ORDER-2026-000017", "]C0"),
        ("12345", None),  # numeric, not a GTIN length: an internal number
        ("123456789", None),
        ("0123456789", None),  # starts like AI 01 but is not GS1
        ("1234567890123456789012", None),
        ("9501101531001", "]C0"),  # plain Code 128 says it is text, not a GTIN
        ("https://example.com/pick?id=7", None),
    ],
)
def test_plain_codes_pass_through_as_text(data, symbology):
    assert scan(data, symbology) == Scan("s1", data, symbology, at=7.5)


def test_gs1_digital_link_is_read_as_element_strings():
    result = scan("https://id.gs1.org/01/09501101531000/10/LOT42")
    assert result.gtin == "09501101531000"
    assert result.fields == {"01": "09501101531000", "10": "LOT42"}


@pytest.mark.parametrize(
    ("data", "text", "error"),
    [
        ("", "", "empty read (a terminator with no data)"),
        ("AB\x07C", "AB\\x07C", "control character 0x07 at position 2"),
        ("\x00\x00", "\\x00\\x00", "control character 0x00 at position 0"),
        ("OK\udcffX", "OK\\xffX", "byte 0xff at position 2 is not valid text"),
        ("A\x7f", "A\\x7f", "control character 0x7f at position 1"),
    ],
)
def test_garbage_is_an_error_with_printable_text(data, text, error):
    assert scan(data) == Scan("s1", text, error=error, at=7.5)


def test_absurdly_long_data_is_an_error_and_cut_short():
    result = scan("9" * (MAX_TEXT_LENGTH + 1))
    assert (
        result.error == f"{MAX_TEXT_LENGTH + 1} characters is longer than any barcode (limit 4096)"
    )
    assert result.text == "9" * 40 + "..."


def test_surrounding_spaces_are_ignored():
    assert scan(" 9501101531000 ").gtin == "09501101531000"


def test_biip_parses_without_loading_its_company_prefix_table() -> None:
    """A fresh interpreter: interpret() parses GS1 and GTINs, and the ~20 MB table stays out."""
    code = (
        "from devices.scanners.interpret import interpret\n"
        "from devices.scanners import gs1lib\n"
        "import biip.gs1_prefixes as p, biip.gtin as g\n"
        "s = interpret('s', '0109506000134352\\x1d10AB12', ']C1', at=0.0)\n"
        "assert s.gtin == '09506000134352' and s.fields['10'] == 'AB12', s\n"
        "assert interpret('s', '4006381333931', None, at=0.0).gtin == '04006381333931'\n"
        "assert interpret('s', '4006381333932', None, at=0.0).error\n"
        "gtin = g.Gtin.parse('4006381333931')\n"
        "assert gtin.prefix is not None and gtin.prefix.usage, gtin\n"
        "assert gtin.company_prefix is None, gtin\n"
        "assert p._GS1_COMPANY_PREFIX_TRIE == {}\n"
        "assert not gs1lib.company_prefix_table_loaded()\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
