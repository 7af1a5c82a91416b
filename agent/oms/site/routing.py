"""The site service's routing of submitted waves, kept in the log across restarts.

Each submitted wave has a ``Fulfilment`` router. Its inputs are all in the log: the node
events, and the replies to its commands (a reply is a node event too, ``corr`` naming the
command). The service feeds them to the router **from the log, in log order**, never from
the broker's futures, so the router's state is a function of the wave as submitted and of
the log up to a position. That makes it durable with little writing:

* **Command ids are made, not drawn**: the n-th command of a wave has the id
  ``sha256(salt:n)`` (16 hex digits; the salt is drawn once when the wave is submitted).
  Taking the same events again makes the same commands under the same ids.
* **A snapshot** of the router (``Fulfilment.snapshot``, plus the wave's command count,
  the commands awaiting their reply and, while the plan runs, the nodes it was made for
  and how far each got) is kept with the position it took the log up to, in the same
  transaction as the commands of that step: every ``[log] snapshot_s`` (1 s by default;
  longer for a wave whose state takes long to make) while the wave changes, and when it
  finishes. Steps in between keep their commands and order statuses, not the snapshot.
* **On becoming active** (after a restart, or as the standby taking over) every unfinished
  wave is rebuilt from its snapshot and fed the log's node events after its position. Of
  the commands that makes, those the log has already are neither kept nor sent again (the
  log's ``unanswered`` resends those without a reply, under their ids); the others are
  kept and sent. Their replies come in the log and reach the rebuilt router once, at
  their position.

The plan of a wave (``wave_begin``, the pick batches, ``wave_release``) goes out to each
node one command at a time, each after the previous one's reply, as ``drive`` sends it; the
nodes get theirs side by side (a wave over 100 zones starts in three round trips, not 300).

The routing itself does no I/O but ``Routing.restore`` (blocking, before routing starts):
``SiteService`` writes the log and sends.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.oms.fulfilment import Fulfilment, OrderFile, Send
from agent.oms.site.log import (
    CommandRow,
    OrderRow,
    Routed,
    SqlLog,
    WaveMark,
    WaveRow,
    now_ms,
)
from agent.wire.codec import pack_local
from agent.wire.messages import COMMANDS, Reply, State, Wire

log = logging.getLogger("agent.oms.site")

WAVE_STATE_VERSION = 1
REPLAY_BATCH = 2000
"""Log entries read at a time while restoring."""
"""The layout of ``Wave.snapshot()`` around the router's own."""


def command_row(
    command_id: str, node: str, name: str, body: Wire | Mapping[str, Any]
) -> CommandRow:
    """A command as the log keeps it: JSON for readers, and the body as sent (msgpack)."""
    data = body.model_dump(exclude_defaults=True) if isinstance(body, Wire) else dict(body)
    return CommandRow(command_id, node, name, data, pack_local(data))


def command_of(node: str, name: str, body: Mapping[str, Any], order: str | None) -> Send:
    """A kept command as the router's ``Send`` (the body checked as a node checks it)."""
    return Send(node, name, COMMANDS[name].model_validate(body), order)


@dataclass(slots=True)
class Wave:
    """A submitted wave: its router and what the service needs to keep it going.

    Attributes:
        id: the wave id.
        router: the order file's router.
        salt: drawn once; the wave's command ids are made from it.
        position: the log position the router has taken everything up to.
        sent: commands made so far (the next one's number).
        plan: the plan's commands not sent yet, in order, per node.
        plan_wait: per node, the plan command whose reply its next one waits for.
        plan_sent: per node, how many of its plan commands were sent.
        births: the nodes the plan was made for (role and locations), while it runs: the
            plan is made again from them on a restore, not kept command by command.
        pending: commands awaiting their reply, by id.
        saved: each order's (status, detail) as the ``orders`` table has it.
        changed: the router changed since its snapshot was kept.
        kept_at: when the snapshot (or the position alone) was kept last (monotonic s).
        kept_position: the position kept then.
        every_s: how often its snapshot is kept (``[log] snapshot_s``, more for a big wave).
        created: when it was submitted (ms since the epoch).
    """

    id: str
    router: Fulfilment
    salt: str
    position: int
    sent: int = 0
    plan: dict[str, list[Send]] = field(default_factory=dict)
    plan_wait: dict[str, str] = field(default_factory=dict)
    plan_sent: dict[str, int] = field(default_factory=dict)
    births: dict[str, list[Any]] = field(default_factory=dict)
    pending: dict[str, Send] = field(default_factory=dict)
    saved: dict[str, tuple[str, str]] = field(default_factory=dict)
    changed: bool = True
    kept_at: float = 0.0
    kept_position: int = 0
    every_s: float = 1.0
    created: int = 0

    def command_id(self) -> str:
        """The next command's id (made from the salt and the count: the same on a replay)."""
        n = self.sent
        self.sent += 1
        return hashlib.sha256(f"{self.salt}:{n}".encode()).hexdigest()[:16]

    def finished(self) -> bool:
        """Every order and return ended, and every command of the wave answered."""
        return not self.pending and not self.plan and not self.plan_wait and self.router.done()

    def snapshot(self) -> dict[str, Any]:
        """The wave's state (see the module docstring) as plain JSON."""
        return {
            "v": WAVE_STATE_VERSION,
            "router": self.router.snapshot(),
            "sent": self.sent,
            # The plan is made again from the births (its pick commands are most of a big
            # wave's state): how many each node was sent says where it stands.
            "plan": {"births": self.births, "sent": dict(self.plan_sent)} if self.plan else None,
            "plan_wait": dict(self.plan_wait),
            "pending": {cid: send.order for cid, send in self.pending.items()},
        }

    def row(self, body: dict[str, Any]) -> WaveRow:
        """The wave as the log's ``waves`` table keeps it (``body``: the order file)."""
        router = self.router
        return WaveRow(
            id=self.id,
            body=body,
            dock_carriers=None if router.dock_carriers is None else sorted(router.dock_carriers),
            cutoffs=dict(router.cutoffs),
            created=self.created,
            salt=self.salt,
            position=self.position,
            state=self.snapshot(),
        )

    @classmethod
    def restore(cls, row: WaveRow) -> tuple[Wave, dict[str, str | None]]:
        """The wave of a ``waves`` row; and the commands it awaits (id: order) to look up.

        Raises:
            ValueError: the row does not read (say which wave; the caller goes on).
        """
        state = row.state
        if state.get("v") != WAVE_STATE_VERSION:
            raise ValueError(f"wave state version {state.get('v')!r} is not {WAVE_STATE_VERSION}")
        file = OrderFile.model_validate(row.body)

        def router() -> Fulfilment:
            return Fulfilment(
                file, wave=row.id, dock_carriers=row.dock_carriers, cutoffs=row.cutoffs
            )

        wave = cls(
            row.id,
            router(),
            row.salt,
            row.position,
            sent=int(state["sent"]),
            plan_wait=dict(state["plan_wait"]),
            changed=False,
            kept_position=row.position,
            created=row.created,
        )
        wave.router.restore(state["router"])
        if state["plan"]:
            # The plan of a fresh router for the same nodes is the same, command for command.
            wave.births = dict(state["plan"]["births"])
            births = {
                name: State(online=True, role=role, locations=locations)
                for name, (role, locations) in wave.births.items()
            }
            wave.plan_sent = {k: int(v) for k, v in state["plan"]["sent"].items()}
            for send in router().plan(births):
                wave.plan.setdefault(send.node, []).append(send)
            for node in list(wave.plan):
                del wave.plan[node][: wave.plan_sent.get(node, 0)]
                if not wave.plan[node]:
                    del wave.plan[node]
        return wave, dict(state["pending"])

    # --- taking the log ----------------------------------------------------------------

    def take_event(self, node: str, name: str, body: Mapping[str, Any], step: Step) -> None:
        """A node event of the log (not a reply)."""
        if not self.router.concerns(name, body):
            return  # nothing of this wave: the router would not change
        self.changed = True
        sends = self.router.on_event(node, name, body)
        self._issue(sends, step)
        touched = {s.order for s in sends if s.order is not None}
        order = body.get("order")
        if isinstance(order, str) and order in self.router.orders:
            touched.add(order)
        step.touch(self.id, touched)

    def take_reply(self, command_id: str, reply: Reply | None, step: Step) -> None:
        """A reply of the log to one of this wave's commands (``None``: it did not read)."""
        send = self.pending.pop(command_id, None)
        if send is None:
            return
        self.changed = True
        if reply is not None:
            sends = self.router.on_reply(send, reply)
            self._issue(sends, step)
            touched = {s.order for s in sends if s.order is not None}
            if send.order is not None:
                touched.add(send.order)
            # A refused pick command may end any order it carried: look at all of them then.
            clean = reply.status == "accepted" and not reply.items
            step.touch(self.id, touched if clean else None)
        if self.plan_wait.get(send.node) == command_id:
            del self.plan_wait[send.node]
            self.advance_plan(step)

    def advance_plan(self, step: Step) -> None:
        """Send each node's next plan command unless one is awaiting its reply."""
        for node in sorted(self.plan):
            if node not in self.plan_wait:
                queue = self.plan[node]
                self.plan_wait[node] = self._issue([queue.pop(0)], step)[0]
                self.plan_sent[node] = self.plan_sent.get(node, 0) + 1
                if not queue:
                    del self.plan[node]
                self.changed = True

    def _issue(self, sends: Iterable[Send], step: Step) -> list[str]:
        ids = []
        for send in sends:
            command_id = self.command_id()
            self.pending[command_id] = send
            step.send(command_id, send)
            ids.append(command_id)
        return ids

    def orders_changed(self, only: set[str] | None) -> list[OrderRow]:
        """The orders whose status changed since saved (of ``only``, when given)."""
        router = self.router
        changed = []
        for order_id in router.orders if only is None else only & router.orders.keys():
            progress = router.orders[order_id]
            now = (progress.status, progress.detail)
            if self.saved.get(order_id) == now:
                continue
            self.saved[order_id] = now
            carrier = router.carrier_of(progress.order) or None
            changed.append(
                OrderRow(
                    order_id,
                    self.id,
                    now[0],
                    now[1],
                    progress.order.model_dump(mode="json", exclude_defaults=True),
                    carrier,
                    None if carrier is None else router.cutoffs.get(carrier),
                )
            )
        return changed

    def counts(self) -> dict[str, int]:
        """Orders by status, ended or not (for a log line)."""
        out: dict[str, int] = {}
        for p in self.router.orders.values():
            out[p.status] = out.get(p.status, 0) + 1
        return out


class Step:
    """What taking some of the log led to: the writes to keep and the commands to send."""

    def __init__(self) -> None:
        self.routed = Routed()
        self.sends: dict[str, Send] = {}
        self.touched: dict[str, set[str] | None] = {}

    def send(self, command_id: str, send: Send) -> None:
        """A command to keep, then send."""
        self.sends[command_id] = send
        self.routed.commands.append(command_row(command_id, send.node, send.command, send.body))

    def touch(self, wave_id: str, orders: set[str] | None) -> None:
        """Orders of a wave whose status may have changed (``None``: any of them)."""
        if wave_id in self.touched and self.touched[wave_id] is None:
            return
        if orders is None:
            self.touched[wave_id] = None
        elif orders:
            kept = self.touched.setdefault(wave_id, set())
            assert kept is not None  # None was handled above
            kept.update(orders)


class Routing:
    """Every unfinished wave's router, fed the log in order.

    Args:
        snapshot_s: how often a changed wave's state is kept.
    """

    def __init__(self, snapshot_s: float = 1.0) -> None:
        self.snapshot_s = snapshot_s
        self.waves: dict[str, Wave] = {}
        self.routed = 0
        """The newest log position taken (a wave submitted now starts after it)."""

    def submit(
        self,
        wave_id: str,
        orders: OrderFile,
        births: Mapping[str, State],
        *,
        dock_carriers: Collection[str] | None,
        cutoffs: Mapping[str, int] | None,
        salt: str,
        now: float,
    ) -> tuple[Wave, WaveRow, Step, list[OrderRow]]:
        """Plan a new wave for the nodes of ``births`` and take it into routing.

        Returns the wave, its row, the step of its first plan commands (one per node) and
        its orders: the caller keeps the three in one transaction (``SqlLog.add_wave``),
        then sends. ``now``: monotonic seconds.
        """
        router = Fulfilment(orders, wave=wave_id, dock_carriers=dock_carriers, cutoffs=cutoffs)
        wave = Wave(wave_id, router, salt, self.routed, created=now_ms(), every_s=self.snapshot_s)
        wave.births = {
            name: [state.role, list(state.locations)]
            for name, state in sorted(births.items())
            if state.online
        }
        for send in router.plan(births):
            wave.plan.setdefault(send.node, []).append(send)
        step = Step()
        wave.advance_plan(step)
        rows = wave.orders_changed(None)
        row = wave.row(orders.model_dump(mode="json", exclude_defaults=True))
        wave.changed = False  # the row holds its state
        wave.kept_at = now
        wave.kept_position = wave.position
        self.waves[wave_id] = wave
        return wave, row, step, rows

    def restore(self, store: SqlLog, step: Step, now: float) -> tuple[int, int]:
        """Rebuild every unfinished wave of ``store`` and feed it the log after its state.

        Blocking, and only before routing starts (nothing else may touch the waves
        meanwhile). Adds to ``step`` what the replay led to; returns how many waves were
        restored and how many node events replayed.
        """
        rows = store.open_waves()
        head = store.head()
        if not rows:
            self.routed = max(self.routed, head)
            return 0, 0
        awaited: dict[str, tuple[Wave, str | None]] = {}
        for row in rows:
            try:
                wave, pending = Wave.restore(row)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("wave %s: its router cannot be restored, not routed: %r", row.id, exc)
                continue
            wave.kept_at = now
            wave.every_s = self.snapshot_s
            wave.saved = store.order_states(wave.id)
            self.waves[wave.id] = wave
            awaited.update({cid: (wave, order) for cid, order in pending.items()})
        kept = store.commands_sent(awaited)
        for command_id, (wave, order) in awaited.items():
            try:
                node, name, body = kept[command_id]
                wave.pending[command_id] = command_of(node, name, body, order)
            except (KeyError, ValueError) as exc:
                log.error("wave %s: command %s cannot be restored: %r", wave.id, command_id, exc)
        after = min((w.position for w in self.waves.values()), default=head)
        replayed = 0
        while entries := store.read(after, REPLAY_BATCH):
            for entry in entries:
                if entry.seq is None:
                    continue  # the service's own entries (births, gaps) route nothing
                try:
                    body = json.loads(entry.body)
                except ValueError:
                    continue
                self.take(entry.id, entry.node, entry.name, body, entry.corr, step)
                replayed += 1
            after = entries[-1].id
        self.routed = max(self.routed, after, head)
        for wave in self.waves.values():
            step.touch(wave.id, None)  # the orders table may lag behind: compare them all
        return len(self.waves), replayed

    def take(
        self,
        position: int,
        node: str,
        name: str,
        body: Mapping[str, Any],
        corr: str | None,
        step: Step,
    ) -> None:
        """Feed the node event at ``position`` to every wave that has not taken it yet."""
        self.routed = max(self.routed, position)
        reply: Reply | None = None
        if name == "reply":
            try:
                reply = Reply.model_validate(body)
            except ValueError as exc:
                log.warning("log entry %d: %s's reply does not read: %s", position, node, exc)
        for wave in self.waves.values():
            if position <= wave.position:
                continue
            wave.position = position
            try:
                if name == "reply":
                    if corr:
                        wave.take_reply(corr, reply, step)
                else:
                    wave.take_event(node, name, body, step)
            except (ValueError, TypeError, KeyError) as exc:
                # A body the router cannot use (a node of another release?): this wave
                # skips the event, the same way on every replay; the others go on.
                log.error(
                    "wave %s: log entry %d (%s from %s) not routed: %r",
                    wave.id,
                    position,
                    name,
                    node,
                    exc,
                )

    def settle(self, step: Step, now: float, *, force: bool = False) -> list[Wave]:
        """Add to ``step`` the orders that changed and the waves' snapshots that are due.

        ``now``: monotonic seconds; ``force``: keep every wave's state now. Returns the
        waves that finished (dropped from routing: their last snapshot is in ``step``).
        """
        for wave_id, only in step.touched.items():
            wave = self.waves.get(wave_id)
            if wave is not None:
                step.routed.orders += wave.orders_changed(only)
        step.touched.clear()
        done = []
        for wave in list(self.waves.values()):
            due = force or now - wave.kept_at >= wave.every_s
            # A wave ends only in a step that changed it (done() stops at the first order
            # still on its way: cheap until the last orders).
            finished = (due or wave.changed) and wave.finished()
            if finished or (wave.changed and due):
                stamp = now_ms() if finished else None
                took = time.perf_counter()
                state = wave.snapshot()
                # A big wave's state costs: keep it less often, so that making it (and
                # encoding it, about as much again) takes at most ~5 % of the time.
                wave.every_s = max(self.snapshot_s, 20 * (time.perf_counter() - took))
                step.routed.waves.append(WaveMark(wave.id, wave.position, state, stamp))
            elif due and wave.position > wave.kept_position:
                # Nothing of the wave changed since its snapshot: only how far it read.
                step.routed.waves.append(WaveMark(wave.id, wave.position, None))
            else:
                continue
            wave.changed = False
            wave.kept_at = now
            wave.kept_position = wave.position
            if finished:
                del self.waves[wave.id]
                done.append(wave)
        return done
