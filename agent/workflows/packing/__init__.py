"""Pack station (role ``pack``): verify by scan, choose the box, check-weigh, print the label.

The OMS queues orders at the station with ``pack`` (one order per command: its lines with
barcodes, unit weights, dimensions and fragility; express; gift note and bonus item; the
carrier's label as PDF, PNG or ZPL, or the fields for the station's own label; whether a
packing slip is wanted). ``pack_cancel`` removes orders not packed yet.

At the bench, one order at a time:

1. **Start**: the packer scans the order's (or its tote's) barcode. The screen lists the
   lines and suggests a box and a packaging material (``agent.workflows.cartons``).
2. **Verify**: every unit is scanned. A code of no line (``wrong_item``: a product code,
   ``unknown_code``: anything else), a unit more than the line asks for (``surplus``) and a
   read the scanner flagged (``unreadable``, e.g. a bad check digit, with the reason) are
   refused: the screen says why in words and a ``pack_refused`` event goes out. GS1 codes
   (GS1-128, DataMatrix) match a line by their GTIN (AI 01) against the line's barcodes
   normalised to GTIN-14. When the last unit is in, ``verified`` goes out and the packing
   slip is printed (when wanted and the station has an ESC/POS printer).
3. **Box**: the packer accepts the suggestion (the ``confirm_barcode`` or the suggested
   box's barcode) or overrides it by scanning another box's barcode, at any time from the
   start until the parcel passes the check-weigh.
4. **Check-weigh**: the parcel's weight comes from the scale's live readings; only a
   reading the scale calls stable counts, and only after the previous parcel has left the
   scale (a reading under ``min_weight_g``). Expected = items + empty box + estimated
   packaging. It fails when the difference exceeds *both* ``tolerance_pct`` of the expected
   weight and ``tolerance_g`` (defaults 5 % and 50 g, see ``PackSettings``). Each verdict
   is a ``weighed`` event. A failure blocks the label until a new stable reading passes
   (re-weigh) or a supervisor scans their badge and then a reason barcode (recorded in a
   ``weighed`` event with verdict ``override``, the supervisor's name and the reason).
5. **Label**: the carrier's label as it came (PDF or PNG by IPP to an ``ipp_printer``, ZPL
   byte for byte to a ``zpl_printer``; ``labelling``), else the station's own 4x6 label with
   the SSCC (``agent.workflows.labels``; ZPL, or PDF/PNG on an IPP printer), as job
   ``{order}-label`` on the printer that prints it. A carrier label no printer here prints
   is refused with the ``pack`` command (``no_printer_for_format``). When
   the printer confirms it, ``label_printed`` and ``packed`` go out (box, weight, timings)
   and the order is done.

Printing never prints twice. The job id is stable per order and persisted as *submitted*
before the print action runs. A failed job (``PrintResult`` not ok: it may have printed in
part) and a job whose result was lost in a restart are **not** printed again by
themselves: the screen asks the packer, who either scans the order barcode again (a reprint
as ``{order}-label-2``, ``-3``...) or the confirm barcode (it did print). A job the printer
holds (paper out, head open) prints when the fault is cleared; when the printer reports a
fault or is unreachable (``devices.events.DeviceHealthChanged`` input, or already so when
the job is submitted), or no result came within ``label_timeout_s``, the packer and the OMS
(``print_delayed``) are told once. A packing slip (job ``{order}-slip``, a ``PrintSlip``
action) is printed once, when the order is verified; its faults are reported the same way
but never hold the parcel.

Everything about an order (lines, scans, box, verdicts, label job) is a store task, so a
restart in the middle of an order carries on where it was.

Modules: ``messages`` (the wire), ``settings`` (the node file's ``[settings]``),
``machine`` (the state machine), ``labelling`` (which printer prints which label, and the
carrier documents kept).
"""

from __future__ import annotations

from agent.roles import RoleManifest
from agent.workflows.packing.machine import PackingWorkflow
from agent.workflows.packing.messages import (
    CarrierLabel,
    LabelPrinted,
    OwnLabel,
    PackCancel,
    PackCommand,
    PackCounters,
    Packed,
    PackLine,
    PackRefused,
    PrintProblem,
    ShipTo,
    Verified,
    Weighed,
)
from agent.workflows.packing.model import check_weight
from agent.workflows.packing.settings import PackSettings

ROLE = RoleManifest(
    name="pack",
    settings=PackSettings,
    workflow=PackingWorkflow,
    page="pack.html",
    misscan_events=frozenset({"pack_refused"}),
)

__all__ = [
    "ROLE",
    "CarrierLabel",
    "LabelPrinted",
    "OwnLabel",
    "PackCancel",
    "PackCommand",
    "PackCounters",
    "PackLine",
    "PackRefused",
    "PackSettings",
    "Packed",
    "PackingWorkflow",
    "PrintProblem",
    "ShipTo",
    "Verified",
    "Weighed",
    "check_weight",
]
