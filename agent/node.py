"""The node: commands in, workflow, one group commit, then replies, events and actions out.

One task, ``_process``, owns the workflow. It takes whatever has arrived (commands from the
broker, device input, clock ticks), runs it through the workflow into one ``Step``, commits
that step to SQLite in one transaction (one fsync), and only then publishes the replies and
events and performs the device actions. Every command id is checked against the ids already
applied before anything is done, so the OMS may resend blindly; a resent command gets the
reply the first one got, with the same seq.

Nothing on that path waits for the link: a reply or event is handed to the transport only
if it can take it at once (else the outbox sender sends it), and the reply to a resent
command is looked up with the commit and sent again only if the link takes it at once,
else by a task of its own (``_reanswer``), so a link that is slow, stalled or flooded with
command copies never holds up a press or a scan.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from agent import __version__
from agent.config import NodeConfig
from agent.errors import LinkUnavailable, MessageRejected, OutboxFull
from agent.link.base import Presence, Subscription
from agent.link.connect import open_transport
from agent.link.outbox import OutboxSender
from agent.metrics import NodeMetrics, RepeatLog, bump
from agent.roles import manifest
from agent.store import AsyncStore, OutboxRow, Unit, now_ms
from agent.wire import codec
from agent.wire.messages import (
    PROTOCOL,
    Ack,
    DeviceHealth,
    Empty,
    Envelope,
    Reply,
    State,
    Wire,
)
from agent.wire.topics import NodeTopics, parse
from agent.workflows.base import STALE_PRESS, Action, Step, Verdict, Workflow
from devices.events import ButtonPress, DeviceHealthChanged, Scan
from devices.printers.base import PrintResult

log = logging.getLogger("agent.node")

DEVICE_STATE = (DeviceHealthChanged, PrintResult)
"""Device input taken even when the outbox is full (see ``Node._input``)."""

PRESS_TOO_OLD = "press_too_old"
"""Ignored-input reason: a press older than ``[input] press_max_age_s`` when handled."""

_IGNORED_LINES = {
    STALE_PRESS: "a press on %s confirmed nothing: its slot no longer shows what it showed "
    "when pressed (%s)",
    PRESS_TOO_OLD: "a press on %s confirmed nothing: it is %.1f s old (press_max_age_s)",
}

_VALID_NAME = re.compile(r"[\x21-\x7e]{1,64}")
SEEN_IDS = 200_000
TAKEOVER_WITHIN_S = 5.0
"""A connection the broker ends this soon after its set-up counts as taken over."""
TAKEOVER_WINDOW_S = 300.0
"""Taken-over connections are counted over this long."""
TAKEOVERS_TO_REPORT = 3
"""This many in the window: said at ERROR, on the screen and in the birth (``takeovers``)."""
REANSWER_QUEUE = 1024
"""Replies to resent commands waiting for the link, at most (each once; beyond: the OMS's
next resend, or the outbox's own resend of the reply, answers it)."""
PRUNE_EVERY_TICKS = 3600
BATCH_ITEMS = 512
BATCH_BYTES = 64 * 1024
"""A group commit takes what has arrived, up to this many payload bytes: enough to make one
fsync serve many commands, small enough that a whole wave is never decoded at once (the
validated tasks of 20 big commands would cost ~20 MB at the peak)."""


class Floor(Protocol):
    """The node's devices as the node uses them (see ``agent.floor``)."""

    def health(self) -> dict[str, DeviceHealth]:
        """Every device's kind and health."""
        ...

    async def perform(self, actions: list[Action]) -> None:
        """Carry out light and print actions."""
        ...

    def inputs(self) -> AsyncIterator[object]:
        """Device input from every device, merged."""
        ...


class Node:
    """One running node.

    Args:
        config: the validated node file.
        store: the opened store.
        workflow: the role's state machine.
        floor: the devices.
    """

    def __init__(
        self, config: NodeConfig, store: AsyncStore, workflow: Workflow, floor: Floor
    ) -> None:
        self.config = config
        self.store = store
        self.workflow = workflow
        self.floor = floor
        self.topics = NodeTopics(config.site, config.node)
        self.boot = store.store.boot
        self.transport = open_transport(
            config.broker,
            client_id=config.client_id,
            subscriptions=[
                Subscription(self.topics.cmd_filter),
                Subscription(self.topics.ack),
                Subscription(self.topics.site_rebirth),
            ],
            on_message=self._on_message,
            presence=Presence(self.topics.state, self._birth, self._will),
            on_connected=self._on_connected,
            on_disconnected=self._on_disconnected,
        )
        self.sender = OutboxSender(
            store,
            self.transport,
            self.topics,
            batch_events=config.outbox.batch_events,
            resend_after_s=config.outbox.resend_after_s,
        )
        self.commands: Mapping[str, type[Wire]] = {
            "ping": Empty,
            "rebirth": Empty,
            **workflow.commands,
        }
        self._work: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._seen = SeenIds(SEEN_IDS)
        self._reanswers: dict[int, OutboxRow] = {}  # replies to send again, by seq, in order
        self._reanswer_wake = asyncio.Event()
        self._misscan_events = manifest(config.role).misscan_events
        self.online = asyncio.Event()
        self.ready = asyncio.Event()
        self.stats: dict[str, int] = {
            "commands": 0,
            "duplicates": 0,
            "rejected": 0,
            "inputs": 0,
            "inputs_refused": 0,
            "failed": 0,
            "reanswers_dropped": 0,
        }
        self.ignored: dict[str, int] = {}
        """Device input taken but not acted on, by reason (``stale_press``, ...)."""
        self._ignored_log = RepeatLog(log)
        self._hostile = RepeatLog(log)
        """Messages refused off the wire: one line per reason, then a count a minute (a
        hostile or broken client may send thousands a second)."""
        self._conflict_log = RepeatLog(log, logging.ERROR)
        self._up_at: float | None = None
        self._committed_seq = store.store.last_seq
        self._uncommitted = 0
        self._batch_events = 0
        self._outbox_hard = config.outbox.limit + config.outbox.reserve
        self._short_links: deque[float] = deque()
        self.metrics = NodeMetrics(store.store.last_seq, self.sender.acked)
        self._outbox_full_logged = False
        self._failed: BaseException | None = None
        self._site_rebirth_at = float("-inf")
        self._site_rebirth_due = False
        self._births: set[asyncio.Task[None]] = set()  # referenced until done

    # --- presence --------------------------------------------------------------------

    def _state(self, *, online: bool, link: int) -> bytes:
        if online:
            body = State(
                online=True,
                role=self.config.role,
                sw=__version__,
                proto=PROTOCOL,
                store=self.store.store.store_id,
                new_store=self.store.store.created,
                locations=self.workflow.locations(),
                devices=self.floor.health(),
                last_seq=self.store.store.last_seq,
                outbox=self.sender.pending,
                link=link,
                takeovers=self.takeovers() or None,
            )
        else:
            body = State(online=False, link=link)
        return codec.encode(
            body,
            msg_id=codec.new_id(),
            ts=now_ms(),
            boot=self.boot,
            store=self.store.store.store_id,
        )

    def _birth(self, link: int) -> bytes:
        return self._state(online=True, link=link)

    def _will(self, link: int) -> bytes:
        return self._state(online=False, link=link)

    async def _on_connected(self) -> None:
        self.metrics.connects += 1
        self._up_at = time.monotonic()
        self.online.set()
        await self.sender.on_connected()

    def _on_disconnected(self) -> None:
        self.online.clear()
        self.sender.on_disconnected()
        now = time.monotonic()
        if self._up_at is not None and now - self._up_at < TAKEOVER_WITHIN_S:
            self._short_links.append(now)
        self._up_at = None
        if self.takeovers() >= TAKEOVERS_TO_REPORT:
            self._conflict_log.note(
                "node_id_conflict",
                "the broker ended %d of this node's connections within %.0f s of their set-up "
                "in the last %.0f s: most likely another node runs with this node id (%s, MQTT "
                "client id %s) and each knocks the other off the broker; they also share its "
                "commands. Give each Pi its own node id (and store). Else the broker drops "
                "this client right after connecting: see the broker's log",
                self.takeovers(),
                TAKEOVER_WITHIN_S,
                TAKEOVER_WINDOW_S,
                self.config.node,
                self.config.client_id,
            )

    def takeovers(self) -> int:
        """Connections the broker ended within ``TAKEOVER_WITHIN_S`` of their set-up, lately.

        Two nodes with one node id (one MQTT client id) knock each other off the broker as
        each reconnects: each of their connections lasts well under a second. A node
        never sees the other (it may not read its own state topic), so this is the sign.
        """
        now = time.monotonic()
        short = self._short_links
        while short and now - short[0] > TAKEOVER_WINDOW_S:
            short.popleft()
        return len(short)

    def link_conflict(self) -> dict[str, Any] | None:
        """For the screen: the suspected node id conflict, or ``None``."""
        count = self.takeovers()
        if count < TAKEOVERS_TO_REPORT:
            return None
        return {
            "takeovers": count,
            "window_s": TAKEOVER_WINDOW_S,
            "what": "another node is probably running with this node id "
            f"({self.config.node}): each knocks the other off the broker",
        }

    async def republish_birth(self) -> None:
        """Publish the birth again (health changed, or the OMS asked with ``rebirth``)."""
        try:
            birth = self._birth(self.transport.link)
            await self.transport.publish(self.topics.state, birth, retain=True)
        except LinkUnavailable:
            pass  # the next connect publishes a fresh birth anyway

    def _rebirth_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self.republish_birth())
        self._births.add(task)
        task.add_done_callback(self._births.discard)

    # --- input -------------------------------------------------------------------------

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == self.topics.site_rebirth:
            self._on_site_rebirth(payload)
            return
        parsed = parse(topic)
        if parsed is None or parsed.node != self.config.node or parsed.site != self.config.site:
            self._hostile.note(
                "foreign_topic", "message on a topic that is not ours: %s", topic[:200]
            )
            return
        if parsed.channel == "ack":
            try:
                _, ack = codec.decode(payload, "ack", {"ack": Ack})
            except MessageRejected as exc:
                self._hostile.note("invalid_ack", "invalid ack ignored: %s", exc)
                return
            assert isinstance(ack, Ack)
            if ack.store is not None and ack.store != self.store.store.store_id:
                self._hostile.note(
                    "ack_other_store",
                    "ack for store %s ignored: this node's store is %s",
                    ack.store,
                    self.store.store.store_id,
                )
                return
            self.sender.on_ack(ack.seq, resend=ack.resend)
            return
        if parsed.channel == "cmd":
            self._work.put_nowait(("cmd", (parsed.name, payload)))

    def _on_site_rebirth(self, payload: bytes) -> None:
        """An OMS asks every node for its birth: publish it, at most once a second.

        Not a command: nothing is persisted or answered (the birth is the answer), so any
        number of OMS instances may ask at once. Requests within a second of the last birth
        they caused are answered by one birth at the end of that second.
        """
        try:
            codec.decode(payload, "rebirth", {"rebirth": Empty})
        except MessageRejected as exc:
            self._hostile.note("invalid_rebirth", "site-wide rebirth request ignored: %s", exc)
            return
        loop = asyncio.get_running_loop()
        if self._site_rebirth_due:
            return  # one is coming
        self._site_rebirth_due = True
        wait = max(0.0, self._site_rebirth_at + 1.0 - loop.time())
        loop.call_later(wait, self._site_rebirth_now)

    def _site_rebirth_now(self) -> None:
        self._site_rebirth_due = False
        self._site_rebirth_at = asyncio.get_running_loop().time()
        self._rebirth_soon()

    def submit_input(self, event: object) -> None:
        """Hand device input to the workflow (any thread: use the loop's thread)."""
        self._work.put_nowait(("input", event))

    # --- processing ----------------------------------------------------------------

    async def run(self) -> None:
        """Restore, then serve until cancelled."""
        if self.store.store.created:
            log.warning(
                "new store %s in %s: this node keeps no earlier state. If it ran before "
                "(a wiped state directory, a new SD card), its open tasks and unacknowledged "
                "events are gone: the OMS must dispatch its open work again (its birth says "
                "new_store)",
                self.store.store.store_id,
                self.store.store.path,
            )
        await self.store.call(self.store.store.prune_inbox, SEEN_IDS)
        for cid in reversed(await self.store.call(self.store.store.recent_command_ids, SEEN_IDS)):
            self._seen.add(cid)
        step = Step()
        tasks = await self.store.call(self.store.store.tasks)
        self.workflow.restore(tasks, step, now_ms())
        await self._finish(step)
        log.info("restored %d open tasks", len(tasks))
        self.ready.set()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.transport.run())
            tg.create_task(self.sender.run())
            tg.create_task(self._process(tg))
            tg.create_task(self._pump_inputs())
            tg.create_task(self._tick())
            tg.create_task(self._reanswer())

    async def _pump_inputs(self) -> None:
        async for event in self.floor.inputs():
            self.submit_input(event)

    async def _tick(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(1.0)
            self._work.put_nowait(("tick", None))
            self._ignored_log.flush()
            self._hostile.flush()
            ticks += 1
            if ticks % PRUNE_EVERY_TICKS == 0:
                # The de-dup memory is bounded on disk as in memory.
                await self.store.call(self.store.store.prune_inbox, SEEN_IDS)

    async def _process(self, tg: asyncio.TaskGroup) -> None:
        # Pipelined: the next batch goes through the workflow while the previous one is
        # being committed; commits, and what is published after them, stay in order. A
        # failed commit fails this task, and so the node.
        committing: asyncio.Future[None] | None = None
        while True:
            items = [await self._work.get()]
            if self._failed is not None:
                raise self._failed
            size = _size(items[0])
            while len(items) < BATCH_ITEMS and size < BATCH_BYTES and not self._work.empty():
                items.append(self._work.get_nowait())
                size += _size(items[-1])
            step = Step()
            duplicates: list[str] = []
            now = now_ms()
            self._batch_events = 0
            for kind, value in items:
                # Each item works on its own step, merged when it went through: a bug
                # triggered by one message is logged and that message's writes dropped,
                # instead of stopping the node (and a restart would meet it again).
                one = Step()
                try:
                    if kind == "cmd":
                        self._command(value[0], value[1], one, duplicates, now)
                    elif kind == "input":
                        self._input(value, one, now)
                    elif kind == "tick":
                        self.workflow.on_tick(one, now)
                except Exception:
                    self.stats["failed"] += 1
                    log.exception("could not handle %s %s; it was dropped", kind, _describe(value))
                    continue
                step.unit.merge(one.unit)
                step.actions.extend(one.actions)
                self._batch_events = len(step.unit.events)
            self._batch_events = 0
            if committing is not None:
                await committing
                if self._failed is not None:
                    raise self._failed
            committing = self._commit(step, duplicates, tg)

    def _command(
        self, name: str, payload: bytes, step: Step, duplicates: list[str], now: int
    ) -> None:
        self.stats["commands"] += 1
        envelope: Envelope | None = None
        try:
            envelope = codec.envelope_from(codec.unpack(payload))
            if envelope.id in self._seen:
                self.stats["duplicates"] += 1
                bump(self.metrics.commands, (self._command_label(name), "duplicate"))
                duplicates.append(envelope.id)
                return
            body = codec.body_from(envelope, name, self.commands)
        except MessageRejected as exc:
            self.stats["rejected"] += 1
            bump(self.metrics.commands, (self._command_label(name), "invalid"))
            self._hostile.note(
                f"command_{exc.reason}"[:64], "command %s rejected: %s", name[:64], exc
            )
            msg_id = exc.message_id or (envelope.id if envelope else None)
            if msg_id is not None and msg_id not in self._seen:
                step.emit(
                    "reply",
                    Reply(
                        cmd=name if _VALID_NAME.fullmatch(name) else "?",
                        status="rejected",
                        reason=exc.reason,
                        detail=exc.detail[:256] or None,
                    ),
                    corr=msg_id,
                )
            return
        verdict = self._apply(name, envelope, body, step, now)
        bump(self.metrics.commands, (name, verdict.status))
        if verdict.status == "rejected" and verdict.reason == "outbox_full":
            # Not remembered: the OMS may send it again once the outbox drains. Not even
            # answered once the reserve is used up too: that room is the floor's.
            if self._outbox_total(step) < self._outbox_hard:
                step.emit("reply", self._reply(name, verdict), corr=envelope.id)
            return
        self._remember(envelope.id)
        index = step.unit.emit("reply", self._reply(name, verdict), corr=envelope.id)
        step.unit.inbox.append((envelope.id, name, index))

    def _command_label(self, name: str) -> str:
        """The command's name as a metric label: known names only (the wire may say anything)."""
        return name if name in self.commands else "unknown"

    @staticmethod
    def _reply(name: str, verdict: Verdict) -> Reply:
        return Reply(
            cmd=name,
            status=verdict.status,
            reason=verdict.reason,
            detail=verdict.detail,
            items=list(verdict.items),
        )

    def _apply(self, name: str, envelope: Envelope, body: Wire, step: Step, now: int) -> Verdict:
        if name == "ping":
            return Verdict.accepted()
        if name == "rebirth":
            self._rebirth_soon()
            return Verdict.accepted()
        if self._outbox_total(step) >= self.config.outbox.limit:
            return Verdict.rejected(
                "outbox_full", f"{self.sender.pending} events wait for acknowledgement"
            )
        return self.workflow.on_command(name, envelope, body, step, now)

    def _remember(self, cid: str) -> None:
        self._seen.add(cid)

    def _input(self, event: object, step: Step, now: int) -> None:
        self.stats["inputs"] += 1
        # A device's health and a print's outcome are not new work: the workflow must
        # know them even now (a printer out of paper), and they emit little if anything.
        if not isinstance(event, DEVICE_STATE) and self._outbox_total(step) >= self._outbox_hard:
            self.stats["inputs_refused"] += 1
            if not self._outbox_full_logged:
                log.error(
                    "outbox full (%d events): device input is not taken until the OMS "
                    "acknowledges; open tasks stay open",
                    self.sender.pending,
                )
                self._outbox_full_logged = True
            return
        self._outbox_full_logged = False
        if isinstance(event, ButtonPress):
            age = time.monotonic() - event.at
            if event.at and age > self.config.input.press_max_age_s:
                self._ignore(PRESS_TOO_OLD, event.slot, age)
                return
            first = len(step.ignored)
            self.workflow.on_input(event, step, now)
            for why in step.ignored[first:]:
                self._ignore(why, event.slot, event.shown or "dark")
            return
        if not isinstance(event, Scan):
            self.workflow.on_input(event, step, now)
            return
        bump(self.metrics.scans, event.device)
        first = len(step.unit.events)
        self.workflow.on_input(event, step, now)
        for pending in step.unit.events[first:]:
            if pending.name in self._misscan_events:
                reason = getattr(pending.body, "reason", None)
                if reason is None and isinstance(pending.body, dict):
                    reason = pending.body.get("reason")
                bump(self.metrics.misscans, (pending.name, str(reason or "unknown")[:64]))

    def _outbox_total(self, step: Step) -> int:
        """Events in the outbox once everything handled so far is committed.

        Committed and not acknowledged, handed to the store and not yet committed (the
        previous batch, pipelined), taken in this batch, and ``step``'s own: the limits
        of ``[outbox]`` hold exactly, however many items one batch takes.
        """
        return (
            self._committed_seq
            - self.sender.acked
            + self._uncommitted
            + self._batch_events
            + len(step.unit.events)
        )

    def _ignore(self, reason: str, *args: object) -> None:
        """Count and log (aggregated) input the node took but did not act on."""
        bump(self.ignored, reason)
        line = _IGNORED_LINES.get(reason, "input on %s ignored (%s)")
        self._ignored_log.note(reason, line, *args)

    def _commit(
        self, step: Step, duplicates: list[str], tg: asyncio.TaskGroup
    ) -> asyncio.Future[None]:
        """Commit ``step`` on the store thread, then publish and act; resolved when done.

        The store thread hands the rows straight to ``_committed`` on the loop, which
        publishes them there and then: no task wakes up between the fsync and the publish.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def committed(
            result: tuple[list[OutboxRow], list[OutboxRow]] | None, error: BaseException | None
        ) -> None:
            rows, answers = result or ([], [])
            self._committed(rows, answers, error, step, tg, done)

        if step.unit or duplicates:
            self._uncommitted += len(step.unit.events)
            self.store.submit(self._timed_commit, step.unit, duplicates, then=committed)
        else:
            committed(([], []), None)
        return done

    def _timed_commit(
        self, unit: Unit, duplicates: list[str]
    ) -> tuple[list[OutboxRow], list[OutboxRow]]:
        """Commit ``unit`` and look up what ``duplicates`` were answered (store thread).

        The commit is timed for ``zone_commit_duration_seconds``; the replies are those the
        resent commands got the first time.
        """
        rows: list[OutboxRow] = []
        if unit:
            start = time.perf_counter()
            rows = self.store.store.commit(unit)
            self.metrics.commit_seconds.observe(time.perf_counter() - start)
        answers = [self.store.store.reply_for(cid) for cid in duplicates]
        return rows, [a for a in answers if a is not None]

    def _committed(
        self,
        rows: list[OutboxRow],
        answers: list[OutboxRow],
        error: BaseException | None,
        step: Step,
        tg: asyncio.TaskGroup,
        done: asyncio.Future[None],
    ) -> None:
        self._uncommitted -= len(step.unit.events) if step.unit else 0
        if rows:
            self._committed_seq = rows[-1].seq
        if isinstance(error, OutboxFull):
            log.error("not committed: %s", error)
            done.set_result(None)
            return
        if error is not None:
            # The workflow has moved past what is on disk: stop (systemd restarts us).
            self._failed = error
            self._work.put_nowait(("failed", None))  # wakes _process if it is idle
            done.set_result(None)
            return
        if rows:
            self.sender.committed(rows)
            self.metrics.committed(rows, self.sender.acked)
        self._answer_again(answers)
        if step.actions:
            tg.create_task(self._act(step.actions, done))
        else:
            done.set_result(None)

    async def _act(self, actions: list[Action], done: asyncio.Future[None]) -> None:
        try:
            await self.floor.perform(actions)
        finally:
            if not done.done():
                done.set_result(None)

    async def _finish(self, step: Step) -> None:
        rows: list[OutboxRow] = []
        if step.unit:
            try:
                rows = await self.store.commit(step.unit)
            except OutboxFull as exc:
                log.error("not committed: %s", exc)
                return
        if rows:
            self._committed_seq = rows[-1].seq
            self.sender.committed(rows)
            self.metrics.committed(rows, self.sender.acked)
        if step.actions:
            await self.floor.perform(step.actions)

    def _answer_again(self, answers: list[OutboxRow]) -> None:
        """Publish again the replies resent commands got the first time (same seq).

        Never awaited on the processing path: answering waits for an in-flight slot, and on
        a congested link the slots wait for PUBACKs queued behind the very command copies
        being answered; awaited there, that held every press and scan behind the link
        (issue 18). What the link cannot take at once waits in a bounded backlog (each
        reply once however often its command is resent), sent by ``_reanswer``.
        """
        backlog = self._reanswers
        for row in answers:
            if not backlog and self.transport.publish_nowait(
                self.topics.evt(row.name), row.payload
            ):
                continue
            if row.seq not in backlog and len(backlog) >= REANSWER_QUEUE:
                self.stats["reanswers_dropped"] += 1  # the OMS's next resend is answered
                continue
            backlog[row.seq] = row
        if backlog:
            self._reanswer_wake.set()

    async def _reanswer(self) -> None:
        """Send the backlog of ``_answer_again`` as the link takes it."""
        backlog = self._reanswers
        while True:
            await self._reanswer_wake.wait()
            self._reanswer_wake.clear()
            while backlog:
                row = backlog.pop(next(iter(backlog)))
                try:
                    await self.transport.publish(self.topics.evt(row.name), row.payload)
                except LinkUnavailable:
                    backlog.clear()  # the OMS resends the commands; they are answered then

    # --- stop ----------------------------------------------------------------------

    async def say_offline(self) -> None:
        """Publish the offline state ourselves: a clean DISCONNECT suppresses the Will."""
        await self.transport.drain()
        await self.transport.publish_and_wait(
            self.topics.state, self._will(self.transport.link), retain=True
        )


class SeenIds:
    """The ids of the last ``limit`` applied commands, kept as their 64-bit hashes.

    Hashes, not the ids: at the limit (200,000) the ids themselves, 16-64 characters in an
    ``OrderedDict``, cost 31-40 MB, their hashes in a set 17 MB (measured with tracemalloc).
    The odds that two of 200,000 ids share a hash are about 1e-9; the store keeps the real
    ids, so such a command would be taken for a resend of the other and get no reply.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._hashes: set[int] = set()
        self._order: deque[int] = deque()

    def __contains__(self, cid: str) -> bool:
        return hash(cid) in self._hashes

    def __len__(self) -> int:
        return len(self._hashes)

    def add(self, cid: str) -> None:
        """Remember ``cid``; the oldest is forgotten beyond ``limit``."""
        h = hash(cid)
        if h in self._hashes:
            return
        self._hashes.add(h)
        self._order.append(h)
        if len(self._order) > self.limit:
            self._hashes.discard(self._order.popleft())


def _size(item: tuple[str, Any]) -> int:
    """Payload bytes of a work item (commands; device input counts as small)."""
    kind, value = item
    return len(value[1]) if kind == "cmd" else 64


def _describe(value: Any) -> str:
    """A short, log-safe description of a work item."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], bytes):
        return f"{value[0]!r} ({len(value[1])} bytes)"
    return repr(value)[:200]
