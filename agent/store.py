"""The node's durable state: SQLite in WAL mode, written by one thread, in group commits.

What it holds:

* ``meta``: the store id (random, made once), the boot counter, the last event seq and the
  highest seq the OMS acknowledged;
* ``inbox``: ids of commands already applied, with the reply they got (de-duplication);
* ``outbox``: every event not yet acknowledged by the OMS, as the exact bytes to publish;
* ``tasks``: open tasks as the workflows left them (opaque msgpack state per task);
* ``counters``: KPI counters.

All writes of one ``Unit`` (the commands and device events handled together) go in one
transaction with ``synchronous=FULL``: one fsync makes a whole batch durable, so a reply
that says "accepted", and every event before it, is on disk before it is published.

``Store`` is synchronous and owned by one thread; ``AsyncStore`` runs it on a dedicated
thread so the event loop never waits on the SD card.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from agent import __version__
from agent.errors import OutboxFull, StateDirLocked, StoreError, StoreTooNew
from agent.wire.codec import encode, new_id, pack_local, unpack_local
from agent.wire.messages import Wire

log = logging.getLogger("agent.store")
T = TypeVar("T")

SCHEMA_VERSION = 1
"""The layout ``SCHEMA`` makes, kept in SQLite's ``user_version``. Raise it with any change a
release before could not read, and teach ``Store`` to migrate from the old number; a store
with a higher number was written by a newer release, and this one refuses to open it (a
downgrade must not guess at tables it does not know). Stores made before the number was
kept hold 0 and have this same layout."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, at_ms INTEGER NOT NULL,
    reply_seq INTEGER, reply_name TEXT, reply BLOB);
CREATE INDEX IF NOT EXISTS inbox_at ON inbox(at_ms);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY, name TEXT NOT NULL, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, wave TEXT, data BLOB NOT NULL, updated_ms INTEGER);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
"""


@dataclass(slots=True)
class PendingEvent:
    """An event to append to the outbox; seq and id are given at commit."""

    name: str
    body: Wire | dict[str, Any]
    corr: str | None = None
    ts: int = 0


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """An event as stored and published."""

    seq: int
    name: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class StoredTask:
    """A task as a workflow saved it."""

    id: str
    kind: str
    wave: str | None
    data: Any


@dataclass(slots=True)
class Unit:
    """Everything one group commit writes.

    Attributes:
        events: events to append, in order.
        inbox: ``(command id, command name, index into events of its reply)``.
        puts: tasks to insert or replace, by id.
        drops: task ids to delete.
        counters: increments by counter name.
        device_events: how many events come from device input (they may use the reserve).
    """

    events: list[PendingEvent] = field(default_factory=list)
    inbox: list[tuple[str, str, int]] = field(default_factory=list)
    puts: dict[str, StoredTask] = field(default_factory=dict)
    drops: set[str] = field(default_factory=set)
    counters: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.events or self.inbox or self.puts or self.drops or self.counters)

    def emit(
        self, name: str, body: Wire | dict[str, Any], *, corr: str | None = None, ts: int = 0
    ) -> int:
        """Queue an event; returns its index in ``events``."""
        self.events.append(PendingEvent(name, body, corr, ts))
        return len(self.events) - 1

    def merge(self, other: Unit) -> None:
        """Append ``other``'s writes after this unit's (for one item of a batch)."""
        offset = len(self.events)
        self.events.extend(other.events)
        self.inbox.extend((cid, name, i + offset if i >= 0 else i) for cid, name, i in other.inbox)
        for task_id in other.drops:
            self.drop_task(task_id)
        for task in other.puts.values():
            self.put_task(task)
        for name, delta in other.counters.items():
            self.count(name, delta)

    def put_task(self, task: StoredTask) -> None:
        """Insert or replace a task."""
        self.drops.discard(task.id)
        self.puts[task.id] = task

    def drop_task(self, task_id: str) -> None:
        """Delete a task."""
        self.puts.pop(task_id, None)
        self.drops.add(task_id)

    def count(self, name: str, delta: int = 1) -> None:
        """Add ``delta`` to a KPI counter."""
        self.counters[name] = self.counters.get(name, 0) + delta


def now_ms() -> int:
    """Milliseconds since the epoch (wall clock: for timestamps on the wire)."""
    return time.time_ns() // 1_000_000


class Store:
    """The SQLite store; use from one thread only (``AsyncStore`` does that for you).

    Args:
        path: the database file (its directory is created).
        outbox_hard_limit: ``append`` raises ``OutboxFull`` past this many pending events.
    """

    def __init__(self, path: str | Path, *, outbox_hard_limit: int = 110_000) -> None:
        self.path = Path(path)
        self.outbox_hard_limit = outbox_hard_limit
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(store_failure(self.path, exc)) from exc
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._check_schema()
            self._db.executescript(SCHEMA)
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            self.created: bool = not meta.get("store_id")
            """This open made the store (a first start, or a wiped state directory)."""
            self.store_id: str = meta.get("store_id") or new_id()
            self.boot: int = int(meta.get("boot", 0)) + 1
            self.last_seq: int = int(meta.get("last_seq", 0))
            self.acked_seq: int = int(meta.get("acked_seq", 0))
            self._set_meta(store_id=self.store_id, boot=self.boot)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(store_failure(self.path, exc)) from exc
        log.info(
            "store %s: boot %d, last seq %d, acked %d",
            self.path,
            self.boot,
            self.last_seq,
            self.acked_seq,
        )

    def _check_schema(self) -> None:
        found = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if found > SCHEMA_VERSION:
            self._db.close()
            raise StoreTooNew(
                f"{self.path}: store schema {found} was written by a newer zone-agent; "
                f"this one ({__version__}) knows schema {SCHEMA_VERSION} and will not open it. "
                "Install the newer release again, or move the state directory away to start "
                "an empty store (events the OMS has not acknowledged would be lost)"
            )

    def _set_meta(self, **values: Any) -> None:
        self._db.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            list(values.items()),
        )

    @property
    def pending(self) -> int:
        """Events in the outbox not yet acknowledged."""
        return self.last_seq - self.acked_seq

    def commit(self, unit: Unit, *, allow_reserve: bool = True) -> list[OutboxRow]:
        """Write a unit in one transaction (one fsync); returns the new outbox rows."""
        if self.pending + len(unit.events) > self.outbox_hard_limit:
            raise OutboxFull(
                f"{self.pending} events wait for the OMS (limit {self.outbox_hard_limit})"
            )
        rows: list[OutboxRow] = []
        seq = self.last_seq
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for ev in unit.events:
                seq += 1
                payload = encode(
                    ev.body,
                    msg_id=new_id(),
                    ts=ev.ts or now_ms(),
                    boot=self.boot,
                    store=self.store_id,
                    seq=seq,
                    corr=ev.corr,
                )
                rows.append(OutboxRow(seq, ev.name, payload))
            if rows:
                self._db.executemany(
                    "INSERT INTO outbox(seq, name, payload) VALUES (?, ?, ?)",
                    [(r.seq, r.name, r.payload) for r in rows],
                )
                self._set_meta(last_seq=seq)
            if unit.inbox:
                at = now_ms()
                self._db.executemany(
                    "INSERT OR IGNORE INTO inbox(id, name, at_ms, reply_seq, reply_name, reply)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (cid, name, at, rows[i].seq, rows[i].name, rows[i].payload)
                        if i >= 0
                        else (cid, name, at, None, None, None)
                        for cid, name, i in unit.inbox
                    ],
                )
            if unit.drops:
                self._db.executemany("DELETE FROM tasks WHERE id = ?", [(t,) for t in unit.drops])
            if unit.puts:
                at = now_ms()
                self._db.executemany(
                    "INSERT OR REPLACE INTO tasks(id, kind, wave, data, updated_ms)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [(t.id, t.kind, t.wave, pack_local(t.data), at) for t in unit.puts.values()],
                )
            if unit.counters:
                self._db.executemany(
                    "INSERT INTO counters(name, value) VALUES (?, ?)"
                    " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    list(unit.counters.items()),
                )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(store_failure(self.path, exc)) from exc
        self.last_seq = seq
        return rows

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # no transaction was open

    def ack(self, seq: int) -> int:
        """Forget events up to ``seq`` (the OMS has them); returns how many were removed."""
        seq = min(seq, self.last_seq)
        if seq <= self.acked_seq:
            return 0
        try:
            self._db.execute("BEGIN IMMEDIATE")
            cur = self._db.execute("DELETE FROM outbox WHERE seq <= ?", (seq,))
            self._set_meta(acked_seq=seq)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(store_failure(self.path, exc)) from exc
        self.acked_seq = seq
        return cur.rowcount

    def outbox_after(self, seq: int, limit: int) -> list[OutboxRow]:
        """Events after ``seq`` in order, at most ``limit``."""
        cur = self._db.execute(
            "SELECT seq, name, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        )
        return [OutboxRow(s, n, p) for s, n, p in cur.fetchall()]

    def reply_for(self, command_id: str) -> OutboxRow | None:
        """The reply a command already got, for answering a resent command the same way."""
        row = self._db.execute(
            "SELECT reply_seq, reply_name, reply FROM inbox WHERE id = ?", (command_id,)
        ).fetchone()
        if row is None or row[0] is None:
            return None
        return OutboxRow(row[0], row[1], row[2])

    def recent_command_ids(self, limit: int) -> list[str]:
        """Ids of the ``limit`` most recent commands, to seed the in-memory de-dup set."""
        cur = self._db.execute("SELECT id FROM inbox ORDER BY at_ms DESC LIMIT ?", (limit,))
        return [r[0] for r in cur.fetchall()]

    def prune_inbox(self, keep: int) -> int:
        """Keep the ``keep`` most recent command ids; returns how many were removed."""
        try:
            cur = self._db.execute(
                "DELETE FROM inbox WHERE id NOT IN"
                " (SELECT id FROM inbox ORDER BY at_ms DESC LIMIT ?)",
                (keep,),
            )
        except sqlite3.Error as exc:
            raise StoreError(store_failure(self.path, exc)) from exc
        return cur.rowcount

    def tasks(self) -> list[StoredTask]:
        """Every stored task."""
        cur = self._db.execute("SELECT id, kind, wave, data FROM tasks ORDER BY rowid")
        return [StoredTask(i, k, w, unpack_local(d)) for i, k, w, d in cur.fetchall()]

    def counters(self) -> dict[str, int]:
        """Every KPI counter."""
        return dict(self._db.execute("SELECT name, value FROM counters").fetchall())

    def close(self) -> None:
        """Checkpoint and close; safe to call twice."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
        except sqlite3.Error:
            pass  # already closed


LOCK_FILE = "zone-agent.lock"
"""The state directory's lock file: ``flock``-ed while a node runs on it; holds its PID."""


class StateLock:
    """An exclusive ``flock`` on a state directory, held while one node process uses it.

    Two processes on one store would both take the next seq and the OMS would drop one
    confirmation as a duplicate (issue 18): the second process is refused instead. The lock
    is the kernel's, so it goes with the process however that ends (a SIGKILL, a power cut
    leaves no stale lock behind); the file keeps the holder's PID for the refusal.

    Args:
        directory: the state directory (created if missing).
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            StateDirLocked: another process holds it (its PID in the message).
            StoreError: the directory cannot be created or the file opened (read-only or
                full disk, permissions), with the path and the cause.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(store_failure(self.path, exc)) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StateDirLocked(
                f"{self.path.parent} is in use by another zone-agent process (PID {holder}): "
                "two nodes on one store would reuse each other's seqs and lose confirmations. "
                "Stop that one first (systemctl stop zone-agent, or end the PID), or give this "
                "one its own state_dir"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the lock holds; only the PID in the refusal would be missing
        self._fd = fd

    def release(self) -> None:
        """Let the lock go (closing the file drops the ``flock``); safe to call twice."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def store_failure(path: Path, exc: BaseException) -> str:
    """One line naming ``path`` and why it cannot be written, in words an operator acts on.

    SQLite says "disk I/O error" or "unable to open database file" for a full or read-only
    file system; the file system itself is asked which it is.
    """
    said = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    cause = ""
    where = path if path.exists() else path.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        fs = os.statvfs(where)
    except OSError:
        fs = None
    if fs is not None and fs.f_flag & os.ST_RDONLY:
        cause = "the file system is read-only (an SD card the kernel remounted read-only "
        cause += "after errors is failing: replace it)"
    elif fs is not None and fs.f_bavail * fs.f_frsize < 64 * 1024:
        free = fs.f_bavail * fs.f_frsize
        cause = f"the disk is full ({free} bytes free): free space, then start again"
    elif (isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM)) or not os.access(
        where, os.W_OK
    ):
        cause = "permission denied: the service user cannot write there"
    return f"{path}: {said}" + (f": {cause}" if cause else "")


class AsyncStore:
    """Runs a ``Store`` on its own thread; every call is awaited, none blocks the loop.

    One plain thread takes jobs from a queue in order and hands each result back with one
    ``call_soon_threadsafe``: no executor, no concurrent future, and (with ``submit``) no
    task to wake, since a commit sits on the path of every reply.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._start()

    def _start(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="store", daemon=True)
        self._thread.start()

    @classmethod
    async def open(cls, path: str | Path, *, outbox_hard_limit: int) -> AsyncStore:
        """Open the store on its thread."""
        self = cls.__new__(cls)
        self._start()
        try:
            self.store = await self.call(lambda: Store(path, outbox_hard_limit=outbox_hard_limit))
        except BaseException:
            self._jobs.put(None)
            raise
        return self

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args, then = job
            try:
                result, error = fn(*args), None
            except BaseException as exc:  # noqa: BLE001  # handed to the loop, raised there
                result, error = None, exc
            try:
                then(result, error)
            except RuntimeError:
                pass  # the loop is closed: nobody waits for this any more

    def submit(
        self,
        fn: Callable[..., T],
        *args: Any,
        then: Callable[[T | None, BaseException | None], None],
    ) -> None:
        """Run ``fn(*args)`` on the store thread, then ``then(result, error)`` on the loop."""
        loop = asyncio.get_running_loop()
        self._jobs.put((fn, args, lambda r, e: loop.call_soon_threadsafe(then, r, e)))

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the store thread."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()

        def settle(result: T | None, error: BaseException | None) -> None:
            if future.cancelled():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        self.submit(fn, *args, then=settle)
        return await future

    async def commit(self, unit: Unit) -> list[OutboxRow]:
        """``Store.commit`` on the store thread."""
        return await self.call(self.store.commit, unit)

    async def close(self) -> None:
        """Close the store and its thread."""
        await self.call(self.store.close)
        self._jobs.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)


_Job = tuple[Callable[..., Any], tuple[Any, ...], Callable[[Any, BaseException | None], object]]


def rows_items(rows: Iterable[OutboxRow]) -> list[tuple[str, bytes]]:
    """``(name, payload)`` pairs of outbox rows, for ``codec.encode_batch``."""
    return [(r.name, r.payload) for r in rows]
