"""What the operator stations share: the notice a station screen shows.

Packing, dispatch and returns each tell their operator what just happened (an order
opened, a parcel loaded, a scan refused) in one line; this is that line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Notice:
    """What a station's screen says now: ``level`` is ``info``, ``ok`` or ``error``.

    ``reason`` is the refusal's reason code, if it is one. ``order`` is the order open when
    a refusal was made (packing): the screen lists an order's refusals only while that order
    is open, and those made with no order open only until one is.
    """

    level: Literal["info", "ok", "error"]
    text: str
    at: int
    reason: str | None = None
    order: str | None = None
