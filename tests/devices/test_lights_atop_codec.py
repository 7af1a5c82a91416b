"""The ATOP CCB codec both ways, against the byte strings of hardware-next.md §1."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from devices.lights.atop import codec
from devices.lights.atop.codec import (
    BadFrame,
    Digits,
    Event,
    Message,
    Rejected,
    Special,
    StreamDecoder,
    Sub,
    decode,
)
from devices.lights.atop.config import AtopConfig


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# -- host -> controller: the worked frames of §1.3, and every sub-command --------------------


def test_worked_frames_of_the_reference() -> None:
    assert codec.display(5, Digits.of("12")) == h("0F 00 60 00 00 00 00 05 00 00 00 00 31 32 00")
    flashing = codec.display(5, Digits.of("12"), flash=True)
    assert flashing == h("0F 00 60 00 00 00 10 05 00 00 00 00 31 32 00")
    assert codec.display(5, Digits.of("1.5")) == h("0F 00 60 00 00 00 00 05 00 00 00 00 31 35 02")
    assert codec.clear() == h("08 00 60 00 00 00 01 FC")
    assert codec.simple(Sub.LED_ON, 1) == h("08 00 60 00 00 00 02 01")
    assert codec.simple(Sub.BUZZER_OFF, 1) == h("08 00 60 00 00 00 05 01")
    assert codec.colour(3, 1) == h("0A 00 60 00 00 00 1F 03 00 01")
    assert codec.colour(3, 1, save=True) == h("0B 00 60 00 00 00 1F 03 00 01 55")
    assert codec.simple(Sub.SHORTAGE_KEY_OFF, 0xFC) == h("08 00 60 00 00 00 15 FC")
    assert codec.polling_range(120) == h("0B 00 60 00 00 00 08 78 00 00 00")
    assert codec.read_status() == h("07 00 60 00 00 00 09")
    assert codec.simple(Sub.RESET, 7) == h("08 00 60 00 00 00 14 07")


@pytest.mark.parametrize(
    "sub",
    [
        Sub.CLEAR,
        Sub.LED_ON,
        Sub.LED_OFF,
        Sub.BUZZER_ON,
        Sub.BUZZER_OFF,
        Sub.LED_FLASH,
        Sub.SHOW_ADDRESS,
        Sub.RESET,
        Sub.SHORTAGE_KEY_OFF,
        Sub.SHORTAGE_KEY_ON,
        Sub.EMULATE_CONFIRM,
        Sub.EMULATE_SHORTAGE,
        Sub.STOCK_MODE,
        Sub.PICK_MODE,
        Sub.CONFIRM_KEY_OFF,
        Sub.CONFIRM_KEY_ON,
        Sub.MODEL,
        Sub.DETAIL,
    ],
)
def test_commands_without_data_are_eight_bytes(sub: Sub) -> None:
    assert codec.simple(sub, 9) == bytes([8, 0, 0x60, 0, 0, 0, sub, 9])
    assert codec.simple(sub, 0xFC)[7] == 0xFC


def test_commands_with_data() -> None:
    assert codec.flash_interval(4, 0x02) == h("0A 00 60 00 00 00 12 04 00 02")
    assert codec.adjustable_digits(0xFC, 4) == h("09 00 60 00 00 00 1E FC 04")
    assert codec.polling_range(30, with_data=False) == h("08 00 60 00 00 00 08 1E")
    # 1Fh/01h: the manual's polarity (set = valid) and the C# client's inverted one.
    assert codec.count_digits(2, 0x0F) == h("0A 00 60 00 00 00 1F 02 01 0F")
    assert codec.count_digits(2, 0x0F, set_means_valid=False) == h("0A 00 60 00 00 00 1F 02 01 30")
    mode = codec.configure(2, codec.Configure.MODE_PERMANENT, b"\x03", save=True)
    assert mode == h("0B 00 60 00 00 00 1F 02 02 03 55")
    assert codec.configure(2, codec.Configure.BLINK, b"\x04") == h("0A 00 60 00 00 00 1F 02 04 04")
    assert codec.set_address(0xFC, 17) == h("0D 00 60 00 00 00 3A FC 40 1B 1B 10 11")
    assert codec.address_setup(2) == h("0B 00 60 00 00 00 FB FC 02 55 AA")
    assert codec.alarm_request(1) == h("09 00 60 00 00 00 F7 FC 01")


def test_display_text_right_aligned_with_dots_and_blanks() -> None:
    assert Digits.of("9999").chars == b"\x00\x009999"
    assert Digits.of("Err", blank=0x20).chars == b"   Err"
    assert Digits.of("12.3.4").dots == 0b000110
    assert Digits.of("123456").chars == b"123456"
    assert Digits.of("1.5").text() == "    1.5"
    assert Digits.of("1.5").number() == 15  # dots are not a decimal point to the key events
    assert Digits.of("Err").number() is None
    for bad in ("1234567", ".5", "1..5", "é"):
        with pytest.raises(ValueError):
            Digits.of(bad)
    with pytest.raises(ValueError):
        codec.simple(Sub.CLEAR, 201)
    with pytest.raises(ValueError):
        codec.polling_range(0)


# -- controller -> host ----------------------------------------------------------------------


def test_confirm_and_shortage_of_fifteen_and_fourteen_bytes() -> None:
    confirm = decode(h("0F 00 60 00 00 00 06 05 00 00 00 00 31 32 00"))
    assert confirm.event is Event.CONFIRM and confirm.node == 5
    assert confirm.digits is not None and confirm.digits.number() == 12
    short = decode(h("0F 00 60 00 00 00 07 05 00 00 00 00 00 38 00"))
    assert short.event is Event.SHORTAGE and short.digits is not None
    assert short.digits.number() == 8
    # The manual's prose says 14 bytes: six characters, no dot byte. Parsed by LEN.
    prose = decode(h("0E 00 60 00 00 00 06 05 00 00 00 00 31 32"))
    assert prose.digits == Digits(b"\x00\x00\x00\x0012", 0)
    for sub in (0x0F, 0x24):  # stock-mode quantity, cycle-edit confirm
        assert decode(bytes([15, 0, 0x60, 0, 0, 0, sub, 3]) + b"\x00" * 6 + b"\x00").node == 3


@pytest.mark.parametrize(
    ("raw", "event"),
    [
        ("08 00 60 00 00 00 0A 09", Event.TIMEOUT),
        ("08 00 60 00 00 00 0B 09", Event.MALFUNCTION),
        ("08 00 60 00 00 00 0C 09", Event.ILLEGAL),
        ("08 00 60 00 00 00 0D 09", Event.BUTTONS_LOCKED),
        ("08 00 60 00 00 00 0E 09", Event.RESET_OK_OLD),
    ],
)
def test_plain_events(raw: str, event: Event) -> None:
    message = decode(h(raw))
    assert (message.event, message.node) == (event, 9)


def test_status_bitmap_one_means_not_connected() -> None:
    bitmap = bytearray(32)
    bitmap[0] = 0b0000_0101  # tags 1 and 3 missing
    bitmap[24] = 0b1000_0000  # tag 200 missing
    raw = bytes([43, 0, 0x60, 0, 0, 0, 0x09, 0]) + bytes(3) + bytes(bitmap)
    assert len(raw) == 0x2B
    assert decode(raw).missing == {1, 3, 200}


def test_special_detail_model_and_alarm() -> None:
    busy = decode(h("0A 00 60 00 00 00 64 07 01 00"))
    assert busy.special is Special.BUSY_DROPPED and busy.node == 7
    key = decode(h("0A 00 60 00 00 00 64 02 00 16"))
    assert key.special is Special.KEY_CODE and key.key == 0x16
    for d0 in (0x02, 0x03, 0x04, 0x09):
        assert decode(bytes([10, 0, 0x60, 0, 0, 0, 0x64, 1, d0, 0])).special == d0
    at5 = decode(h("0D 00 60 00 00 00 FC 04 05 12 73 00 00"))
    at7 = decode(h("0F 00 60 00 00 00 FC 04 05 12 73 00 00 03 02"))
    assert at5.event is at7.event is Event.DETAIL and at7.info[5] == 3
    model = decode(b"\x10\x00\x60\x00\x00\x00\xfa\x01AT705\x00\x00\x00")
    assert model.model == "AT705"
    alarm = decode(h("0A 00 60 00 00 00 F7 FC 01 00"))
    assert alarm.event is Event.ALARM and alarm.info == b"\x01\x00"


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("0C 00 60 00 00 00 06 05 00 00 31 32", "bad_length"),
        ("09 00 60 00 00 00 0A 09 00", "bad_length"),
        ("08 00 60 00 00 00 77 01", "unknown_sub"),
        ("08 00 62 00 00 00 0A 01", "bad_header"),
        ("0F 00 60 00 00 00 06 05 00 00 00 00 31 07 00", "bad_data"),
        ("0F 00 60 00 00 00 06 05 00 00 00 00 31 32 FF", "bad_data"),
        ("0B 00 60 00 00 00 64 07 01 00 00", "bad_length"),
    ],
)
def test_frames_the_host_cannot_act_on(raw: str, kind: str) -> None:
    with pytest.raises(BadFrame) as info:
        decode(h(raw))
    assert info.value.kind == kind


# -- the stream ------------------------------------------------------------------------------

CONFIRM = h("0F 00 60 00 00 00 06 05 00 00 00 00 31 32 00")
TIMEOUT = h("08 00 60 00 00 00 0A 09")


def kinds(items: list[Message | Rejected]) -> list[str]:
    return [i.kind if isinstance(i, Rejected) else i.event.name for i in items]


def test_stream_split_anywhere_gives_the_same_messages() -> None:
    stream = CONFIRM + TIMEOUT + CONFIRM
    for cut in range(len(stream)):
        decoder = StreamDecoder()
        got = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert kinds(got) == ["CONFIRM", "TIMEOUT", "CONFIRM"], cut
    byte_by_byte = StreamDecoder()
    out: list[Message | Rejected] = []
    for b in stream:
        out += byte_by_byte.feed(bytes([b]))
    assert kinds(out) == ["CONFIRM", "TIMEOUT", "CONFIRM"]


def test_garbage_is_dropped_and_the_stream_resyncs() -> None:
    decoder = StreamDecoder()
    got = decoder.feed(b"\xff\x01\x60garbage!" + CONFIRM)
    assert kinds(got) == ["garbage", "CONFIRM"]
    assert got[0].raw == b"\xff\x01\x60garbage!"  # type: ignore[union-attr]


def test_a_truncated_ccb_followed_by_a_whole_one_loses_neither() -> None:
    decoder = StreamDecoder()
    got = decoder.feed(CONFIRM[:10] + TIMEOUT + CONFIRM)
    assert kinds(got) == ["truncated", "TIMEOUT", "CONFIRM"]
    assert got[0].raw == CONFIRM[:10]  # type: ignore[union-attr]
    # Cut short at the end of what came: held, then dropped by expire().
    assert decoder.feed(CONFIRM[:5]) == []
    assert decoder.pending == 5
    cut = decoder.expire()
    assert cut is not None and cut.kind == "truncated" and decoder.pending == 0
    assert decoder.expire() is None


def test_wrong_length_and_unknown_sub_are_rejected_whole() -> None:
    decoder = StreamDecoder()
    got = decoder.feed(h("0C 00 60 00 00 00 06 05 00 00 31 32") + h("08 00 60 00 00 00 77 01"))
    assert kinds(got) == ["bad_length", "unknown_sub"]
    assert decoder.pending == 0


# -- config ----------------------------------------------------------------------------------


def config(**changes: object) -> AtopConfig:
    base: dict[str, object] = {
        "name": "atop-1",
        "kind": "atop",
        "slots": [{"tags": "1-120", "first_id": "A-001"}, {"tag": 121, "id": "PUT-1"}],
    }
    return AtopConfig.model_validate({**base, **changes})


def test_config_ranges_and_checks() -> None:
    c = config()
    assert len(c.locations()) == 121 and c.locations()[119] == "A-120"
    assert c.tag_map()["PUT-1"] == 121
    assert c.claims() == ["tcp:10.0.50.100:4660"]
    assert config(slots=[{"tags": "1-3", "first_id": "Z9"}]).locations() == ["Z9", "Z10", "Z11"]
    bad = [
        ({"slots": [{"tags": "1-5", "first_id": "A1"}, {"tag": 5, "id": "X"}]}, "tag 5 is both"),
        ({"slots": [{"tags": "1-201", "first_id": "A1"}]}, "tags run 1..200"),
        ({"slots": [{"tags": "1-3", "first_id": "AB"}]}, "must end in a number"),
        ({"slots": [{"tags": "1-3"}]}, "needs both"),
        ({"slots": [{"tag": 1, "id": "A"}, {"tag": 2, "id": "A"}]}, "used twice"),
        ({"fast_interval": 0}, "safety cap"),
        ({"slow_interval": 8}, "not a flash interval"),
        ({"model": "at5xx", "colours": {"blue": "blue"}}, "AT5xx"),
        ({"poll_s": 5, "silent_after_s": 4}, "longer than poll_s"),
    ]
    for changes, message in bad:
        with pytest.raises(ValidationError, match=message):
            config(**changes)
