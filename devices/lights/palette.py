"""Colours, blink patterns and named indications of pick-to-light slots.

The palette is Okabe-Ito (Okabe & Ito, "Color Universal Design", 2008): seven colours that
stay distinguishable for pickers with red-green or blue-yellow colour blindness, plus
white. Colour is never the only cue: every indication also has a pattern (steady, slow or
fast blink) and, where the slot has a display, a quantity or a short text. Single-colour
LEDs show any colour as plain "on" and carry the meaning by pattern and display alone.

Blinking is capped at 3 flashes per second: faster flashing is a seizure risk for
photosensitive people (WCAG 2.3.1 "three flashes"), so timings above the cap are rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MAX_FLASH_HZ = 3.0
"""The fastest blink any slot may show, in flashes per second."""


class Colour(StrEnum):
    """A palette colour, named as in the Okabe-Ito palette."""

    ORANGE = "orange"
    SKY_BLUE = "sky_blue"
    BLUISH_GREEN = "bluish_green"
    YELLOW = "yellow"
    BLUE = "blue"
    VERMILLION = "vermillion"
    REDDISH_PURPLE = "reddish_purple"
    WHITE = "white"

    @property
    def rgb(self) -> tuple[int, int, int]:
        """The colour as 8-bit red, green, blue."""
        return _RGB[self]

    @property
    def unit_rgb(self) -> tuple[float, float, float]:
        """The colour as red, green, blue in 0..1 (gpiozero ``RGBLED.color``)."""
        r, g, b = _RGB[self]
        return (r / 255, g / 255, b / 255)


_RGB: dict[Colour, tuple[int, int, int]] = {
    Colour.ORANGE: (230, 159, 0),
    Colour.SKY_BLUE: (86, 180, 233),
    Colour.BLUISH_GREEN: (0, 158, 115),
    Colour.YELLOW: (240, 228, 66),
    Colour.BLUE: (0, 114, 178),
    Colour.VERMILLION: (213, 94, 0),
    Colour.REDDISH_PURPLE: (204, 121, 167),
    Colour.WHITE: (255, 255, 255),
}

PICKER_ORDER: tuple[Colour, ...] = (
    Colour.ORANGE,
    Colour.SKY_BLUE,
    Colour.BLUISH_GREEN,
    Colour.YELLOW,
    Colour.BLUE,
    Colour.VERMILLION,
    Colour.REDDISH_PURPLE,
)
"""Colours handed to pickers (or orders) in turn; Okabe-Ito's own order."""


def picker_colour(n: int) -> Colour:
    """The colour of the ``n``-th picker or order (0-based), cycling through the palette.

    Beyond seven concurrent pickers colours repeat; the display text tells them apart.
    """
    if n < 0:
        raise ValueError(f"picker index must be >= 0, got {n}")
    return PICKER_ORDER[n % len(PICKER_ORDER)]


def nearest_colour(rgb: tuple[float, float, float]) -> Colour | None:
    """The palette colour closest to ``rgb`` (0..255 per channel), ``None`` when dark.

    Comparison is on the colour's direction, not its brightness, so a dimmed strip still
    reads back as the colour it was asked to show.
    """
    peak = max(rgb)
    if peak <= 0:
        return None
    scaled = tuple(c * 255 / peak for c in rgb)
    best: Colour | None = None
    best_distance = float("inf")
    for colour, ref in _RGB.items():
        ref_peak = max(ref)
        ref_scaled = tuple(c * 255 / ref_peak for c in ref)
        distance = sum((a - b) ** 2 for a, b in zip(scaled, ref_scaled, strict=True))
        if distance < best_distance:
            best, best_distance = colour, distance
    return best


class Pattern(StrEnum):
    """How a light shows: steady, or blinking at the configured slow or fast rate."""

    STEADY = "steady"
    SLOW_BLINK = "slow_blink"
    FAST_BLINK = "fast_blink"


@dataclass(frozen=True, slots=True)
class BlinkTiming:
    """On and off time of one blink cycle, in seconds.

    Raises:
        ValueError: if the cycle flashes more than ``MAX_FLASH_HZ`` times per second or a
            time is not positive.
    """

    on_s: float
    off_s: float

    def __post_init__(self) -> None:
        if self.on_s <= 0 or self.off_s <= 0:
            raise ValueError(f"blink times must be positive, got {self.on_s}/{self.off_s}")
        if self.hz > MAX_FLASH_HZ + 1e-9:
            raise ValueError(
                f"blink of {self.hz:.2f} flashes/s is above the {MAX_FLASH_HZ:g}/s safety cap"
            )

    @property
    def hz(self) -> float:
        """Flashes per second."""
        return 1.0 / (self.on_s + self.off_s)

    @classmethod
    def at(cls, hz: float, duty: float = 0.5) -> BlinkTiming:
        """A blink of ``hz`` flashes per second, lit for ``duty`` of each cycle."""
        if hz <= 0 or not 0 < duty < 1:
            raise ValueError(f"invalid blink: {hz} Hz, duty {duty}")
        period = 1.0 / hz
        return cls(on_s=period * duty, off_s=period * (1 - duty))


def pattern_timing(pattern: Pattern, slow_hz: float, fast_hz: float) -> BlinkTiming | None:
    """The blink timing of ``pattern`` (``None`` for steady) at the configured rates."""
    if pattern is Pattern.STEADY:
        return None
    return BlinkTiming.at(slow_hz if pattern is Pattern.SLOW_BLINK else fast_hz)


DISPLAY_DIGITS = 4
"""Characters of a slot's quantity display (TM1637 4-digit module)."""


@dataclass(frozen=True, slots=True)
class Indication:
    """What one slot shows: a colour, a pattern and optionally a quantity or a text.

    Attributes:
        colour: the palette colour (single-colour LEDs just light up).
        pattern: steady or blinking.
        qty: the quantity to pick (0..9999), shown on the slot's display.
        text: up to 4 characters for the display (``"Err"``, ``"donE"``); wins over ``qty``.
    """

    colour: Colour
    pattern: Pattern = Pattern.STEADY
    qty: int | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        if self.qty is not None and not 0 <= self.qty <= 9999:
            raise ValueError(f"qty must be 0..9999 to fit the display, got {self.qty}")
        if self.text is not None and len(self.text.replace(".", "")) > DISPLAY_DIGITS:
            raise ValueError(f"text {self.text!r} is longer than {DISPLAY_DIGITS} characters")

    @property
    def display(self) -> str | None:
        """What the slot's display shows, right-aligned, or ``None`` for blank."""
        if self.text is not None:
            return self.text.ljust(DISPLAY_DIGITS)[:DISPLAY_DIGITS]
        if self.qty is not None:
            return str(self.qty).rjust(DISPLAY_DIGITS)
        return None


ERROR = Indication(Colour.VERMILLION, Pattern.FAST_BLINK, text="Err")
"""A wrong item was scanned (mis-scan) at this slot."""

DONE = Indication(Colour.BLUISH_GREEN, Pattern.STEADY, text="donE")
"""The slot (or the zone, on the zone lamp) is finished."""


def express(qty: int | None = None) -> Indication:
    """A priority/express pick: reddish purple, slow blink, the quantity or ``"Prio"``."""
    if qty is None:
        return Indication(Colour.REDDISH_PURPLE, Pattern.SLOW_BLINK, text="Prio")
    return Indication(Colour.REDDISH_PURPLE, Pattern.SLOW_BLINK, qty=qty)


EXPRESS = express()
"""A priority order waits at this slot."""
