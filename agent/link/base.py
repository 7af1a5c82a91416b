"""The transport seam: what the node and the OMS client need of a connection to the broker.

Two transports fill it: :class:`agent.link.transport.MqttTransport` (a real broker over
aiomqtt) and :class:`agent.link.memory.MemoryTransport` (an in-process broker for tests and
one-process simulations, as httpx's ``MockTransport`` stands in for the network).
:func:`agent.link.connect.open_transport` picks one from the ``[broker]`` URLs, so nothing
above this layer names either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

MessageHandler = Callable[[str, bytes], None]


@dataclass(frozen=True, slots=True)
class Subscription:
    """A topic filter to subscribe to at QoS 1 on every connect."""

    topic: str


@dataclass(frozen=True, slots=True)
class Presence:
    """The retained state topic with the birth and Will payloads.

    Both are made for each connection, with its number (``Transport.link``, 1, 2, ... in
    this process): the Will at CONNECT, the birth after CONNACK, so they name the same
    connection and the birth carries fresh health and seq.
    """

    topic: str
    birth: Callable[[int], bytes]
    will: Callable[[int], bytes]


class Transport(Protocol):
    """One connection to the broker that keeps itself up (QoS 1 throughout).

    ``connected`` is set while a session is fully up (subscriptions made, birth handed
    over); ``link`` numbers the connection attempts of this process; ``url`` is the broker
    the current (or last) session is on; ``login_refused`` says why the broker refused the
    last login (``None`` once a session is up).
    """

    connected: asyncio.Event
    link: int
    url: str | None
    login_refused: str | None

    async def run(self) -> None:
        """Connect, serve and reconnect until cancelled."""

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Start a publish, waiting only for an in-flight slot; ``LinkUnavailable`` if down."""

    def can_publish_now(self) -> bool:
        """Whether ``publish_nowait`` would publish."""

    def publish_nowait(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        """Start a publish if that needs no waiting; False (nothing sent) if it would."""

    async def publish_and_wait(
        self, topic: str, payload: bytes, *, retain: bool = False, timeout: float = 2.0
    ) -> bool:
        """Publish and wait until the broker has it; False if it could not."""

    async def drain(self, timeout: float = 2.0) -> None:
        """Wait (bounded) for publishes in flight to be confirmed."""

    @property
    def link_state(self) -> str:
        """``offline``, ``online``, or ``congested`` (a publish waits long for the broker)."""

    def in_flight_age(self) -> float | None:
        """Seconds the oldest publish of this connection has waited (None: nothing waits)."""
