"""The SQLite store: group commits, seq, acknowledgement, de-dup memory, limits, restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgpack
import pytest

from agent.errors import OutboxFull, StoreTooNew
from agent.store import SCHEMA_VERSION, Store, StoredTask, Unit
from agent.wire.messages import Reply


def test_boot_counter_and_store_id_survive_reopen(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db")
    first_id, first_boot = s.store_id, s.boot
    s.close()
    s = Store(tmp_path / "s.db")
    assert s.store_id == first_id
    assert s.boot == first_boot + 1


def test_commit_assigns_consecutive_seqs_and_encodes_envelopes(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db")
    unit = Unit()
    i = unit.emit("reply", Reply(cmd="ping", status="accepted"), corr="c1")
    unit.inbox.append(("c1", "ping", i))
    unit.emit("picked", {"task": "t1"})
    rows = s.commit(unit)
    assert [r.seq for r in rows] == [1, 2]
    env = msgpack.unpackb(rows[0].payload)
    assert env["seq"] == 1 and env["boot"] == s.boot and env["corr"] == "c1"
    assert env["body"] == {"cmd": "ping", "status": "accepted"}
    assert s.reply_for("c1") == rows[0]
    assert s.recent_command_ids(10) == ["c1"]


def test_ack_removes_only_acknowledged_events(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db")
    for n in range(5):
        u = Unit()
        u.emit("e", {"n": n})
        s.commit(u)
    assert s.ack(3) == 3
    assert [r.seq for r in s.outbox_after(0, 10)] == [4, 5]
    assert s.ack(2) == 0  # old acks change nothing
    s.close()
    s = Store(tmp_path / "s.db")
    assert (s.last_seq, s.acked_seq, s.pending) == (5, 3, 2)
    u = Unit()
    u.emit("e", {})
    assert s.commit(u)[0].seq == 6  # seq never repeats across boots


def test_tasks_and_counters_persist(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db")
    u = Unit()
    u.put_task(StoredTask("t1", "pick", "w1", {"qty": 2}))
    u.put_task(StoredTask("t2", "pick", None, {"qty": 1}))
    u.count("lines", 2)
    s.commit(u)
    u = Unit()
    u.drop_task("t2")
    u.count("lines")
    s.commit(u)
    s.close()
    s = Store(tmp_path / "s.db")
    assert s.tasks() == [StoredTask("t1", "pick", "w1", {"qty": 2})]
    assert s.counters() == {"lines": 3}


def test_outbox_hard_limit_refuses_and_writes_nothing(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db", outbox_hard_limit=3)
    u = Unit()
    for _ in range(3):
        u.emit("e", {})
    s.commit(u)
    u = Unit()
    u.emit("e", {})
    u.put_task(StoredTask("t", "pick", None, {}))
    with pytest.raises(OutboxFull):
        s.commit(u)
    assert s.last_seq == 3 and s.tasks() == []
    s.ack(1)
    assert s.commit(u)[0].seq == 4


def test_prune_inbox_keeps_newest(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db")
    for n in range(5):
        u = Unit()
        u.inbox.append((f"c{n}", "ping", -1))
        s.commit(u)
    assert s.prune_inbox(2) == 3
    assert len(s.recent_command_ids(10)) == 2


def test_a_new_store_records_its_schema_version(tmp_path: Path) -> None:
    Store(tmp_path / "s.db").close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_store_from_before_the_version_was_kept_opens_and_gets_it(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db")
    s.commit(_one_event())
    store_id = s.store_id
    s.close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute("PRAGMA user_version = 0")  # as every store made before this release
    s = Store(tmp_path / "s.db")
    assert (s.store_id, s.pending) == (store_id, 1)
    s.close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_store_of_a_newer_release_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """A downgrade: the older code says what happened and what to do, and writes nothing."""
    s = Store(tmp_path / "s.db")
    s.commit(_one_event())
    s.close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = (tmp_path / "s.db").read_bytes()
    with pytest.raises(StoreTooNew) as info:
        Store(tmp_path / "s.db")
    message = str(info.value)
    assert str(tmp_path / "s.db") in message
    assert f"store schema {SCHEMA_VERSION + 1} was written by a newer zone-agent" in message
    assert f"knows schema {SCHEMA_VERSION}" in message and "Install the newer release" in message
    assert (tmp_path / "s.db").read_bytes() == before


def _one_event() -> Unit:
    unit = Unit()
    unit.emit("picked", {"task": "t1"})
    return unit
