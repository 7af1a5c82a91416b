"""The TM1637 4-digit 7-segment display of a slot: encoding, bit-banging and decoding.

The TM1637 speaks a two-wire bus that looks like I2C but is not: no address, bytes go
LSB first, the chip acknowledges each byte by pulling DIO low on a ninth clock. One
display update is three transactions: ``0x40`` (write data, auto-increment), ``0xC0``
followed by the four segment bytes (address 0 = leftmost digit), then ``0x88 | brightness``
(display on) or ``0x80`` (display off).

We drive both lines push-pull through two GPIO outputs (``devices.backends.gpio``) and
never read the acknowledge: before the ninth clock we drive DIO low ourselves, which is
what the chip does anyway, so the two never fight. Python pin writes take tens of
microseconds on a Pi, well below the chip's ~250 kHz maximum clock, so no delays are added.

Simulation choice: the simulator decodes the bit-banged bus from the ordered CLK/DIO level
changes of the mock pins (``decode_transactions``), so the real driver code path runs and
the test sees what a chip would have latched. Segment bits: ``0x01`` a (top) ... ``0x40``
g (middle), ``0x80`` the point/colon.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger("devices")

DIGITS = 4
CMD_DATA_AUTO = 0x40
CMD_ADDRESS = 0xC0
CMD_DISPLAY_OFF = 0x80
CMD_DISPLAY_ON = 0x88

_SEGMENTS: dict[str, int] = {
    "0": 0x3F,
    "1": 0x06,
    "2": 0x5B,
    "3": 0x4F,
    "4": 0x66,
    "5": 0x6D,
    "6": 0x7D,
    "7": 0x07,
    "8": 0x7F,
    "9": 0x6F,
    " ": 0x00,
    "-": 0x40,
    "_": 0x08,
    "A": 0x77,
    "b": 0x7C,
    "C": 0x39,
    "c": 0x58,
    "d": 0x5E,
    "E": 0x79,
    "F": 0x71,
    "G": 0x3D,
    "H": 0x76,
    "h": 0x74,
    "i": 0x04,
    "J": 0x1E,
    "L": 0x38,
    "n": 0x54,
    "o": 0x5C,
    "P": 0x73,
    "q": 0x67,
    "r": 0x50,
    "t": 0x78,
    "U": 0x3E,
    "u": 0x1C,
    "y": 0x6E,
}
# Letters that look like digits (O, S, I, Z, g) are drawn as those digits.
_ALIASES = {"O": "0", "S": "5", "s": "5", "I": "1", "l": "1", "Z": "2", "z": "2", "g": "9"}
_CHARS: dict[int, str] = {}
for _char, _bits in _SEGMENTS.items():
    _CHARS.setdefault(_bits, _char)


def char_segments(char: str) -> int:
    """The segment bits of one character; raises ``ValueError`` if it cannot be drawn."""
    for candidate in (char, _ALIASES.get(char, ""), char.swapcase()):
        if candidate in _SEGMENTS:
            return _SEGMENTS[candidate]
    raise ValueError(f"character {char!r} cannot be shown on a 7-segment display")


def encode_text(text: str) -> bytes:
    """The four segment bytes showing ``text`` (a ``.`` lights the previous digit's point)."""
    cells: list[int] = []
    for char in text:
        if char == "." and cells:
            cells[-1] |= 0x80
            continue
        cells.append(char_segments(char))
    if len(cells) > DIGITS:
        raise ValueError(f"{text!r} needs {len(cells)} digits, the display has {DIGITS}")
    return bytes(cells + [0] * (DIGITS - len(cells)))


def decode_segments(segments: bytes) -> str:
    """The text a person reads from segment bytes (``?`` for a pattern that is no glyph)."""
    out = []
    for cell in segments:
        out.append(_CHARS.get(cell & 0x7F, "?"))
        if cell & 0x80:
            out.append(".")
    return "".join(out)


def update_transactions(segments: bytes | None, brightness: int) -> list[bytes]:
    """The bus transactions that show ``segments``, or blank the display for ``None``."""
    if not 0 <= brightness <= 7:
        raise ValueError(f"brightness must be 0..7, got {brightness}")
    if segments is None:
        return [
            bytes([CMD_DATA_AUTO]),
            bytes([CMD_ADDRESS, 0, 0, 0, 0]),
            bytes([CMD_DISPLAY_OFF]),
        ]
    return [
        bytes([CMD_DATA_AUTO]),
        bytes([CMD_ADDRESS, *segments]),
        bytes([CMD_DISPLAY_ON | brightness]),
    ]


class TwoWire(Protocol):
    """The two lines of the bus (``devices.backends.gpio.TwoWireOutputs``)."""

    def clk(self, level: bool) -> None:
        """Set the clock line."""

    def dio(self, level: bool) -> None:
        """Set the data line."""

    def close(self) -> None:
        """Release the lines."""


def write_transaction(bus: TwoWire, data: bytes) -> None:
    """Bit-bang one transaction: start, each byte LSB first plus the ack clock, stop."""
    bus.dio(False)  # start: DIO falls while CLK is high
    bus.clk(False)
    for byte in data:
        for bit in range(8):
            bus.dio(bool(byte >> bit & 1))
            bus.clk(True)
            bus.clk(False)
        bus.dio(False)  # the chip pulls DIO low to acknowledge; match it instead of fighting
        bus.clk(True)
        bus.clk(False)
    bus.clk(True)  # stop: DIO rises while CLK is high
    bus.dio(True)


@dataclass
class BusDecoder:
    """Decodes TM1637 transactions from the ordered level changes of CLK and DIO.

    Feed it ``(line, level)`` pairs with ``line`` ``"clk"`` or ``"dio"``; completed
    transactions collect in ``transactions``, broken ones are counted in ``errors``.
    """

    clk: bool = True
    dio: bool = True
    transactions: list[bytes] = field(default_factory=list)
    errors: int = 0
    _bits: list[int] | None = None

    def feed(self, line: str, level: bool) -> None:
        """Apply one level change."""
        if line == "clk":
            rising = level and not self.clk
            self.clk = level
            if rising and self._bits is not None:
                self._bits.append(int(self.dio))
            return
        falling, rising = self.dio and not level, level and not self.dio
        self.dio = level
        if not self.clk:
            return
        if falling:
            self._bits = []
        elif rising and self._bits is not None:
            bits, self._bits = self._bits, None
            whole = len(bits) // 9 * 9
            # A stop is preceded by one clock with DIO low, which is not part of a byte.
            if len(bits) - whole > 1 or whole == 0:
                self.errors += 1
                return
            self.transactions.append(
                bytes(
                    sum(bit << i for i, bit in enumerate(bits[start : start + 8]))
                    for start in range(0, whole, 9)
                )
            )


@dataclass
class DisplayState:
    """What a TM1637 shows after the transactions it received."""

    segments: bytearray = field(default_factory=lambda: bytearray(6))
    on: bool = False
    brightness: int = 0
    ignored: int = 0

    def apply(self, transactions: Iterable[bytes]) -> None:
        """Update the state as the chip would; unknown commands are counted and skipped."""
        for data in transactions:
            command = data[0]
            if command & 0xC0 == 0x40:
                continue  # data setting: we only ever use write with auto-increment
            if command & 0xC0 == 0xC0:
                address = command & 0x0F
                for offset, value in enumerate(data[1:]):
                    if address + offset < len(self.segments):
                        self.segments[address + offset] = value
            elif command & 0xC0 == 0x80:
                self.on = bool(command & 0x08)
                self.brightness = command & 0x07
            else:
                self.ignored += 1

    @property
    def text(self) -> str | None:
        """The four digits as read, or ``None`` when the display is off or blank."""
        cells = bytes(self.segments[:DIGITS])
        if not self.on or not any(cells):
            return None
        return decode_segments(cells)


class Tm1637:
    """One TM1637 display on a clock/data pair.

    Args:
        bus: the two output lines (built by ``devices.backends.gpio.TwoWireOutputs``).
        brightness: 0 (dim) .. 7 (bright).

    Example::

        display = Tm1637(TwoWireOutputs(clk=5, dio=6, factory=factory), brightness=4)
        await display.show("  12")
        await display.show(None)  # blank
    """

    def __init__(self, bus: TwoWire, brightness: int = 4) -> None:
        self._bus = bus
        self._brightness = brightness
        self._lock = threading.Lock()

    def show_blocking(self, text: str | None) -> None:
        """Show ``text`` (up to four characters) or blank for ``None``; blocks briefly."""
        segments = None if text is None or not text.strip() else encode_text(text)
        with self._lock:
            for data in update_transactions(segments, self._brightness):
                write_transaction(self._bus, data)

    async def show(self, text: str | None) -> None:
        """Show ``text`` or blank the display, without blocking the loop."""
        await asyncio.to_thread(self.show_blocking, text)

    def close(self) -> None:
        """Release the lines (blank the display first with ``show(None)``)."""
        with self._lock:
            self._bus.close()
