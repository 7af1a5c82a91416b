"""Which box and which packaging material an order goes in (pure functions, no state).

Box choice
----------
A pack station keeps a few standard box sizes (3 to 5 keeps costs down without confusing
packers: the order-management guide in the project's seed material). ``suggest_box`` picks
the *smallest* box (by inner volume) in which

1. every item fits on its own, in some orientation, with the padding its material needs on
   every side (item dimensions sorted against the box's inner dimensions sorted);
2. the padded volume of all units is at most ``fill_ratio`` of the inner volume (items are
   never a perfect 3D packing: the remainder is room for hands and void fill);
3. the weight of the contents is within the box's ``max_load_g`` (when given).

When no box passes, the largest one is suggested with ``fits=False``: the packer overrides
(scans another box) or the order is split by the OMS. This is the simple rule shipping
software uses (smallest box that fits by dimensions); 3D packing solvers were found to be
overridden by packers anyway (domain notes §2.3), so the suggestion stays a guide.

Packaging material
------------------
The seed's table of materials and the protection each gives:

=================  ==========  ==============================================
material           protection  used for
=================  ==========  ==============================================
air_pillow         90 %        orders with a fragile line (default): the best
                               protection at the least weight
packing_peanuts    90 %        alternative for fragile lines (heavier, messy)
bubble_wrap        75 %        alternative: wrap fragile items two layers deep
shredded_wool      60 %        alternative void fill
shredded_paper     50 %        alternative void fill
crunched_paper     50 %        orders without fragile lines (default): cheap
                               void fill that stops items moving
=================  ==========  ==============================================

So the mapping is by fragility: any fragile line makes the whole order need the
``fragile`` material (default ``air_pillow``, 90 %), otherwise the ``standard`` one
(default ``crunched_paper``, 50 %); both are node settings. Fragile items also get more
padding around them (default 25 mm a side against 5 mm).

The material's weight is estimated for the check-weigh from the void it fills (inner
volume minus the items' volume) and its density in grams per litre of void. The defaults
below are estimates; a site should calibrate them (weigh a box filled with its material)
through the ``packaging_g_per_litre`` setting.

A site may add materials of its own (``[[settings.materials]]``, :class:`SiteMaterial`):
the packer reads those by the name the site gave them, in every language, and the seed's
by the catalogue's words (``material.air_pillow``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from agent.i18n import Message, Param, msg


@dataclass(frozen=True, slots=True)
class Material:
    """A packaging material: the seed's, or one the site added.

    Attributes:
        name: the setting value (``air_pillow``).
        label: what the packer reads, in English (``Air pillows``) or in the site's words.
        description: the seed's description.
        protection: the protection rating, in percent.
        g_per_litre: estimated grams per litre of void it fills.
        site: the site added it (its ``label`` is shown as written, in every language).
    """

    name: str
    label: str
    description: str
    protection: int
    g_per_litre: float
    site: bool = False

    def words(self) -> Param:
        """Its name for the screen: the catalogue's for the seed's, the site's own as given."""
        return self.label if self.site else msg(f"material.{self.name}")


MATERIALS: dict[str, Material] = {
    m.name: m
    for m in (
        Material(
            "bubble_wrap",
            "Bubble wrap",
            "two layers wrapped around products, held with tape",
            75,
            6.0,
        ),
        Material(
            "packing_peanuts",
            "Packing peanuts",
            "biodegradable or recycled foam peanuts",
            90,
            8.0,
        ),
        Material(
            "shredded_paper",
            "Shredded paper",
            "cheap and lightweight, but limited protection",
            50,
            20.0,
        ),
        Material(
            "crunched_paper",
            "Crunched paper",
            "from the paper dispenser, crunched by the packer; limited protection",
            50,
            8.0,
        ),
        Material(
            "shredded_wool",
            "Shredded wool",
            "loose-fill wool: lightweight but limited shock protection",
            60,
            15.0,
        ),
        Material(
            "air_pillow",
            "Air pillows",
            "plastic bags filled with air: very light, good protection",
            90,
            1.5,
        ),
    )
}
"""The seed's packaging materials by name."""


class SiteMaterial(BaseModel):
    """A packaging material a site adds (a ``[[settings.materials]]`` table of a pack node).

    Attributes:
        name: the setting value other settings use (``kraft_paper``).
        label: what the packer reads, in the site's words, whatever the screen's language.
        protection: the protection it gives, in percent.
        g_per_litre: grams per litre of void it fills (weigh a filled box to know it).
        description: for the people who keep the node file.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=32, pattern=r"^[a-z0-9_]+$")
    label: str = Field(min_length=1, max_length=40)
    protection: int = Field(ge=0, le=100)
    g_per_litre: float = Field(gt=0, le=1000)
    description: str = Field(default="", max_length=200)

    def material(self) -> Material:
        """As the box choice uses it."""
        m = self
        return Material(m.name, m.label, m.description, m.protection, m.g_per_litre, site=True)


class BoxSize(BaseModel):
    """One standard box of the station (a ``[[settings.boxes]]`` table).

    Attributes:
        name: what the packer reads (``M``).
        inner_mm: inner length, width and height in millimetres (any order).
        empty_weight_g: the empty box's weight (with its tape), for the check-weigh.
        barcode: the code on the box stack; scanning it picks this box.
        max_load_g: the most the box may carry; ``None`` for no limit.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=16)
    inner_mm: tuple[int, int, int]
    empty_weight_g: float = Field(ge=0, le=50_000)
    barcode: str = Field(min_length=1, max_length=64)
    max_load_g: float | None = Field(default=None, gt=0)

    @property
    def volume_mm3(self) -> int:
        """Inner volume in cubic millimetres."""
        a, b, c = self.inner_mm
        return a * b * c


DEFAULT_BOXES: tuple[BoxSize, ...] = (
    BoxSize(name="S", inner_mm=(250, 180, 100), empty_weight_g=150, barcode="BOX-S"),
    BoxSize(name="M", inner_mm=(350, 250, 150), empty_weight_g=280, barcode="BOX-M"),
    BoxSize(name="L", inner_mm=(450, 350, 250), empty_weight_g=520, barcode="BOX-L"),
    BoxSize(
        name="XL", inner_mm=(600, 400, 400), empty_weight_g=900, barcode="BOX-XL", max_load_g=25_000
    ),
)
"""Four standard sizes, used when a node file names none."""


@dataclass(frozen=True, slots=True)
class Item:
    """One order line as the carton choice sees it.

    Attributes:
        sku: the line's SKU.
        qty: units.
        unit_weight_g: one unit's weight.
        dims_mm: one unit's length, width and height, or ``None`` when unknown.
        fragile: needs the fragile material and more padding.
    """

    sku: str
    qty: int
    unit_weight_g: float
    dims_mm: tuple[int, int, int] | None = None
    fragile: bool = False


@dataclass(frozen=True, slots=True)
class Suggestion:
    """The suggested box and material.

    Attributes:
        box: the suggested box.
        material: the suggested packaging material.
        fits: whether the items fit the box by the rules above.
        note: for the packer, when something is off (too big, dimensions unknown).
    """

    box: BoxSize
    material: Material
    fits: bool
    note: Message | None = None


def choose_material(
    items: Sequence[Item],
    *,
    fragile: str,
    standard: str,
    materials: Mapping[str, Material] = MATERIALS,
) -> Material:
    """The fragile material when any line is fragile, else the standard one."""
    return materials[fragile if any(i.fragile for i in items) else standard]


def _padded(item: Item, fragile_mm: int, standard_mm: int) -> tuple[int, int, int] | None:
    if item.dims_mm is None:
        return None
    pad = 2 * (fragile_mm if item.fragile else standard_mm)
    a, b, c = sorted(item.dims_mm, reverse=True)
    return a + pad, b + pad, c + pad


def _fits(dims: tuple[int, int, int], box: BoxSize) -> bool:
    inner = sorted(box.inner_mm, reverse=True)
    return all(d <= i for d, i in zip(dims, inner, strict=True))


def items_volume_mm3(items: Sequence[Item]) -> int:
    """The units' own volume (unknown dimensions count as nothing)."""
    total = 0
    for item in items:
        if item.dims_mm is not None:
            a, b, c = item.dims_mm
            total += a * b * c * item.qty
    return total


def contents_weight_g(items: Sequence[Item]) -> float:
    """The units' weight."""
    return sum(i.unit_weight_g * i.qty for i in items)


def suggest_box(
    items: Sequence[Item],
    boxes: Sequence[BoxSize],
    *,
    fragile_material: str = "air_pillow",
    standard_material: str = "crunched_paper",
    fragile_padding_mm: int = 25,
    standard_padding_mm: int = 5,
    fill_ratio: float = 0.8,
    materials: Mapping[str, Material] = MATERIALS,
) -> Suggestion:
    """The smallest box the items fit in, and the material (see the module docstring).

    Raises:
        ValueError: ``boxes`` is empty.
    """
    if not boxes:
        raise ValueError("no box sizes configured")
    material = choose_material(
        items, fragile=fragile_material, standard=standard_material, materials=materials
    )
    padded = [(item, _padded(item, fragile_padding_mm, standard_padding_mm)) for item in items]
    volume = sum(p[0] * p[1] * p[2] * item.qty for item, p in padded if p is not None)
    weight = contents_weight_g(items)
    unknown = [item.sku for item, p in padded if p is None]
    ordered = sorted(boxes, key=lambda b: (b.volume_mm3, b.empty_weight_g))
    for box in ordered:
        if box.max_load_g is not None and weight > box.max_load_g:
            continue
        if volume > fill_ratio * box.volume_mm3:
            continue
        if all(p is None or _fits(p, box) for _, p in padded):
            note = msg("pack.no_dims", skus=unknown) if unknown else None
            return Suggestion(box, material, True, note)
    largest = ordered[-1]
    return Suggestion(
        largest,
        material,
        False,
        msg("pack.too_big", box=largest.name),
    )


def packaging_weight_g(box: BoxSize, items: Sequence[Item], material: Material) -> float:
    """Estimated weight of the material filling the box's void."""
    void_mm3 = max(box.volume_mm3 - items_volume_mm3(items), 0)
    return round(void_mm3 / 1_000_000 * material.g_per_litre, 1)


def expected_weight_g(
    box: BoxSize, items: Sequence[Item], material: Material, g_per_litre: float | None = None
) -> float:
    """Items + empty box + packaging: what the scale should read for the closed parcel."""
    used = material if g_per_litre is None else _with_density(material, g_per_litre)
    return round(
        contents_weight_g(items) + box.empty_weight_g + packaging_weight_g(box, items, used), 1
    )


def _with_density(material: Material, g_per_litre: float) -> Material:
    m = material
    return Material(m.name, m.label, m.description, m.protection, g_per_litre, m.site)
