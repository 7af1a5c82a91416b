"""Many simulated pick nodes in one process, speaking only the wire protocol.

For the site service's tests and its fleet bench: 100 real node processes cost a 2-core
machine all its CPU at 500-700 confirmations/s (issue 23's baseline), which measures the
nodes, not the service. A ``FakeNode`` keeps what the service relies on and nothing else:
a retained birth (store, role, locations, last seq, outbox depth), events numbered by seq
and kept until acknowledged (sent in ``batch`` messages, again from the acknowledged seq
when the OMS asks with ``resend``), commands answered once per id with a ``reply`` event,
and every pick task confirmed (``picked``) ``pick_after_s`` after it arrives. Each node
has its own MQTT connection (``agent.link.connect.open_transport``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from agent.errors import LinkUnavailable, MessageRejected
from agent.link.base import Subscription
from agent.link.connect import open_transport
from agent.link.settings import BrokerConfig
from agent.wire import codec
from agent.wire.messages import Ack, PickCommand, Reply, State
from agent.wire.topics import NodeTopics, parse, site_rebirth


def now_ms() -> int:
    """Wall-clock milliseconds."""
    return time.time_ns() // 1_000_000


class FakeNode:
    """One simulated pick node (see the module docstring).

    Args:
        broker: the broker.
        site: the site.
        node: its name.
        locations: the slots it owns.
        pick_after_s: how long after a pick command each of its tasks is confirmed.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        site: str,
        node: str,
        locations: Sequence[str],
        *,
        pick_after_s: float = 0.0,
    ) -> None:
        self.site = site
        self.node = node
        self.locations = list(locations)
        self.pick_after_s = pick_after_s
        self.topics = NodeTopics(site, node)
        self.store = codec.new_id()
        self.seq = 0
        self.acked = 0
        self.sent = 0
        self.outbox: dict[int, tuple[str, bytes]] = {}
        self.replies: dict[str, bytes] = {}  # command id -> its reply, for a resent command
        self.emitted_at: dict[int, float] = {}  # seq -> time.time() it was made (bench)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.transport = open_transport(
            broker,
            client_id=f"fake-{node}",
            subscriptions=[
                Subscription(self.topics.cmd_filter),
                Subscription(self.topics.ack),
                Subscription(site_rebirth(site)),
            ],
            on_message=self._on_message,
            on_connected=self._on_connected,
        )

    async def __aenter__(self) -> FakeNode:
        self._tasks = [
            asyncio.create_task(self.transport.run()),
            asyncio.create_task(self._send_loop()),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def pending(self) -> int:
        """Events not acknowledged yet."""
        return self.seq - self.acked

    async def _on_connected(self) -> None:
        self.sent = self.acked
        await self.birth()
        self._wake.set()

    async def birth(self) -> None:
        """Publish the retained birth."""
        state = State(
            online=True,
            role="pick",
            store=self.store,
            locations=self.locations,
            last_seq=self.seq,
            outbox=self.pending,
            link=1,
        )
        payload = codec.encode(state, msg_id=codec.new_id(), ts=now_ms(), boot=1)
        with contextlib.suppress(LinkUnavailable):
            await self.transport.publish(self.topics.state, payload, retain=True)

    def emit(self, name: str, body: dict[str, Any], corr: str | None = None) -> int:
        """Make an event (kept until acknowledged); its seq."""
        self.seq += 1
        payload = codec.encode(
            body,
            msg_id=codec.new_id(),
            ts=now_ms(),
            boot=1,
            store=self.store,
            seq=self.seq,
            corr=corr,
        )
        self.outbox[self.seq] = (name, payload)
        self.emitted_at[self.seq] = time.time()
        self._wake.set()
        return self.seq

    async def _send_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.sent < self.seq:
                upto = min(self.seq, self.sent + 250)
                items = [self.outbox[s] for s in range(self.sent + 1, upto + 1) if s in self.outbox]
                if items:
                    batch = codec.encode_batch(
                        items, msg_id=codec.new_id(), ts=now_ms(), boot=1, store=self.store
                    )
                    try:
                        await self.transport.publish(self.topics.evt("batch"), batch)
                    except LinkUnavailable:
                        break
                self.sent = upto

    def _on_message(self, topic: str, payload: bytes) -> None:
        parsed = parse(topic)
        if parsed is None:
            return
        try:
            if parsed.channel == "ack":
                _, ack = codec.decode(payload, "ack", {"ack": Ack})
                assert isinstance(ack, Ack)
                if ack.store not in (None, self.store):
                    return
                for seq in range(self.acked + 1, min(ack.seq, self.seq) + 1):
                    self.outbox.pop(seq, None)
                self.acked = max(self.acked, min(ack.seq, self.seq))
                if ack.resend:
                    self.sent = self.acked
                    self._wake.set()
            elif parsed.channel == "cmd":
                self._on_command(parsed.name, payload)
        except MessageRejected:
            pass

    def _on_command(self, name: str, payload: bytes) -> None:
        data = codec.unpack(payload)
        envelope = codec.envelope_from(data)
        if name == "rebirth":
            asyncio.get_running_loop().create_task(self.birth())
            return
        if envelope.id in self.replies:
            return  # applied once; its reply is in the outbox until acknowledged
        reply = Reply(cmd=name, status="accepted")
        self.emit("reply", reply.model_dump(exclude_defaults=True), corr=envelope.id)
        self.replies[envelope.id] = b""
        if name == "pick":
            command = PickCommand.model_validate(envelope.body)
            asyncio.get_running_loop().call_later(self.pick_after_s, self._picked, command)

    def _picked(self, command: PickCommand) -> None:
        for task in command.tasks:
            self.emit(
                "picked",
                {
                    "task": task.task,
                    "order": task.order,
                    "location": task.location,
                    "sku": task.sku,
                    "qty": task.qty,
                    "picked": task.qty,
                    "wave": task.wave,
                    "confirmed_at": now_ms(),
                },
            )
