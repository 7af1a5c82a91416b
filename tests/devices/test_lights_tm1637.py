import pytest

from devices.lights.tm1637 import (
    BusDecoder,
    DisplayState,
    decode_segments,
    encode_text,
    update_transactions,
    write_transaction,
)


class RecordingBus:
    """Two lines that log level changes, in order, like tapped mock pins."""

    def __init__(self) -> None:
        self.levels = {"clk": True, "dio": True}
        self.changes: list[tuple[str, bool]] = []

    def _set(self, line: str, level: bool) -> None:
        if self.levels[line] != level:
            self.levels[line] = level
            self.changes.append((line, level))

    def clk(self, level: bool) -> None:
        self._set("clk", level)

    def dio(self, level: bool) -> None:
        self._set("dio", level)

    def close(self) -> None:
        pass


def test_encode_text_exact_segments():
    assert encode_text("  12") == bytes([0x00, 0x00, 0x06, 0x5B])
    assert encode_text("Err") == bytes([0x79, 0x50, 0x50, 0x00])
    assert encode_text("1.5") == bytes([0x86, 0x6D, 0x00, 0x00])
    with pytest.raises(ValueError):
        encode_text("12345")
    with pytest.raises(ValueError):
        encode_text("#")


def test_decode_segments_reads_back_text():
    for text in ("  12", "Err ", "donE", "Prio", "9999"):
        assert decode_segments(encode_text(text)) == text


def test_update_transactions_are_the_datasheet_commands():
    assert update_transactions(encode_text("  42"), 4) == [
        b"\x40",
        bytes([0xC0, 0x00, 0x00, 0x66, 0x5B]),
        b"\x8c",
    ]
    assert update_transactions(None, 4)[-1] == b"\x80"


def test_bitbang_wire_order_lsb_first():
    bus = RecordingBus()
    write_transaction(bus, b"\x01")
    # start, then bit0=1 clocked, seven 0 bits, ack clock, stop
    assert bus.changes[:5] == [
        ("dio", False),
        ("clk", False),
        ("dio", True),
        ("clk", True),
        ("clk", False),
    ]
    assert bus.changes[-2:] == [("clk", True), ("dio", True)]


def test_bitbang_round_trips_through_decoder():
    bus = RecordingBus()
    for data in update_transactions(encode_text("  12"), 7):
        write_transaction(bus, data)
    decoder = BusDecoder()
    for line, level in bus.changes:
        decoder.feed(line, level)
    assert decoder.transactions == [b"\x40", bytes([0xC0, 0, 0, 0x06, 0x5B]), b"\x8f"]
    state = DisplayState()
    state.apply(decoder.transactions)
    assert (state.on, state.brightness, state.text) == (True, 7, "  12")


def test_decoder_counts_a_broken_transaction_and_carries_on():
    decoder = BusDecoder()
    decoder.feed("dio", False)  # start
    decoder.feed("clk", False)
    for _ in range(4):  # half a byte
        decoder.feed("clk", True)
        decoder.feed("clk", False)
    decoder.feed("clk", True)
    decoder.feed("dio", True)  # stop
    assert decoder.errors == 1 and decoder.transactions == []
    bus = RecordingBus()
    write_transaction(bus, b"\x88")
    for line, level in bus.changes:
        decoder.feed(line, level)
    assert decoder.transactions == [b"\x88"]
