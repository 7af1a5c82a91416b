"""Barcode scanners in HID keyboard-wedge mode, read through evdev (the ``hid`` extra).

A keyboard wedge types each read as key presses followed by Enter. The driver grabs the
input device, turns key codes into text with a keyboard layout, and hands each line to the
same framing and interpretation as the serial driver. Prefer serial mode for GS1 codes: a
keyboard cannot type GS (see ``HidScanner``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Self

from pydantic import Field, field_validator

from devices.backends.evdev import (
    FAKE_SCHEME,
    FakeKeyboard,
    KeyboardBackend,
    KeyEvent,
    open_keyboard,
)
from devices.config import DeviceConfig
from devices.context import DeviceContext
from devices.scanners.framing import ScannerDevice, check_gs_substitute, unwrap
from devices.scanners.interpret import GS, MAX_TEXT_LENGTH
from devices.sim import Simulator

log = logging.getLogger("devices")

# Linux key codes (linux/input-event-codes.h) used by name below.
KEY_TAB = 15
KEY_ENTER = 28
KEY_LEFTCTRL = 29
KEY_LEFTSHIFT = 42
KEY_RIGHTSHIFT = 54
KEY_LEFTALT = 56
KEY_CAPSLOCK = 58
KEY_KPENTER = 96
KEY_RIGHTCTRL = 97
KEY_RIGHTALT = 100
KEY_RIGHTBRACE = 27

_SHIFTS = frozenset({KEY_LEFTSHIFT, KEY_RIGHTSHIFT})
_CTRLS = frozenset({KEY_LEFTCTRL, KEY_RIGHTCTRL})
_ALTS = frozenset({KEY_LEFTALT, KEY_RIGHTALT})


def _row(first_code: int, plain: str, shifted: str) -> dict[int, tuple[str, str]]:
    return {first_code + i: (p, s) for i, (p, s) in enumerate(zip(plain, shifted, strict=True))}


US_LAYOUT: dict[int, tuple[str, str]] = {
    **_row(2, "1234567890-=", "!@#$%^&*()_+"),
    **_row(16, "qwertyuiop[]", "QWERTYUIOP{}"),
    **_row(30, "asdfghjkl;'`", 'ASDFGHJKL:"~'),
    **_row(43, "\\zxcvbnm,./", "|ZXCVBNM<>?"),
    KEY_TAB: ("\t", "\t"),
    57: (" ", " "),
    # Keypad: scanners that "emulate keypad" type digits here; num lock is assumed on.
    55: ("*", "*"),
    **_row(71, "789-456+1230.", "789-456+1230."),
    98: ("/", "/"),
}
"""Key code to (unshifted, shifted) character on a US keyboard."""

LAYOUTS: dict[str, dict[int, tuple[str, str]]] = {"us": US_LAYOUT}
_KEYPAD_DIGITS = {71: 7, 72: 8, 73: 9, 75: 4, 76: 5, 77: 6, 79: 1, 80: 2, 81: 3, 82: 0}


@dataclass(frozen=True, slots=True)
class KeyLine:
    """One typed line.

    Attributes:
        text: the characters typed.
        unmapped: key codes that have no character in the layout (the text is incomplete).
    """

    text: str
    unmapped: tuple[int, ...] = ()


class KeyLineAssembler:
    """Turns key events into lines of text, with shift, caps lock, Ctrl and Alt codes.

    * Shift and caps lock pick the shifted character (caps lock only for letters).
    * Ctrl + a key types its control character (Ctrl+] is GS, 0x1D, the usual keyboard
      encoding of FNC1); other control characters make ``interpret`` reject the read.
    * Alt + keypad digits, released, types that character code (Windows-style Alt+029 for
      GS, which some scanners use); other keys while Alt is held are ignored.

    Args:
        name: the device name for log lines.
        layout: key code to (unshifted, shifted) character.
        terminators: key codes that end a line.
        max_length: a longer line is discarded, with one log line, up to its terminator.
    """

    def __init__(
        self,
        name: str,
        layout: dict[int, tuple[str, str]],
        terminators: Iterable[int],
        max_length: int,
    ) -> None:
        self.name = name
        self.layout = layout
        self.terminators = frozenset(terminators)
        self.max_length = max_length
        self.discarded = 0
        self._held: set[int] = set()
        self._caps = False
        self._alt_digits = ""
        self._chars: list[str] = []
        self._unmapped: list[int] = []
        self._skipping = False

    @property
    def pending(self) -> int:
        """Characters typed since the last terminator."""
        return len(self._chars)

    def reset(self) -> int:
        """Forget the unfinished line and held keys (device lost); returns its length."""
        dropped = len(self._chars)
        self._chars.clear()
        self._unmapped.clear()
        self._held.clear()
        self._alt_digits = ""
        self._skipping = False
        return dropped

    def feed(self, events: Iterable[KeyEvent]) -> list[KeyLine]:
        """Process key events; returns the lines they completed."""
        lines: list[KeyLine] = []
        for event in events:
            line = self._key(event)
            if line is not None:
                lines.append(line)
        return lines

    def _key(self, event: KeyEvent) -> KeyLine | None:
        code = event.code
        if event.value == 0:
            self._held.discard(code)
            if code in _ALTS and not self._held & _ALTS:
                self._alt_code_done()
            return None
        if event.value != 1:
            return None  # auto-repeat: scanners never hold a key on purpose
        if code in _SHIFTS or code in _CTRLS or code in _ALTS:
            self._held.add(code)
            return None
        if code == KEY_CAPSLOCK:
            self._caps = not self._caps
            return None
        if self._held & _ALTS:
            if code in _KEYPAD_DIGITS:
                self._alt_digits += str(_KEYPAD_DIGITS[code])
            return None
        if code in self.terminators:
            return self._end_line()
        pair = self.layout.get(code)
        if pair is None:
            self._unmapped.append(code)
            self._add("\ufffd")
            return None
        plain, shifted = pair
        if self._held & _CTRLS:
            if plain.isalpha() or plain in "[\\]":
                self._add(chr(ord(plain.upper()) & 0x1F))  # Ctrl+] = GS
            else:
                self._unmapped.append(code)
                self._add("\ufffd")
            return None
        shift = bool(self._held & _SHIFTS)
        if plain.isalpha() and self._caps:
            shift = not shift
        self._add(shifted if shift else plain)
        return None

    def _alt_code_done(self) -> None:
        digits, self._alt_digits = self._alt_digits, ""
        if not digits:
            return
        value = int(digits)
        if value <= 0xFF:
            self._add(chr(value))
        else:
            self._unmapped.append(KEY_LEFTALT)
            self._add("\ufffd")

    def _add(self, char: str) -> None:
        if self._skipping:
            return
        self._chars.append(char)
        if len(self._chars) > self.max_length:
            self.discarded += 1
            log.warning(
                "device %s: discarded a %d+ character line without Enter (limit %d)",
                self.name,
                len(self._chars),
                self.max_length,
            )
            self._chars.clear()
            self._unmapped.clear()
            self._skipping = True

    def _end_line(self) -> KeyLine | None:
        if self._skipping:
            self._skipping = False
            return None
        line = KeyLine("".join(self._chars), tuple(self._unmapped))
        self._chars.clear()
        self._unmapped.clear()
        return line if line.text else None


class HidScannerConfig(DeviceConfig):
    """A keyboard-wedge scanner.

    Attributes:
        device: an event device path (``/dev/input/by-id/usb-...-event-kbd``) or part of the
            device name (``"Honeywell"``), matched case-insensitively.
        grab: take the device exclusively, so reads do not also type into a console.
        layout: the keyboard layout the scanner is set to (only ``us`` so far).
        terminator: the key ending each read: ``enter`` (Enter or keypad Enter) or ``tab``.
        prefix: text the scanner types before each read, stripped.
        suffix: text the scanner types after each read, before the terminator, stripped.
        aim_ids: detect and strip AIM symbology identifiers (``]C1``).
        gs_substitute: the printable stand-in the scanner types for GS, read as GS in GS1 data.
        dedupe_window_s: the same code read again within this many seconds is one scan.
        max_length: the longest read in characters.
        reopen_min_s: first wait before reopening a vanished device (doubles each try).
        reopen_max_s: longest wait between reopen attempts.
    """

    kind: Literal["hid_scanner"]
    device: str = Field(min_length=1)
    grab: bool = True
    layout: Literal["us"] = "us"
    terminator: Literal["enter", "tab"] = "enter"
    prefix: str = ""
    suffix: str = ""
    aim_ids: bool = True
    gs_substitute: str | None = None
    dedupe_window_s: float = Field(default=1.0, ge=0, le=60)
    max_length: int = Field(default=512, ge=16, le=MAX_TEXT_LENGTH)
    reopen_min_s: float = Field(default=0.5, gt=0)
    reopen_max_s: float = Field(default=10.0, gt=0)

    _check_gs = field_validator("gs_substitute")(check_gs_substitute)

    def claims(self) -> list[str]:
        """The input device, held exclusively."""
        return [f"input:{self.device}"]


class HidScanner(ScannerDevice):
    """A barcode scanner in USB HID keyboard ("keyboard wedge") mode.

    Set-up: install the extra (``pip install 'zone-agent[hid]'``), add the service user to
    the ``input`` group, set the scanner's keyboard language to US and its suffix to Enter.
    Name the scanner by its ``/dev/input/by-id/...-event-kbd`` link or by part of its name.
    With ``grab`` on (the default) reads go only to the agent, not to a console.

    GS1 codes: a keyboard cannot type GS (0x1D). Scanners drop it, send Ctrl+], send
    Alt+0,2,9 on the keypad, or type a configured printable character; the first loses
    data, the others work (set ``gs_substitute`` for the last). Serial mode is better.

    Example::

        config = HidScannerConfig(name="scan2", kind="hid_scanner", device="Honeywell")
        async with HidScanner.from_config(config, DeviceContext()) as scanner:
            async for scan in scanner.events():
                print(scan.text, scan.gtin, scan.error)

    Args:
        config: the validated config.
        keyboard: the input device backend (not opened yet).
        clock: the monotonic clock reads are timed and de-duplicated with.
    """

    def __init__(
        self,
        config: HidScannerConfig,
        keyboard: KeyboardBackend,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            config.name,
            dedupe_window_s=config.dedupe_window_s,
            gs_substitute=config.gs_substitute,
            clock=clock,
        )
        self.config = config
        self._keyboard = keyboard
        self._source = keyboard
        self._reopen_s = (config.reopen_min_s, config.reopen_max_s)
        self._unit = "characters"
        keys = (KEY_ENTER, KEY_KPENTER) if config.terminator == "enter" else (KEY_TAB,)
        self._lines = KeyLineAssembler(config.name, LAYOUTS[config.layout], keys, config.max_length)

    @classmethod
    def from_config(cls, config: HidScannerConfig, context: DeviceContext) -> Self:
        """Build the driver for ``config`` (evdev, or the fake for ``fake:...`` paths)."""
        return cls(config, open_keyboard(config.device, config.grab))

    def describe(self) -> str:
        """Device, grab and layout, as logged at start."""
        c = self.config
        grab = "grabbed" if c.grab else "shared"
        return f"HID scanner {self.name} on {c.device} ({grab}, layout {c.layout})"

    @property
    def discarded(self) -> int:
        """How many over-long lines were discarded."""
        return self._lines.discarded

    async def _read_once(self) -> None:
        events = await self._keyboard.read()
        at = self._clock()
        for line in self._lines.feed(events):
            self._line(line, at)

    def _reset_framing(self) -> int:
        return self._lines.reset()

    def _line(self, line: KeyLine, at: float) -> None:
        c = self.config
        read = unwrap(line.text, prefix=c.prefix, suffix=c.suffix, aim_ids=c.aim_ids)
        error = None
        if line.unmapped:
            codes = ", ".join(str(code) for code in line.unmapped)
            error = f"key code(s) {codes} have no character in layout {c.layout!r}"
        self._deliver(read, at, error)


def keys_for_text(text: str, layout: dict[int, tuple[str, str]]) -> list[KeyEvent]:
    """The key events a keyboard wedge sends to type ``text`` (GS as Ctrl+]).

    Raises:
        ValueError: for a character the layout cannot type.
    """
    reverse: dict[str, tuple[int, bool]] = {}
    for key, (plain, upper) in sorted(layout.items(), reverse=True):
        reverse[upper] = (key, True)
        reverse[plain] = (key, False)  # plain wins over shifted, main keys over the keypad
    events: list[KeyEvent] = []
    for char in text:
        if char == GS:
            modifier, code = KEY_LEFTCTRL, KEY_RIGHTBRACE
        elif char in reverse:
            code, with_shift = reverse[char]
            modifier = KEY_LEFTSHIFT if with_shift else 0
        else:
            raise ValueError(f"{char!r} cannot be typed on this layout")
        if modifier:
            events.append(KeyEvent(modifier, 1))
        events += [KeyEvent(code, 1), KeyEvent(code, 0)]
        if modifier:
            events.append(KeyEvent(modifier, 0))
    return events


class HidScannerSimulator(Simulator):
    """A keyboard-wedge scanner typing into a ``FakeKeyboard``.

    ``patched_config()`` points ``device`` at ``fake:<name>``. A scan is typed as
    ``prefix + symbology + code + suffix`` then the terminator key; GS is typed as the
    configured ``gs_substitute`` when there is one, else as Ctrl+].

    Control actions:
        ``scan`` {code: str, symbology?: str}: one read.
        ``garbage`` {hex: str}: each byte is a key code pressed and released.
        ``unplug`` {} / ``replug`` {}: the device vanishes / comes back.

    Args:
        config: the scanner's config.
        context: the node's device context.
    """

    def __init__(self, config: DeviceConfig, context: DeviceContext) -> None:
        super().__init__(config, context)
        if not isinstance(config, HidScannerConfig):
            raise TypeError(f"expected a HidScannerConfig, got {type(config).__name__}")
        self.scanner_config = config
        self.path = f"{FAKE_SCHEME}{config.name}"
        self.keyboard: FakeKeyboard | None = None
        self.scans_sent = 0
        self.last: str | None = None

    async def start(self) -> None:
        """Register the fake keyboard."""
        self.keyboard = FakeKeyboard.register(self.path)

    async def stop(self) -> None:
        """Unregister it; safe to call twice."""
        FakeKeyboard.unregister(self.path)
        self.keyboard = None

    def patched_config(self) -> HidScannerConfig:
        """The config with ``device`` pointing at the fake keyboard."""
        return self.scanner_config.model_copy(update={"device": self.path})

    def _keyboard(self) -> FakeKeyboard:
        if self.keyboard is None:
            raise ValueError("the simulator is not started")
        return self.keyboard

    async def control(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        """Act on the simulated scanner; see the class docstring for the actions."""
        c = self.scanner_config
        keyboard = self._keyboard()
        end = KEY_ENTER if c.terminator == "enter" else KEY_TAB
        if action == "scan":
            code, symbology = args.get("code"), args.get("symbology")
            if not isinstance(code, str) or not code:
                raise ValueError("scan needs 'code', a non-empty string")
            if symbology is not None and not isinstance(symbology, str):
                raise ValueError("'symbology' must be a string such as ']C1'")
            text = c.prefix + (symbology or "") + code + c.suffix
            if c.gs_substitute:
                text = text.replace(GS, c.gs_substitute)
            events = keys_for_text(text, LAYOUTS[c.layout])
            sent = keyboard.is_open
            keyboard.feed([*events, KeyEvent(end, 1), KeyEvent(end, 0)])
            if sent:
                self.scans_sent += 1
                self.last = code
            return {"sent": sent}
        if action == "garbage":
            raw = args.get("hex")
            if not isinstance(raw, str):
                raise ValueError("garbage needs 'hex', a string of hex digits")
            codes = bytes.fromhex(raw)
            keyboard.feed([KeyEvent(k, v) for k in codes for v in (1, 0)])
            return {"sent": keyboard.is_open}
        if action == "unplug":
            keyboard.unplug()
            return {}
        if action == "replug":
            keyboard.replug()
            return {}
        raise ValueError(f"unknown action {action!r} (scan, garbage, unplug, replug)")

    def state(self) -> dict[str, Any]:
        """``{"plugged": bool, "scans_sent": int, "last": str | None}``."""
        plugged = self.keyboard is not None and self.keyboard.plugged
        return {"plugged": plugged, "scans_sent": self.scans_sent, "last": self.last}


CONFIG = HidScannerConfig
DRIVER = HidScanner
SIMULATOR = HidScannerSimulator
