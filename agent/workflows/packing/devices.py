"""Which of a pack node's devices the station uses: its label printer, scale and slip printer."""

from __future__ import annotations

from agent.errors import ConfigError
from agent.workflows.base import FloorInfo
from agent.workflows.packing.labelling import LABEL_PRINTER_KINDS
from agent.workflows.packing.settings import PackSettings

SCALE_KINDS = frozenset({"mt_sics", "toledo_8217", "nci", "hid_pos"})
SLIP_PRINTER_KINDS = frozenset({"escpos_printer"})


def station_devices(settings: PackSettings, floor: FloorInfo) -> tuple[str, str, str | None]:
    """The label printer, the scale and the slip printer (or ``None``) of a pack node.

    A setting names one; without it, the first device of a fitting kind is taken.

    Raises:
        ConfigError: a named device is not of a fitting kind, or a needed one is missing.
    """

    def pick(setting: str, name: str | None, kinds: frozenset[str]) -> str | None:
        if name is not None:
            if floor.kinds.get(name) not in kinds:
                raise ConfigError(
                    "(node file)",
                    f"settings.{setting}",
                    f"no device {name!r} of kind {' or '.join(sorted(kinds))}",
                )
            return name
        return next((n for n, k in floor.kinds.items() if k in kinds), None)

    label = pick("label_printer", settings.label_printer, LABEL_PRINTER_KINDS)
    scale = pick("scale", settings.scale, SCALE_KINDS)
    slip = pick("slip_printer", settings.slip_printer, SLIP_PRINTER_KINDS)
    if label is None:
        raise ConfigError(
            "(node file)", "devices", "a pack node needs a zpl_printer or an ipp_printer"
        )
    if scale is None:
        raise ConfigError("(node file)", "devices", "a pack node needs a scale")
    return label, scale, slip
