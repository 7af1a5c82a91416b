"""The ``[settings]`` table of a returns node, and the default disposition policy."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.workflows.returns.messages import DISPOSITIONS, GRADES, REASONS, Disposition

DEFAULT_POLICY: dict[str, dict[str, Disposition]] = {
    # Unopened: back to stock, unless the customer says it does not work (test it first).
    "A": {"*": "restock", "defective": "quarantine"},
    # Like new: back to stock; a claimed fault is repaired and resold as refurbished.
    "B": {"*": "restock", "defective": "refurbish"},
    # Damaged: refurbish; a faulty one goes back to its vendor; transit damage is held as
    # evidence for the carrier claim.
    "C": {"*": "refurbish", "defective": "return_to_vendor", "damaged_in_transit": "quarantine"},
    # Unsellable: disposed of, unless the vendor takes faulty goods back.
    "D": {"*": "dispose", "defective": "return_to_vendor"},
}
"""Grade -> reason (``*``: any other) -> disposition. A hazardous line never goes to
restock: the station sends it to quarantine instead, whatever the table says."""

Slot = Annotated[str, Field(min_length=1, max_length=64)]


class ReturnsSettings(BaseModel):
    """The ``[settings]`` table of a returns node.

    Attributes:
        bins: disposition -> the slot (light and button) of its bin; every disposition the
            policy can give (and ``quarantine``, for hazardous goods) needs one.
        policy: grade -> reason (or ``*``) -> disposition; every grade needs a ``*`` row.
        reason_prefix: a reason barcode is this followed by a reason code.
        grade_prefix: a grade barcode is this followed by ``A``, ``B``, ``C`` or ``D``.
        close_barcode: closes the open return.
        label_printer: the ZPL printer for unit labels (default: the node's first, if any).
        print_labels: print a unit label at each put when there is a label printer.
        closed_memory: how many closed RMA ids are remembered (refused if scanned again).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bins: dict[Disposition, Slot]
    policy: dict[str, dict[str, Disposition]] = Field(default_factory=lambda: DEFAULT_POLICY)
    reason_prefix: str = Field(default="REASON-", min_length=1, max_length=32)
    grade_prefix: str = Field(default="GRADE-", min_length=1, max_length=32)
    close_barcode: str = Field(default="CLOSE", min_length=1, max_length=64)
    label_printer: str | None = None
    print_labels: bool = True
    closed_memory: int = Field(default=2000, ge=0, le=100_000)

    @model_validator(mode="after")
    def _complete(self) -> ReturnsSettings:
        for grade in GRADES:
            if "*" not in self.policy.get(grade, {}):
                raise ValueError(f"policy.{grade}: give a '*' disposition for grade {grade}")
        for grade, row in self.policy.items():
            if grade not in GRADES:
                raise ValueError(f"policy.{grade}: grades are {', '.join(GRADES)}")
            for reason in row:
                if reason != "*" and reason not in REASONS:
                    raise ValueError(f"policy.{grade}.{reason}: reasons are {', '.join(REASONS)}")
        needed = {d for row in self.policy.values() for d in row.values()} | {"quarantine"}
        missing = [d for d in DISPOSITIONS if d in needed and d not in self.bins]
        if missing:
            raise ValueError(f"bins: no bin for {', '.join(missing)}")
        slots = list(self.bins.values())
        if len(set(slots)) != len(slots):
            raise ValueError("bins: a slot is the bin of two dispositions")
        return self

    def disposition(self, grade: str, reason: str, hazardous: bool) -> Disposition:
        """Where a unit goes: the policy's answer, quarantine instead of restock if hazardous."""
        row = self.policy[grade]
        found = row.get(reason, row["*"])
        return "quarantine" if hazardous and found == "restock" else found
