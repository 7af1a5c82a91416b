"""What the stations share: the notice a station screen shows, and the periodic counters.

Packing, dispatch and returns each tell their operator what just happened (an order
opened, a parcel loaded, a scan refused) in one line: a :class:`Notice`, whose words are a
catalogue message (:class:`agent.i18n.Message`) the screen says in the worker's language.
Every role counts what it did and publishes the counts every ``counters_every_s``:
:class:`PeriodicCounters`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypedDict

from agent.i18n import Message, msg, render

if TYPE_CHECKING:
    from agent.workflows.base import Step

UNREADABLE = msg("station.unreadable")
"""A scan whose check failed: the words every station says (the reason goes in the event)."""


def unknown_code(code: str) -> Message:
    """A barcode the station does not know (the first 40 characters of it)."""
    return msg("station.unknown_code", code=code[:40])


@dataclass(frozen=True, slots=True)
class Notice:
    """What a station's screen says now: ``level`` is ``info``, ``ok`` or ``error``.

    ``message`` is what it says, as a catalogue message. ``reason`` is the refusal's reason
    code, if it is one. ``order`` is the order open when a refusal was made (packing): the
    screen lists an order's refusals only while that order is open, and those made with no
    order open only until one is.
    """

    level: Literal["info", "ok", "error"]
    message: Message
    at: int
    reason: str | None = None
    order: str | None = None

    @property
    def text(self) -> str:
        """The notice in English (the API's ``text``, tests)."""
        return render(self.message)


class PeriodicCounters:
    """What a station counted, persisted with each step and published every ``every_s``.

    ``count`` adds to the in-memory counts and to the step's unit (so the store keeps them
    across a restart); ``due`` says, once per period, that the counts are to be published.

    Args:
        every_s: the period in seconds; 0 never publishes.
    """

    def __init__(self, every_s: float) -> None:
        self.every_ms = every_s * 1000
        self.counts: dict[str, int] = {}
        self.since: int | None = None
        self._last: int | None = None

    def count(self, step: Step, name: str, delta: int = 1) -> None:
        """Count ``delta`` more of ``name``."""
        self.counts[name] = self.counts.get(name, 0) + delta
        step.unit.count(name, delta)

    def started(self, now: int) -> None:
        """The station runs from ``now`` (the counts are since then)."""
        if self.since is None:
            self.since = now

    def due(self, now: int) -> bool:
        """Whether the counts are to be published now (once per period)."""
        self.started(now)
        if not self.every_ms:
            return False
        if self._last is None:
            self._last = now
            return False
        if now - self._last < self.every_ms:
            return False
        self._last = now
        return True


class NoticeView(TypedDict):
    """A notice as a station screen gets it: the page says ``message``; ``text`` is English."""

    level: Literal["info", "ok", "error"]
    text: str
    message: Message
    at: int
    reason: str | None


class RefusalView(TypedDict):
    """A refused scan in a station screen's list (``message`` as in :class:`NoticeView`)."""

    text: str
    message: Message
    reason: str | None
    at: int


def notice_view(notice: Notice) -> NoticeView:
    """The notice for the screen."""
    return {
        "level": notice.level,
        "text": notice.text,
        "message": notice.message,
        "at": notice.at,
        "reason": notice.reason,
    }


def refusal_views(notices: list[Notice]) -> list[RefusalView]:
    """Refused scans for the screen, latest first as kept."""
    return [{"text": n.text, "message": n.message, "reason": n.reason, "at": n.at} for n in notices]
