"""The site service: the exactly-once protocol toward every node, the log, the router.

It is the site's one OMS on the broker (``OmsClient`` with ``confirm_acks``): every node
event is appended to the log in one fsync'd transaction per burst, and only then confirmed,
so the client acknowledges it to the node; a crash before that loses nothing, the node
sends it again and ``(node, store, seq)`` keeps it once. Births and offline messages go in
the log too (``seq`` null), so a reader of the log alone knows the fleet.

While another instance leads (``try_lead``: an advisory lock in PostgreSQL, a file lock
beside a SQLite file) this one is the standby: it serves reads from the shared log and
answers writes 503, and takes over the moment the lock is free.

Orders submitted as waves are routed by ``agent.oms.fulfilment``, fed the node events and
the replies to its commands from the log, in log order, after each batch is logged
(``agent.oms.site.routing``); every status change of an order is written to the
``orders`` table. Every command (routed or raw) is kept before it is sent and sent again
under the same id after a restart until its reply is logged; a reply is written to its
command in the same transaction as the reply event.

What survives a restart, or the standby taking over: the log, the orders with their
status, the commands with their replies, the Idempotency-Key answers, the webhooks with
their cursors, and the routing of every wave not finished: each wave is kept with its
router's state, and on becoming active the service restores them and replays the log
after the state kept before it takes any new event. What does not: the reply futures of
raw commands (a client waiting with ``wait`` reads ``GET /v1/commands/{id}`` instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agent.errors import LoginRefused
from agent.oms.client import NodeEvent, OmsClient
from agent.oms.fulfilment import OrderFile, Send
from agent.oms.site.log import NewEvent, SqlLog, now_ms
from agent.oms.site.routing import Routing, Step, command_row
from agent.oms.site.settings import SiteConfig
from agent.oms.site.webhooks import Dispatcher
from agent.wire import codec
from agent.wire.messages import COMMANDS, Reply, State, Wire

log = logging.getLogger("agent.oms.site")

MAX_BATCH = 5000
"""Events appended in one transaction at most (a burst after a reconnect is larger)."""


def _unwatched(future: asyncio.Future[Reply]) -> None:
    """A command's reply future nobody awaits: routing takes replies from the log."""
    future.add_done_callback(lambda f: f.cancelled() or f.exception())


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


class WaveExists(Exception):
    """A wave of this id was submitted before (its id is taken for good)."""


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
        self.routing = Routing(config.log.snapshot_s)
        self.active = asyncio.Event()
        self.logged = 0  # events appended since start
        self.lead_since: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
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
            skip_acked=False,  # _births skips and logs the gap
        )
        for (node, store), seq in (await asyncio.to_thread(self.log.positions)).items():
            client.seed(node, store or None, seq)
        self.head.notify(await asyncio.to_thread(self.log.head))
        await client.__aenter__()
        try:
            unanswered = await asyncio.to_thread(self.log.unanswered)
            await self._restore()
            for command_id, node, name, body in unanswered:
                if name in COMMANDS:
                    _unwatched(client.send(node, name, body, msg_id=command_id))
            await self.dispatcher.start()
            self._tasks = [
                asyncio.create_task(self._pump(client)),
                asyncio.create_task(self._births(client)),
                asyncio.create_task(self._keep_lead()),
                asyncio.create_task(self._check_login(client)),
                asyncio.create_task(self._snapshots()),
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
            self.active.clear()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            # A clean stop keeps every wave's router as it is: the next start replays less.
            await self._keep_routing(Step(), force=True)
        finally:
            self.active.clear()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await client.__aexit__(None, None, None)

    async def _shutdown(self) -> None:
        await self.dispatcher.close()
        self._writer.shutdown(wait=True)

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
            step = Step()
            for event, position in zip(batch, ids, strict=True):
                if position is not None:
                    envelope = event.envelope
                    self.routing.take(
                        position, event.node, event.name, envelope.body, envelope.corr, step
                    )
            await self._keep_routing(step)

    @staticmethod
    def _entry(event: NodeEvent) -> NewEvent:
        body = event.envelope.body
        order = body.get("order")
        reply = None
        if event.name == "reply" and event.envelope.corr:
            with contextlib.suppress(ValueError):
                reply = Reply.model_validate(body).model_dump(mode="json")
        return NewEvent(
            node=event.node,
            store=event.store or "",
            seq=event.envelope.seq,
            name=event.name,
            ts=event.envelope.ts,
            body=body,
            order_id=order if isinstance(order, str) else None,
            corr=event.envelope.corr,
            reply=reply,
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
        client = self.client
        if client is None or not self.active.is_set():
            raise LeadershipLost("this instance is not the active one")
        row = command_row(command_id or codec.new_id(), node, name, body)
        await asyncio.to_thread(self.log.add_command, row.id, node, name, row.body, row.wire)
        return row.id, client.send(node, name, body, msg_id=row.id)

    # --- waves -----------------------------------------------------------------------

    async def submit_wave(
        self,
        wave_id: str,
        orders: OrderFile,
        *,
        dock_carriers: list[str] | None = None,
        cutoffs: dict[str, int] | None = None,
    ) -> list[dict[str, Any]]:
        """Route a wave's orders now; each order's first status (``picking``, ``unrouted``).

        Raises:
            WaveExists: a wave of ``wave_id`` was submitted before.
        """
        client = self.client
        if client is None or not self.active.is_set():
            raise LeadershipLost("this instance is not the active one")
        taken = await asyncio.to_thread(self.log.wave_exists, wave_id)
        if taken or wave_id in self.routing.waves:  # in routing: submitted, maybe not kept yet
            raise WaveExists(f"wave {wave_id!r} was submitted before")
        births: dict[str, State] = {
            name: view.state for name, view in client.nodes.items() if view.state is not None
        }
        wave, row, step, rows = self.routing.submit(
            wave_id,
            orders,
            births,
            dock_carriers=dock_carriers,
            cutoffs=cutoffs,
            salt=codec.new_id(),
            now=time.monotonic(),
        )
        # In routing before the write is queued: the pump's later writes about the wave
        # queue behind this one on the single writer thread.
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                self._writer, self.log.add_wave, row, step.routed.commands, rows
            )
        except BaseException:
            self.routing.waves.pop(wave_id, None)
            raise
        self._send(client, step.sends)
        return [
            {"order": oid, "status": p.status, "detail": p.detail}
            for oid, p in wave.router.orders.items()
        ]

    async def _keep_routing(self, step: Step, *, force: bool = False) -> int:
        """Keep what a routing step led to (and the snapshots due), then send its commands.

        Returns how many of its commands were new to the log (the others were kept before
        a restart: sent then, or resent by ``unanswered``).
        """
        # settle() and the write's submission to the single writer thread happen with no
        # await between them, so the log keeps steps in the order they were taken.
        finished = self.routing.settle(step, time.monotonic(), force=force)
        if not step.routed:
            return 0
        loop = asyncio.get_running_loop()
        fresh = await loop.run_in_executor(self._writer, self.log.route, step.routed)
        for wave in finished:
            log.info("wave %s finished: %s", wave.id, wave.counts())
        if self.client is not None:
            self._send(self.client, {cid: step.sends[cid] for cid in fresh if cid in step.sends})
        return len(fresh)

    async def _snapshots(self) -> None:
        """Keep the waves' routers that changed and then went quiet (no batch to ride on)."""
        while True:
            await asyncio.sleep(self.config.log.snapshot_s)
            await self._keep_routing(Step())

    def _send(self, client: OmsClient, sends: Mapping[str, Send]) -> None:
        for command_id, send in sends.items():
            _unwatched(client.send(send.node, send.command, send.body, msg_id=command_id))

    async def _restore(self) -> None:
        """Rebuild every unfinished wave's router and feed it the log after its snapshot."""
        started = time.monotonic()
        step = Step()
        waves, replayed = await asyncio.to_thread(self.routing.restore, self.log, step, started)
        if not waves:
            return
        made = len(step.sends)
        fresh = await self._keep_routing(step, force=True)
        log.info(
            "restored %d wave(s) in %.3f s: %d node event(s) replayed, which made %d "
            "command(s), %d of them new to the log",
            waves,
            time.monotonic() - started,
            replayed,
            made,
            fresh,
        )

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
