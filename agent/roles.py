"""Maps a node ``role`` to the workflow package that declares it.

Each package named here declares ``ROLE``, a :class:`RoleManifest`: the ``[settings]``
model, the state machine, the screen, which of its events are mis-scans, whether it shows
work at locations. Everything else that depends on the role reads the manifest: the node
file's validation (:mod:`agent.config`), the process (:mod:`agent.app`: workflow and
screen), the node's mis-scan counter. Packages are imported only when a node has the role,
so a pick zone never loads packing. A new role is one package and one line here, as a new
device kind is one module and one line in :mod:`devices.registry`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

ROLES: dict[str, str] = {
    "pick": "agent.workflows.picking",
    "put_wall": "agent.workflows.putwall",
    "pack": "agent.workflows.packing",
    "returns": "agent.workflows.returns",
    "dispatch": "agent.workflows.dispatch",
}


@dataclass(frozen=True, slots=True)
class RoleManifest:
    """What a role is, declared once by its workflow package as ``ROLE``.

    Attributes:
        name: the role as a node file names it.
        settings: the model of the node file's ``[settings]`` table.
        workflow: the state machine class; ``workflow.from_config(config, floor)`` builds it.
        page: the screen in ``agent/static`` the node serves at ``/``.
        misscan_events: events that report a refused scan (counted as mis-scans).
        shows_locations: whether the role shows work at locations, so a node of it needs a
            light device (``check-config`` says so when it has none).
    """

    name: str
    settings: type[BaseModel]
    workflow: type[Any]
    page: str
    misscan_events: frozenset[str] = frozenset()
    shows_locations: bool = False


def manifest(role: str) -> RoleManifest:
    """The manifest of ``role``, importing its package; ``KeyError`` for an unknown role."""
    declared: RoleManifest = importlib.import_module(ROLES[role]).ROLE
    return declared
