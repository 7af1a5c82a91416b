"""Dispatch station (role ``dispatch``): scan each parcel onto its carrier's lane, close manifests.

The OMS announces packed parcels with ``load`` (SSCC, tracking number, carrier, service,
order, express flag, the carrier's cut-off). The dock has lanes (carrier cages, trailer
doors), each a light with a button, configured in the node file's ``[settings]``. The
loader scans a parcel's label (its GS1-128 SSCC, or the carrier's tracking barcode): the
lane of its carrier lights, express parcels and parcels near their cut-off in their own
colour and pattern. Scanning the lane's barcode, or pressing the lane's button, confirms
the load (``loaded``). A wrong lane, a parcel already loaded (the refusal says where), a
parcel nobody announced and a carrier with no lane are refused with the reason on the
screen and a ``load_refused`` event; nothing changes. Closing a carrier's manifest (its
close barcode, or the ``manifest_close`` command) emits ``manifest_closed`` with what was
loaded and what was announced but not loaded, and one ``shipped`` per parcel loaded: the
order guide's "mark the order as shipped". Parcels not loaded stay announced for the next
manifest of their carrier.

Modules: ``messages`` (the wire), ``settings`` (the node file's ``[settings]``),
``station`` (the state machine).
"""

from __future__ import annotations

from agent.roles import RoleManifest
from agent.workflows.dispatch.messages import (
    LoadCommand,
    Loaded,
    LoadRefused,
    ManifestClose,
    ManifestClosed,
    Parcel,
    Shipped,
)
from agent.workflows.dispatch.settings import DispatchSettings, Lane
from agent.workflows.dispatch.station import DispatchWorkflow

ROLE = RoleManifest(
    name="dispatch",
    settings=DispatchSettings,
    workflow=DispatchWorkflow,
    page="dispatch.html",
    misscan_events=frozenset({"load_refused"}),
)

__all__ = [
    "ROLE",
    "DispatchSettings",
    "DispatchWorkflow",
    "Lane",
    "LoadCommand",
    "LoadRefused",
    "Loaded",
    "ManifestClose",
    "ManifestClosed",
    "Parcel",
    "Shipped",
]
