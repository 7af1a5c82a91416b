"""A reference OMS client: what the OMS side of the wire must do, in ~300 lines.

It is what the demo, the benchmarks and the end-to-end tests drive nodes with, exactly as a
real OMS would, over the broker:

* follows each node's retained ``state``: online with its boot counter, offline only when
  the offline message carries the boot of the current birth (a late Will from an earlier
  boot is ignored);
* asks every node of the site for its birth when it connects (the site-wide rebirth:
  a broker may deliver no retained message to a wildcard subscription, as RabbitMQ does),
  and asks a node whose events come before any birth of it;
* takes node events in seq order, exactly once per (node, store, seq): duplicates are
  dropped, early ones wait for the gap to fill, and a node whose store was replaced (new
  store id in its birth) counts from 1 again, while events of its earlier store (a broker
  session replaying old ones) are still told apart from the new store's;
* acknowledges cumulatively, coalescing a burst into one ack per node and store;
* sends commands with fresh ids and resends them, unchanged, until a reply arrives, by
  the rule of docs/protocol.md ("Resending commands"): at once when the reply to a later
  command on the same topic shows the copy was lost, or when the node or this client
  reconnected; otherwise after ``resend_s``, doubling with each copy up to
  ``resend_max_s``, and not while the node is answering other commands (the copy may
  still be queued for it on a slow link).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.errors import LinkUnavailable, LoginRefused, MessageRejected
from agent.link.base import Subscription
from agent.link.connect import open_transport
from agent.link.settings import BrokerConfig
from agent.store import now_ms
from agent.wire import codec
from agent.wire.messages import (
    COMMANDS,
    EVENTS,
    MAX_TASKS_PER_COMMAND,
    Ack,
    Empty,
    Envelope,
    PickTask,
    Reply,
    State,
    Wire,
)
from agent.wire.topics import NodeTopics, oms_filters, parse, site_rebirth
from agent.workflows import register_all

log = logging.getLogger("agent.oms")


TAKEOVER_ALARM = 3
"""A birth with this many ``takeovers``: two nodes run with one node id (docs/protocol.md)."""


@dataclass(frozen=True, slots=True)
class NodeEvent:
    """One event delivered by the OMS client, once and in seq order per node."""

    node: str
    name: str
    envelope: Envelope
    body: Wire | dict[str, Any]
    store: str | None = None
    """The store the event counts in (its envelope's, else the node's birth's)."""


def event_record(event: NodeEvent) -> str:
    """One event as a JSON line (``node``, ``name``, ``seq``, ``ts``, ``body``) for recordings.

    ``zone-agent oms kpi`` reads these; ``bytes`` in a body (a carrier label) become text.
    """
    body = event.body.model_dump() if isinstance(event.body, Wire) else event.body
    record = {
        "node": event.node,
        "name": event.name,
        "seq": event.envelope.seq,
        "ts": event.envelope.ts,
        "body": body,
    }
    return json.dumps(record, default=str) + "\n"


@dataclass(slots=True)
class Stream:
    """The events of one store of one node: delivered in seq order, each once."""

    delivered: int = 0  # highest seq delivered in order
    early: dict[int, tuple[str, Envelope]] = field(default_factory=dict)
    acked: int = 0
    confirmed: int = 0  # highest seq the consumer has made durable (``confirm_acks``)


@dataclass(slots=True)
class NodeView:
    """What the OMS knows of one node: its birth, and its events per store."""

    name: str
    online: bool = False
    boot: int | None = None
    link: int | None = None
    store: str | None = None
    state: State | None = None
    streams: dict[str | None, Stream] = field(default_factory=dict)
    rebirth_asked: bool = False
    online_at: float = 0.0  # loop time of the latest online birth
    heard_at: float = 0.0  # loop time of the latest event or birth from the node
    answered_at: float = 0.0  # loop time of the latest first reply to a pending command

    @property
    def stream(self) -> Stream:
        """The events of the store of the node's latest birth."""
        return self.stream_of(self.store)

    def stream_of(self, store: str | None) -> Stream:
        """The events of ``store`` (``None``: a node that does not say its store)."""
        stream = self.streams.get(store)
        if stream is None:
            stream = self.streams[store] = Stream()
        return stream

    @property
    def delivered(self) -> int:
        """Highest seq of the current store delivered in order."""
        return self.stream.delivered


@dataclass(slots=True)
class PendingCommand:
    """A command waiting for its reply."""

    node: str
    name: str
    msg_id: str
    payload: bytes
    reply: asyncio.Future[Reply]
    sent_at: float = 0.0
    sends: int = 0
    first_no: int = 0  # this client's send counter at the first copy
    last_no: int = 0  # ... and at the latest copy


class OmsClient:
    """The OMS side of one site.

    Args:
        broker: how to reach the broker.
        site: the site whose nodes to follow.
        client_id: MQTT client id of this OMS instance.
        resend_s: resend an unanswered command after this many seconds (the first time).
        resend_max_s: the longest wait between copies (each copy doubles it).
        auto_ack: acknowledge events as they are delivered (tests turn it off).
        confirm_acks: acknowledge only what the consumer ``confirm``-ed (the site service
            does, once the events are in its log): a crash between delivery and the log
            loses nothing, the node still holds every unconfirmed event.
        skip_acked: take the events a node's birth says were acknowledged (by another OMS,
            or by this client's earlier run) as delivered, instead of waiting for them: they
            are gone from its outbox. The site service turns it off and calls ``skip_to``
            itself, to log the gap.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        site: str,
        *,
        client_id: str = "oms",
        resend_s: float = 3.0,
        resend_max_s: float = 60.0,
        auto_ack: bool = True,
        confirm_acks: bool = False,
        skip_acked: bool = True,
    ) -> None:
        register_all()
        self.skip_acked = skip_acked
        self.confirm_acks = confirm_acks
        self.site = site
        self.resend_s = resend_s
        self.resend_max_s = max(resend_max_s, resend_s)
        self.auto_ack = auto_ack
        self.nodes: dict[str, NodeView] = {}
        self.events: asyncio.Queue[NodeEvent] = asyncio.Queue()
        self.state_changes: asyncio.Queue[tuple[str, State, int | None]] = asyncio.Queue()
        self.pending: dict[str, PendingCommand] = {}
        self.duplicates = 0
        self.resends = 0
        """Copies of commands sent again (for the benchmarks)."""
        self._send_no = 0
        self._connected_at = 0.0
        # (node, command name) -> first_no of the latest command answered in seq order
        self._answered: dict[tuple[str, str], int] = {}
        self._answered_corr: dict[str, tuple[str, int]] = {}
        self.transport = open_transport(
            broker,
            client_id=client_id,
            subscriptions=[Subscription(f) for f in oms_filters(site)],
            on_message=self._on_message,
            on_connected=self._on_connected,
        )
        self._dirty: set[tuple[str, str | None]] = set()
        self._resync: set[str] = set()
        self._ack_wake = asyncio.Event()
        self._resend_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> OmsClient:
        self._tasks = [
            asyncio.create_task(self.transport.run()),
            asyncio.create_task(self._ack_loop()),
            asyncio.create_task(self._resend_loop()),
        ]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.transport.drain(1.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until connected to the broker; ``LoginRefused`` when it refuses the login."""
        async with asyncio.timeout(timeout):
            while not self.transport.connected.is_set():
                if self.transport.login_refused:
                    raise LoginRefused(self.transport.login_refused)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await self.transport.connected.wait()

    async def _on_connected(self) -> None:
        # Events the nodes published while we had no subscription are gone from the broker:
        # ask every node we know for everything after what we have, and every node of the
        # site for its birth (retained births may not reach a wildcard subscription).
        self._resync.update(self.nodes)
        self._ack_wake.set()
        self._connected_at = asyncio.get_running_loop().time()
        self._resend_wake.set()
        payload = codec.encode(Empty(), msg_id=codec.new_id(), ts=now_ms())
        with contextlib.suppress(LinkUnavailable):
            await self.transport.publish(site_rebirth(self.site), payload)

    # --- input -------------------------------------------------------------------------

    def _view(self, node: str) -> NodeView:
        view = self.nodes.get(node)
        if view is None:
            view = self.nodes[node] = NodeView(node)
        return view

    def _on_message(self, topic: str, payload: bytes) -> None:
        parsed = parse(topic)
        if parsed is None or not payload:
            return
        try:
            if parsed.channel == "state":
                envelope, body = codec.decode(payload, "state", {"state": State})
                assert isinstance(body, State)
                self._on_state(parsed.node, envelope, body)
            elif parsed.channel == "evt":
                data = codec.unpack(payload)
                if parsed.name == "batch":
                    self._on_batch(parsed.node, data)
                else:
                    self._on_event(parsed.node, parsed.name, codec.envelope_from(data))
        except MessageRejected as exc:
            log.warning("from node %s: %s on %s", parsed.node, exc, topic)

    def _on_state(self, node: str, envelope: Envelope, state: State) -> None:
        if node not in self.nodes:
            self._resync.add(node)  # first news of this node since we connected
            self._ack_wake.set()
        view = self._view(node)
        if state.online:
            if (state.takeovers or 0) >= TAKEOVER_ALARM:
                log.error(
                    "node %s: the broker ended %d of its connections within seconds of their "
                    "set-up lately: most likely two nodes run with this node id (this birth's "
                    "store %s); give each its own (docs/protocol.md)",
                    node,
                    state.takeovers,
                    state.store,
                )
            if view.store is not None and state.store != view.store:
                # Its seq starts over in the new store; what the old one held is gone.
                log.warning(
                    "node %s has a new store %s (was %s): its open work must be dispatched again",
                    node,
                    state.store,
                    view.store,
                )
            view.store = state.store
            view.boot = envelope.boot
            view.link = state.link
            view.online = True
            view.state = state
            # time.monotonic() is the default loop's clock, and works outside a loop too
            # (births are also fed by hand, in tests and tools).
            view.online_at = view.heard_at = time.monotonic()
            self._resend_wake.set()
            if self.skip_acked and state.last_seq is not None and state.outbox is not None:
                # Acknowledged by another OMS before we followed the node (an `oms watch`
                # beside the site service): waiting for them would hold back every later event.
                skipped = self.skip_to(node, state.store, state.last_seq - state.outbox)
                if skipped:
                    log.info("node %s: %d events acknowledged elsewhere, skipped", node, skipped)
        else:
            if view.boot is not None and envelope.boot != view.boot:
                return  # a Will from an earlier boot, arriving late: not news
            if state.link is not None and view.link is not None and state.link < view.link:
                return  # a Will of an earlier connection of this boot (a cluster failover)
            view.online = False
        self.state_changes.put_nowait((node, state, envelope.boot))

    def _on_batch(self, node: str, data: dict[str, Any]) -> None:
        events = data.get("body", {}).get("events")
        if not isinstance(events, list):
            raise MessageRejected("invalid_body", "batch without events")
        for item in events:
            if isinstance(item, list) and len(item) == 2 and isinstance(item[1], dict):
                self._on_event(node, str(item[0]), codec.envelope_from(item[1]))

    def _on_event(self, node: str, name: str, envelope: Envelope) -> None:
        if name == "reply":
            self._on_reply(envelope)
        view = self._view(node)
        view.heard_at = time.monotonic()
        seq = envelope.seq
        if seq is None:
            return
        if view.state is None and not view.rebirth_asked:
            # Events before any birth (a broker that lost its retained messages): take
            # them, and ask for the birth, which says the node's store and role.
            view.rebirth_asked = True
            self.send(node, "rebirth", Empty())
        store = envelope.store or view.store
        stream = view.stream_of(store)
        if seq <= stream.delivered or seq in stream.early:
            self.duplicates += 1
            self._mark_dirty(node, store, again=True)  # the node may have missed our ack
            return
        stream.early[seq] = (name, envelope)
        while stream.delivered + 1 in stream.early:
            ev_name, ev = stream.early.pop(stream.delivered + 1)
            stream.delivered += 1
            if ev_name == "reply":
                self._answered_in_order(node, ev.corr)
            self.events.put_nowait(NodeEvent(node, ev_name, ev, self._body(ev_name, ev), store))
        self._mark_dirty(node, store)

    @staticmethod
    def _body(name: str, envelope: Envelope) -> Wire | dict[str, Any]:
        model = EVENTS.get(name)
        if model is None:
            return envelope.body
        try:
            return model.model_validate(envelope.body)
        except ValueError:
            return envelope.body

    def _answered_in_order(self, node: str, corr: str | None) -> None:
        """A reply in seq order: every earlier copy on its topic reached the node, or is lost."""
        answered = self._answered_corr.pop(corr or "", None)
        if answered is None:
            return
        name, first_no = answered
        key = (node, name)
        if first_no > self._answered.get(key, 0):
            self._answered[key] = first_no
            self._resend_wake.set()

    def _on_reply(self, envelope: Envelope) -> None:
        pending = self.pending.pop(envelope.corr or "", None)
        if pending is None or pending.reply.done():
            return
        self._answered_corr[pending.msg_id] = (pending.name, pending.first_no)
        view = self.nodes.get(pending.node)
        if view is not None:
            view.answered_at = time.monotonic()
        try:
            pending.reply.set_result(Reply.model_validate(envelope.body))
        except ValueError as exc:
            pending.reply.set_exception(MessageRejected("invalid_body", str(exc)[:200]))

    def _mark_dirty(self, node: str, store: str | None, *, again: bool = False) -> None:
        self._dirty.add((node, store))
        if self.auto_ack or (again and self.confirm_acks):
            self._ack_wake.set()

    def confirm(self, node: str, store: str | None, seq: int) -> None:
        """The consumer holds every event of ``node``'s ``store`` up to ``seq`` for good."""
        stream = self._view(node).stream_of(store)
        if seq > stream.confirmed:
            stream.confirmed = seq
            self._dirty.add((node, store))
            self._ack_wake.set()

    def seed(self, node: str, store: str | None, seq: int) -> None:
        """Start ``node``'s ``store`` at ``seq`` (what a log kept from an earlier run)."""
        stream = self._view(node).stream_of(store)
        stream.delivered = stream.confirmed = max(stream.delivered, seq)

    def skip_to(self, node: str, store: str | None, seq: int) -> int:
        """Take ``node``'s ``store`` as delivered up to ``seq``; returns how many were skipped.

        For events another OMS acknowledged before this one followed the node (the node's
        birth says so): they are gone from its outbox, and waiting for them would hold back
        every later event for good. Early events after ``seq`` are delivered now.
        """
        stream = self._view(node).stream_of(store)
        if seq <= stream.delivered:
            return 0
        skipped = seq - stream.delivered
        for old in [s for s in stream.early if s <= seq]:
            del stream.early[old]
        stream.delivered = stream.confirmed = seq
        while stream.delivered + 1 in stream.early:
            ev_name, ev = stream.early.pop(stream.delivered + 1)
            stream.delivered += 1
            self.events.put_nowait(NodeEvent(node, ev_name, ev, self._body(ev_name, ev), store))
        self._mark_dirty(node, store)
        return skipped

    def ack_now(self) -> None:
        """Acknowledge everything delivered so far (when ``auto_ack`` is off)."""
        self._dirty.update((n, s) for n, view in self.nodes.items() for s in view.streams)
        self._ack_wake.set()

    async def _ack_loop(self) -> None:
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            await asyncio.sleep(0)  # let a burst of messages land first: one ack for all
            dirty, self._dirty = self._dirty, set()
            resync, self._resync = self._resync, set()
            # A node only takes an ack for its own store: the current one's carries resend.
            dirty.update((node, self.nodes[node].store) for node in resync)
            for node, store in dirty:
                view = self.nodes[node]
                stream = view.stream_of(store)
                resend = node in resync and store == view.store
                upto = stream.confirmed if self.confirm_acks else stream.delivered
                ack = Ack(seq=upto, resend=resend, store=store)
                payload = codec.encode(ack, msg_id=codec.new_id(), ts=now_ms())
                try:
                    await self.transport.publish(NodeTopics(self.site, node).ack, payload)
                    stream.acked = upto
                except LinkUnavailable:
                    if resend:
                        self._resync.add(node)
                    else:
                        self._dirty.add((node, store))

    # --- commands ------------------------------------------------------------------

    def send(
        self, node: str, name: str, body: Wire | Mapping[str, Any], *, msg_id: str | None = None
    ) -> asyncio.Future[Reply]:
        """Send a command; the future resolves with the node's reply (resent until then).

        ``msg_id``: the command's id when it has one already (a command kept across a
        restart is sent again under the same id, so the node applies it once).
        """
        if name not in COMMANDS:
            raise ValueError(f"unknown command {name!r}")
        msg_id = msg_id or codec.new_id()
        payload = codec.encode(body, msg_id=msg_id, ts=now_ms())
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        command = PendingCommand(node, name, msg_id, payload, future)
        self.pending[msg_id] = command
        asyncio.get_running_loop().create_task(self._send(command))
        return future

    async def _send(self, command: PendingCommand) -> None:
        command.sent_at = asyncio.get_running_loop().time()
        command.sends += 1
        self._send_no += 1
        command.last_no = self._send_no
        if command.sends == 1:
            command.first_no = self._send_no
        else:
            self.resends += 1
        with contextlib.suppress(LinkUnavailable):
            await self.transport.publish(
                NodeTopics(self.site, command.node).cmd(command.name), command.payload
            )

    async def call(
        self, node: str, name: str, body: Wire | Mapping[str, Any], timeout: float = 30.0
    ) -> Reply:
        """Send a command and wait for its reply."""
        async with asyncio.timeout(timeout):
            return await self.send(node, name, body)

    def send_tasks(
        self, node: str, tasks: Sequence[PickTask], batch: int = MAX_TASKS_PER_COMMAND
    ) -> list[asyncio.Future[Reply]]:
        """Send many pick tasks in commands of at most ``batch`` tasks each."""
        return [
            self.send(
                node,
                "pick",
                {"tasks": [t.model_dump(exclude_defaults=True) for t in tasks[i : i + batch]]},
            )
            for i in range(0, len(tasks), batch)
        ]

    async def _resend_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(1.0, self.resend_s)):
                    await self._resend_wake.wait()
            self._resend_wake.clear()
            now = loop.time()
            for command in list(self.pending.values()):
                if command.reply.done():
                    self.pending.pop(command.msg_id, None)
                    continue
                if self._resend_due(command, now):
                    await self._send(command)

    def _resend_due(self, command: PendingCommand, now: float) -> bool:
        """Whether to send another copy of ``command`` now (docs/protocol.md's rule)."""
        if command.sends == 0:
            return False  # its first copy is on its way (``send`` started it)
        view = self.nodes.get(command.node)
        if view is not None and not view.online:
            # It gets a copy when its birth comes: resending now would only pile copies
            # into its queue at the broker.
            return False
        if command.sent_at < self._connected_at:
            return True  # sent on an earlier connection of ours: it may not have left
        if self._answered.get((command.node, command.name), 0) > command.last_no:
            # A command sent after this copy, on the same topic, was answered in seq order:
            # MQTT keeps per-topic order, so this copy is lost.
            return True
        waited = now - command.sent_at
        interval = min(self.resend_s * 2 ** (command.sends - 1), self.resend_max_s)
        if waited < interval:
            return False
        if view is None or view.online_at > command.sent_at:
            return True  # unknown yet, or it reconnected since this copy (once a backoff step)
        if view.heard_at <= command.sent_at:
            # Silent since this copy (a dead or choked link the broker has not noticed yet):
            # the copy waits in its session at the broker, and its birth brings it back.
            return waited >= self.resend_max_s
        # Heard, yet no answer to this copy: lost, unless the node is still answering
        # others, when it is probably queued behind them and another would queue too.
        return now - view.answered_at >= self.resend_s

    async def next_event(self, timeout: float = 10.0) -> NodeEvent:
        """The next delivered event (waits up to ``timeout``)."""
        async with asyncio.timeout(timeout):
            return await self.events.get()
