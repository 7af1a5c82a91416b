"""An in-process broker and its transport: MQTT's semantics without a socket.

``memory://NAME`` in a ``[broker]`` table's URLs connects to the :class:`MemoryBroker` of
that name in this process (made on first use), through :class:`MemoryTransport`. It is what
the fast test tier runs nodes and the reference OMS on (``tests/`` and ``make test-fast``):
a whole pick, pack or returns flow in one event loop in milliseconds, with no broker to
start. The real-broker suite (``pytest -m broker``) keeps the wire honest.

What it keeps of MQTT 3.1.1 at QoS 1, because the protocol above it relies on it:

* topic filters with ``+`` and ``#``; retained messages (an empty payload clears one),
  delivered on subscribe;
* persistent sessions per client id: what arrives for a client that is away waits for it
  and comes after its next CONNACK, in order (``session_limit`` bounds it, as a broker's
  queue limit does);
* a second connection with the same client id takes the session over (the first is
  dropped, its Will published);
* the Will, on a connection that ends without a clean stop;
* delivery in publish order per subscriber, never inside the publisher's call (each
  message is delivered from the event loop, as a socket read would be).

Its fault methods may be called from another thread (a test's ``asyncio.to_thread``, as
with a real broker's ``stop``): the broker's state is behind one lock, and what it hands a
transport enters that transport's loop with ``call_soon_threadsafe``.

What it adds for fault tests: :meth:`MemoryBroker.stop` (every connection dropped uncleanly,
new ones refused until :meth:`MemoryBroker.start`) and :meth:`MemoryBroker.drop` (one
client's connection lost). Nothing is lost in it and nothing duplicated, so the outbox's
resend and the OMS's de-duplication are exercised only by those faults, and on real brokers.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import ClassVar
from urllib.parse import urlsplit

from agent.errors import LinkUnavailable
from agent.link.base import MessageHandler, Presence, Subscription

log = logging.getLogger("agent.link")

SCHEME = "memory"


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches the MQTT filter (``+`` one level, ``#`` the rest)."""
    filter_levels = topic_filter.split("/")
    levels = topic.split("/")
    for index, part in enumerate(filter_levels):
        if part == "#":
            return True
        if index >= len(levels):
            return False
        if part != "+" and part != levels[index]:
            return False
    return len(levels) == len(filter_levels)


@dataclass(eq=False)
class _Session:
    """One client id's session: its filters, and what waits while it is away."""

    client_id: str
    filters: list[str] = field(default_factory=list)
    waiting: deque[tuple[str, bytes]] = field(default_factory=deque)
    connection: MemoryTransport | None = None
    will: tuple[str, bytes] | None = None


class MemoryBroker:
    """A broker in this process, found by name (``memory://NAME``).

    Args:
        name: the name in the URL.
        session_limit: messages kept for a client that is away; older ones are dropped
            first, as a broker's per-session queue limit would.
    """

    _by_name: ClassVar[dict[str, MemoryBroker]] = {}

    def __init__(self, name: str, *, session_limit: int = 100_000) -> None:
        self.name = name
        self.session_limit = session_limit
        self.running = True
        self.retained: dict[str, bytes] = {}
        self.sessions: dict[str, _Session] = {}
        self._lock = threading.RLock()

    @property
    def url(self) -> str:
        """The URL that reaches this broker."""
        return f"{SCHEME}://{self.name}"

    @classmethod
    def named(cls, name: str) -> MemoryBroker:
        """The broker of that name in this process, made on first use."""
        broker = cls._by_name.get(name)
        if broker is None:
            broker = cls._by_name[name] = cls(name)
        return broker

    @classmethod
    def forget(cls, name: str) -> None:
        """Drop the broker of that name (its sessions and retained messages)."""
        broker = cls._by_name.pop(name, None)
        if broker is not None:
            broker.stop()

    # --- faults ----------------------------------------------------------------------

    def stop(self) -> None:
        """The broker goes down: every connection is lost, new ones refused until ``start``.

        The Wills are published first, as a broker that stops cleanly does.
        """
        with self._lock:
            for session in list(self.sessions.values()):
                if session.connection is not None:
                    self._lost(session, "broker stopped")
            self.running = False

    def start(self) -> None:
        """The broker is back; sessions and retained messages were kept."""
        with self._lock:
            self.running = True

    def restart(self) -> None:
        """Stop and start again (every connection lost once)."""
        self.stop()
        self.start()

    def drop(self, client_id: str) -> bool:
        """The connection of ``client_id`` is lost (its Will is published); False if none."""
        with self._lock:
            session = self.sessions.get(client_id)
            if session is None or session.connection is None:
                return False
            self._lost(session, "connection lost")
            return True

    def connected_clients(self) -> list[str]:
        """The client ids connected now."""
        with self._lock:
            return sorted(s.client_id for s in self.sessions.values() if s.connection is not None)

    # --- the transport's side --------------------------------------------------------

    def connect(
        self, transport: MemoryTransport, will: tuple[str, bytes] | None
    ) -> tuple[_Session, list[tuple[str, bytes]]]:
        """CONNECT: take (or take over) the client's session; returns what waited for it."""
        with self._lock:
            if not self.running:
                raise LinkUnavailable(f"{self.url}: connection refused (broker stopped)")
            session = self.sessions.get(transport.client_id)
            if session is None:
                session = self.sessions[transport.client_id] = _Session(transport.client_id)
            elif session.connection is not None:
                self._lost(session, "session taken over by another connection")
            session.connection = transport
            session.will = will
            waiting = list(session.waiting)
            session.waiting.clear()
            return session, waiting

    def subscribe(self, session: _Session, topic_filter: str) -> list[tuple[str, bytes]]:
        """SUBSCRIBE: add the filter; returns the retained messages it matches."""
        with self._lock:
            if topic_filter not in session.filters:
                session.filters.append(topic_filter)
            return [(t, p) for t, p in self.retained.items() if topic_matches(topic_filter, t)]

    def disconnect(self, session: _Session) -> None:
        """A clean DISCONNECT: no Will."""
        with self._lock:
            session.connection = None
            session.will = None

    def publish(self, topic: str, payload: bytes, retain: bool) -> None:
        """PUBLISH at QoS 1 from any client: route it to every matching session."""
        with self._lock:
            if not self.running:
                raise LinkUnavailable(f"{self.url}: broker stopped")
            if retain:
                if payload:
                    self.retained[topic] = payload
                else:
                    self.retained.pop(topic, None)
            for session in self.sessions.values():
                if not any(topic_matches(f, topic) for f in session.filters):
                    continue
                connection = session.connection
                if connection is not None:
                    connection.deliver(topic, payload)
                else:
                    session.waiting.append((topic, payload))
                    if len(session.waiting) > self.session_limit:
                        session.waiting.popleft()

    def requeue(self, session: _Session, topic: str, payload: bytes) -> None:
        """A message its connection lost before handling: deliver it again."""
        with self._lock:
            if session.connection is not None:
                session.connection.deliver(topic, payload)
            else:
                session.waiting.append((topic, payload))

    def _lost(self, session: _Session, why: str) -> None:
        connection, will = session.connection, session.will
        session.connection = None
        session.will = None
        if will is not None and self.running:
            self.publish(will[0], will[1], True)
        if connection is not None:
            connection.lose(why)


class MemoryTransport:
    """A connection to a :class:`MemoryBroker`; the same contract as ``MqttTransport``.

    Args:
        url: ``memory://NAME``.
        client_id: the client id (stable: the session waits for it while it is away).
        subscriptions: filters subscribed to after every connect.
        on_message: called on the loop for each message (topic, payload).
        presence: retained state topic, birth and Will; ``None`` for a client without one.
        on_connected / on_disconnected: awaited / called when the link goes up / down.
        retry_s: the pause before connecting again after a lost link or a refusal.
    """

    def __init__(
        self,
        url: str,
        *,
        client_id: str,
        subscriptions: list[Subscription],
        on_message: MessageHandler,
        presence: Presence | None = None,
        on_connected: Callable[[], Awaitable[None]] | None = None,
        on_disconnected: Callable[[], None] | None = None,
        retry_s: float = 0.05,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != SCHEME or not parts.netloc:
            raise ValueError(f"{url!r}: expected {SCHEME}://NAME")
        self.broker = MemoryBroker.named(parts.netloc)
        self.client_id = client_id
        self.subscriptions = subscriptions
        self.on_message = on_message
        self.presence = presence
        self.on_connected = on_connected
        self.on_disconnected = on_disconnected
        self.retry_s = retry_s
        self.connected = asyncio.Event()
        self.link = 0
        self.url: str | None = None
        self.login_refused: str | None = None  # an in-process broker takes every login
        self._session: _Session | None = None
        self._lost: asyncio.Future[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    async def run(self) -> None:
        """Connect, serve, and connect again after every loss (cancel to stop)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        try:
            while True:
                try:
                    await self._serve()
                except LinkUnavailable as exc:
                    log.warning("%s; next try in %.2f s", exc, self.retry_s)
                await asyncio.sleep(self.retry_s)
        finally:
            self._down()

    async def _serve(self) -> None:
        self.link += 1
        will = None
        if self.presence is not None:
            will = (self.presence.topic, self.presence.will(self.link))
        loop = asyncio.get_running_loop()
        self._lost = loop.create_future()
        session, waiting = self.broker.connect(self, will)
        self._session = session
        for topic, payload in waiting:
            self.deliver(topic, payload)
        for sub in self.subscriptions:
            for topic, payload in self.broker.subscribe(session, sub.topic):
                self.deliver(topic, payload)
        if self.presence is not None:
            self.broker.publish(self.presence.topic, self.presence.birth(self.link), True)
        self.url = self.broker.url
        self.connected.set()
        log.info("link up: %s as %s", self.broker.url, self.client_id)
        try:
            if self.on_connected is not None:
                await self.on_connected()
            why = await self._lost
        finally:
            if session.connection is self:
                # Still ours, so we are the ones leaving (cancelled): a clean DISCONNECT,
                # and the broker publishes no Will.
                self.broker.disconnect(session)
            self._down()
        raise LinkUnavailable(f"{self.broker.url}: {why}")

    def _down(self) -> None:
        was_up = self.connected.is_set()
        self._session = None
        self.connected.clear()
        if was_up and self.on_disconnected is not None:
            self.on_disconnected()

    def deliver(self, topic: str, payload: bytes) -> None:
        """The broker hands over a message: handled from the loop, in order."""
        self._call(self._handle, self._session, topic, payload)

    def _call(self, callback: Callable[..., None], *args: object) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            loop.call_soon(callback, *args)
        else:
            loop.call_soon_threadsafe(callback, *args)

    def _handle(self, session: _Session | None, topic: str, payload: bytes) -> None:
        if session is None:
            return
        if self._session is None:
            # Lost before it was handled: QoS 1 delivers it again on the next connection.
            self.broker.requeue(session, topic, payload)
            return
        try:
            self.on_message(topic, payload)
        except Exception:
            log.exception("message on %s not handled", topic[:200])

    def lose(self, why: str) -> None:
        """The broker ended this connection."""
        self._session = None
        self._call(self._end, self._lost, why)

    @staticmethod
    def _end(lost: asyncio.Future[str] | None, why: str) -> None:
        if lost is not None and not lost.done():
            lost.set_result(why)

    def _publish(self, topic: str, payload: bytes, retain: bool) -> None:
        if self._session is None:
            raise LinkUnavailable("not connected")
        self.broker.publish(topic, payload, retain)

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish now (the broker takes it at once); ``LinkUnavailable`` when not connected."""
        self._publish(topic, payload, retain)

    @property
    def link_state(self) -> str:
        """``online`` or ``offline``: the broker takes each publish at once, so never congested."""
        return "online" if self.connected.is_set() else "offline"

    def in_flight_age(self) -> float | None:
        """None: the broker takes each publish at once."""
        return None

    def can_publish_now(self) -> bool:
        """Whether connected (there are no in-flight slots to wait for)."""
        return self._session is not None

    def publish_nowait(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        """Publish if connected; False (nothing sent) if not."""
        try:
            self._publish(topic, payload, retain)
        except LinkUnavailable:
            # Also when the broker went down under us (from another thread) a moment ago.
            return False
        return True

    async def publish_and_wait(
        self, topic: str, payload: bytes, *, retain: bool = False, timeout: float = 2.0
    ) -> bool:
        """Publish if connected (the broker has it when this returns)."""
        return self.publish_nowait(topic, payload, retain=retain)

    async def drain(self, timeout: float = 2.0) -> None:
        """Nothing is ever in flight."""
