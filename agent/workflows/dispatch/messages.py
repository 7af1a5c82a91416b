"""The dispatch station's commands and events (registered in the wire tables on import)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from agent.wire.messages import Id, Wire, register_command, register_event

MAX_PARCELS_PER_COMMAND = 500

Sscc = Annotated[str, Field(pattern=r"^[0-9]{18}$")]
Carrier = Annotated[str, Field(min_length=1, max_length=64)]


class Parcel(Wire):
    """A packed parcel announced at the dock.

    Give ``sscc`` or ``tracking`` (or both): a parcel with a carrier's own label may have
    no SSCC, and is then known by its tracking number.

    Attributes:
        sscc: the parcel's SSCC (18 digits, the GS1-128 label's AI 00).
        tracking: the carrier's tracking number, also accepted as the parcel's barcode.
        carrier: the carrier; the lane of this carrier takes it.
        service: the carrier's service (informational, passed on in ``shipped``).
        order: the order the parcel belongs to.
        express: an express parcel stands out on the lane light and the screen.
        cutoff: the carrier's cut-off for this parcel (ms since the epoch); ``None``: none.
    """

    sscc: Sscc | None = None
    tracking: Id | None = None
    carrier: Carrier
    service: Annotated[str, Field(max_length=64)] = ""
    order: Id
    express: bool = False
    cutoff: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _identified(self) -> Parcel:
        if self.sscc is None and self.tracking is None:
            raise ValueError("give the parcel's sscc or its tracking number")
        return self

    @property
    def key(self) -> str:
        """What the station knows the parcel by: its SSCC, else its tracking number."""
        return self.sscc or self.tracking or ""


class LoadCommand(Wire):
    """Announce parcels to load; a parcel already announced is kept as it was."""

    parcels: list[Parcel] = Field(min_length=1, max_length=MAX_PARCELS_PER_COMMAND)

    @model_validator(mode="after")
    def _unique(self) -> LoadCommand:
        ids = [p.key for p in self.parcels]
        if len(set(ids)) != len(ids):
            raise ValueError("a parcel (sscc or tracking) appears twice in one command")
        return self


class ManifestClose(Wire):
    """Close the open manifest of ``carrier`` (as its close barcode does)."""

    carrier: Carrier


class Loaded(Wire):
    """A parcel was loaded onto its carrier's lane.

    ``parcel``: its SSCC, else its tracking number. ``late``: loaded after its cut-off (it
    misses the carrier's pickup it was meant for).
    """

    parcel: str
    sscc: str | None = None
    tracking: str | None = None
    order: str
    carrier: str
    lane: str
    express: bool
    cutoff: int | None = None
    late: bool
    confirmed_by: Literal["scan", "button"]
    scanned_at: int
    loaded_at: int


class LoadRefused(Wire):
    """A scan or press the station refused; nothing changed.

    ``reason``: ``unreadable`` (the scanner flagged the read), ``unknown_parcel`` (nobody
    announced it), ``already_loaded`` (``lane`` and ``detail`` say where and when),
    ``no_lane`` (its carrier has no lane here), ``wrong_lane`` (``lane``: the one pressed or
    scanned; ``detail``: the right one), ``no_parcel`` (a lane with no parcel scanned),
    ``unknown_code`` (not a parcel, lane or close code).
    """

    code: str
    reason: str
    detail: str = ""
    parcel: str | None = None
    order: str | None = None
    carrier: str | None = None
    lane: str | None = None
    at: int


class ManifestClosed(Wire):
    """A carrier's manifest is closed: the parcels on it, and those announced but missing.

    Parcels are named as everywhere at the dock: by SSCC, else by tracking number.
    """

    manifest: str
    carrier: str
    lanes: list[str]
    loaded: list[str]
    missing: list[str]
    late: int
    closed_by: Literal["scan", "command"]
    opened_at: int | None = None
    closed_at: int


class Shipped(Wire):
    """A loaded parcel left on a closed manifest: mark its order shipped, send tracking."""

    order: str
    parcel: str
    sscc: str | None = None
    tracking: str | None = None
    carrier: str
    service: str = ""
    manifest: str
    lane: str
    loaded_at: int
    at: int


register_command("load", LoadCommand)
register_command("manifest_close", ManifestClose)
register_event("loaded", Loaded)
register_event("load_refused", LoadRefused)
register_event("manifest_closed", ManifestClosed)
register_event("shipped", Shipped)
