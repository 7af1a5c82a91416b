"""What a workflow sees and what it may ask for.

A workflow is a plain state machine. The node feeds it commands, device input and clock
ticks; it answers with a ``Step``: store writes (tasks, events for the OMS, counters) and
device actions (lights, prints, packing slips). The node commits the writes in one
transaction, then performs the actions, so nothing the OMS hears about is lost if the power
goes.

Workflows never touch asyncio, the broker or hardware, so tests drive them directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ValidationError

from agent.errors import ConfigError
from agent.store import StoredTask, Unit
from agent.wire.messages import Envelope, ItemResult, Wire
from agent.workflows.labels import LabelData
from devices.events import ButtonPress

ZONE_LAMP = "@zone"
"""The location name of the zone-complete lamp (never a valid slot id)."""


@dataclass(frozen=True, slots=True)
class Light:
    """Show something on the light of ``location``; ``colour=None`` turns it off.

    ``colour`` and ``pattern`` are names from ``devices.lights.palette``. ``shows`` names
    what the light stands for (a task id): the floor remembers it per location and hands it
    back with a press there (``ButtonPress.shown``), so a workflow can tell a press made for
    what is shown now from one made for what was shown before (``press_saw``).
    """

    location: str
    colour: str | None
    pattern: str = "steady"
    qty: int | None = None
    text: str | None = None
    shows: str | None = field(default=None, compare=False)
    """Not what the light looks like, so not compared: two lights alike are equal."""


@dataclass(frozen=True, slots=True)
class Print:
    """Print ``data`` on ``printer`` as job ``job_id`` (never printed twice)."""

    printer: str
    job_id: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Slip:
    """A packing slip's content.

    The same fields as ``devices.printers.escpos.PackingSlip``: the floor renders it with
    ``render_slip(PackingSlip(**asdict(slip)))``, so no workflow imports the ESC/POS module.

    Attributes:
        title: the heading (the site or shop name).
        order_id: the order number, printed under the title.
        lines: ``(quantity, sku, description)`` per order line.
        barcode: Code 128 content (usually the order id).
        qr: QR content (a return or tracking URL); empty for none.
        footer: a closing line (a gift note); empty for none.
    """

    title: str
    order_id: str
    lines: tuple[tuple[int, str, str], ...]
    barcode: str
    qr: str = ""
    footer: str = ""


@dataclass(frozen=True, slots=True)
class PrintSlip:
    """Print ``slip`` on the ESC/POS ``printer`` as job ``job_id`` (never printed twice)."""

    printer: str
    job_id: str
    slip: Slip


@dataclass(frozen=True, slots=True)
class PrintLabel:
    """Render the station's own ``label`` as ``fmt`` at ``dpi`` and print it on ``printer``.

    For IPP printers, which take PDF or PNG: the floor renders it
    (``devices.printers.render``) off the event loop, so no workflow imports Pillow.
    """

    printer: str
    job_id: str
    label: LabelData
    fmt: Literal["pdf", "png"]
    dpi: Literal[203, 300]


Action = Light | Print | PrintSlip | PrintLabel


@dataclass(slots=True)
class Step:
    """What one input made a workflow do."""

    unit: Unit = field(default_factory=Unit)
    actions: list[Action] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    """Reasons input was not acted on (``stale_press``): the node counts and logs them."""

    def emit(
        self, name: str, body: Wire | dict[str, Any], *, corr: str | None = None, ts: int = 0
    ) -> None:
        """Send an event to the OMS (through the outbox)."""
        self.unit.emit(name, body, corr=corr, ts=ts)

    def light(
        self,
        location: str,
        colour: str | None,
        pattern: str = "steady",
        qty: int | None = None,
        text: str | None = None,
        shows: str | None = None,
    ) -> None:
        """Light ``location`` (or turn it off with ``colour=None``); ``shows``: see ``Light``."""
        self.actions.append(Light(location, colour, pattern, qty, text, shows))

    def off(self, location: str) -> None:
        """Turn the light of ``location`` off."""
        self.actions.append(Light(location, None))


STALE_PRESS = "stale_press"
"""``Step.ignored`` reason: a press made for something its slot no longer shows."""


def press_saw(event: ButtonPress, shows: str | None) -> bool:
    """Whether ``event`` was pressed while its slot showed ``shows`` (``None``: dark).

    A press whose floor did not know what its slot showed (``shown is None``) is taken as
    made for what is shown now, as before presses carried it.
    """
    return event.shown is None or event.shown == (shows or "")


@dataclass(frozen=True, slots=True)
class Verdict:
    """A workflow's answer to a command, turned into the ``reply`` event by the node."""

    status: Literal["accepted", "rejected"]
    reason: str | None = None
    detail: str | None = None
    items: Sequence[ItemResult] = ()

    @classmethod
    def accepted(cls, items: Sequence[ItemResult] = ()) -> Verdict:
        """Accepted, with per-item results when some items were refused."""
        return cls("accepted", items=items)

    @classmethod
    def rejected(cls, reason: str, detail: str | None = None) -> Verdict:
        """Refused as a whole: nothing was applied."""
        return cls("rejected", reason, detail)


class FloorInfo(Protocol):
    """What a workflow may know about the node's devices when it is built."""

    kinds: dict[str, str]
    """Device name to kind (``"label" -> "zpl_printer"``)."""

    def locations(self) -> list[str]:
        """Locations (slots) the node's lights cover."""
        ...


class Workflow(Protocol):
    """The interface the node drives."""

    commands: Mapping[str, type[Wire]]
    """The commands this workflow handles, by name."""

    def locations(self) -> list[str]:
        """Locations this workflow shows (for the birth)."""
        ...

    def restore(self, tasks: list[StoredTask], step: Step, now: int) -> None:
        """Rebuild state from the store after a start, and light what is open."""
        ...

    def on_command(
        self, name: str, envelope: Envelope, body: Wire, step: Step, now: int
    ) -> Verdict:
        """Apply a command (already de-duplicated and validated)."""
        ...

    def on_input(self, event: object, step: Step, now: int) -> None:
        """React to device input (a ``devices.events`` value)."""
        ...

    def on_tick(self, step: Step, now: int) -> None:
        """Called about once a second: deadlines, periodic counters."""
        ...

    def snapshot(self) -> Mapping[str, object]:
        """What the role's screen shows now (``GET /api/state``'s ``workflow``).

        Each role types it (``PickScreen``, ``PackScreen``, ``WallScreen``,
        ``DispatchScreen``, ``ReturnsScreen``: its ``screen`` module's TypedDicts), so a
        screen's data is checked where it is built; the page reads the same JSON.
        """
        ...


def settings_from(model: type[BaseModel], raw: Mapping[str, Any]) -> Any:
    """Validate a node file's ``[settings]`` with ``model``.

    Raises:
        ConfigError: file ``(node file)``, field ``settings.<name>`` and the reason.
    """
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        problems = [
            ("settings." + ".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors()
        ]
        field, reason = problems[0]
        raise ConfigError("(node file)", field, reason, problems) from None
