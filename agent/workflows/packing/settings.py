"""The ``[settings]`` table of a pack node: boxes, materials, check-weigh tolerances, printers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.workflows.cartons import DEFAULT_BOXES, MATERIALS, BoxSize, Material, SiteMaterial


def _default_boxes() -> list[BoxSize]:
    return list(DEFAULT_BOXES)


class PackSettings(BaseModel):
    """The ``[settings]`` table of a pack node.

    Attributes:
        boxes: the station's standard boxes (3 to 5 recommended; 1 to 8 allowed).
        confirm_barcode: accepts the suggested box; also says "the label did print".
        fragile_material: packaging for orders with a fragile line (``cartons.MATERIALS``
            or one of ``materials``).
        standard_material: packaging for the other orders.
        materials: the site's own packaging materials, shown by the name it gives them.
        packaging_g_per_litre: calibrated material densities, overriding the estimates.
        fragile_padding_mm: room around a fragile item on every side.
        standard_padding_mm: room around any other item.
        fill_ratio: the share of a box's volume the padded items may take.
        tolerance_pct: check-weigh fails only when the difference exceeds this share of the
            expected weight...
        tolerance_g: ...and this many grams. 5 % alone fails light parcels on noise (a
            300 g parcel would allow 15 g), an absolute limit alone misses a missing unit in
            a heavy one; so both, as in domain notes §2.2 (ShipHero: > 5 % and >= 1 oz
            below 1 lb; Doran: 5 lb +/- 0.25 lb = 5 %). 50 g catches a missing unit of
            about 50 g or more in a light parcel; for parcels over 1 kg 5 % governs.
        min_weight_g: readings below this mean an empty scale.
        supervisors: badge code to supervisor name; only these can release a failed parcel.
            Events carry the name, never the badge code.
        reason_prefix: a reason barcode is this followed by one of ``override_reasons``.
        override_reasons: the reasons a supervisor may give.
        label_printer: the label printer of the station's own labels, a ``zpl_printer`` or
            an ``ipp_printer`` (default: the node's first); carrier labels go to a printer
            that prints their format.
        slip_printer: the ESC/POS printer's device name (default: the node's first, if any).
        scale: the scale's device name (default: the node's first).
        dpi: the ZPL printer's resolution (203: 812 x 1218 dots, 300: 1200 x 1800); an
            IPP printer has its own ``dpi``.
        gs1_company_prefix: builds SSCCs from a command's ``serial_reference``.
        ship_from: the sender's lines on the station's own label.
        slip_title: the heading of packing slips.
        label_timeout_s: a label without a result this long is reported late.
        counters_every_s: how often ``pack_counters`` goes out (0: never).
        done_memory: how many packed order ids are remembered for replies.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    boxes: list[BoxSize] = Field(default_factory=_default_boxes, min_length=1, max_length=8)
    confirm_barcode: str = Field(default="CONFIRM", min_length=1, max_length=64)
    fragile_material: str = "air_pillow"
    standard_material: str = "crunched_paper"
    materials: list[SiteMaterial] = Field(default_factory=list, max_length=16)
    packaging_g_per_litre: dict[str, float] = Field(default_factory=dict)
    fragile_padding_mm: int = Field(default=25, ge=0, le=200)
    standard_padding_mm: int = Field(default=5, ge=0, le=200)
    fill_ratio: float = Field(default=0.8, gt=0, le=1)
    tolerance_pct: float = Field(default=5.0, ge=0, le=100)
    tolerance_g: float = Field(default=50.0, ge=0, le=100_000)
    min_weight_g: float = Field(default=20.0, ge=0)
    supervisors: dict[str, str] = Field(default_factory=dict)
    reason_prefix: str = Field(default="REASON-", min_length=1, max_length=32)
    override_reasons: list[str] = Field(
        default_factory=lambda: [
            "item_weight_wrong",
            "extra_packaging",
            "scale_check",
            "customer_request",
        ],
        min_length=1,
    )
    label_printer: str | None = None
    slip_printer: str | None = None
    scale: str | None = None
    dpi: Literal[203, 300] = 203
    gs1_company_prefix: str | None = Field(default=None, pattern=r"^[0-9]{7,10}$")
    ship_from: list[str] = Field(default_factory=list, max_length=3)
    slip_title: str = Field(default="Packing slip", max_length=32)
    label_timeout_s: float = Field(default=20.0, gt=0)
    counters_every_s: int = Field(default=60, ge=0, le=86_400)
    done_memory: int = Field(default=1000, ge=0, le=100_000)

    @model_validator(mode="after")
    def _check(self) -> PackSettings:
        known = self.material_table()
        if len(known) != len(MATERIALS) + len(self.materials):
            raise ValueError("a site material has the name of another material")
        for name in (self.fragile_material, self.standard_material, *self.packaging_g_per_litre):
            if name not in known:
                raise ValueError(f"unknown material {name!r}; known: {', '.join(known)}")
        codes = [b.barcode for b in self.boxes] + [self.confirm_barcode]
        if len(set(codes)) != len(codes):
            raise ValueError("box barcodes and the confirm barcode must all differ")
        if len({b.name for b in self.boxes}) != len(self.boxes):
            raise ValueError("two boxes have the same name")
        return self

    def material_table(self) -> dict[str, Material]:
        """Every material the station knows: the seed's, then the site's own."""
        return {**MATERIALS, **{m.name: m.material() for m in self.materials}}


__all__ = ["PackSettings"]
