"""A real IPP printer for the tests and the benchmarks: CUPS's ippeveprinter on loopback.

``ippeveprinter`` (Debian package cups-ipp-utils) is the IPP Everywhere reference printer
from CUPS: a complete IPP server (Print-Job, Get-Job-Attributes, Get-Jobs,
printer-state-reasons) that hands each document to a command. It will not start without
DNS-SD, even with ``-r off`` ("Unable to initialize DNS-SD", apple/cups #5666), so
``IppEvePrinter`` starts, for itself alone:

* a D-Bus daemon with a system-bus configuration on a socket in its work directory
  (``DBUS_SYSTEM_BUS_ADDRESS`` points avahi and ippeveprinter at it);
* avahi-daemon on ``lo`` only (no IPv6, no wide area), in a private mount namespace with its
  own ``/run/avahi-daemon`` so several can run at once (``unshare``; as root, or with user
  namespaces), advertising nothing beyond this machine;
* ippeveprinter on a free port, ``-n localhost`` (it listens on 127.0.0.1 and ::1 only),
  with an attributes file for 4x6 labels (media ``na_index-4x6_4x6in``, ``print-scaling``,
  PDF and PNG) and ``-c`` a shell script that plays the print engine.

The print engine (the ``-c`` script) records each document under ``printed/`` and a line in
``printed.log`` once it has "printed" it. Faults are injected through files it reads:
``hold()`` makes it report a state reason (``STATE: +media-empty-error`` on stderr, which
ippeveprinter turns into ``printer-state-reasons``) and wait, mid-job, until ``release()``;
``abort_next()`` makes the next job fail (exit status 1: the job is ``aborted``). ``kill()``
takes the printer away (SIGKILL); ``start()`` brings it back on the same port, with no
memory of its jobs, as a printer that was switched off.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from agent.oms.demo.broker import die_with_parent, free_port

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

AVAHI_CONF = """[server]
use-ipv4=yes
use-ipv6=no
allow-interfaces=lo
enable-dbus=yes
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
"""

# In 2.4, -a cannot be combined with -f, -M or -m, so formats go in the file too (ipptool
# then warns about a duplicate document-format-supported; ippeveprinter honours this one).
LABEL_ATTRS = """ATTR keyword media-supported na_index-4x6_4x6in
ATTR keyword media-default na_index-4x6_4x6in
ATTR keyword media-ready na_index-4x6_4x6in
ATTR keyword print-scaling-supported auto,auto-fit,fill,fit,none
ATTR keyword print-scaling-default fit
ATTR text printer-make-and-model "zone-agent test label printer 4x6"
ATTR mimeMediaType document-format-supported {formats}
"""

ENGINE = """#!/bin/sh
# The print engine of the test printer: $1 is the document, IPP_* the job's attributes.
dir='{workdir}'
name=$(printf %s "$IPP_JOB_NAME" | tr -c 'A-Za-z0-9._-' '_')
echo "$(date +%s%N) $IPP_JOB_ID $name" >> "$dir/received.log"
held=""
while [ -e "$dir/hold" ]; do
  if [ -z "$held" ]; then
    held=$(cat "$dir/hold")
    echo "STATE: +$held" >&2
  fi
  sleep 0.05
done
if [ -n "$held" ]; then
  echo "STATE: -$held" >&2
fi
if [ -e "$dir/abort" ]; then
  rm -f "$dir/abort"
  echo "ERROR: the test aborted this job" >&2
  exit 1
fi
cp "$1" "$dir/printed/$IPP_JOB_ID-$name"
size=$(wc -c < "$1")
echo "$IPP_JOB_ID $name $CONTENT_TYPE $IPP_MEDIA $IPP_PRINT_SCALING $size" >> "$dir/printed.log"
exit 0
"""


def missing_ippeveprinter() -> str | None:
    """Why ``IppEvePrinter`` cannot run here (a program not installed), or ``None``."""
    for program, package in (
        ("ippeveprinter", "cups-ipp-utils"),
        ("avahi-daemon", "avahi-daemon"),
        ("dbus-daemon", "dbus-daemon"),
    ):
        if _which(program) is None:
            return f"{program} is not installed (apt-get install {package})"
    return None


def _which(program: str) -> str | None:
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin:/sbin")


@dataclass(frozen=True, slots=True)
class PrintedJob:
    """One document the test printer printed.

    Attributes:
        job_id: the printer's job id.
        name: ``job-name`` (our job id).
        document_format: the document's MIME type as the printer took it.
        media: the job's ``media``.
        scaling: the job's ``print-scaling``.
        size: bytes of the document.
        path: where the printed document was kept.
    """

    job_id: int
    name: str
    document_format: str
    media: str
    scaling: str
    size: int
    path: Path


class IppEvePrinter:
    """ippeveprinter, with its own D-Bus and avahi, on a free loopback port.

    Args:
        workdir: where configs, logs, the spool and the printed documents go.
        formats: ``document-format-supported``.
        port: the port (0: a free one, kept across restarts).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        formats: tuple[str, ...] = ("application/pdf", "image/png"),
        port: int = 0,
    ) -> None:
        self.workdir = workdir
        self.formats = formats
        self.port = port or free_port()
        self._chosen = not port  # a port found free here may be taken before the printer binds
        self._bus: subprocess.Popen[bytes] | None = None
        self._avahi: subprocess.Popen[bytes] | None = None
        self._printer: subprocess.Popen[bytes] | None = None
        self._env: dict[str, str] = {}

    @property
    def url(self) -> str:
        """The printer's IPP URL."""
        return f"ipp://localhost:{self.port}/ipp/print"

    # ----- start and stop -----

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        with open(self.workdir / log, "ab") as out:
            return subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env,
                preexec_fn=die_with_parent,
                start_new_session=True,
            )

    def _wait(
        self, what: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: str
    ) -> None:
        deadline = time.monotonic() + 20
        # Listening counts only while the process lives: another program may hold the port.
        while not (ready() and proc.poll() is None):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.workdir / log).read_text(errors="replace")[-800:]
                self.stop()
                raise RuntimeError(f"{what} did not start (exit {proc.returncode}): {tail}")
            time.sleep(0.05)

    def start(self) -> None:
        """Start what is not running (the printer again after ``kill()``).

        Call it from the thread that will outlive the printer (the main thread, not
        ``asyncio.to_thread``): Linux ends the children when the thread that started them
        ends (``PR_SET_PDEATHSIG``).
        """
        for attempt in range(5):
            try:
                self._start_once()
                self._chosen = False  # the URL is out now: a restart keeps the port
                return
            except RuntimeError:
                # The port found free was taken by another program before ippeveprinter
                # bound it (a shared machine): a fresh one, while no URL was handed out.
                if not self._chosen or attempt == 4:
                    raise
                self.port = free_port()

    def _start_once(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "printed").mkdir(exist_ok=True)
        (self.workdir / "spool").mkdir(exist_ok=True)
        bus_socket = self.workdir / "bus"
        self._env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={bus_socket}",
            "LANG": "C.UTF-8",
        }
        if self._bus is None:
            (self.workdir / "bus.conf").write_text(BUS_CONF.format(socket=bus_socket))
            bus_socket.unlink(missing_ok=True)
            dbus = _which("dbus-daemon") or "dbus-daemon"
            self._bus = self._spawn(
                [dbus, "--nofork", f"--config-file={self.workdir / 'bus.conf'}"], "dbus.log"
            )
            self._wait("dbus-daemon", bus_socket.exists, self._bus, "dbus.log")
        if self._avahi is None:
            (self.workdir / "avahi.conf").write_text(AVAHI_CONF)
            avahi = _which("avahi-daemon") or "avahi-daemon"
            # A private /run/avahi-daemon: avahi refuses to start beside another one (its pid
            # file), and the tests run next to each other and to any avahi of the machine.
            inner = (
                "mkdir -p /run/avahi-daemon && mount -t tmpfs tmpfs /run/avahi-daemon && "
                f'exec {avahi} -f "$0" --no-chroot --no-drop-root --no-rlimits'
            )
            userns = [] if os.geteuid() == 0 else ["--map-root-user"]
            args = [
                "unshare",
                *userns,
                "--mount",
                "sh",
                "-c",
                inner,
                str(self.workdir / "avahi.conf"),
            ]
            self._avahi = self._spawn(args, "avahi.log")
            self._wait("avahi-daemon", self._avahi_ready, self._avahi, "avahi.log")
        if self._printer is None or self._printer.poll() is not None:
            (self.workdir / "label.conf").write_text(
                LABEL_ATTRS.format(formats=",".join(self.formats))
            )
            engine = self.workdir / "engine.sh"
            engine.write_text(ENGINE.format(workdir=self.workdir))
            engine.chmod(0o755)
            program = _which("ippeveprinter") or "ippeveprinter"
            args = [
                program, "-v", "-p", str(self.port), "-n", "localhost",
                "-a", str(self.workdir / "label.conf"), "-d", str(self.workdir / "spool"),
                "-c", str(engine), "-r", "off", f"zone-agent-test-{self.port}",
            ]  # fmt: skip
            self._printer = self._spawn(args, "ippeveprinter.log")
            self._wait("ippeveprinter", self._listening, self._printer, "ippeveprinter.log")

    def _avahi_ready(self) -> bool:
        return b"Server startup complete" in (self.workdir / "avahi.log").read_bytes()

    def _listening(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def kill(self) -> None:
        """Take the printer away at once (SIGKILL): its jobs are lost with it.

        The whole process group goes: a print engine left running would still "print" the
        job it held, and would keep the listening socket it inherited.
        """
        printer, self._printer = self._printer, None
        if printer is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(printer.pid, signal.SIGKILL)
            printer.wait(10)

    def stop(self) -> None:
        """Stop the printer, avahi and D-Bus; safe to call twice."""
        self.release()
        self.kill()
        for attr in ("_avahi", "_bus"):
            proc: subprocess.Popen[bytes] | None = getattr(self, attr)
            setattr(self, attr, None)
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)

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

    # ----- faults -----

    def hold(self, reason: str = "media-empty-error") -> None:
        """From now on a job being printed reports ``reason`` and waits until ``release()``."""
        (self.workdir / "hold").write_text(reason)

    def release(self) -> None:
        """The fault is cleared: a held job prints."""
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / "hold").unlink()

    def abort_next(self) -> None:
        """The next job fails in the print engine (its state becomes ``aborted``)."""
        (self.workdir / "abort").write_text("1")

    # ----- what came out -----

    def received(self) -> list[tuple[int, int, str]]:
        """``(time_ns, job_id, name)`` of every job that reached the print engine."""
        path = self.workdir / "received.log"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            ns, job_id, name = line.split(" ", 2)
            out.append((int(ns), int(job_id), name))
        return out

    def printed(self) -> list[PrintedJob]:
        """Every job printed so far, in order."""
        path = self.workdir / "printed.log"
        if not path.exists():
            return []
        jobs = []
        for line in path.read_text().splitlines():
            job_id, name, fmt, media, scaling, size = line.split(" ")
            jobs.append(
                PrintedJob(
                    int(job_id),
                    name,
                    fmt,
                    media,
                    scaling,
                    int(size),
                    self.workdir / "printed" / f"{job_id}-{name}",
                )
            )
        return jobs
