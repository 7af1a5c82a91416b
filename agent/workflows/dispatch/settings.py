"""The ``[settings]`` table of a dispatch node: its lanes and how parcels stand out."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from devices.lights.palette import Colour


class Lane(BaseModel):
    """One lane: a carrier cage or trailer door, lit and pressed through its slot.

    Attributes:
        id: the slot of the node's lights that is this lane's light and button.
        carrier: the carrier whose parcels it takes (as the OMS names it in ``load``).
        barcode: the code on the lane; scanning it confirms a load (default ``LANE-{id}``).
        close_barcode: closes the carrier's manifest (default ``CLOSE-{id}``).
        name: what the screen calls it (default: the id).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Annotated[str, Field(min_length=1, max_length=64)]
    carrier: Annotated[str, Field(min_length=1, max_length=64)]
    barcode: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    close_barcode: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    name: Annotated[str, Field(max_length=64)] = ""

    @property
    def scan_code(self) -> str:
        """The barcode that confirms a load onto this lane."""
        return self.barcode or f"LANE-{self.id}"

    @property
    def close_code(self) -> str:
        """The barcode that closes this lane's carrier's manifest."""
        return self.close_barcode or f"CLOSE-{self.id}"


class DispatchSettings(BaseModel):
    """The ``[settings]`` table of a dispatch node.

    Attributes:
        lanes: the dock's lanes (1 to 32); a carrier may have more than one (all light).
        near_cutoff_min: a parcel whose cut-off is this close (or past) stands out.
        colour: a lane waiting for a normal parcel.
        shipped_memory: how many shipped parcels are remembered, to say where a parcel
            scanned again went.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    lanes: list[Lane] = Field(min_length=1, max_length=32)
    near_cutoff_min: float = Field(default=30.0, ge=0, le=24 * 60)
    colour: Colour = Colour.BLUE
    shipped_memory: int = Field(default=2000, ge=0, le=100_000)

    @model_validator(mode="after")
    def _unique(self) -> DispatchSettings:
        ids = [lane.id for lane in self.lanes]
        if len(set(ids)) != len(ids):
            raise ValueError("a lane id appears twice")
        codes = [c for lane in self.lanes for c in (lane.scan_code, lane.close_code)]
        if len(set(codes)) != len(codes):
            raise ValueError("a lane or close barcode is used twice")
        return self
