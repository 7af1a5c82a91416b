"""Topic names: ``wh/v1/{site}/{node}/`` + ``cmd/{name}``, ``evt/{name}``, ``ack``, ``state``.

``wh/v1/{site}/_site/cmd/rebirth`` is the one site-wide topic: an OMS asks every node of
the site for its birth there (``SITE_WIDE`` is no node's name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

ROOT = "wh/v1"
SITE_WIDE = "_site"
_SEGMENT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

Channel = Literal["cmd", "evt", "ack", "state"]


def check_segment(value: str, what: str) -> str:
    """Return ``value`` if it is a valid topic level on every supported broker, else raise.

    No ``/``, ``+``, ``#`` (MQTT's own), and no ``.``: NATS refuses it in an MQTT topic and
    RabbitMQ maps it to a topic-level separator, so a node named ``zone.a`` would never be
    heard there.
    """
    if "." in value:
        raise ValueError(
            f"{what} {value!r} has a '.', which NATS refuses and RabbitMQ turns into a topic "
            "level separator: use '-' or '_'"
        )
    if not _SEGMENT.match(value):
        raise ValueError(f"{what} {value!r} must be 1-64 of A-Z a-z 0-9 _ -")
    if value == SITE_WIDE:
        raise ValueError(f"{what} {value!r} is reserved for the site-wide topic")
    return value


@dataclass(frozen=True, slots=True)
class NodeTopics:
    """The topics of one node."""

    site: str
    node: str

    @property
    def base(self) -> str:
        """``wh/v1/{site}/{node}``."""
        return f"{ROOT}/{self.site}/{self.node}"

    def cmd(self, name: str) -> str:
        """Topic of a command to this node."""
        return f"{self.base}/cmd/{name}"

    def evt(self, name: str) -> str:
        """Topic of an event from this node."""
        return f"{self.base}/evt/{name}"

    @property
    def ack(self) -> str:
        """Topic on which the OMS acknowledges this node's events."""
        return f"{self.base}/ack"

    @property
    def state(self) -> str:
        """The retained birth/Will topic."""
        return f"{self.base}/state"

    @property
    def cmd_filter(self) -> str:
        """Subscription for every command to this node."""
        return f"{self.base}/cmd/+"

    @property
    def site_rebirth(self) -> str:
        """Where the OMS asks every node of the site for its birth."""
        return site_rebirth(self.site)


def site_rebirth(site: str) -> str:
    """The site-wide rebirth request topic, ``wh/v1/{site}/_site/cmd/rebirth``."""
    return f"{ROOT}/{site}/{SITE_WIDE}/cmd/rebirth"


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """A topic split into its parts; ``name`` is empty for ``ack`` and ``state``."""

    site: str
    node: str
    channel: Channel
    name: str


def parse(topic: str) -> ParsedTopic | None:
    """Split a ``wh/v1/...`` topic; ``None`` when it is not one of ours."""
    parts = topic.split("/")
    if len(parts) < 5 or parts[0] != "wh" or parts[1] != "v1":
        return None
    site, node, channel = parts[2], parts[3], parts[4]
    if channel in ("cmd", "evt") and len(parts) == 6:
        return ParsedTopic(site, node, channel, parts[5])  # type: ignore[arg-type]
    if channel in ("ack", "state") and len(parts) == 5:
        return ParsedTopic(site, node, channel, "")  # type: ignore[arg-type]
    return None


def oms_filters(site: str) -> list[str]:
    """What the OMS subscribes to for a site: every node's events and states."""
    return [f"{ROOT}/{site}/+/evt/+", f"{ROOT}/{site}/+/state"]
