"""Domain state machines: picking, put wall, packing, dispatch, returns; no I/O.

Events in, effects out.
"""

from __future__ import annotations

import importlib
import pkgutil


def register_all() -> None:
    """Import every workflow module, so each registers its commands and events.

    The OMS side needs the whole message table although a node loads only its own role.
    """
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
