"""The site log's own tables without a broker: orders with their carrier and cut-off,
commands kept as they are sent (a carrier's PDF byte for byte), and a log written by an
older release brought up to date when it is opened (SQLite, and PostgreSQL when it is
installed)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from agent.errors import StoreError
from agent.oms.site.log import SCHEMA_VERSION, OrderRow, SqliteLog
from agent.oms.site.routing import command_of, command_row
from agent.workflows.packing import CarrierLabel, PackCommand, PackLine
from testing.postgres import LocalPostgres, find_bin

# The orders table as releases before the schema number made it (commit 559778d).
OLD_ORDERS = """
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    wave TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT NOT NULL,
    body TEXT NOT NULL,
    updated BIGINT NOT NULL
)
"""
OLD_COMMANDS = """
CREATE TABLE commands (
    id TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    created BIGINT NOT NULL,
    reply TEXT,
    replied BIGINT
)
"""
OLD_COMMAND = ("c-1", "zone-a", "cancel", '{"tasks":["SO-2-1"]}', 1_780_000_000_000)
OLD_ROWS = [
    # the station's own label: Standard
    ("SO-1", "W1", "packing", "", {"order": "SO-1", "lines": [{"sku": "A", "qty": 1}]}),
    (
        "SO-2",
        "W1",
        "packed",
        "",
        {"order": "SO-2", "carrier": "DHL", "lines": [{"sku": "B", "qty": 2}]},
    ),
    (
        "SO-3",
        "W1",
        "picking",
        "",
        {"order": "SO-3", "carrier_zpl": "^XA^FDx^FS^XZ", "lines": [{"sku": "C", "qty": 1}]},
    ),
]


def old_rows() -> list[tuple[str, str, str, str, str, int]]:
    return [(i, w, s, d, json.dumps(b), 1_780_000_000_000) for i, w, s, d, b in OLD_ROWS]


def test_orders_keep_their_carrier_and_cutoff(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "site.db")
    try:
        body = {"order": "SO-9", "lines": [{"sku": "A", "qty": 1}]}
        log.set_orders(
            [
                OrderRow("SO-9", "W9", "picking", "", body, "DHL", 1_790_000_000_000),
                OrderRow("SO-8", "W9", "picking", "", body, None, None),
            ]
        )
        # A later status leaves the carrier as it was given.
        log.set_orders([OrderRow("SO-9", "W9", "packing", "", body, "DHL", 1_790_000_000_000)])
        rows = {r["order"]: r for r in log.orders()}
        assert (rows["SO-9"]["status"], rows["SO-9"]["carrier"], rows["SO-9"]["cutoff"]) == (
            "packing",
            "DHL",
            1_790_000_000_000,
        )
        assert (rows["SO-8"]["carrier"], rows["SO-8"]["cutoff"]) == (None, None)
        one = log.order("SO-9")
        assert one is not None
        assert (one["carrier"], one["cutoff"], one["submitted"]) == ("DHL", 1_790_000_000_000, body)
    finally:
        log.close()


def test_an_older_sqlite_log_gets_the_carrier_columns_and_keeps_its_orders(
    tmp_path: Path,
) -> None:
    path = tmp_path / "site.db"
    conn = sqlite3.connect(path)
    conn.execute(OLD_ORDERS)
    conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)", old_rows())
    conn.execute(OLD_COMMANDS)
    conn.execute(
        "INSERT INTO commands (id, node, name, body, created) VALUES (?, ?, ?, ?, ?)", OLD_COMMAND
    )
    conn.commit()
    conn.close()

    log = SqliteLog(path)
    try:
        rows = {r["order"]: r for r in log.orders()}
        assert {k: (r["status"], r["carrier"], r["cutoff"]) for k, r in rows.items()} == {
            "SO-1": ("packing", "Standard", None),  # the cut-off was never kept
            "SO-2": ("packed", "DHL", None),
            "SO-3": ("picking", None, None),
        }
        # A command kept before the wire column is resent from its JSON, as it was.
        assert log.unanswered() == [("c-1", "zone-a", "cancel", {"tasks": ["SO-2-1"]})]
        assert log.open_waves() == [] and not log.wave_exists("W1")
    finally:
        log.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchall() == [
            (str(SCHEMA_VERSION),)
        ]
    SqliteLog(path).close()  # opening an up-to-date log again changes nothing


PDF = b"%PDF-1.4\n\xff\xfe\x00 a label that is not UTF-8\n%%EOF"


def pack_with_pdf() -> PackCommand:
    return PackCommand(
        order="SO-7",
        lines=[PackLine(sku="A", qty=1, barcodes=["CODE-A"], unit_weight_g=250.0)],
        carrier_label=CarrierLabel(format="pdf", data=PDF),
    )


def test_a_command_is_kept_as_sent_and_resent_byte_for_byte(tmp_path: Path) -> None:
    # A carrier's PDF is not text: the JSON body shows it as Latin-1, the wire keeps it.
    log = SqliteLog(tmp_path / "site.db")
    try:
        row = command_row("c-1", "pack-1", "pack", pack_with_pdf())
        log.add_command(row.id, row.node, row.name, row.body, row.wire)
        [(cid, node, name, body)] = log.unanswered()
        assert (cid, node, name) == ("c-1", "pack-1", "pack")
        assert body["carrier_label"]["data"] == PDF
        again = command_of(node, name, body, "SO-7")  # as a node reads it
        assert again.body == pack_with_pdf() and again.order == "SO-7"
        assert log.commands_sent(["c-1", "nope"]) == {"c-1": ("pack-1", "pack", body)}
        shown = log.command("c-1")
        assert shown is not None and shown["body"]["carrier_label"]["data"] == PDF.decode("latin-1")
    finally:
        log.close()


def test_a_log_of_a_newer_release_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "site.db"
    SqliteLog(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(StoreError, match=f"schema {SCHEMA_VERSION + 1} was written by a newer"):
        SqliteLog(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta").fetchall() == [(str(SCHEMA_VERSION + 1),)]


@pytest.fixture
def postgres() -> Iterator[LocalPostgres]:
    if find_bin() is None:
        pytest.skip("PostgreSQL not installed")
    with LocalPostgres() as pg:
        yield pg


def test_an_older_postgres_log_gets_the_carrier_columns(postgres: LocalPostgres) -> None:
    from agent.oms.site.pglog import PostgresLog

    with psycopg.connect(postgres.dsn) as conn:
        conn.execute(OLD_ORDERS)
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO orders VALUES (%s, %s, %s, %s, %s, %s)", old_rows())
        conn.execute(OLD_COMMANDS)
        conn.execute(
            "INSERT INTO commands (id, node, name, body, created) VALUES (%s, %s, %s, %s, %s)",
            OLD_COMMAND,
        )
    log = PostgresLog(postgres.dsn)
    try:
        rows = {r["order"]: (r["carrier"], r["cutoff"]) for r in log.orders()}
        assert rows == {"SO-1": ("Standard", None), "SO-2": ("DHL", None), "SO-3": (None, None)}
        assert log.unanswered() == [("c-1", "zone-a", "cancel", {"tasks": ["SO-2-1"]})]
        # The new column takes bytes as they are.
        row = command_row("c-2", "pack-1", "pack", pack_with_pdf())
        log.add_command(row.id, row.node, row.name, row.body, row.wire)
        sent = log.unanswered()[1][3]
        assert sent["carrier_label"]["data"] == PDF
    finally:
        log.close()
    again = PostgresLog(postgres.dsn)
    again.close()
