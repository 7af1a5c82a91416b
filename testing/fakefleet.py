"""Many simulated pick nodes in one process, speaking only the wire protocol.

For the site service's tests and its fleet bench: 100 real node processes cost a 2-core
machine all its CPU at 500-700 confirmations/s (issue 23's baseline), which measures the
nodes, not the service. A ``FakeNode`` keeps what the service relies on and nothing else:
a retained birth (store, role, locations, last seq, outbox depth), events numbered by seq
and kept until acknowledged (sent in ``batch`` messages, again from the acknowledged seq
when the OMS asks with ``resend``), commands answered once per id with a ``reply`` event,
and every pick task confirmed (``picked``) ``pick_after_s`` after it arrives. Put walls,
pack and dispatch stations (``role``) complete, pack and ship what they are sent at once.
A node can hold its replies, or the work that follows them, until ``release()``; it keeps
every command copy it received (``received``) and each command applied once (``applied``).
Each node has its own MQTT connection (``agent.link.connect.open_transport``).
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
        role: ``pick``; ``put_wall``, ``pack`` and ``dispatch`` do what ``FakeNode.work``
            says (their locations: a wall's cubbies).
    """

    def __init__(
        self,
        broker: BrokerConfig,
        site: str,
        node: str,
        locations: Sequence[str],
        *,
        pick_after_s: float = 0.0,
        role: str = "pick",
    ) -> None:
        self.site = site
        self.node = node
        self.role = role
        self.locations = list(locations)
        self.pick_after_s = pick_after_s
        self.received: list[tuple[str, str]] = []  # every command copy: (name, id)
        self.applied: dict[str, tuple[str, dict[str, Any]]] = {}  # id -> (name, body), once
        self.hold_replies = False  # commands wait unanswered until release()
        self.hold_work = False  # commands are answered; what follows waits until release()
        self._held: list[tuple[str, str, dict[str, Any]]] = []
        self._work: list[tuple[str, dict[str, Any]]] = []
        self.topics = NodeTopics(site, node)
        self.store = codec.new_id()
        self.seq = 0
        self.acked = 0
        self.sent = 0
        self.outbox: dict[int, tuple[str, bytes]] = {}
        self.replies: dict[str, bytes] = {}  # command id -> its reply, for a resent command
        self.sscc_serial = 0
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
            role=self.role,
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
        self.received.append((name, envelope.id))
        if envelope.id in self.replies:
            return  # applied once; its reply is in the outbox until acknowledged
        self.replies[envelope.id] = b""
        self.applied[envelope.id] = (name, envelope.body)
        if self.hold_replies:
            self._held.append((name, envelope.id, envelope.body))
        else:
            self._answer(name, envelope.id, envelope.body)

    def _answer(self, name: str, command_id: str, body: dict[str, Any]) -> None:
        reply = Reply(cmd=name, status="accepted")
        self.emit("reply", reply.model_dump(exclude_defaults=True), corr=command_id)
        if name == "pick":
            command = PickCommand.model_validate(body)
            asyncio.get_running_loop().call_later(self.pick_after_s, self._picked, command)
        elif self.hold_work:
            self._work.append((name, body))
        else:
            self.work(name, body)

    def release(self) -> None:
        """Stop holding: answer the commands held, then do the work held."""
        self.hold_replies = self.hold_work = False
        held, self._held = self._held, []
        for name, command_id, body in held:
            self._answer(name, command_id, body)
        work, self._work = self._work, []
        for name, body in work:
            self.work(name, body)

    def work(self, name: str, body: dict[str, Any]) -> None:
        """What a station does with an accepted command.

        A put wall completes each order at once (``order_complete``), a pack station prints
        and packs it (``label_printed`` with an SSCC, ``packed``), a dispatch station loads
        each parcel (``shipped``).
        """
        at = now_ms()
        if name == "put":
            for order in body["orders"]:
                units = sum(item["qty"] for item in order["items"])
                self.emit(
                    "order_complete",
                    {"order": order["order"], "slot": order["slot"], "units": units, "at": at},
                )
        elif name == "pack":
            order = body["order"]
            self.sscc_serial += 1
            sscc = f"3761042500{self.sscc_serial:08d}"
            self.emit(
                "label_printed",
                {
                    "order": order,
                    "job_id": f"job-{self.sscc_serial}",
                    "printer": "label",
                    "source": "own",
                    "sscc": sscc,
                    "attempt": 1,
                    "at": at,
                },
            )
            units = sum(line["qty"] for line in body["lines"])
            self.emit(
                "packed",
                {
                    "order": order,
                    "box": "B2",
                    "box_suggested": "B2",
                    "material": "",
                    "units": units,
                    "weight_g": 0.0,
                    "expected_g": 0.0,
                    "check": "pass",
                    "express": bool(body.get("express", False)),
                    "received_at": at,
                    "started_at": at,
                    "verified_at": at,
                    "weighed_at": at,
                    "labelled_at": at,
                },
            )
        elif name == "load":
            for parcel in body["parcels"]:
                self.emit(
                    "shipped",
                    {
                        "order": parcel["order"],
                        "parcel": parcel.get("sscc") or parcel.get("tracking") or "",
                        "sscc": parcel.get("sscc"),
                        "carrier": parcel["carrier"],
                        "manifest": f"{parcel['carrier']}-0001",
                        "lane": "L1",
                        "loaded_at": at,
                        "at": at,
                    },
                )

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
