"""A private PostgreSQL on a free loopback port, for the site service's failover tests.

``initdb`` from Debian's ``postgresql`` package makes a cluster in a fresh temporary
directory; the server listens on 127.0.0.1 only (and a socket in that directory), trusts
local connections, and keeps fsync on (the log's durability is what is tested). Run as
root, as CI does, both run as the ``postgres`` user the package creates: the server
refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from agent.oms.demo.broker import free_port

USER = "zone"


class _PortTaken(Exception):
    """Another process bound the port between ``free_port`` and the server."""


def find_bin() -> Path | None:
    """The directory of ``initdb`` and ``postgres``, or ``None`` when not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


class LocalPostgres:
    """One PostgreSQL server in a temporary directory; ``dsn`` reaches its ``postgres`` db."""

    def __init__(self) -> None:
        bindir = find_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (sudo apt-get install postgresql)")
        self.bindir = bindir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="zone-pg-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self._as = {"user": owner.pw_uid, "group": owner.pw_gid}

    @property
    def dsn(self) -> str:
        """A libpq connection string for the server."""
        return f"host=127.0.0.1 port={self.port} user={USER} dbname=postgres"

    def start(self, timeout: float = 60, tries: int = 5) -> None:
        """Make the cluster (once) and start the server; wait until it takes connections.

        The free port it picked may be taken by someone else before the server binds it
        (a busy machine): then it tries another, up to ``tries`` times.
        """
        for _ in range(tries - 1):
            try:
                self._start(timeout)
                return
            except _PortTaken:
                self.port = free_port()
        self._start(timeout)

    def _start(self, timeout: float) -> None:
        import psycopg

        data = self.dir / "data"
        if not data.exists():
            subprocess.run(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    USER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
                check=True,
                capture_output=True,
                **self._as,
            )
        log = (self.dir / "server.log").open("ab")
        seen = log.tell()  # what earlier tries wrote is not this try's news
        self.proc = subprocess.Popen(
            [
                str(self.bindir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.dir}",
                "-c",
                "max_connections=40",
                "-c",
                "shared_buffers=32MB",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            **self._as,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.dsn, connect_timeout=2).close()
                return
            except psycopg.Error:
                said = self.text().encode()[seen:].decode(errors="replace")
                if self.proc.poll() is not None and "could not create any TCP/IP sockets" in said:
                    raise _PortTaken from None
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start:\n{self.text()}") from None
                time.sleep(0.1)

    def text(self) -> str:
        """The server's log."""
        path = self.dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then remove the directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()  # no server and no directory left behind
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
