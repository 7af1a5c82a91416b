"""The ATOP AblePick host protocol (AT500 / AT400 controllers), both ways, as bytes.

Facts from the ATOP "ABLEPick Pick-to-light Communication Protocol User Manual V2.4"
(§4.1 CCB layout, the sub-command tables) as transcribed in
/work/shared/reference/hardware-next.md §1. Every message is a CCB (communication control
block), with no other framing and no checksum::

    off 0  CCB LEN(L)   whole length, the two length bytes included
        1  CCB LEN(H)   00h in practice
        2  MESSAGE TYPE 60h (port 1; AT400's RS-232 port 2 is 61h)
        3-5 reserved    00h 00h 00h
        6  SUB-COMMAND
        7  SUB-NODE     tag address 01h..C8h, FCh = every tag of the controller
        8.. DATA

(a ``09h`` *request* has no SUB-NODE byte: 7 bytes). The stream is framed by the length
field alone, so ``StreamDecoder`` parses by it, checks what the manual fixes (message type,
reserved bytes, a length that fits the sub-command) and re-synchronises after garbage by
dropping one byte at a time until a plausible header starts the buffer.

Where the manual and the two known implementations disagree (hardware-next.md §1.6) the
choice is a parameter whose default is the manual's: the 08h polling-range length, the
blank character, the 1Fh/01h digit-mask polarity; replies are parsed by their LEN, so a
14- or 15-byte confirm both parse.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

MESSAGE_TYPE = 0x60
"""Port 1 (AT500 always; AT400's RS-232 port is 61h)."""
MESSAGE_TYPES = frozenset({0x60, 0x61})
BROADCAST = 0xFC
"""SUB-NODE of a command to every tag of a controller."""
MAX_TAG = 0xC8
"""Highest tag address the manual's §4.1 allows (200)."""
HEADER = 8
"""Bytes before DATA: length (2), message type, 3 reserved, sub-command, sub-node."""
MAX_FRAME = 64
"""No CCB of the protocol is longer (the 09h bitmap reply is 43); a larger LEN is garbage."""
DIGITS = 6
"""Characters of an AT50x/AT70x display (D0 = leftmost ... D5 = rightmost)."""
EEPROM_SAVE = 0x55
"""DATA byte asking a tag to store a setting in EEPROM (limited write cycles)."""


class Sub(enum.IntEnum):
    """Sub-commands host -> controller (manual §4.3)."""

    DISPLAY = 0x00
    CLEAR = 0x01
    LED_ON = 0x02
    LED_OFF = 0x03
    BUZZER_ON = 0x04
    BUZZER_OFF = 0x05
    POLLING_RANGE = 0x08
    READ_STATUS = 0x09
    DISPLAY_FLASH = 0x10
    LED_FLASH = 0x11
    FLASH_INTERVAL = 0x12
    SHOW_ADDRESS = 0x13
    RESET = 0x14
    SHORTAGE_KEY_OFF = 0x15
    SHORTAGE_KEY_ON = 0x16
    EMULATE_CONFIRM = 0x17
    EMULATE_SHORTAGE = 0x18
    STOCK_MODE = 0x19
    PICK_MODE = 0x1A
    CONFIRM_KEY_OFF = 0x1B
    CONFIRM_KEY_ON = 0x1C
    ADJUSTABLE_DIGITS = 0x1E
    CONFIGURE = 0x1F
    SET_ADDRESS = 0x3A
    ADDRESS_SETUP = 0xFB
    MODEL = 0xFA
    DETAIL = 0xFC
    ALARM = 0xF7


class Configure(enum.IntEnum):
    """D0 of a 1Fh tag configuration: which item it sets (manual p=29-30; C# for 04h-0Fh)."""

    COLOUR = 0x00
    COUNT_DIGITS = 0x01
    MODE_PERMANENT = 0x02
    MODE_TEMPORARY = 0x03
    BLINK = 0x04
    DIGIT_BLINK = 0x05
    BRIGHTNESS = 0x06
    SPECIAL_1 = 0x0A
    SPECIAL_2 = 0x0F


class Event(enum.IntEnum):
    """Sub-commands controller -> host (manual §4.4)."""

    CONFIRM = 0x06
    SHORTAGE = 0x07
    STATUS = 0x09
    TIMEOUT = 0x0A
    MALFUNCTION = 0x0B
    ILLEGAL = 0x0C
    BUTTONS_LOCKED = 0x0D
    RESET_OK_OLD = 0x0E
    STOCK_QTY = 0x0F
    CYCLE_CONFIRM = 0x24
    SPECIAL = 0x64
    ALARM = 0xF7
    MODEL = 0xFA
    DETAIL = 0xFC


class Special(enum.IntEnum):
    """D0 of a 64h special return (manual p=41-42)."""

    KEY_CODE = 0x00
    BUSY_DROPPED = 0x01
    BUFFER_FULL = 0x02
    LAST_BUFFERED = 0x03
    FUNCTION_KEY = 0x04


class TagColour(enum.IntEnum):
    """1Fh/00h D1 LED colour codes. AT5xx knows 00-02 (03 = LED off); AT7xx all six."""

    RED = 0x00
    GREEN = 0x01
    ORANGE = 0x02
    BLUE = 0x03
    PINK = 0x04
    CYAN = 0x05


AT5XX_COLOURS = frozenset({TagColour.RED, TagColour.GREEN, TagColour.ORANGE})
"""The three colours of AT5xx tags (03h turns their LED off instead of blue)."""

FLASH_INTERVALS: dict[int, float] = {0x00: 0.25, 0x01: 0.25, 0x02: 0.5, 0x03: 0.5}
FLASH_INTERVALS.update({code: 1.0 for code in range(0x04, 0x08)})
"""12h D1 code -> seconds, as the manual prints it for 00h-07h. 08h and above are
0.25 s in the manual excerpt and "2 s" in the C# client: UNCONFIRMED, so not listed."""


# -- small helpers --------------------------------------------------------------------------


def frame(sub: int, node: int | None, data: bytes = b"", message_type: int = MESSAGE_TYPE) -> bytes:
    """One CCB: header, ``sub``, ``node`` (``None``: no SUB-NODE byte, as 09h) and ``data``."""
    body = bytes([message_type, 0, 0, 0, sub]) + (b"" if node is None else bytes([node])) + data
    length = len(body) + 2
    return bytes([length & 0xFF, length >> 8]) + body


def hexdump(data: bytes) -> str:
    """``data`` as spaced upper-case hex (``0F 00 60 ...``), for logs."""
    return data.hex(" ").upper()


def check_node(node: int) -> int:
    """``node`` if it is a tag address 1..200 or the broadcast FCh, else ``ValueError``."""
    if not (1 <= node <= MAX_TAG or node == BROADCAST):
        raise ValueError(f"tag address must be 1..{MAX_TAG} or FCh, got {node}")
    return node


@dataclass(frozen=True, slots=True)
class Digits:
    """What a six-digit display shows: six character bytes (D0 leftmost) and the dot mask.

    ``dots`` bit 0 is the rightmost (1st) digit's dot, bit 5 the leftmost's.
    """

    chars: bytes
    dots: int = 0

    def __post_init__(self) -> None:
        if len(self.chars) != DIGITS:
            raise ValueError(f"a display has {DIGITS} characters, got {len(self.chars)}")
        if not 0 <= self.dots <= 0x3F:
            raise ValueError(f"dot mask must be 00h..3Fh, got {self.dots:#x}")

    @classmethod
    def of(cls, text: str, blank: int = 0x00) -> Digits:
        """``text`` right-aligned, a ``.`` lighting the dot of the character before it.

        ``"12"`` -> ``00 00 00 00 31 32``; ``"1.5"`` -> ``... 31 35`` with dot bit 1.

        Raises:
            ValueError: more than six characters (dots not counted), a non-ASCII character,
                or a dot with no character before it.
        """
        chars: list[int] = []
        dot_after: list[bool] = []
        for ch in text:
            if ch == ".":
                if not chars or dot_after[-1]:
                    raise ValueError(f"{text!r}: a dot needs a character before it")
                dot_after[-1] = True
                continue
            if not (0x20 <= ord(ch) < 0x7F):
                raise ValueError(f"{text!r}: {ch!r} is not a printable ASCII character")
            chars.append(blank if ch == " " else ord(ch))
            dot_after.append(False)
        if len(chars) > DIGITS:
            raise ValueError(f"{text!r} has more than {DIGITS} characters")
        pad = DIGITS - len(chars)
        dots = 0
        for index, dot in enumerate(dot_after):
            if dot:
                dots |= 1 << (DIGITS - 1 - (pad + index))
        return cls(bytes([blank] * pad + chars), dots)

    def text(self) -> str:
        """The characters as shown, blanks (00h or 20h) as spaces, dots put back in."""
        out = []
        for index, byte in enumerate(self.chars):
            out.append(" " if byte in (0x00, 0x20) else chr(byte) if 0x20 < byte < 0x7F else "?")
            if self.dots >> (DIGITS - 1 - index) & 1:
                out.append(".")
        return "".join(out)

    def number(self) -> int | None:
        """The integer shown (dots ignored), or ``None`` when it is not a whole number."""
        digits = self.text().replace(".", "").strip()
        return int(digits) if digits.isdigit() else None


# -- host -> controller ----------------------------------------------------------------------


def display(node: int, digits: Digits, *, flash: bool = False) -> bytes:
    """00h (10h with ``flash``): show ``digits`` on ``node``. LEN 0Fh."""
    sub = Sub.DISPLAY_FLASH if flash else Sub.DISPLAY
    return frame(sub, check_node(node), digits.chars + bytes([digits.dots]))


def simple(sub: Sub, node: int) -> bytes:
    """A command with no DATA (01h-05h, 11h, 13h-1Ch, FAh, FCh). LEN 08h."""
    return frame(sub, check_node(node))


def clear(node: int = BROADCAST) -> bytes:
    """01h: display off, message buffers cleared (every tag by default)."""
    return simple(Sub.CLEAR, node)


def polling_range(max_tag: int, *, with_data: bool = True) -> bytes:
    """08h: poll tags 1..``max_tag`` only.

    The manual's LEN 0Bh carries three don't-care bytes; the C# client sends LEN 08h
    (``with_data=False``).
    """
    if not 1 <= max_tag <= MAX_TAG:
        raise ValueError(f"polling range must be 1..{MAX_TAG}, got {max_tag}")
    return frame(Sub.POLLING_RANGE, max_tag, b"\x00\x00\x00" if with_data else b"")


def read_status() -> bytes:
    """09h: the status bitmap of every tag. 7 bytes, no SUB-NODE."""
    return frame(Sub.READ_STATUS, None)


def flash_interval(node: int, code: int) -> bytes:
    """12h: the tag's flashing interval code (D0 00h, D1 ``code``). LEN 0Ah."""
    if not 0 <= code <= 0xFF:
        raise ValueError(f"interval code must be a byte, got {code}")
    return frame(Sub.FLASH_INTERVAL, check_node(node), bytes([0x00, code]))


def adjustable_digits(node: int, count: int) -> bytes:
    """1Eh: how many right-hand digits the up/down keys may change (1..6). LEN 09h."""
    if not 1 <= count <= DIGITS:
        raise ValueError(f"adjustable digits must be 1..{DIGITS}, got {count}")
    return frame(Sub.ADJUSTABLE_DIGITS, check_node(node), bytes([count]))


def colour(node: int, code: int, *, save: bool = False) -> bytes:
    """1Fh/00h: LED colour ``code`` (``TagColour``); ``save`` stores it in EEPROM (LEN 0Bh)."""
    data = bytes([Configure.COLOUR, code]) + (bytes([EEPROM_SAVE]) if save else b"")
    return frame(Sub.CONFIGURE, check_node(node), data)


def count_digits(node: int, valid: int, *, set_means_valid: bool = True) -> bytes:
    """1Fh/01h: which digits count (bit 0 = rightmost).

    The manual: a set bit is a valid digit; the C# client inverts it
    (``set_means_valid=False``): UNCONFIRMED.
    """
    if not 0 <= valid <= 0x3F:
        raise ValueError(f"digit mask must be 00h..3Fh, got {valid:#x}")
    mask = valid if set_means_valid else (~valid) & 0x3F
    return frame(Sub.CONFIGURE, check_node(node), bytes([Configure.COUNT_DIGITS, mask]))


def configure(node: int, item: int, data: bytes, *, save: bool = False) -> bytes:
    """1Fh with any item; ``save`` appends 55h (EEPROM).

    Mode flags, blink, brightness and special functions have UNCONFIRMED layouts (the C#
    client's), so callers pass their DATA as bytes.
    """
    extra = bytes([EEPROM_SAVE]) if save else b""
    return frame(Sub.CONFIGURE, check_node(node), bytes([item]) + data + extra)


def set_address(node: int, new: int) -> bytes:
    """3Ah: give tag ``node`` the address ``new``. LEN 0Dh.

    DATA 40h 1Bh 1Bh 10h new, from the C# client only: UNCONFIRMED against the manual.
    """
    check_node(new)
    return frame(Sub.SET_ADDRESS, check_node(node), bytes([0x40, 0x1B, 0x1B, 0x10, new]))


def address_setup(new: int) -> bytes:
    """FBh to every tag: offer address ``new`` (00h: show own). LEN 0Bh.

    The tag whose key is pressed takes it and answers 64h 00h 16h (manual p=63).
    """
    if not (0 <= new <= MAX_TAG):
        raise ValueError(f"new address must be 0..{MAX_TAG}, got {new}")
    return frame(Sub.ADDRESS_SETUP, BROADCAST, bytes([new, 0x55, 0xAA]))


def alarm_request(action: int) -> bytes:
    """F7h (AT400): 00h read alarm status, 01h enable / 02h disable auto-report."""
    if action not in (0, 1, 2):
        raise ValueError(f"F7h action must be 0, 1 or 2, got {action}")
    return frame(Sub.ALARM, BROADCAST, bytes([action]))


# -- controller -> host ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """One CCB from a controller, decoded.

    Attributes:
        event: the sub-command.
        node: the tag address (SUB-NODE).
        raw: the whole CCB as received.
        digits: what the display showed (06h, 07h, 0Fh, 24h).
        special: D0 of a 64h; ``key`` its D1 (key code on a 64h/00h).
        missing: tags whose status bit is 1 (not connected), for a 09h reply.
        info: DATA bytes of FCh (detail), F7h (alarm), FAh (``model``).
        model: the firmware model string of an FAh reply.
    """

    event: Event
    node: int
    raw: bytes
    digits: Digits | None = None
    special: Special | int | None = None
    key: int | None = None
    missing: frozenset[int] = field(default_factory=frozenset)
    info: bytes = b""
    model: str | None = None


class BadFrame(ValueError):
    """A complete CCB the host cannot act on; ``kind`` names the problem for counters.

    Kinds: ``bad_length`` (LEN does not fit the sub-command), ``unknown_sub``,
    ``bad_header`` (message type or reserved bytes), ``bad_data`` (a display's characters
    or dot mask that no tag shows).
    """

    def __init__(self, kind: str, reason: str, raw: bytes) -> None:
        super().__init__(f"{reason}: {hexdump(raw)}")
        self.kind = kind
        self.raw = raw


_DIGIT_EVENTS = frozenset({Event.CONFIRM, Event.SHORTAGE, Event.STOCK_QTY, Event.CYCLE_CONFIRM})
_PLAIN_EVENTS = frozenset(
    {Event.TIMEOUT, Event.MALFUNCTION, Event.ILLEGAL, Event.BUTTONS_LOCKED, Event.RESET_OK_OLD}
)
STATUS_BYTES = 25
"""Bitmap bytes of a 09h reply: 200 tags, bit 0 of byte 0 = tag 1."""


def decode(raw: bytes) -> Message:
    """Decode one whole CCB from a controller (``StreamDecoder`` cut it by its LEN).

    Replies are parsed by their LEN, not a fixed size: a confirm of 14 bytes (the manual's
    prose) or 15 (the implementations) both give six characters, the shorter one without
    a dot byte.

    Raises:
        BadFrame: the length does not fit the sub-command, the sub-command is unknown, or
            the header is not a CCB's.
    """
    if len(raw) < HEADER or raw[0] | raw[1] << 8 != len(raw):
        raise BadFrame("bad_length", f"LEN does not match {len(raw)} bytes", raw)
    if raw[2] not in MESSAGE_TYPES or raw[3:6] != b"\x00\x00\x00":
        raise BadFrame("bad_header", "not a CCB header", raw)
    try:
        event = Event(raw[6])
    except ValueError:
        raise BadFrame("unknown_sub", f"unknown sub-command {raw[6]:02X}h", raw) from None
    node = raw[7]
    data = raw[HEADER:]
    n = len(raw)
    if event in _DIGIT_EVENTS:
        if n not in (14, 15):
            raise BadFrame("bad_length", f"{event.name} must be 14 or 15 bytes, got {n}", raw)
        dots = data[6] if n == 15 else 0
        if dots > 0x3F:
            raise BadFrame("bad_data", f"{event.name} dot byte {dots:02X}h is not a mask", raw)
        if any(not (c == 0 or 0x20 <= c < 0x7F) for c in data[:6]):
            raise BadFrame("bad_data", f"{event.name} carries characters no display shows", raw)
        return Message(event, node, raw, digits=Digits(bytes(data[:6]), dots))
    if event in _PLAIN_EVENTS:
        if n != HEADER:
            raise BadFrame("bad_length", f"{event.name} must be 8 bytes, got {n}", raw)
        return Message(event, node, raw)
    if event is Event.STATUS:
        if n < HEADER + 3 + STATUS_BYTES:
            raise BadFrame("bad_length", f"status reply too short ({n} bytes)", raw)
        bitmap = data[3 : 3 + STATUS_BYTES]
        missing = frozenset(
            byte_index * 8 + bit + 1
            for byte_index, byte in enumerate(bitmap)
            for bit in range(8)
            if byte >> bit & 1
        )
        return Message(event, node, raw, missing=missing)
    if event is Event.SPECIAL:
        if n != 10:
            raise BadFrame("bad_length", f"64h must be 10 bytes, got {n}", raw)
        try:
            special: Special | int = Special(data[0])
        except ValueError:
            special = data[0]
        return Message(event, node, raw, special=special, key=data[1])
    if event is Event.DETAIL:
        if n < HEADER + 5:
            raise BadFrame("bad_length", f"FCh detail too short ({n} bytes)", raw)
        return Message(event, node, raw, info=bytes(data))
    if event is Event.MODEL:
        if n < HEADER + 1:
            raise BadFrame("bad_length", f"FAh model too short ({n} bytes)", raw)
        model = bytes(data).rstrip(b"\x00 ").decode("ascii", "replace")
        return Message(event, node, raw, info=bytes(data), model=model)
    # ALARM (AT400): D0 new status, D1 previous.
    if n != 10:
        raise BadFrame("bad_length", f"F7h must be 10 bytes, got {n}", raw)
    return Message(event, node, raw, info=bytes(data))


@dataclass(frozen=True, slots=True)
class Rejected:
    """Bytes from a controller the host will not act on.

    Attributes:
        kind: ``garbage`` (no CCB header), ``truncated`` (a CCB cut short), or a
            ``BadFrame`` kind (``bad_length``, ``unknown_sub``, ``bad_header``).
        raw: the bytes.
        reason: what is wrong, for the log.
    """

    kind: str
    raw: bytes
    reason: str


def _header_at(buf: bytes | bytearray, at: int) -> bool:
    """Whether six bytes from ``at`` look like the start of a CCB."""
    return (
        len(buf) >= at + 6
        and 7 <= buf[at] <= MAX_FRAME
        and buf[at + 1] == 0
        and buf[at + 2] in MESSAGE_TYPES
        and buf[at + 3] == buf[at + 4] == buf[at + 5] == 0
    )


class StreamDecoder:
    """Cuts a controller's byte stream into messages by the length field, and resyncs.

    ``feed(data)`` returns what became complete, in stream order: ``Message`` for every
    CCB that decodes, ``Rejected`` for bytes that cannot be acted on. A CCB must start with
    a LEN of 7..64, LEN(H) 00h, a message type 60h/61h and three reserved 00h; other bytes
    are dropped one at a time until such a header starts the buffer. A CCB that does not
    decode (wrong length for its sub-command, unknown sub-command, characters no display
    shows) is rejected whole, unless a CCB header starts inside it: then the bytes before
    that header were a CCB cut short (``truncated``) and parsing goes on from the header,
    so a message after a truncated one is not lost. ``expire()`` drops a partial CCB whose
    rest did not come (the caller calls it when the line has been quiet for a while).
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held waiting for the rest of a CCB."""
        return len(self._buf)

    def _plausible(self) -> bool | None:
        buf = self._buf
        checks = ((0, range(7, MAX_FRAME + 1)), (1, (0,)), (2, MESSAGE_TYPES))
        for index, allowed in (*checks, (3, (0,)), (4, (0,)), (5, (0,))):
            if len(buf) <= index:
                return None
            if buf[index] not in allowed:
                return False
        return True

    def feed(self, data: bytes) -> list[Message | Rejected]:
        """Add received bytes; the messages and rejects now complete, in stream order."""
        self._buf += data
        out: list[Message | Rejected] = []
        junk = bytearray()
        buf = self._buf
        while buf:
            plausible = self._plausible()
            if plausible is False:
                junk.append(buf.pop(0))
                continue
            if junk:
                out.append(Rejected("garbage", bytes(junk), "bytes outside any CCB"))
                junk.clear()
            if plausible is None:
                break
            length = buf[0]
            if len(buf) < length:
                # A header that arrives inside the missing part means this CCB was cut.
                inner = next((k for k in range(1, len(buf)) if _header_at(buf, k)), None)
                if inner is None:
                    break
                out.append(Rejected("truncated", bytes(buf[:inner]), "CCB cut short"))
                del buf[:inner]
                continue
            candidate = bytes(buf[:length])
            try:
                message: Message | None = decode(candidate)
                error: BadFrame | None = None
            except BadFrame as exc:
                message, error = None, exc
            if message is None or message.event is not Event.STATUS:
                # A header inside means this CCB was cut short and the next one began
                # where its rest should be (a status bitmap may hold such bytes itself).
                inner = next((k for k in range(1, length) if _header_at(buf, k)), None)
                if inner is not None:
                    out.append(Rejected("truncated", bytes(buf[:inner]), "CCB cut short"))
                    del buf[:inner]
                    continue
            if message is not None:
                out.append(message)
            else:
                assert error is not None
                out.append(Rejected(error.kind, candidate, str(error).split(":")[0]))
            del buf[:length]
        if junk:
            out.append(Rejected("garbage", bytes(junk), "bytes outside any CCB"))
        return out

    def expire(self) -> Rejected | None:
        """Drop a partial CCB (the rest never came); ``None`` when nothing is pending."""
        if not self._buf:
            return None
        raw = bytes(self._buf)
        self._buf.clear()
        return Rejected("truncated", raw, "CCB cut short (the rest never came)")
