"""What the returns operator's screen shows: the typed shape of the station's ``snapshot()``.

``GET /api/state``'s ``workflow`` on a returns node (docs/simulation.md, "Returns station").
"""

from __future__ import annotations

from typing import Any, TypedDict

from agent.i18n import Message
from agent.workflows.station import NoticeView, RefusalView


class ReturnLineView(TypedDict):
    """A line the customer said they send back, and how much of it came."""

    sku: str
    description: str
    qty: int
    received: int
    reason: str | None
    hazardous: bool


class ExtraView(TypedDict):
    """A unit that came and was not announced."""

    sku: str | None
    code: str
    qty: int
    flag: str | None


class UnitView(TypedDict):
    """The unit in the operator's hand: what it is, how it is judged, where it goes."""

    n: int
    sku: str | None
    description: str
    code: str
    flag: str | None
    hazardous: bool
    stated_reason: str | None
    reason: str | None
    grade: str | None
    disposition: str | None
    bin: str | None


class ReturnView(TypedDict):
    """The return open at the station."""

    rma: str
    order: str | None
    expected: bool
    lines: list[ReturnLineView]
    extra: list[ExtraView]
    unit: UnitView | None


# What the returns operator's screen shows. The functional form, because one key is
# "return" (the open return), a Python keyword.
ReturnsScreen = TypedDict(
    "ReturnsScreen",
    {
        "phase": str,
        "prompt": str,
        "prompt_message": Message,
        "notice": NoticeView,
        "refusals": list[RefusalView],
        "return": ReturnView | None,
        "announced": list[str],
        "bins": dict[str, str],
        "codes": dict[str, Any],
        "recent": list[dict[str, Any]],
        "counts": dict[str, int],
    },
)
