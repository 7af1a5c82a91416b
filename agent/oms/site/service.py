"""The site service: the exactly-once protocol toward every node, the log, the router.

It is the site's one OMS on the broker (``OmsClient`` with ``confirm_acks``): every node
event is appended to the log in one fsync'd transaction per burst, and only then confirmed,
so the client acknowledges it to the node; a crash before that loses nothing, the node
sends it again and ``(node, store, seq)`` keeps it once. Births and offline messages go in
the log too (``seq`` null), so a reader of the log alone knows the fleet.

While another instance leads (``try_lead``: an advisory lock in PostgreSQL, a file lock
beside a SQLite file) this one is the standby: it serves reads from the shared log and
answers writes 503, and takes over the moment the lock is free.

Orders submitted as waves are routed by ``agent.oms.fulfilment``, which is fed the events
as they are logged; every status change of an order is written to the ``orders`` table.
Every command (routed or raw) is kept before it is sent and sent again under the same id
after a restart until its reply is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agent.errors import LoginRefused
from agent.oms.client import NodeEvent, OmsClient
from agent.oms.fulfilment import Fulfilment, OrderFile, Send
from agent.oms.site.log import NewEvent, OrderRow, SqlLog, now_ms
from agent.oms.site.settings import SiteConfig
from agent.oms.site.webhooks import Dispatcher
from agent.wire import codec
from agent.wire.messages import COMMANDS, Reply, State, Wire

log = logging.getLogger("agent.oms.site")

MAX_BATCH = 5000
"""Events appended in one transaction at most (a burst after a reconnect is larger)."""


class LeadershipLost(Exception):
    """Another instance holds the log now: this one must stop acknowledging at once."""


class HeadNotifier:
    """Wakes the cursor readers and webhook tasks when the log grows."""

    def __init__(self) -> None:
        self.head = 0
        self._changed = asyncio.Event()

    def notify(self, head: int) -> None:
        """The log's newest position is now ``head``."""
        if head > self.head:
            self.head = head
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait(self, after: int, timeout: float) -> bool:
        """Wait until the head is beyond ``after`` (``False``: ``timeout`` passed first)."""
        if self.head > after:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.head <= after:
                    await self._changed.wait()
                return True
        return False


@dataclass(slots=True)
class Wave:
    """A submitted wave and its router."""

    id: str
    router: Fulfilment
    saved: dict[str, tuple[str, str]] = field(default_factory=dict)


class SiteService:
    """One instance of the site service (see the module docstring).

    Args:
        config: the site file.
        store: the log (``SqliteLog`` or ``PostgresLog``).
        acknowledge: acknowledge the events it logs (``False``: it only watches, beside
            the OMS that acknowledges: ``oms serve --no-ack``).
    """

    def __init__(self, config: SiteConfig, store: SqlLog, *, acknowledge: bool = True) -> None:
        self.config = config
        self.log = store
        self.acknowledge = acknowledge
        self.role = "starting"
        self.head = HeadNotifier()
        self.client: OmsClient | None = None
        self.dispatcher = Dispatcher(store, config.webhooks, self.head)
        self.waves: dict[str, Wave] = {}
        self.active = asyncio.Event()
        self.logged = 0  # events appended since start
        self.lead_since: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="site-log-writer")

    # --- lifecycle -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Wait to lead, then lead until ``stop`` is set; raises ``LeadershipLost``."""
        self.head.notify(await asyncio.to_thread(self.log.head))
        self.role = "standby"
        while not await asyncio.to_thread(self.log.try_lead):
            log.info("another instance leads: standing by")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.log.lease_s / 2):
                    await stop.wait()
            if stop.is_set():
                return
            self.head.notify(await asyncio.to_thread(self.log.head))
        self.lead_since = time.monotonic()
        self.role = "active"
        log.info("leading the site %s", self.config.site)
        try:
            await self._lead(stop)
        finally:
            self.role = "stopped"
            await self._shutdown()

    async def _lead(self, stop: asyncio.Event) -> None:
        config = self.config
        client = self.client = OmsClient(
            config.broker,
            config.site,
            client_id=config.client_id,
            auto_ack=False,
            confirm_acks=self.acknowledge,
        )
        for (node, store), seq in (await asyncio.to_thread(self.log.positions)).items():
            client.seed(node, store or None, seq)
        self.head.notify(await asyncio.to_thread(self.log.head))
        await client.__aenter__()
        try:
            for command_id, node, name, body in await asyncio.to_thread(self.log.unanswered):
                if name in COMMANDS:
                    self._keep(client.send(node, name, body, msg_id=command_id))
            await self.dispatcher.start()
            self._tasks = [
                asyncio.create_task(self._pump(client)),
                asyncio.create_task(self._births(client)),
                asyncio.create_task(self._keep_lead()),
                asyncio.create_task(self._check_login(client)),
            ]
            self.active.set()
            stopping = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait(
                [stopping, *self._tasks], return_when=asyncio.FIRST_COMPLETED
            )
            stopping.cancel()
            for task in done:
                if task is not stopping:
                    task.result()  # a failed pump or a lost lead ends the service
        finally:
            self.active.clear()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await client.__aexit__(None, None, None)

    async def _shutdown(self) -> None:
        for task in list(self._background):
            task.cancel()
        await self.dispatcher.close()
        self._writer.shutdown(wait=True)

    def _keep(self, awaitable: Any) -> None:
        task = asyncio.ensure_future(awaitable)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _check_login(self, client: OmsClient) -> None:
        while True:
            refused = client.transport.login_refused
            if refused:
                raise LoginRefused(refused)
            await asyncio.sleep(0.1)

    async def _keep_lead(self) -> None:
        while True:
            await asyncio.sleep(self.config.log.lease_s)
            if not await asyncio.to_thread(self.log.still_leading):
                raise LeadershipLost("the log's leadership lock is gone")

    # --- events in -------------------------------------------------------------------

    async def _pump(self, client: OmsClient) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await client.events.get()]
            while len(batch) < MAX_BATCH and not client.events.empty():
                batch.append(client.events.get_nowait())
            entries = [self._entry(event) for event in batch]
            # The writer has a thread of its own: appends never wait behind API reads.
            ids = await loop.run_in_executor(self._writer, self.log.append, entries)
            tops: dict[tuple[str, str | None], int] = {}
            for event in batch:
                key = (event.node, event.store)
                tops[key] = max(tops.get(key, 0), event.envelope.seq or 0)
            for (node, store), seq in tops.items():
                if self.acknowledge:
                    client.confirm(node, store, seq)
            fresh = [i for i in ids if i is not None]
            self.logged += len(fresh)
            if fresh:
                self.head.notify(max(fresh))
            routed = [e for e, position in zip(batch, ids, strict=True) if position is not None]
            if routed:
                await self._route(routed)

    @staticmethod
    def _entry(event: NodeEvent) -> NewEvent:
        body = event.envelope.body
        order = body.get("order")
        return NewEvent(
            node=event.node,
            store=event.store or "",
            seq=event.envelope.seq,
            name=event.name,
            ts=event.envelope.ts,
            body=body,
            order_id=order if isinstance(order, str) else None,
            corr=event.envelope.corr,
        )

    async def _births(self, client: OmsClient) -> None:
        while True:
            node, state, boot = await client.state_changes.get()
            view = client.nodes.get(node)
            store = state.store or (view.store if view else None)
            body = {**state.model_dump(mode="json"), "boot": boot}
            entries = [
                NewEvent(
                    node, store or "", None, "online" if state.online else "offline", now_ms(), body
                )
            ]
            if state.online and state.last_seq is not None and state.outbox is not None:
                # Events the node's birth says were acknowledged, which this log never had
                # (another OMS took them): record the gap rather than wait for them forever.
                acked = state.last_seq - state.outbox
                skipped = client.skip_to(node, store, acked)
                if skipped:
                    log.warning("node %s: seq up to %d was acknowledged elsewhere", node, acked)
                    entries.append(
                        NewEvent(
                            node,
                            store or "",
                            None,
                            "gap",
                            now_ms(),
                            {"upto": acked, "missing": skipped},
                        )
                    )
            ids = await asyncio.to_thread(self.log.append, entries)
            self.head.notify(max(i for i in ids if i is not None))

    # --- commands --------------------------------------------------------------------

    async def command(
        self, node: str, name: str, body: Wire | dict[str, Any], command_id: str | None = None
    ) -> tuple[str, asyncio.Future[Reply]]:
        """Keep a command, then send it (resent until answered); its id and reply future."""
        command_id = command_id or codec.new_id()
        return command_id, (await self._send_kept([(command_id, node, name, body)]))[0]

    async def _send_kept(
        self, commands: Sequence[tuple[str, str, str, Wire | dict[str, Any]]]
    ) -> list[asyncio.Future[Reply]]:
        """Keep ``commands`` (id, node, name, body) in one transaction, then send each."""
        client = self.client
        if client is None or not self.active.is_set():
            raise LeadershipLost("this instance is not the active one")
        rows = [
            (
                command_id,
                node,
                name,
                body.model_dump(mode="json", exclude_defaults=True)
                if isinstance(body, Wire)
                else body,
            )
            for command_id, node, name, body in commands
        ]
        await asyncio.to_thread(self.log.add_commands, rows)
        return [
            client.send(node, name, body, msg_id=command_id)
            for command_id, node, name, body in commands
        ]

    async def _route(self, events: Sequence[NodeEvent]) -> None:
        """Feed a burst of freshly logged events to the routers: one write per kind per burst.

        Per event, a command's reply and an order's status would each be a transaction (an
        fsync) on the pump's path: the burst after a wave is thousands of events.
        """
        replies: list[tuple[str, dict[str, Any]]] = []
        for event in events:
            if event.name == "reply" and event.envelope.corr:
                with contextlib.suppress(ValueError):
                    reply = Reply.model_validate(event.envelope.body)
                    replies.append((event.envelope.corr, reply.model_dump(mode="json")))
        if replies:
            await asyncio.to_thread(self.log.commands_replied, replies)
        for wave in list(self.waves.values()):
            sends: list[Send] = []
            touched: set[str] = set()
            for event in events:
                made = wave.router.on_event(event.node, event.name, event.body)
                sends.extend(made)
                touched.update(s.order for s in made if s.order is not None)
                order = event.envelope.body.get("order")
                if isinstance(order, str) and order in wave.router.orders:
                    touched.add(order)
            await self._dispatch(wave, sends)
            if touched:
                await self._save_orders(wave, touched)

    async def _dispatch(self, wave: Wave, sends: Sequence[Send]) -> None:
        if not sends:
            return
        futures = await self._send_kept(
            [(codec.new_id(), send.node, send.command, send.body) for send in sends]
        )
        for send, future in zip(sends, futures, strict=True):
            future.add_done_callback(functools.partial(self._answered, wave, send))

    def _answered(self, wave: Wave, send: Send, future: asyncio.Future[Reply]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        self._keep(self._on_reply(wave, send, future.result()))

    async def _on_reply(self, wave: Wave, send: Send, reply: Reply) -> None:
        sends = wave.router.on_reply(send, reply)
        await self._dispatch(wave, sends)
        touched = {s.order for s in sends if s.order is not None}
        if send.order is not None:
            touched.add(send.order)
        # A refused pick command may end any order it carried: look at all of them then.
        clean = reply.status == "accepted" and not reply.items
        await self._save_orders(wave, touched if clean else None)

    async def _save_orders(self, wave: Wave, only: set[str] | None = None) -> None:
        """Write the status of the orders that changed (of ``only``, when given)."""
        changed = []
        orders = wave.router.orders
        for order_id in orders if only is None else only & orders.keys():
            progress = orders[order_id]
            now = (progress.status, progress.detail)
            if wave.saved.get(order_id) != now:
                wave.saved[order_id] = now
                carrier = wave.router.carrier_of(progress.order) or None
                changed.append(
                    OrderRow(
                        order_id,
                        wave.id,
                        now[0],
                        now[1],
                        progress.order.model_dump(mode="json", exclude_defaults=True),
                        carrier,
                        None if carrier is None else wave.router.cutoffs.get(carrier),
                    )
                )
        if changed:
            await asyncio.to_thread(self.log.set_orders, changed)

    # --- waves -----------------------------------------------------------------------

    async def submit_wave(
        self,
        wave_id: str,
        orders: OrderFile,
        *,
        dock_carriers: list[str] | None = None,
        cutoffs: dict[str, int] | None = None,
    ) -> list[dict[str, Any]]:
        """Route a wave's orders now; each order's first status (``picking``, ``unrouted``)."""
        client = self.client
        if client is None or not self.active.is_set():
            raise LeadershipLost("this instance is not the active one")
        router = Fulfilment(orders, wave=wave_id, dock_carriers=dock_carriers, cutoffs=cutoffs)
        wave = self.waves[wave_id] = Wave(wave_id, router)
        births: dict[str, State] = {
            name: view.state for name, view in client.nodes.items() if view.state is not None
        }
        plan = router.plan(births)
        await self._save_orders(wave)
        self._keep(self._run_plan(wave, plan))
        return [
            {"order": oid, "status": p.status, "detail": p.detail}
            for oid, p in router.orders.items()
        ]

    async def _run_plan(self, wave: Wave, plan: list[Send]) -> None:
        # Per node in order: begin, every pick batch, then release (as ``drive`` does); the
        # nodes side by side: one after the other, 100 zones waited 100 round trips (each
        # with an fsync'd command) before the last zone lit.
        per_node: dict[str, list[Send]] = {}
        for send in plan:
            per_node.setdefault(send.node, []).append(send)
        await asyncio.gather(*(self._run_node_plan(wave, sends) for sends in per_node.values()))
        await self._save_orders(wave)

    async def _run_node_plan(self, wave: Wave, sends: list[Send]) -> None:
        for send in sends:
            _, future = await self.command(send.node, send.command, send.body)
            reply = await future
            await self._dispatch(wave, wave.router.on_reply(send, reply))
            if reply.status != "accepted" or reply.items:
                await self._save_orders(wave)  # refused lines end their orders

    # --- views -----------------------------------------------------------------------

    def nodes(self) -> list[dict[str, Any]]:
        """Every node the service has heard of: birth, online state, where its stream is."""
        client = self.client
        if client is None:
            return []
        out = []
        for name, view in sorted(client.nodes.items()):
            state = view.state
            out.append(
                {
                    "node": name,
                    "online": view.online,
                    "boot": view.boot,
                    "store": view.store,
                    "role": state.role if state else None,
                    "sw": state.sw if state else None,
                    "devices": {
                        k: v.model_dump(mode="json")
                        for k, v in (state.devices if state else {}).items()
                    },
                    "locations": len(state.locations) if state else 0,
                    "logged_seq": view.stream.confirmed,
                    "node_last_seq": state.last_seq if state else None,
                }
            )
        return out


def when_active(service: SiteService) -> Callable[[], bool]:
    """A predicate for the API: is this instance the active one."""
    return service.active.is_set
