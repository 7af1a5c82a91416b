"""Zone picking: every open task's slot lights with its quantity; the picker confirms it.

A task (a *line*) is ``waiting`` while its wave has begun but is not released, then
``open``. A slot shows one line at a time: the most urgent (priority 0 first), then the
earliest released, then the earliest received; when it is confirmed the next line of that
slot lights. ``wave_begin`` holds a wave's lines dark, ``wave_release`` lights them,
``wave_cancel`` cancels them; a line whose wave was never begun is released at once.

What confirms a line is a node setting (``PickSettings.confirm``):

* ``button``: the slot's confirm button;
* ``scan``: a scan of the item (any of the line's barcodes; GS1 codes compare by GTIN);
* ``location_then_item``: a scan of the location's barcode, then of the item.

In the scan modes the confirm button still confirms a line whose quantity the picker has
lowered (a short pick of nothing cannot be scanned). A wrong scan flashes the error
pattern on the slot it concerns (the *focus*: the slot whose location was scanned or whose
button was pressed last, else the only lit slot), sends ``misscan`` and leaves the line
open; the slot shows its line again on the next correct action.

Short picks: plus/minus on the slot (or the ``short_barcode`` scan, see ``PickSettings``)
change the quantity actually picked, shown on the slot's display; a reason barcode picks the
reason (default ``empty``). Confirming then sends ``short`` instead of ``picked``.

Pickers log in and out by scanning their badge; each gets a colour no other logged-in
picker has. Lines are assigned **by order**: when a line is released, its order goes to the
picker who already has it, else to the logged-in picker with the fewest open orders (ties:
who logged in first). A picker who logs out hands their orders on the same way; with
nobody logged in lines stay unassigned (blue, or reddish purple for express) and
confirmations carry no picker. Lines are shown in their picker's colour, express ones
blinking slowly; with ``colour_by = "order"`` (batch picking: one picker, several orders)
each open order gets its own colour instead, and after a pick the put-to-light position of
the line's tote on the cart (``tote_slots``, or the slot named like the container) shows
the colour and how many to put there; its confirm button turns it off.

When the last line of an order's tote (``container``) in this zone is confirmed, the zone
lamp shows ``DONE`` and ``zone_done`` lets the OMS send the tote on. The lamp is reached
through a ``Light`` action on the location ``ZONE_LAMP``.

Lines past their deadline go dark and are reported ``expired``. Every confirmation carries
``lit_at`` and ``confirmed_at`` (ms); the node counts lines, units, shorts, scans and
mis-scans and publishes them every ``counters_every_s`` in a ``counters`` event.

Modules: ``messages`` (the events), ``settings`` (the node file's ``[settings]``),
``machine`` (the state machine).
"""

from __future__ import annotations

from agent.roles import RoleManifest
from agent.workflows.base import ZONE_LAMP
from agent.workflows.picking.machine import PickingWorkflow
from agent.workflows.picking.messages import (
    Counters,
    Expired,
    Misscan,
    Picked,
    PickerChange,
    Short,
    ZoneDone,
)
from agent.workflows.picking.model import Line
from agent.workflows.picking.settings import PickSettings

ROLE = RoleManifest(
    name="pick",
    settings=PickSettings,
    workflow=PickingWorkflow,
    page="zone.html",
    misscan_events=frozenset({"misscan"}),
    shows_locations=True,
)

__all__ = [
    "ROLE",
    "ZONE_LAMP",
    "Counters",
    "Expired",
    "Line",
    "Misscan",
    "PickSettings",
    "Picked",
    "PickerChange",
    "PickingWorkflow",
    "Short",
    "ZoneDone",
]
