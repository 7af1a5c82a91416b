"""The supervisor dashboard built from a site log: the site service's and ``oms serve``'s.

``zone-agent site serve SITE_FILE --dashboard-port 8900`` serves the page of
``agent.oms.dashboard`` (docs/dashboard.md) beside the API; ``zone-agent oms serve`` runs the
service's core on a SQLite log of its own and serves the same page. Its ``SiteView`` is fed
from the log, not from the broker: at start every entry is replayed in log order (the nodes'
births and offline messages, which the service logs with ``seq`` null, rebuild the fleet;
every node event goes through ``SiteView.on_event`` as it did live), and then it follows
the log as it grows, and the ``orders`` table by its rows' ``updated`` (each order's status,
carrier and cut-off as the router wrote it). The view keeps the open orders and the latest
finished ones; ``LogHistory`` reads any other order from the log when the page asks. So a
restarted service, or the standby that took over, shows the same orders, exceptions (from
events, with the times the events carried) and KPIs as before. Births are judged as they
come in the log (a node offline, a device down, and when that cleared, at the logged
times), so the exceptions of conditions come back too.

An acknowledgement is kept in the log before the page shows it: an ``acknowledged`` entry
(``seq`` null, the service's own, like ``online``; ``body.exception`` is the exception's
stable key, ``body.by`` who) that the replay applies in its place. Only the active
instance writes one; the standby's page answers 503.

The site service's page listens on 127.0.0.1 only: it has no login (the API's tokens do
not cover it); ``oms serve --bind`` chooses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from agent.errors import LinkUnavailable
from agent.oms.client import NodeEvent, NodeView, OmsClient
from agent.oms.dashboard import FoundOrder, OrderFacts, SiteView, seen_from, serve_dashboard
from agent.oms.fulfilment import Send
from agent.oms.site.log import NewEvent
from agent.wire.messages import COMMANDS, Envelope, Reply, State

if TYPE_CHECKING:
    from agent.oms.site.log import Entry, SqlLog
    from agent.oms.site.service import HeadNotifier, SiteService
    from agent.web import WebServer

log = logging.getLogger("agent.oms.site")

READ_BATCH = 2000
"""Log entries read at a time while replaying or following."""
ACKNOWLEDGED = "acknowledged"
"""The log entry of a supervisor's acknowledgement on the dashboard."""
POLL_S = 1.0
"""How long the follower waits for the head to move before it reads anyway (another
instance writing the shared log does not wake this one's notifier)."""


def refused_commands(store: SqlLog, entries: Sequence[Entry]) -> dict[str, dict[str, Any]]:
    """The commands (from the log's ``commands`` table) the refusals among ``entries`` answer.

    Blocking: called in a worker thread with the read.
    """
    found: dict[str, dict[str, Any]] = {}
    for entry in entries:
        # A cheap look at the text first: only a reply that is not all accepted is read.
        if entry.name != "reply" or not entry.corr:
            continue
        if not any(
            f'"{word}"' in entry.body for word in ("rejected", "cancelled", "unknown", "done")
        ):
            continue
        command = store.command(entry.corr)
        if command is not None:
            found[entry.corr] = command
    return found


def apply(
    view: SiteView, entry: Entry, commands: Mapping[str, dict[str, Any]] | None = None
) -> None:
    """Feed one log entry to the view.

    A birth or offline message, a node event, or a reply refusing one of ``commands``
    (``refused_commands``).
    """
    try:
        body: dict[str, Any] = json.loads(entry.body)
    except ValueError:
        log.warning("log entry %d: body is not JSON; the dashboard skips it", entry.id)
        return
    if entry.seq is None:
        if entry.name in ("online", "offline"):
            _birth(view.oms, entry, body)
            view.watch_births(entry.ts)
        elif entry.name == ACKNOWLEDGED and isinstance(body.get("exception"), str):
            view.ack_key(body["exception"], str(body.get("by") or ""), entry.ts)
        return  # a gap record: events another OMS took, nothing to show of them
    envelope = Envelope(v=1, id=str(entry.id), ts=entry.ts, seq=entry.seq, body=body)
    store = entry.store or None
    node = view.oms.nodes.get(entry.node)
    if node is not None:
        stream = node.stream_of(store)
        stream.delivered = max(stream.delivered, entry.seq)
    view.on_event(NodeEvent(entry.node, entry.name, envelope, body, store))
    command = (commands or {}).get(entry.corr or "")
    if entry.name == "reply" and command is not None:
        _refusal(view, entry, body, command)


def _refusal(view: SiteView, entry: Entry, body: dict[str, Any], command: dict[str, Any]) -> None:
    try:
        reply = Reply.model_validate(body)
        kind = COMMANDS[command["command"]]
        sent = kind.model_validate(command["body"])
    except (KeyError, ValidationError) as exc:
        log.warning("log entry %d: a reply the dashboard cannot read: %s", entry.id, exc)
        return
    order = command["body"].get("order")
    send = Send(
        command["node"], command["command"], sent, order if isinstance(order, str) else None
    )
    view.on_reply(send, reply, entry.ts, key=f"event:{entry.node}/{entry.store}/{entry.seq}")


def _birth(oms: OmsClient, entry: Entry, body: dict[str, Any]) -> None:
    boot = body.pop("boot", None)
    try:
        state = State.model_validate(body)
    except ValidationError as exc:
        log.warning("log entry %d: %s's state does not read: %s", entry.id, entry.node, exc)
        return
    view = oms.nodes.setdefault(entry.node, NodeView(entry.node))
    view.online = state.online
    if state.online:  # an offline message (the Will) says only that: the birth stays
        view.state = state
        view.boot = boot if isinstance(boot, int) else view.boot
        view.store = state.store or entry.store or view.store


@dataclass(frozen=True, slots=True)
class LogHistory:
    """Every order of a site log, for the dashboard's search and its older finished orders.

    An order is in the log when an event names it or it was submitted (the ``orders``
    table); its stage and times come from its events as ``SiteView.on_event`` reads them,
    its status, words and carrier from the ``orders`` table.
    """

    store: SqlLog

    def find(self, before: str | None, prefix: str, limit: int) -> list[FoundOrder]:
        """``agent.oms.dashboard.OrderHistory.find`` over the log (blocking)."""
        ids = self.store.order_ids(before, prefix, limit)
        events = self.store.order_events(ids)
        rows = self.store.orders_by_id(ids)
        found = []
        for order in ids:
            seen, started = seen_from(events.get(order, ()))
            row = rows.get(order)
            found.append(FoundOrder(order, seen, started, None if row is None else facts_of(row)))
        return found


def facts_of(row: Mapping[str, Any]) -> OrderFacts:
    """An ``orders`` row (``SqlLog.orders_changed``) as the dashboard's ``OrderFacts``."""
    return OrderFacts(
        status=row["status"], detail=row["detail"], carrier=row["carrier"], cutoff=row["cutoff"]
    )


def log_view(oms: OmsClient, store: SqlLog) -> SiteView:
    """A ``SiteView`` of a log: open orders and the latest finished ones in memory.

    The other orders are read from the log (``LogHistory``) when the page asks.
    """
    return SiteView(oms, history=LogHistory(store))


@dataclass(slots=True)
class LogBoard:
    """A ``SiteView`` kept up to date from the log, and the page serving it."""

    view: SiteView
    store: SqlLog
    head: HeadNotifier
    service: SiteService | None = None
    language: str = "en"
    words: dict[str, str] | None = None
    """The page's words (``agent.i18n.catalogue``); ``None``: the shipped ``language``."""
    cursor: int = 0
    orders_at: tuple[int, str] = (0, "")
    """(updated, id) of the last ``orders`` row read: the router's word on each order."""
    web: WebServer | None = None
    _task: asyncio.Task[None] | None = field(default=None, repr=False)
    _reading: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    async def catch_up(self) -> int:
        """Apply every entry after the cursor, then the router's newer order rows.

        Returns how many entries.
        """
        async with self._reading:  # the follower and an acknowledgement: each entry once
            return await self._catch_up()

    async def _catch_up(self) -> int:
        applied = 0
        while True:
            entries, commands = await asyncio.to_thread(self._read)
            for entry in entries:
                apply(self.view, entry, commands)
            if entries:
                self.cursor = entries[-1].id
                applied += len(entries)
            if len(entries) < READ_BATCH:
                break
        while True:
            rows = await asyncio.to_thread(self._changed_orders)
            for row in rows:
                self.view.set_facts(row["order"], facts_of(row))
            if rows:
                self.orders_at = (rows[-1]["updated"], rows[-1]["order"])
            if len(rows) < READ_BATCH:
                return applied

    def _read(self) -> tuple[list[Entry], dict[str, dict[str, Any]]]:
        entries = self.store.read(self.cursor, READ_BATCH)
        return entries, refused_commands(self.store, entries)

    def _changed_orders(self) -> list[dict[str, Any]]:
        return self.store.orders_changed(self.orders_at, READ_BATCH)

    async def follow(self) -> None:
        """Catch up whenever the log grows, until cancelled."""
        while True:
            self._mirror_link()
            await self.head.wait(self.cursor, POLL_S)
            await self.catch_up()

    def _mirror_link(self) -> None:
        # The page's "OMS online" is the service's broker link (none while standing by).
        client = self.service.client if self.service is not None else None
        self.view.link = client
        connected = self.view.oms.transport.connected
        if client is not None and client.transport.connected.is_set():
            connected.set()
        else:
            connected.clear()

    async def start(self, bind: str, port: int) -> WebServer:
        """Replay the log, then serve the page and follow the log."""
        replayed = await self.catch_up()
        log.info("dashboard: %d log entries replayed", replayed)
        self.web = await serve_dashboard(
            self.view, bind, port, self.acknowledge, language=self.language, words=self.words
        )
        self._task = asyncio.create_task(self.follow())
        return self.web

    async def acknowledge(self, exception_id: int, by: str) -> dict[str, Any]:
        """Keep the acknowledgement in the log, then show it (``KeyError``: no such one)."""
        found = next((e for e in self.view.exceptions if e["id"] == exception_id), None)
        if found is None:
            raise KeyError(exception_id)
        if found["acked_at"] is not None or found["key"] is None:
            return self.view.ack(exception_id, by)  # already, or nothing to find it by again
        if self.service is not None and not self.service.active.is_set():
            raise LinkUnavailable("this instance stands by: acknowledge on the active one")
        body = {"exception": found["key"], "by": by[:64], "kind": found["kind"]}
        at = time.time_ns() // 1_000_000
        entry = NewEvent(found["node"], "", None, ACKNOWLEDGED, at, body | {"text": found["text"]})
        ids = await asyncio.to_thread(self.store.append, [entry])
        self.head.notify(max((i for i in ids if i is not None), default=0))
        await self.catch_up()
        return found

    async def close(self) -> None:
        """Stop following and serving."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.web is not None:
            await self.web.close()


def board_for(service: SiteService, *, stuck_after_s: float | None = None) -> LogBoard:
    """The dashboard of a site service: its own view of the fleet, fed from the service's log.

    The ``OmsClient`` here never connects: it only holds the node views the log's births
    rebuild, as the page expects them. The page's words are the site file's ``[dashboard]``.
    """
    config = service.config
    oms = OmsClient(config.broker, config.site, client_id=f"{config.client_id}-board")
    view = log_view(oms, service.log)
    view.stuck_after_s = stuck_after_s
    return LogBoard(
        view,
        service.log,
        service.head,
        service,
        language=config.dashboard.language,
        words=config.dashboard.words(),
    )
