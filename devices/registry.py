"""Maps a device ``kind`` to the module that holds its config model and driver.

Each module named here defines:

* ``CONFIG``: the pydantic model (a ``DeviceConfig`` subclass with ``kind: Literal[...]``);
* ``DRIVER``: the ``Device`` subclass, built with ``DRIVER.from_config(config, context)``;
* ``SIMULATOR`` (optional): a ``devices.sim.Simulator`` subclass for ``--simulate``.

Modules are imported only when a node uses the kind, so a pick zone never pays for
python-escpos. A new device kind is one module and one line here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

KINDS: dict[str, str] = {
    "serial_scanner": "devices.scanners.serial_scanner",
    "hid_scanner": "devices.scanners.hid_scanner",
    "gpio_slots": "devices.lights.gpio_slots",
    "led_strip": "devices.lights.led_strip",
    "atop": "devices.lights.atop.driver",
    "modbus_io": "devices.lights.modbus.driver",
    "mt_sics": "devices.scales.mt_sics",
    "toledo_8217": "devices.scales.toledo_8217",
    "nci": "devices.scales.nci",
    "hid_pos": "devices.scales.hid_pos",
    "zpl_printer": "devices.printers.zpl",
    "escpos_printer": "devices.printers.escpos",
    "ipp_printer": "devices.printers.ipp",
}


def module_for(kind: str) -> ModuleType:
    """Import and return the module of ``kind``; ``KeyError`` for an unknown kind."""
    return importlib.import_module(KINDS[kind])
