"""Sends the outbox to the OMS, in order, until the OMS acknowledges each event.

The rule: an event leaves the SQLite outbox only when the OMS acknowledges its seq
(cumulatively: ``ack {seq: N}`` covers every seq up to N). Until then it is sent again
after every reconnect, and again when ``resend_after_s`` passes without the
acknowledgement moving while events are outstanding, but only once the broker has
acknowledged (PUBACK) every publish of the connection: while one waits, a copy may still
be in transit on a slow link, and another would only queue behind it. Each resend without
progress doubles the wait (up to ``RESEND_BACKOFF_MAX`` times ``resend_after_s``); an
acknowledgement that moves starts it again. The OMS de-duplicates by (node, seq).

Fresh events are published from memory as soon as they are committed (right in
``committed`` when nothing else is being sent and an in-flight slot is free, so a reply
costs no extra task switch); a backlog (after an outage, or when the OMS was slow) is read
back from the store and sent as ``batch`` messages of up to ``batch_events`` events, with
the transport keeping publishes in flight bounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from agent.errors import LinkUnavailable
from agent.link.base import Transport
from agent.store import AsyncStore, OutboxRow, now_ms
from agent.wire.codec import encode_batch, new_id
from agent.wire.topics import NodeTopics

log = logging.getLogger("agent.outbox")

MEMORY_ROWS = 10_000
RESEND_BACKOFF_MAX = 8
"""The resend wait grows to at most this many times ``resend_after_s`` (15 s: 2 min)."""


class OutboxSender:
    """Publishes committed events and replays the unacknowledged ones.

    Args:
        store: the node's store (for replay and for forgetting acknowledged events).
        transport: the connection to the broker.
        topics: this node's topics.
        batch_events: most events in one ``batch`` message.
        resend_after_s: resend from the last acknowledged seq when nothing moves this long.
    """

    def __init__(
        self,
        store: AsyncStore,
        transport: Transport,
        topics: NodeTopics,
        *,
        batch_events: int = 250,
        resend_after_s: float = 15.0,
    ) -> None:
        self.store = store
        self.transport = transport
        self.topics = topics
        self.batch_events = batch_events
        self.resend_after_s = resend_after_s
        self.acked = store.store.acked_seq
        self.sent = self.acked
        self._fresh: deque[OutboxRow] = deque()
        self._wake = asyncio.Event()
        self._ack_wake = asyncio.Event()
        self._last_progress = 0.0
        self._sending = False  # _send_pending is running (it may be awaiting)
        self.resends = 0
        self.resends_held = 0
        """Times a due resend waited because publishes were still without PUBACK."""
        self._backoff = 1
        self._held_logged = False

    # --- called by the node --------------------------------------------------------

    def committed(self, rows: list[OutboxRow]) -> None:
        """New events are on disk: send them."""
        if len(self._fresh) + len(rows) > MEMORY_ROWS:
            self._fresh.clear()  # the store has them; replay will read them back
        else:
            self._fresh.extend(rows)
        if self._sending or not self._send_now():
            self._wake.set()

    def on_ack(self, seq: int, *, resend: bool = False) -> None:
        """The OMS acknowledged every event up to ``seq`` (and may ask for the rest again)."""
        if seq > self.acked:
            self.acked = min(seq, self.store.store.last_seq)
            self.sent = max(self.sent, self.acked)
            self._last_progress = asyncio.get_running_loop().time()
            self._backoff = 1
            self._ack_wake.set()
        if resend and self.sent > self.acked:
            self.sent = self.acked
            self._wake.set()

    async def on_connected(self) -> None:
        """A new connection: everything not acknowledged goes again, in order."""
        self.sent = self.acked
        self._last_progress = asyncio.get_running_loop().time()
        self._wake.set()

    def on_disconnected(self) -> None:
        """The connection is gone: forget what was sent on it."""
        self.sent = self.acked

    # --- tasks ---------------------------------------------------------------------

    async def run(self) -> None:
        """Run the sender, the acknowledgement writer and the resend timer."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._send_loop())
            tg.create_task(self._ack_loop())
            tg.create_task(self._resend_loop())

    async def _send_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._sending = True
            try:
                await self._send_pending()
            except LinkUnavailable:
                continue  # on_connected wakes us again
            finally:
                self._sending = False

    def _send_now(self) -> bool:
        """Publish what waits in memory without awaiting; False: leave it to the loop."""
        while self.sent < self.store.store.last_seq:
            if not self.transport.can_publish_now():
                return False  # before building a batch only to drop it (offline: every commit)
            fresh = self._fresh
            while fresh and fresh[0].seq <= self.sent:
                fresh.popleft()
            if not fresh or fresh[0].seq != self.sent + 1:
                return False
            count = min(len(fresh), self.batch_events)
            topic, payload = self._message([fresh[i] for i in range(count)])
            if not self.transport.publish_nowait(topic, payload):
                return False
            for _ in range(count):
                last = fresh.popleft()
            self.sent = last.seq
        return True

    async def _send_pending(self) -> None:
        while self.transport.connected.is_set() and self.sent < self.store.store.last_seq:
            rows = self._from_memory()
            if not rows:
                rows = await self.store.call(
                    self.store.store.outbox_after, self.sent, self.batch_events
                )
                if not rows:
                    return
            topic, payload = self._message(rows)
            await self.transport.publish(topic, payload)
            self.sent = rows[-1].seq

    def _message(self, rows: list[OutboxRow]) -> tuple[str, bytes]:
        """The topic and payload carrying ``rows``: the event itself, or one batch."""
        if self.sent == self.acked:
            self._last_progress = asyncio.get_running_loop().time()
        if len(rows) == 1:
            return self.topics.evt(rows[0].name), rows[0].payload
        payload = encode_batch(
            [(r.name, r.payload) for r in rows],
            msg_id=new_id(),
            ts=now_ms(),
            boot=self.store.store.boot,
            store=self.store.store.store_id,
        )
        return self.topics.evt("batch"), payload

    def _from_memory(self) -> list[OutboxRow]:
        fresh = self._fresh
        while fresh and fresh[0].seq <= self.sent:
            fresh.popleft()
        if not fresh or fresh[0].seq != self.sent + 1:
            return []
        rows: list[OutboxRow] = []
        while fresh and len(rows) < self.batch_events:
            rows.append(fresh.popleft())
        return rows

    async def _ack_loop(self) -> None:
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            await self.store.call(self.store.store.ack, self.acked)

    async def _resend_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = min(1.0, self.resend_after_s / 2)
        while True:
            await asyncio.sleep(interval)
            if not self.transport.connected.is_set() or self.sent <= self.acked:
                continue
            waited = loop.time() - self._last_progress
            if waited < self.resend_after_s * self._backoff:
                continue
            in_flight = self.transport.in_flight_age()
            if in_flight is not None:
                # A copy may still be on its way: another would queue behind it.
                self.resends_held += 1
                if not self._held_logged:
                    self._held_logged = True
                    log.warning(
                        "no acknowledgement beyond seq %d for %.0f s, but a publish has "
                        "waited %.0f s for PUBACK (link congested): not resending until "
                        "the broker has taken what was sent",
                        self.acked,
                        waited,
                        in_flight,
                    )
                continue
            self._held_logged = False
            self.resends += 1
            log.warning(
                "no acknowledgement beyond seq %d for %.0f s: resending %d events; "
                "next resend after %.0f s without an acknowledgement",
                self.acked,
                waited,
                self.sent - self.acked,
                self.resend_after_s * min(self._backoff * 2, RESEND_BACKOFF_MAX),
            )
            self._backoff = min(self._backoff * 2, RESEND_BACKOFF_MAX)
            self.sent = self.acked
            self._last_progress = loop.time()
            self._wake.set()

    @property
    def pending(self) -> int:
        """Events not yet acknowledged."""
        return self.store.store.last_seq - self.acked
