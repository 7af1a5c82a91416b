"""Every message on the wire, as frozen pydantic models (protocol 1.0).

A message is a msgpack map, the *envelope*::

    v     protocol major version (int)           always
    id    unique message id (str, <= 64)         always
    ts    milliseconds since the epoch (int)     always
    boot  the node's boot counter (int)          node messages
    store the node's store id (str)              node messages (since 1.1)
    seq   the node's event sequence (int)        node events
    corr  id of the command a reply answers      replies
    body  the message's own fields (map)         always

The message type is the last topic level (``cmd/pick``, ``evt/reply``); ``BODIES`` maps each
direction and name to its body model. Compatibility rule: a change that only adds an
optional field or a new message type raises the *minor* version; anything else raises
the *major*. A node rejects a major it does not speak, and because bodies forbid unknown
fields the OMS must talk to each node at the minor that node's birth announces.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 3
PROTOCOL = f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}"

# Limits on everything that arrives; the codec enforces the raw ones before pydantic runs.
MAX_PAYLOAD_BYTES = 512 * 1024
MAX_TASKS_PER_COMMAND = 500
MAX_IDS_PER_COMMAND = 1000
MAX_BARCODES_PER_TASK = 16

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")]
Text = Annotated[str, Field(max_length=256)]
Barcode = Annotated[str, Field(min_length=1, max_length=128)]


class Wire(BaseModel):
    """Base of all wire models: immutable, unknown fields are an error, and types are strict.

    Strict: nothing is converted. ``qty: true``, ``qty: "2"``, ``qty: 2.0``, ``express: 1``
    are ``invalid_body`` naming the field, never a 1-unit line (docs/protocol.md). The one
    widening is an int where a float is expected, which loses nothing.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


def _array_as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


ArrayAsTuple = BeforeValidator(_array_as_tuple)
"""For a fixed-length tuple field: msgpack arrays arrive as lists, so a list is taken as the
tuple it spells (its items are still validated strictly)."""


class Envelope(Wire):
    """The fields every message carries around its body."""

    v: int = Field(ge=1, le=255)
    id: Id
    ts: int = Field(ge=0)
    boot: int | None = Field(default=None, ge=0)
    store: Id | None = None
    """The store the node's ``boot`` and ``seq`` count in: (node, store, seq) names one
    event for good, even after an SD card is replaced and seq starts over."""
    seq: int | None = Field(default=None, ge=0)
    corr: Id | None = None
    body: dict[str, Any]


# --- commands: OMS -> node -----------------------------------------------------------


class PickTask(Wire):
    """One line to pick: take ``qty`` of ``sku`` from ``location`` into ``container``."""

    task: Id
    order: Id
    location: Id
    sku: Id
    qty: int = Field(ge=1, le=9999)
    barcodes: list[Barcode] = Field(default_factory=list, max_length=MAX_BARCODES_PER_TASK)
    wave: Id | None = None
    container: Id | None = None
    priority: int = Field(default=5, ge=0, le=9)
    express: bool = False
    deadline: int | None = Field(default=None, ge=0, description="ms since the epoch")
    description: Text = ""


class PickCommand(Wire):
    """A batch of pick tasks; answered by one reply that lists any task refused."""

    tasks: list[PickTask] = Field(min_length=1, max_length=MAX_TASKS_PER_COMMAND)

    @model_validator(mode="after")
    def _unique_tasks(self) -> PickCommand:
        ids = [t.task for t in self.tasks]
        if len(set(ids)) != len(ids):
            raise ValueError("a task id appears twice in one command")
        return self


class CancelCommand(Wire):
    """Cancel tasks by id, or every task of a wave; the reply says what was still open."""

    tasks: list[Id] = Field(default_factory=list, max_length=MAX_IDS_PER_COMMAND)
    wave: Id | None = None

    @model_validator(mode="after")
    def _something(self) -> CancelCommand:
        if not self.tasks and self.wave is None:
            raise ValueError("name tasks or a wave")
        return self


class WaveCommand(Wire):
    """Begin, release or cancel a wave (the action is the topic name)."""

    wave: Id


class Empty(Wire):
    """A message whose body has no fields (ping, rebirth)."""


# --- events: node -> OMS -----------------------------------------------------------


class ItemResult(Wire):
    """What became of one item (a task) named in a command."""

    id: Id
    status: Literal["accepted", "rejected", "cancelled", "done", "unknown"]
    reason: Text | None = None


class Reply(Wire):
    """The answer to one command (``corr`` holds the command id)."""

    cmd: Id
    status: Literal["accepted", "rejected"]
    reason: Text | None = None
    detail: Text | None = None
    items: list[ItemResult] = Field(default_factory=list)


# --- node state and acknowledgement --------------------------------------------------


class PartHealth(Wire):
    """The health of one part of a device that is not ok (a tag on a bus controller)."""

    status: Literal["unavailable", "fault"]
    detail: Text = ""


MAX_PARTS = 200
"""Parts listed per device: a bus controller has at most 200 tags."""


class DeviceHealth(Wire):
    """One device's health as published in the birth.

    ``parts`` (since 1.2) lists the parts that are not ok by the location they serve (the
    tags of an ATOP controller that dropped out or report a malfunction); a device whose
    parts are all ok has none. Open tasks at such a location stay open on the node and
    light again when the part is back (docs/protocol.md, "Birth").
    """

    kind: str
    status: Literal["starting", "ok", "unavailable", "fault"]
    detail: Text = ""
    parts: dict[Id, PartHealth] = Field(default_factory=dict, max_length=MAX_PARTS)


class State(Wire):
    """The retained ``state`` message: the birth (online) or the Will / clean stop (offline)."""

    online: bool
    role: str | None = None
    sw: str | None = None
    proto: str | None = None
    store: str | None = None
    new_store: bool = False
    """This boot made the store: anything an earlier store of this node held (open tasks,
    unacknowledged events) is gone, and the OMS must dispatch that node's open work again."""
    locations: list[str] = Field(default_factory=list)
    devices: dict[str, DeviceHealth] = Field(default_factory=dict)
    last_seq: int | None = None
    outbox: int | None = None
    link: int | None = Field(default=None, ge=1)
    """The node's connection this state belongs to (1, 2, ... within a boot): a Will of an
    earlier connection that a cluster member publishes late is told from the current one."""
    takeovers: int | None = Field(default=None, ge=0)
    """Connections the broker ended within 5 s of their set-up in the last 5 minutes (1.3).
    3 or more: most likely another node runs with this node id and each knocks the other
    off the broker (docs/protocol.md, "Two nodes with one node id")."""


class Ack(Wire):
    """The OMS has every event of this node up to and including ``seq``.

    ``resend`` asks the node to send everything after ``seq`` again now, without waiting
    for its resend timer: an OMS sets it when it (re)connects, since events published
    while it had no subscription were dropped by the broker.
    """

    seq: int = Field(ge=0)
    resend: bool = False
    store: Id | None = None
    """The store id of the birth the OMS acknowledges against; a node whose store is
    another (replaced SD card) ignores the ack instead of deleting events never sent."""


COMMANDS: dict[str, type[Wire]] = {
    "pick": PickCommand,
    "cancel": CancelCommand,
    "wave_begin": WaveCommand,
    "wave_release": WaveCommand,
    "wave_cancel": WaveCommand,
    "ping": Empty,
    "rebirth": Empty,
}

EVENTS: dict[str, type[Wire]] = {
    "reply": Reply,
}
"""Node events by name; the workflows add theirs with ``register_event``."""


def register_event(name: str, model: type[Wire]) -> None:
    """Declare a node event type (each workflow module declares the events it emits)."""
    EVENTS[name] = model


def register_command(name: str, model: type[Wire]) -> None:
    """Declare an OMS command type (each workflow module declares the commands it takes)."""
    COMMANDS[name] = model
