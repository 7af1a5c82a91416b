"""A private Mosquitto on a free loopback port, for the demo, the benchmarks and the tests.

It listens on 127.0.0.1 only, with ``set_tcp_nodelay true`` (Mosquitto's default leaves
Nagle's algorithm on, which adds ~40 ms per round trip) and anonymous access, since nothing
but this machine can reach it.
"""

from __future__ import annotations

import contextlib
import ctypes
import getpass
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from agent.errors import LinkUnavailable


def find_mosquitto() -> str:
    """The mosquitto binary (Debian installs it in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise LinkUnavailable("mosquitto is not installed (sudo apt-get install mosquitto)")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent() -> None:
    """In a child before ``exec``: have Linux send it SIGTERM when its parent dies.

    A private broker or a demo node must not outlive a parent killed without a chance to
    clean up (SIGKILL, a closed terminal); mosquitto even ignores the SIGHUP of the latter.
    """
    if sys.platform != "linux":
        return
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


class LocalBroker:
    """A Mosquitto process owned by this process.

    Args:
        workdir: where its config and log go.
        port: the port (0: a free one, kept across restarts).
        extra_config: more mosquitto.conf lines.
    """

    def __init__(self, workdir: Path, port: int = 0, *, extra_config: str = "") -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        # A port found free may be taken before mosquitto binds it (a loaded test machine
        # with thousands of sockets in TIME_WAIT): an automatic one is chosen again.
        self._port_is_ours_to_choose = not port
        self.extra_config = extra_config
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``."""
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Start mosquitto and wait until it listens (its log says it runs)."""
        for _ in range(5):
            if self._start_once(timeout):
                return
            # Another process took the port between our look and mosquitto's bind.
            self.port = free_port()
        raise LinkUnavailable(f"mosquitto found no free port; see {self.workdir / 'mosquitto.log'}")

    def _start_once(self, timeout: float) -> bool:
        """One start; ``False`` when the port was taken and another may be chosen."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "set_tcp_nodelay true\n"
            "persistence false\n"
            # Started as root, mosquitto drops to the 'mosquitto' user, which cannot read
            # certificates in a private directory: a private broker runs as its starter.
            f"user {getpass.getuser()}\n"
            f"{self.extra_config}\n"
        )
        log_path = self.workdir / "mosquitto.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        log = log_path.open("ab")
        self._proc = subprocess.Popen(
            [find_mosquitto(), "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
            # Its own process group: a Ctrl-C in the owner's terminal must not kill the
            # broker under the clients still using it; the owner stops it last.
            process_group=0,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Its own log, not a connect: a connect would also succeed to whoever else
            # listens on the port, while this mosquitto fails to bind it.
            with log_path.open("rb") as f:
                f.seek(offset)
                said = f.read()
            if self._proc.poll() is not None:
                self._proc = None
                if b"Address already in use" in said and self._port_is_ours_to_choose:
                    return False
                raise LinkUnavailable(f"mosquitto exited at start; see {log_path}")
            if b" running" in said:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", self.port), 0.2),
                ):
                    return True
            time.sleep(0.02)
        raise LinkUnavailable(f"mosquitto did not listen on {self.port} within {timeout} s")

    def stop(self) -> None:
        """Stop mosquitto (SIGTERM, then SIGKILL)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        """Whether the process is up."""
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
