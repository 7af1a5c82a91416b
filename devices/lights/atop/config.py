"""The node-file table of one ATOP AblePick controller (kind ``atop``).

One ``[[devices]]`` table per controller (one TCP connection each); its tags are listed
compactly as ranges, so a 200-tag controller is one table, not 200::

    [[devices]]
    name = "atop-1"
    kind = "atop"
    host = "10.0.50.101"
    model = "at7xx"

    [[devices.slots]]               # tags 1..120 are slots A-001 .. A-120
    tags = "1-120"
    first_id = "A-001"

    [[devices.slots]]               # one tag
    tag = 121
    id = "A-PUT"

Settings where the manual and other implementations disagree (hardware-next.md §1.6) are
fields whose default is the manual's value; each says so.
"""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from devices.config import FieldValueError
from devices.lights.atop.codec import AT5XX_COLOURS, FLASH_INTERVALS, MAX_TAG, TagColour
from devices.lights.base import LightBarConfig, SlotId
from devices.lights.palette import MAX_FLASH_HZ, Colour, Pattern

TagColourName = Literal["red", "green", "orange", "blue", "pink", "cyan"]

AT7XX_MAP: dict[Colour, TagColourName] = {
    Colour.ORANGE: "orange",
    Colour.SKY_BLUE: "cyan",
    Colour.BLUISH_GREEN: "green",
    Colour.YELLOW: "orange",
    Colour.BLUE: "blue",
    Colour.VERMILLION: "red",
    Colour.REDDISH_PURPLE: "pink",
    Colour.WHITE: "cyan",
}
"""Palette colour -> AT7xx colour. Error (vermillion) reads red and done (bluish green)
green, as on the other kinds; yellow has no AT7xx colour and shows orange, so a zone on
AT7xx tags gives pickers orange, sky blue, blue and reddish purple (four distinct)."""

AT5XX_MAP: dict[Colour, TagColourName] = {
    colour: (
        "red"
        if colour is Colour.VERMILLION
        else "green"
        if colour is Colour.BLUISH_GREEN
        else "orange"
    )
    for colour in Colour
}
"""Palette colour -> AT5xx colour: red for errors, green for done, orange for every
picker; the display and the pattern tell pickers apart (AT5xx has three colours)."""

_RANGE = re.compile(r"^\s*(\d{1,3})\s*(?:-\s*(\d{1,3})\s*)?$")
_SUFFIX = re.compile(r"^(.*?)(\d+)$")


class TagRange(BaseModel):
    """One ``[[devices.slots]]`` table: a range of tags named by counting, or one tag.

    Attributes:
        tags: ``"1-120"`` (or ``"7"``): the tag addresses, with ``first_id``.
        first_id: the first slot's id; the next slots count its trailing number up,
            keeping its width (``A-001``, ``A-002``, ...).
        tag: one tag's address, with ``id``.
        id: that tag's slot id.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tags: str | None = None
    first_id: SlotId | None = None
    tag: int | None = Field(default=None, ge=1, le=MAX_TAG)
    id: SlotId | None = None

    @model_validator(mode="after")
    def _shape(self) -> Self:
        ranged = self.tags is not None or self.first_id is not None
        single = self.tag is not None or self.id is not None
        if ranged == single:
            raise ValueError("give either tags + first_id (a range) or tag + id (one tag)")
        if ranged:
            if self.tags is None or self.first_id is None:
                raise ValueError('a range needs both tags ("1-120") and first_id ("A-001")')
            match = _RANGE.match(self.tags)
            if match is None:
                raise FieldValueError(
                    f'{self.tags!r}: expected FIRST-LAST, like "1-120"', ("tags",)
                )
            first, last = int(match.group(1)), int(match.group(2) or match.group(1))
            if not 1 <= first <= last <= MAX_TAG:
                raise FieldValueError(
                    f"{self.tags!r}: tags run 1..{MAX_TAG}, first <= last", ("tags",)
                )
            if _SUFFIX.match(self.first_id) is None:
                raise FieldValueError(
                    f"{self.first_id!r} must end in a number to count from", ("first_id",)
                )
        elif self.tag is None or self.id is None:
            raise ValueError("one tag needs both tag and id")
        return self

    def pairs(self) -> list[tuple[str, int]]:
        """``(slot id, tag)`` of every tag in the table."""
        if self.tag is not None and self.id is not None:
            return [(self.id, self.tag)]
        assert self.tags is not None and self.first_id is not None
        match = _RANGE.match(self.tags)
        suffix = _SUFFIX.match(self.first_id)
        assert match is not None and suffix is not None
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        stem, number = suffix.group(1), suffix.group(2)
        width, start = len(number), int(number)
        return [
            (f"{stem}{str(start + n).zfill(width)}", tag)
            for n, tag in enumerate(range(first, last + 1))
        ]


class AtopConfig(LightBarConfig):
    """Config of an ``atop`` device: one AT500/AT400 controller and its tags.

    Attributes:
        host: the controller's address (the Pi is the TCP client).
        port: its TCP port; 4660 is the C# client's default (UNCONFIRMED in the manual).
        model: ``at7xx`` (six colours) or ``at5xx`` (red, green, orange).
        slots: tag ranges and single tags, each naming its slots.
        colours: palette colour -> tag colour, over the model's default map.
        poll_s: how often the tag status bitmap (09h) is read: tags that drop out are
            seen within this, and a controller that stops answering within
            ``silent_after_s``.
        silent_after_s: no status reply for this long: the controller is dead; the
            connection is closed and made again.
        connect_timeout_s: how long a connection attempt may take.
        reconnect_max_s: the longest wait between connection attempts (it doubles from
            0.2 s up to this).
        polling_range: send 08h with the highest configured tag at connect, so the
            controller polls only the tags it has (a shorter cycle).
        polling_range_data: the 08h with the manual's three don't-care bytes (LEN 0Bh);
            ``false`` sends LEN 08h as the C# client does.
        blank: the byte of an unlit digit: 00h (C# client; the manual is UNCONFIRMED),
            20h (space) is the other choice Codeshelf accepts.
        slow_interval, fast_interval: the 12h flash-interval codes of slow and fast
            blink. Whether the manual's interval is the whole flash or one half of it is
            not stated, so a code is allowed only if it stays under 3 flashes/s either
            way: 02h-03h (0.5 s, at most 2 flashes/s) and 04h-07h (1 s); 00h-01h (0.25 s,
            possibly 4/s) and 08h and up (0.25 s or 2 s, UNCONFIRMED) are refused.
        buzz: the patterns that sound the buzzer while they show (an error blinks fast).
        buzz_s: how long the buzzer sounds.
        shortage_key: enable the shortage key where a task is shown (07h reports the
            quantity the picker set with the up/down keys: a short pick).
        adjustable_digits: how many right-hand digits the up/down keys change (1Eh).
        resend_after_s: a message the tag dropped (64h busy, 0Dh buttons locked) or a tag
            back after a time-out is sent again after this.
        refused_warn: a tag that refuses this many messages in a row (64h busy, 0Dh keys
            locked; each is sent again) is listed in the device's parts as a fault, until
            it has refused none for two polls.
        frame_gap_s: a CCB cut short is dropped when its rest has not come within this.
        log_limit: bad frames logged (with their bytes) per kind and connection; the
            rest are counted only.
    """

    kind: Literal["atop"]
    host: str = Field(default="10.0.50.100", min_length=1, max_length=253)
    port: int = Field(default=4660, ge=1, le=65535)
    model: Literal["at7xx", "at5xx"] = "at7xx"
    slots: list[TagRange] = Field(min_length=1)
    colours: dict[Colour, TagColourName] = Field(default_factory=dict)
    poll_s: float = Field(default=2.0, ge=0.05, le=60)
    silent_after_s: float = Field(default=6.0, ge=0.2, le=300)
    connect_timeout_s: float = Field(default=3.0, gt=0, le=60)
    reconnect_max_s: float = Field(default=10.0, ge=0.2, le=300)
    polling_range: bool = True
    polling_range_data: bool = True
    blank: Literal[0, 32] = 0
    slow_interval: int = Field(default=0x04, ge=0, le=0xFF)
    fast_interval: int = Field(default=0x02, ge=0, le=0xFF)
    buzz: list[Pattern] = Field(default_factory=lambda: [Pattern.FAST_BLINK])
    buzz_s: float = Field(default=0.5, ge=0, le=10)
    shortage_key: bool = True
    adjustable_digits: int = Field(default=4, ge=1, le=6)
    resend_after_s: float = Field(default=0.2, ge=0, le=10)
    refused_warn: int = Field(default=3, ge=1, le=100)
    frame_gap_s: float = Field(default=0.5, gt=0, le=10)
    log_limit: int = Field(default=20, ge=0, le=10_000)

    @model_validator(mode="after")
    def _check(self) -> Self:
        for field in ("slow_interval", "fast_interval"):
            code = getattr(self, field)
            seconds = FLASH_INTERVALS.get(code)
            if seconds is None:
                raise FieldValueError(
                    f"{code:#04x} is not a flash interval the manual confirms (00h-07h)", (field,)
                )
            if 1.0 / seconds > MAX_FLASH_HZ:
                raise FieldValueError(
                    f"{code:#04x} ({seconds} s) may flash {1 / seconds:g} times/s, above the "
                    f"{MAX_FLASH_HZ:g}/s safety cap",
                    (field,),
                )
        if self.silent_after_s <= self.poll_s:
            raise FieldValueError(
                f"must be longer than poll_s ({self.poll_s} s): a reply needs a poll",
                ("silent_after_s",),
            )
        if self.model == "at5xx":
            for colour, name in self.colours.items():
                if TagColour[name.upper()] not in AT5XX_COLOURS:
                    raise FieldValueError(
                        f"{colour.value} -> {name}: AT5xx tags show red, green or orange only",
                        ("colours", colour.value),
                    )
        seen_ids: dict[str, int] = {}
        seen_tags: dict[int, str] = {}
        for n, entry in enumerate(self.slots):
            for slot, tag in entry.pairs():
                blame = ("slots", n, "tags" if entry.tags is not None else "tag")
                if tag in seen_tags:
                    raise FieldValueError(
                        f"tag {tag} is both {seen_tags[tag]!r} and {slot!r}", blame
                    )
                if slot in seen_ids:
                    id_field = "first_id" if entry.first_id is not None else "id"
                    raise FieldValueError(f"slot id {slot!r} is used twice", ("slots", n, id_field))
                if len(slot) > 32:
                    raise FieldValueError(f"slot id {slot!r} is longer than 32", blame)
                seen_ids[slot] = tag
                seen_tags[tag] = slot
        return self

    def tag_map(self) -> dict[str, int]:
        """Slot id -> tag address, in file order."""
        return {slot: tag for entry in self.slots for slot, tag in entry.pairs()}

    def tag_colour(self, colour: Colour) -> TagColour:
        """The tag colour code that shows palette ``colour`` on this model."""
        base = AT7XX_MAP if self.model == "at7xx" else AT5XX_MAP
        return TagColour[self.colours.get(colour, base[colour]).upper()]

    def claims(self) -> list[str]:
        """The controller's TCP endpoint: one connection per controller."""
        return [f"tcp:{self.host}:{self.port}"]

    def locations(self) -> list[str]:
        """The slot ids of every tag."""
        return list(self.tag_map())
