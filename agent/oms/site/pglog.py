"""The site log in PostgreSQL, for two instances of the service: one active, one standby.

Leadership is a session-level advisory lock taken on the same connection that writes the
log: an instance acknowledges an event only after its transaction committed, and a commit
on that connection proves the lock is still its own. When the active instance dies, its
connection closes and PostgreSQL lets the lock go at once; the standby, trying every
``lease_s / 2`` seconds, takes it. An active instance cut off from PostgreSQL (rather than
dead) is noticed by TCP keepalives on both ends (a few seconds), and its writes fail, so it
never acknowledges again; it stops with exit 1 and comes back as the standby.

The password comes from ``PGPASSWORD`` (libpq), never from the site file.
"""

from __future__ import annotations

from typing import Any

import psycopg

from agent.errors import StoreError
from agent.oms.site.log import SqlLog

LEADER_KEY = 0x5A4F4E45  # "ZONE": the advisory lock of the site's leadership
SCHEMA_KEY = 0x5A4F4E46  # held while creating the tables (two instances start together)
KEEPALIVE = "-c tcp_keepalives_idle=2 -c tcp_keepalives_interval=1 -c tcp_keepalives_count=2"


class PostgresLog(SqlLog):
    """The log's tables in the database of ``dsn`` (a libpq connection string)."""

    placeholder = "%s"
    serial = "BIGSERIAL PRIMARY KEY"
    blob = "BYTEA"

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self._leading = False
        try:
            self._conn = psycopg.connect(
                dsn,
                autocommit=False,
                connect_timeout=10,
                keepalives=1,
                keepalives_idle=2,
                keepalives_interval=1,
                keepalives_count=2,
                options=KEEPALIVE,
            )
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_KEY,))
        except psycopg.Error as exc:
            raise StoreError(f"cannot reach the site log in PostgreSQL: {exc}") from None
        self._create()

    def _begin_schema(self) -> None:
        """The transaction is open already: it holds the schema lock (``SCHEMA_KEY``)."""

    def _query(self, sql: str, args: Any = ()) -> list[Any]:
        try:
            return super()._query(sql, args)
        except psycopg.Error as exc:
            raise StoreError(f"the site log in PostgreSQL: {exc}") from None

    def _write(self, statements: Any) -> list[Any]:
        try:
            return super()._write(statements)
        except psycopg.Error as exc:
            raise StoreError(f"the site log in PostgreSQL: {exc}") from None

    def try_lead(self) -> bool:
        """Take the advisory lock if no other session holds it."""
        if self._leading:
            return True
        rows = self._query("SELECT pg_try_advisory_lock(?)", [LEADER_KEY])
        self._leading = bool(rows[0][0])
        return self._leading

    def still_leading(self) -> bool:
        """Whether this session still holds the lock (``False`` when the connection died)."""
        if not self._leading:
            return False
        try:
            rows = self._query(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND pid = pg_backend_pid() AND objid = ?",
                [LEADER_KEY],
            )
        except StoreError:
            return False
        return int(rows[0][0]) > 0
