"""Returns station (role ``returns``): receive, grade and put away what customers send back.

The OMS announces expected returns with ``rma`` (the RMA id, the original order, the
carrier's tracking number, and per line the SKU, its barcodes, how many, the customer's
stated reason and whether it is hazardous goods). At the bench:

1. **Open.** The operator scans the RMA label, the tracking number or the order number.
   A code that is none of these (and not a product barcode) opens an *unexpected return*
   (RMA id ``X-{code}``): it is processed and reported like any other.
2. **Unit.** Each unit is scanned (GS1 codes match by GTIN, as at packing). A unit that is
   in no line of the RMA (``not_in_rma``) or beyond a line's quantity (``surplus``) is
   flagged, not refused: it is still graded, put away and reported.
3. **Reason and grade.** The operator scans a reason barcode (``REASON-defective``,
   ``REASON-wrong_item_sent``, ...) and a grade barcode (``GRADE-A`` unopened, ``B`` like
   new, ``C`` damaged, ``D`` unsellable), in either order.
4. **Put.** The disposition follows from the policy table (grade x reason -> restock,
   refurbish, quarantine, return to vendor, dispose; a hazardous line never goes to
   restock but to quarantine). The bin of that disposition lights; its button confirms the
   put, ``return_received`` goes out, and a small ZPL label (SKU, grade, disposition, RMA)
   prints when the station has a label printer.
5. **Close.** The close barcode ends the return: ``return_closed`` says what was expected,
   received and missing, and what came that nobody expected.

**An OMS refunds only after ``return_received``**: that event means the unit was physically
received and graded; an RMA, a tracking scan or ``return_opened`` alone mean nothing yet.

Modules: ``messages`` (the wire), ``settings`` (``[settings]`` and the default policy),
``station`` (the state machine).
"""

from __future__ import annotations

from agent.roles import RoleManifest
from agent.workflows.returns.messages import (
    ReturnClosed,
    ReturnLine,
    ReturnOpened,
    ReturnReceived,
    ReturnRefused,
    Rma,
    RmaCommand,
)
from agent.workflows.returns.settings import DEFAULT_POLICY, ReturnsSettings
from agent.workflows.returns.station import ReturnsWorkflow

ROLE = RoleManifest(
    name="returns",
    settings=ReturnsSettings,
    workflow=ReturnsWorkflow,
    page="returns.html",
    misscan_events=frozenset({"return_refused"}),
)

__all__ = [
    "DEFAULT_POLICY",
    "ROLE",
    "ReturnClosed",
    "ReturnLine",
    "ReturnOpened",
    "ReturnReceived",
    "ReturnRefused",
    "ReturnsSettings",
    "ReturnsWorkflow",
    "Rma",
    "RmaCommand",
]
