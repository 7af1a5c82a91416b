"""What the loader's screen shows: the typed shape of the dispatch station's ``snapshot()``.

``GET /api/state``'s ``workflow`` on a dispatch node (docs/simulation.md, "Dispatch station").
"""

from __future__ import annotations

from typing import Any, TypedDict

from agent.i18n import Message
from agent.workflows.station import NoticeView, RefusalView


class PendingParcel(TypedDict):
    """The parcel in the loader's hand, waiting for its lane."""

    parcel: str
    sscc: str | None
    order: str | None
    carrier: str
    service: str
    express: bool
    cutoff: int | None
    urgency: str
    lanes: list[str]
    scanned_at: int


class LaneView(TypedDict):
    """One carrier lane: loaded and waiting parcels, the open manifest."""

    id: str
    name: str
    carrier: str
    barcode: str
    close_barcode: str
    loaded: int
    waiting: int
    manifest_open_since: int | None


class WaitingParcel(TypedDict):
    """A parcel announced and not loaded yet."""

    parcel: str
    sscc: str | None
    order: str | None
    carrier: str
    express: bool
    cutoff: int | None
    urgency: str
    has_lane: bool


class DispatchScreen(TypedDict):
    """What the loader's screen shows."""

    phase: str
    prompt: str
    prompt_message: Message
    notice: NoticeView
    refusals: list[RefusalView]
    pending: PendingParcel | None
    lanes: list[LaneView]
    waiting: list[WaitingParcel]
    waiting_total: int
    recent: list[dict[str, Any]]
    counts: dict[str, int]
