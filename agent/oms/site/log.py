"""The site's durable event log and the service's own tables, in SQLite or PostgreSQL.

One ``events`` table holds every node event the service received, each once: ``(node,
store, seq)`` is unique, and ``id`` (the log position) only grows, so a reader's cursor is
the last ``id`` it has. Beside it: the answers given per ``Idempotency-Key``, the commands
sent with their replies (a reply written in the same transaction as its event), the waves
submitted with their routers' state (``agent.oms.site.routing``: what a restart restores),
their orders with each order's status, carrier and the carrier's cut-off, and the webhook
endpoints with their cursors and delivery attempts. ``meta`` holds the layout's number
(``SCHEMA_VERSION``): a log of an older release is brought up to date when it is opened,
one of a newer release is refused.

Every write is one transaction committed with an fsync (SQLite ``synchronous=FULL`` in WAL
mode; PostgreSQL's default ``synchronous_commit``) before the service acknowledges an event
to its node. The SQL is shared; ``SqliteLog`` and ``agent.oms.site.pglog.PostgresLog`` differ
in how they connect, their column types and their placeholder.

The methods block: the service calls them through ``asyncio.to_thread``. One lock serialises
them on one connection (SQLite's writer is single anyway; the service has one writer task).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import StoreError
from agent.oms.fulfilment import Order, carrier_of
from agent.wire.codec import unpack_local

SCHEMA_VERSION = 2
"""The layout ``SCHEMA`` makes, kept in the ``meta`` table (key ``schema``). Raise it with
any change an older release could not read, and bring older logs up in ``_upgrade``:

* 0: a log made before the number was kept;
* 1: ``orders.carrier`` and ``orders.cutoff`` (an older log's carrier is filled in from the
  order as submitted; the cut-off was never kept, so it stays null);
* 2: ``waves`` (each submitted wave with its router's state, so that routing survives a
  restart and a takeover) and ``commands.wire`` (the body as sent, so that a command resent
  after a restart is the same bytes, a carrier's label included).

A log of a higher number was written by a newer release: this one refuses to open it rather
than guess at tables it does not know."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id {serial},
    node TEXT NOT NULL,
    store TEXT NOT NULL,
    seq BIGINT,
    name TEXT NOT NULL,
    ts BIGINT NOT NULL,
    logged BIGINT NOT NULL,
    order_id TEXT,
    corr TEXT,
    body TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_once ON events (node, store, seq);
CREATE INDEX IF NOT EXISTS events_order ON events (order_id, id);
CREATE INDEX IF NOT EXISTS events_node ON events (node, id);
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    created BIGINT NOT NULL,
    reply TEXT,
    replied BIGINT,
    wire {blob}
);
CREATE TABLE IF NOT EXISTS waves (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    dock_carriers TEXT,
    cutoffs TEXT NOT NULL,
    created BIGINT NOT NULL,
    salt TEXT NOT NULL,
    position BIGINT NOT NULL,
    state TEXT NOT NULL,
    saved BIGINT NOT NULL,
    finished BIGINT
);
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    wave TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT NOT NULL,
    body TEXT NOT NULL,
    updated BIGINT NOT NULL,
    carrier TEXT,
    cutoff BIGINT
);
CREATE INDEX IF NOT EXISTS orders_updated ON orders (updated, id);
CREATE INDEX IF NOT EXISTS orders_wave ON orders (wave);
CREATE TABLE IF NOT EXISTS webhooks (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    names TEXT NOT NULL,
    batch INTEGER NOT NULL,
    enabled INTEGER NOT NULL,
    cursor BIGINT NOT NULL,
    failures INTEGER NOT NULL,
    disabled_reason TEXT NOT NULL,
    created BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
    id {serial},
    webhook TEXT NOT NULL,
    message TEXT NOT NULL,
    first_event BIGINT NOT NULL,
    last_event BIGINT NOT NULL,
    attempt INTEGER NOT NULL,
    status INTEGER NOT NULL,
    error TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_webhook ON attempts (webhook, id);
"""


def now_ms() -> int:
    """Wall-clock milliseconds."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append: ``seq`` ``None`` for the service's own (a node's birth, a gap)."""

    node: str
    store: str
    seq: int | None
    name: str
    ts: int
    body: dict[str, Any]
    order_id: str | None = None
    corr: str | None = None
    reply: dict[str, Any] | None = None
    """A reply to command ``corr``, as the ``commands`` table keeps it: written there in
    the same transaction as the event (a reply the log has is never lost to its command)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One event of the log, at position ``id``."""

    id: int
    node: str
    store: str
    seq: int | None
    name: str
    ts: int
    logged: int
    order_id: str | None
    corr: str | None
    body: str  # the JSON text as stored: served without decoding it again

    def record(self) -> dict[str, Any]:
        """The event as the API shows it (``body`` decoded)."""
        return {
            "id": self.id,
            "node": self.node,
            "store": self.store or None,
            "seq": self.seq,
            "name": self.name,
            "ts": self.ts,
            "logged": self.logged,
            "order": self.order_id,
            "corr": self.corr,
            "body": json.loads(self.body),
        }


@dataclass(frozen=True, slots=True)
class Webhook:
    """A webhook endpoint and how far its deliveries got."""

    id: str
    url: str
    secret: str
    names: tuple[str, ...]
    batch: int
    enabled: bool
    cursor: int
    failures: int
    disabled_reason: str
    created: int


@dataclass(frozen=True, slots=True)
class OrderRow:
    """An order as the router sees it, for the ``orders`` table.

    ``carrier`` is the carrier of its parcel (``None``: the order names none); ``cutoff``
    that carrier's cut-off from the wave, ms since the epoch (``None``: the wave gave none).
    """

    id: str
    wave: str
    status: str
    detail: str
    body: dict[str, Any]
    carrier: str | None = None
    cutoff: int | None = None


@dataclass(frozen=True, slots=True)
class CommandRow:
    """A command to keep before it is sent: ``body`` as JSON shows it, ``wire`` as sent."""

    id: str
    node: str
    name: str
    body: dict[str, Any]
    wire: bytes | None = None


@dataclass(frozen=True, slots=True)
class WaveRow:
    """A submitted wave: its order file and options, and its router's state.

    ``state`` is what the router had taken of the log up to ``position`` (the service's
    snapshot); ``finished`` is set once every order and return ended and every command of
    the wave was answered: such a wave is not restored.
    """

    id: str
    body: dict[str, Any]
    dock_carriers: list[str] | None
    cutoffs: dict[str, int]
    created: int
    salt: str
    position: int
    state: dict[str, Any]
    finished: int | None = None


@dataclass(frozen=True, slots=True)
class WaveMark:
    """How far a wave's router got.

    ``state`` is ``None`` when only ``position`` moved: the router took events that changed
    nothing since the state kept last.
    """

    id: str
    position: int
    state: dict[str, Any] | None
    finished: int | None = None


@dataclass(slots=True)
class Routed:
    """What one routing step keeps, in one transaction, before its commands are sent."""

    replies: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    commands: list[CommandRow] = field(default_factory=list)
    orders: list[OrderRow] = field(default_factory=list)
    waves: list[WaveMark] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.replies or self.commands or self.orders or self.waves)


_ENTRY = "id, node, store, seq, name, ts, logged, order_id, corr, body"
_WAVE = "id, body, dock_carriers, cutoffs, created, salt, position, state, finished"
_ORDER = "id, wave, status, detail, updated, carrier, cutoff"
_WEBHOOK = "id, url, secret, names, batch, enabled, cursor, failures, disabled_reason, created"


def _order(row: Sequence[Any]) -> dict[str, Any]:
    return {
        "order": row[0],
        "wave": row[1],
        "status": row[2],
        "detail": row[3],
        "updated": int(row[4]),
        "carrier": row[5],
        "cutoff": None if row[6] is None else int(row[6]),
    }


def _webhook(row: Sequence[Any]) -> Webhook:
    return Webhook(
        row[0],
        row[1],
        row[2],
        tuple(json.loads(row[3])),
        int(row[4]),
        bool(row[5]),
        int(row[6]),
        int(row[7]),
        row[8],
        int(row[9]),
    )


class SqlLog:
    """The log's operations in SQL shared by both databases (see the module docstring)."""

    placeholder = "?"
    serial = "INTEGER PRIMARY KEY AUTOINCREMENT"
    blob = "BLOB"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: Any = None

    # --- plumbing ----------------------------------------------------------------------

    def _sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def _reader(self) -> tuple[Any, threading.Lock]:
        """The connection and lock reads go through.

        The writer's, unless a subclass has one of its own.
        """
        return self._conn, self._lock

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        conn, lock = self._reader()
        if conn is None:
            raise StoreError("the site log is closed")
        with lock:
            cur = conn.execute(self._sql(sql), args)
            rows: list[Any] = cur.fetchall()
            conn.commit()
            return rows

    def _write(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Run ``statements`` in one transaction; the first row each returns, if any."""
        out: list[Any] = []
        with self._lock:
            try:
                for sql, args in statements:
                    cur = self._conn.execute(self._sql(sql), args)
                    out.append(cur.fetchone() if cur.description else None)
                self._conn.commit()
            except Exception:
                self._conn.rollback()
                raise
        return out

    def _create(self) -> None:
        """Make the tables, or bring an older log's up to ``SCHEMA_VERSION``."""
        with self._lock:
            self._begin_schema()
            for statement in SCHEMA.format(serial=self.serial, blob=self.blob).split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            rows = self._conn.execute(
                self._sql("SELECT value FROM meta WHERE key = ?"), ("schema",)
            ).fetchall()
            found = int(rows[0][0]) if rows else 0
            if found > SCHEMA_VERSION:
                self._conn.rollback()
                self._conn.close()
                self._conn = None
                raise StoreError(
                    f"the site log's schema {found} was written by a newer zone-agent; this "
                    f"one knows schema {SCHEMA_VERSION} and will not open it: run the newer "
                    "release again"
                )
            self._upgrade()
            self._conn.execute(
                self._sql(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                ),
                ("schema", str(SCHEMA_VERSION)),
            )
            self._conn.commit()

    def _begin_schema(self) -> None:
        """Open the one transaction the tables are made or upgraded in."""
        # Python's sqlite3 would run each CREATE and ALTER on its own; an explicit BEGIN
        # makes them one, and IMMEDIATE makes a second process opening the file wait.
        self._conn.execute("BEGIN IMMEDIATE")

    def _columns(self, table: str) -> set[str]:
        cur = self._conn.execute(f"SELECT * FROM {table} WHERE 1 = 0")
        return {str(d[0]).lower() for d in cur.description}

    def _upgrade(self) -> None:
        """Add what a log made by an older release lacks (in ``_create``'s transaction).

        Each step looks at the tables rather than at the number (a log made before the
        number was kept has none); all of it is one transaction with making the tables.
        """
        if "carrier" not in self._columns("orders"):
            # Schema 0 -> 1: each order's carrier and its cut-off, for the order views.
            self._conn.execute("ALTER TABLE orders ADD COLUMN carrier TEXT")
            self._conn.execute("ALTER TABLE orders ADD COLUMN cutoff BIGINT")
            for order_id, body in self._conn.execute("SELECT id, body FROM orders").fetchall():
                try:
                    carrier = carrier_of(Order.model_validate(json.loads(body)))
                except ValueError:  # not an order this release reads: leave it unknown
                    continue
                self._conn.execute(
                    self._sql("UPDATE orders SET carrier = ? WHERE id = ?"),
                    (carrier or None, order_id),
                )
        if "wire" not in self._columns("commands"):
            # Schema 1 -> 2 (``waves`` is new: made above). Older commands keep only their
            # JSON body, and are resent from it as before.
            self._conn.execute(f"ALTER TABLE commands ADD COLUMN wire {self.blob}")

    def try_lead(self) -> bool:
        """Take the leadership of this log if it is free (see the subclasses)."""
        raise NotImplementedError

    def still_leading(self) -> bool:
        """Whether this instance still holds the leadership it took."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # --- events ------------------------------------------------------------------------

    def append(self, events: Sequence[NewEvent]) -> list[int | None]:
        """Append ``events`` in one durable transaction.

        Returns each one's position (``None``: it was in the log already, a node sending
        it again). One ``executemany`` rather than a statement per event: the writer thread
        then needs the GIL twice per batch, not once per row, while the event loop is busy.
        """
        logged = now_ms()
        rows = [
            (e.node, e.store, e.seq, e.name, e.ts, logged, e.order_id, e.corr, _json(e.body))
            for e in events
        ]
        insert = self._sql(
            "INSERT INTO events (node, store, seq, name, ts, logged, order_id, corr, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
        )
        since = self._sql("SELECT id, node, store, seq FROM events WHERE id > ? ORDER BY id")
        replied = self._sql(_replied("", {})[0])
        with self._lock:
            if self._conn is None:
                raise StoreError("the site log is closed")
            try:
                before = self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
                self._conn.cursor().executemany(insert, rows)
                added = self._conn.execute(since, (before[0],)).fetchall()
                out = _positions(events, added)
                replies = [
                    (_json(e.reply), logged, e.corr)
                    for e, position in zip(events, out, strict=True)
                    if position is not None and e.reply is not None and e.corr
                ]
                if replies:
                    self._conn.cursor().executemany(replied, replies)
                self._conn.commit()
            except Exception:
                self._conn.rollback()
                raise
        return out

    def read(
        self,
        after: int,
        limit: int,
        *,
        node: str | None = None,
        names: Sequence[str] = (),
        order: str | None = None,
    ) -> list[Entry]:
        """Up to ``limit`` events after position ``after``, oldest first, filtered."""
        where = ["id > ?"]
        args: list[Any] = [after]
        if node is not None:
            where.append("node = ?")
            args.append(node)
        if order is not None:
            where.append("order_id = ?")
            args.append(order)
        if names:
            where.append("name IN (" + ", ".join("?" for _ in names) + ")")
            args.extend(names)
        rows = self._query(
            f"SELECT {_ENTRY} FROM events WHERE {' AND '.join(where)} ORDER BY id LIMIT ?",
            [*args, limit],
        )
        return [Entry(*row) for row in rows]

    def head(self) -> int:
        """The position of the newest event (0: the log is empty)."""
        rows = self._query("SELECT MAX(id) FROM events")
        return int(rows[0][0] or 0)

    def positions(self) -> dict[tuple[str, str], int]:
        """The highest seq logged for each (node, store): where the nodes' streams stand."""
        rows = self._query(
            "SELECT node, store, MAX(seq) FROM events WHERE seq IS NOT NULL GROUP BY node, store"
        )
        return {(row[0], row[1]): int(row[2]) for row in rows}

    def order_ids(self, before: str | None, prefix: str, limit: int) -> list[str]:
        """Ids of orders the log knows (an event names it, or it was submitted).

        Up to ``limit``, highest first: those starting with ``prefix`` and sorting before
        ``before`` (``None``: from the highest). Each table is read along its index, from
        ``before`` down to the prefix's range, so a page costs the same in any size of log.
        """
        found: set[str] = set()
        for table, column in (("events", "order_id"), ("orders", "id")):
            where = [f"{column} IS NOT NULL"]
            args: list[Any] = []
            if before is not None:
                where.append(f"{column} < ?")
                args.append(before)
            if prefix:
                where.append(f"{column} >= ?")
                args.append(prefix)
                if ord(prefix[-1]) < 0x10FFFF:  # the first id past every id with the prefix
                    where.append(f"{column} < ?")
                    args.append(prefix[:-1] + chr(ord(prefix[-1]) + 1))
                where.append(f"substr({column}, 1, {len(prefix)}) = ?")
                args.append(prefix)
            rows = self._query(
                f"SELECT DISTINCT {column} FROM {table} WHERE {' AND '.join(where)} "
                f"ORDER BY {column} DESC LIMIT ?",
                [*args, limit],
            )
            found.update(str(row[0]) for row in rows)
        return sorted(found, reverse=True)[:limit]

    def order_events(self, orders: Sequence[str]) -> dict[str, list[tuple[str, str, int]]]:
        """The events naming each of ``orders``: ``(name, node, ts)`` each, in log order."""
        out: dict[str, list[tuple[str, str, int]]] = {}
        if not orders:
            return out
        rows = self._query(
            "SELECT order_id, name, node, ts FROM events WHERE order_id IN ("
            + ", ".join("?" for _ in orders)
            + ") ORDER BY id",
            list(orders),
        )
        for order, name, node, ts in rows:
            out.setdefault(order, []).append((name, node, int(ts)))
        return out

    def orders_changed(
        self, since: tuple[int, str] = (0, ""), limit: int = 5000
    ) -> list[dict[str, Any]]:
        """Orders written after ``since``: ``(updated, id)`` of the last one read.

        In that order, along an index: the dashboard follows the router's statuses,
        carriers and cut-offs by it.
        """
        updated, after = since
        rows = self._query(
            f"SELECT {_ORDER} FROM orders WHERE updated > ? OR (updated = ? AND id > ?) "
            "ORDER BY updated, id LIMIT ?",
            [updated, updated, after, limit],
        )
        return [_order(r) for r in rows]

    def orders_by_id(self, orders: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The ``orders`` rows of these ids (without the order as submitted), by id."""
        if not orders:
            return {}
        rows = self._query(
            f"SELECT {_ORDER} FROM orders WHERE id IN (" + ", ".join("?" for _ in orders) + ")",
            list(orders),
        )
        return {r[0]: _order(r) for r in rows}

    # --- idempotency -------------------------------------------------------------------

    def answer(self, key: str) -> tuple[str, int, str] | None:
        """The answer given to ``key``: (fingerprint of the request, status, body)."""
        rows = self._query("SELECT fingerprint, status, body FROM answers WHERE key = ?", [key])
        return None if not rows else (rows[0][0], int(rows[0][1]), rows[0][2])

    def keep_answer(self, key: str, fingerprint: str, status: int, body: str) -> bool:
        """Keep the answer to ``key``; ``False`` when another request kept one first."""
        rows = self._write(
            [
                (
                    "INSERT INTO answers (key, fingerprint, status, body, created) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING key",
                    (key, fingerprint, status, body, now_ms()),
                )
            ]
        )
        return rows[0] is not None

    # --- commands and orders -----------------------------------------------------------

    def add_command(
        self, command_id: str, node: str, name: str, body: dict[str, Any], wire: bytes | None = None
    ) -> None:
        """Keep a command before it is sent (resent after a restart until it is answered)."""
        self._write([_command_insert(CommandRow(command_id, node, name, body, wire))])

    def command_replied(self, command_id: str, reply: dict[str, Any]) -> None:
        """Keep the node's reply to a command."""
        self._write([_replied(command_id, reply)])

    def command(self, command_id: str) -> dict[str, Any] | None:
        """One command with its reply (``None``: not answered yet)."""
        rows = self._query(
            "SELECT id, node, name, body, created, reply, replied FROM commands WHERE id = ?",
            [command_id],
        )
        if not rows:
            return None
        row = rows[0]
        return {
            "id": row[0],
            "node": row[1],
            "command": row[2],
            "body": json.loads(row[3]),
            "created": int(row[4]),
            "reply": None if row[5] is None else json.loads(row[5]),
            "replied": None if row[6] is None else int(row[6]),
        }

    def unanswered(self) -> list[tuple[str, str, str, dict[str, Any]]]:
        """Commands without a reply: (id, node, name, body as sent), oldest first."""
        rows = self._query(
            "SELECT id, node, name, body, wire FROM commands WHERE reply IS NULL ORDER BY created"
        )
        return [(r[0], r[1], r[2], _sent(r[3], r[4])) for r in rows]

    def commands_sent(self, ids: Iterable[str]) -> dict[str, tuple[str, str, dict[str, Any]]]:
        """Commands by id: (node, name, body as sent); ids not kept are left out."""
        out: dict[str, tuple[str, str, dict[str, Any]]] = {}
        wanted = list(ids)
        for at in range(0, len(wanted), 500):
            chunk = wanted[at : at + 500]
            rows = self._query(
                "SELECT id, node, name, body, wire FROM commands WHERE id IN ("
                + ", ".join("?" for _ in chunk)
                + ")",
                chunk,
            )
            out.update({r[0]: (r[1], r[2], _sent(r[3], r[4])) for r in rows})
        return out

    # --- waves -------------------------------------------------------------------------

    def add_wave(
        self, wave: WaveRow, commands: Sequence[CommandRow], orders: Iterable[OrderRow]
    ) -> None:
        """Keep a new wave, its first commands and its orders, in one transaction."""
        self._write(
            [
                (
                    f"INSERT INTO waves ({_WAVE}, saved) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        wave.id,
                        _json(wave.body),
                        None if wave.dock_carriers is None else _json(wave.dock_carriers),
                        _json(wave.cutoffs),
                        wave.created,
                        wave.salt,
                        wave.position,
                        _json(wave.state),
                        wave.finished,
                        now_ms(),
                    ),
                ),
                *(_command_insert(c) for c in commands),
                *self._order_statements(orders),
            ]
        )

    def wave_exists(self, wave_id: str) -> bool:
        """Whether a wave of this id was submitted (finished or not)."""
        return bool(self._query("SELECT 1 FROM waves WHERE id = ?", [wave_id]))

    def open_waves(self) -> list[WaveRow]:
        """Every wave not finished, oldest first."""
        rows = self._query(f"SELECT {_WAVE} FROM waves WHERE finished IS NULL ORDER BY created, id")
        return [
            WaveRow(
                r[0],
                json.loads(r[1]),
                None if r[2] is None else json.loads(r[2]),
                json.loads(r[3]),
                int(r[4]),
                r[5],
                int(r[6]),
                json.loads(r[7]),
                None if r[8] is None else int(r[8]),
            )
            for r in rows
        ]

    def order_states(self, wave_id: str) -> dict[str, tuple[str, str]]:
        """The (status, detail) of each order of a wave as the ``orders`` table has it."""
        rows = self._query("SELECT id, status, detail FROM orders WHERE wave = ?", [wave_id])
        return {r[0]: (r[1], r[2]) for r in rows}

    def route(self, step: Routed) -> list[str]:
        """Keep one routing step in one transaction; the ids of the commands new to the log.

        A command already kept (a step taken again after a restart makes the same ids) is
        left as it is: it was sent, or is sent again by ``unanswered``.
        """
        at = now_ms()
        statements: list[tuple[str, Sequence[Any]]] = [
            _replied(cid, reply) for cid, reply in step.replies
        ]
        statements += [_command_insert(c, fresh=True) for c in step.commands]
        statements += self._order_statements(step.orders)
        for mark in step.waves:
            if mark.state is None:
                statements.append(
                    ("UPDATE waves SET position = ? WHERE id = ?", (mark.position, mark.id))
                )
            else:
                statements.append(
                    (
                        "UPDATE waves SET position = ?, state = ?, saved = ?, finished = ? "
                        "WHERE id = ?",
                        (mark.position, _json(mark.state), at, mark.finished, mark.id),
                    )
                )
        rows = self._write(statements)
        first = len(step.replies)
        return [r[0] for r in rows[first : first + len(step.commands)] if r is not None]

    def set_orders(self, orders: Iterable[OrderRow]) -> None:
        """Keep each order as the router sees it (in one transaction)."""
        self._write(self._order_statements(orders))

    def _order_statements(self, orders: Iterable[OrderRow]) -> list[tuple[str, Sequence[Any]]]:
        at = now_ms()
        return [
            (
                "INSERT INTO orders (id, wave, status, detail, body, updated, carrier, cutoff) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "status = excluded.status, detail = excluded.detail, updated = excluded.updated",
                (o.id, o.wave, o.status, o.detail, _json(o.body), at, o.carrier, o.cutoff),
            )
            for o in orders
        ]

    def orders(
        self, after: str = "", limit: int = 100, status: str | None = None
    ) -> list[dict[str, Any]]:
        """Orders by id after ``after`` (a page), optionally of one status."""
        where = "id > ?" + ("" if status is None else " AND status = ?")
        args: list[Any] = [after] if status is None else [after, status]
        rows = self._query(
            f"SELECT {_ORDER} FROM orders WHERE {where} ORDER BY id LIMIT ?", [*args, limit]
        )
        return [_order(r) for r in rows]

    def order(self, order_id: str) -> dict[str, Any] | None:
        """One order: its status and the order as submitted."""
        rows = self._query(f"SELECT {_ORDER}, body FROM orders WHERE id = ?", [order_id])
        if not rows:
            return None
        return {**_order(rows[0]), "submitted": json.loads(rows[0][-1])}

    # --- webhooks ----------------------------------------------------------------------

    def add_webhook(self, hook: Webhook) -> None:
        """Register a webhook endpoint."""
        self._write(
            [
                (
                    f"INSERT INTO webhooks ({_WEBHOOK}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        hook.id,
                        hook.url,
                        hook.secret,
                        json.dumps(list(hook.names)),
                        hook.batch,
                        int(hook.enabled),
                        hook.cursor,
                        hook.failures,
                        hook.disabled_reason,
                        hook.created,
                    ),
                )
            ]
        )

    def webhooks(self) -> list[Webhook]:
        """Every webhook endpoint."""
        return [_webhook(r) for r in self._query(f"SELECT {_WEBHOOK} FROM webhooks ORDER BY id")]

    def webhook(self, hook_id: str) -> Webhook | None:
        """One webhook endpoint."""
        rows = self._query(f"SELECT {_WEBHOOK} FROM webhooks WHERE id = ?", [hook_id])
        return _webhook(rows[0]) if rows else None

    def delete_webhook(self, hook_id: str) -> bool:
        """Remove an endpoint; ``False`` when there was none."""
        rows = self._write([("DELETE FROM webhooks WHERE id = ? RETURNING id", (hook_id,))])
        return rows[0] is not None

    def update_webhook(
        self,
        hook_id: str,
        *,
        cursor: int | None = None,
        failures: int | None = None,
        enabled: bool | None = None,
        disabled_reason: str | None = None,
    ) -> None:
        """Move an endpoint's cursor, count its failures, disable or enable it."""
        sets: list[str] = []
        args: list[Any] = []
        for column, value in (
            ("cursor", cursor),
            ("failures", failures),
            ("enabled", None if enabled is None else int(enabled)),
            ("disabled_reason", disabled_reason),
        ):
            if value is not None:
                sets.append(f"{column} = ?")
                args.append(value)
        if sets:
            self._write([(f"UPDATE webhooks SET {', '.join(sets)} WHERE id = ?", (*args, hook_id))])

    def add_attempt(
        self,
        hook_id: str,
        message: str,
        span: tuple[int, int],
        attempt: int,
        status: int,
        error: str,
    ) -> None:
        """Keep one delivery attempt (status 0: no HTTP answer)."""
        self._write(
            [
                (
                    "INSERT INTO attempts (webhook, message, first_event, last_event, attempt, "
                    "status, error, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (hook_id, message, span[0], span[1], attempt, status, error[:500], now_ms()),
                )
            ]
        )

    def attempts(self, hook_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The newest delivery attempts of an endpoint, newest first."""
        rows = self._query(
            "SELECT message, first_event, last_event, attempt, status, error, at FROM attempts "
            "WHERE webhook = ? ORDER BY id DESC LIMIT ?",
            [hook_id, limit],
        )
        return [
            {
                "message": r[0],
                "first_event": int(r[1]),
                "last_event": int(r[2]),
                "attempt": int(r[3]),
                "status": int(r[4]),
                "error": r[5],
                "at": int(r[6]),
            }
            for r in rows
        ]


def _positions(events: Sequence[NewEvent], added: Sequence[Any]) -> list[int | None]:
    """Each event's position among the rows ``added`` (``None``: it was in the log)."""
    # The single writer's rows come back in the order they went in: walk both.
    out: list[int | None] = []
    at = 0
    for e in events:
        if at < len(added) and (added[at][1], added[at][2], added[at][3]) == (
            e.node,
            e.store,
            e.seq,
        ):
            out.append(int(added[at][0]))
            at += 1
        else:
            out.append(None)
    return out


def _command_insert(command: CommandRow, *, fresh: bool = False) -> tuple[str, Sequence[Any]]:
    # fresh: one already kept is left alone, and its id comes back only when it is new.
    sql = "INSERT INTO commands (id, node, name, body, created, wire) VALUES (?, ?, ?, ?, ?, ?)"
    if fresh:
        sql += " ON CONFLICT DO NOTHING RETURNING id"
    c = command
    return sql, (c.id, c.node, c.name, _json(c.body), now_ms(), c.wire)


def _replied(command_id: str, reply: dict[str, Any]) -> tuple[str, Sequence[Any]]:
    return (
        "UPDATE commands SET reply = ?, replied = ? WHERE id = ? AND reply IS NULL",
        (_json(reply), now_ms(), command_id),
    )


def _sent(body: str, wire: bytes | None) -> dict[str, Any]:
    """A kept command's body as it was sent: from ``wire`` when kept (bytes stay bytes)."""
    if wire is not None:
        decoded = unpack_local(bytes(wire))
        if isinstance(decoded, dict):
            return decoded
    loaded: dict[str, Any] = json.loads(body)
    return loaded


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=_bytes)


def _bytes(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return value.decode("latin-1")  # a carrier label's ZPL: 8-bit text, kept byte for byte
    raise TypeError(f"not JSON: {type(value).__name__}")


class SqliteLog(SqlLog):
    """The log in one SQLite file (WAL, ``synchronous=FULL``: a commit is on disk)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level="DEFERRED")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=10000")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the site log {path}: {exc}") from None
        self._conn = conn
        self._lock_fd: int | None = None
        self._create()
        # Reads on a connection of their own: in WAL mode they do not wait for the writer's
        # commits (each an fsync), so cursor readers and webhooks do not slow the log down.
        self._read_conn: sqlite3.Connection | None = sqlite3.connect(path, check_same_thread=False)
        self._read_conn.execute("PRAGMA busy_timeout=10000")
        self._read_lock = threading.Lock()

    def _reader(self) -> tuple[Any, threading.Lock]:
        return self._read_conn, self._read_lock

    def try_lead(self) -> bool:
        """An exclusive lock on ``<file>.lock``: a second instance on the file stands by."""
        if self._lock_fd is not None:
            return True
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def still_leading(self) -> bool:
        """A file lock is held until this process ends."""
        return self._lock_fd is not None

    def close(self) -> None:
        """Close the file and let the lock go."""
        super().close()
        with self._read_lock:
            if self._read_conn is not None:
                self._read_conn.close()
                self._read_conn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        try:
            return super()._query(sql, args)
        except sqlite3.Error as exc:
            raise StoreError(f"the site log {self.path}: {exc}") from None

    def _write(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> list[Any]:
        try:
            return super()._write(statements)
        except sqlite3.Error as exc:
            raise StoreError(f"the site log {self.path}: {exc}") from None
