"""The print queue and status model shared by ZPL and ESC/POS printers.

A printer driver takes jobs with ``submit(job_id, data)`` and prints them in order from one
worker task; results come out of ``events()``. The drivers only say how to connect, write
and read the status; everything about waiting, retrying and never printing twice is here.

When a job counts as printed
----------------------------
1. The printer was polled and reported *ready* (no paper out, head open, pause, ribbon out,
   offline) right before the job was sent, on the same connection.
2. All bytes of the job were written (the socket or file took every byte).
3. A status request sent *after* the job, on the same connection, got a reply without a
   fault. Because the request travels behind the job, the reply proves the printer
   received the whole job and can print it.

Only then is ``PrintResult(ok=True)`` emitted and the id remembered as printed. On a
connection without read-back (a write-only device file) step 3 is impossible: the job
counts as printed once step 2 is done, and the driver's docstring says so.

After step 2 a job is never sent again, whatever happens:

* the status after the job shows a fault, or no reply at all (Zebra printers go silent with
  media out or head open): the printer holds the job in its buffer and prints it when a
  person clears the fault. The job stays *sent*; polling goes on with capped backoff and
  the job is reported printed as soon as a reply shows the printer ready again.
* the connection breaks while writing, or after writing and before the confirming reply:
  the printer may have received all of the job, part of it, or nothing, and cannot be
  asked which. Sending again could print a second label that ends up on the wrong parcel,
  so the job is reported failed with a reason that says it *may* have printed; a person
  checks the printer and resubmits it if needed (a failed id is not remembered, so the same
  id may be submitted again).

A job that could not be sent at all (printer faulted or unreachable) waits and is sent when
the printer recovers; after ``max_wait_s`` in the queue it is reported failed. A job id
that is queued, being printed, or among the last 1000 printed ids is never printed again:
a duplicate of a queued job is ignored (its one result comes later) and a duplicate of a
printed job gets ``PrintResult(ok=True, reason="already printed")`` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self

from pydantic import Field, model_validator

from devices._bridge import EventQueue
from devices.base import NO_STATUS_REPLY, PAPER_NEAR_END, PRINTER_FAULTS, Device, HealthStatus
from devices.config import DeviceConfig
from devices.errors import DeviceError, DeviceProtocolError, DeviceUnavailable

log = logging.getLogger("devices.printers")

PRINTED_MEMORY = 1000
"""How many printed job ids a printer remembers to refuse duplicates."""


class PrintQueueFull(DeviceError):
    """The printer holds ``queue_limit`` unfinished jobs; refuse new work until some finish."""


class PrinterQueueConfig(DeviceConfig):
    """The queue and timing settings every printer kind has, however it is reached.

    Attributes:
        queue_limit: the most jobs accepted and not finished; more raise ``PrintQueueFull``.
        max_wait_s: a job not printed this long after ``submit`` is reported failed.
        status_timeout_s: how long to wait for a status reply; silence is a fault.
        connect_timeout_s: how long to wait for a TCP connection.
        retry_initial_s: first re-poll delay while faulted or unreachable (doubles).
        retry_max_s: cap of the re-poll delay.
        idle_poll_s: status poll interval while idle, so health stays current.
    """

    queue_limit: int = Field(default=50, ge=1)
    max_wait_s: float = Field(default=600.0, gt=0)
    status_timeout_s: float = Field(default=2.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    retry_initial_s: float = Field(default=1.0, gt=0)
    retry_max_s: float = Field(default=30.0, gt=0)
    idle_poll_s: float = Field(default=30.0, gt=0)


class PrinterConfig(PrinterQueueConfig):
    """Settings of a printer reached by raw TCP or a device file (ZPL, ESC/POS).

    Attributes:
        host: printer address for raw TCP printing (exclusive with ``device``).
        port: TCP port of raw printing.
        device: device file (``/dev/usb/lp0``, ``/dev/ttyUSB0``) instead of TCP.
        baudrate: line speed when ``device`` is a serial port.
        readback: whether ``device`` answers status requests (usblp on a bidirectional
            printer, a serial port with RX wired); ``False`` prints blind.
    """

    host: str | None = None
    port: int = Field(default=9100, ge=1, le=65535)
    device: str | None = None
    baudrate: int = 9600
    readback: bool = True

    def _connections(self) -> int:
        return (self.host is not None) + (self.device is not None)

    @model_validator(mode="after")
    def _one_connection(self) -> Self:
        if self._connections() != 1:
            raise ValueError(f"give exactly one way to reach the printer: {self._choices()}")
        return self

    def _choices(self) -> str:
        return "host (TCP) or device (file)"

    def claims(self) -> list[str]:
        """The printer's TCP endpoint or device file."""
        if self.host is not None:
            return [f"tcp:{self.host}:{self.port}"]
        if self.device is not None:
            return [f"serial:{self.device}"]
        return []


@dataclass(frozen=True, slots=True)
class PrinterStatus:
    """What the printer said about itself.

    Attributes:
        ready: it can print now (no fault flag, reachable, answered).
        paper_out: out of media (labels or receipt paper).
        head_open: print head up or cover open.
        paused: paused from the panel or by a command.
        ribbon_out: out of thermal-transfer ribbon.
        offline: unreachable, silent, or reporting itself offline.
        media_jam: labels jammed in the mechanism (IPP ``media-jam``; ZPL does not say).
        paper_near_end: a warning only; the printer still prints.
        detail: one line for people: ``"ready"``, ``"paper out, paused"``, the reason.
    """

    ready: bool
    paper_out: bool = False
    head_open: bool = False
    paused: bool = False
    ribbon_out: bool = False
    offline: bool = False
    paper_near_end: bool = False
    detail: str = ""
    media_jam: bool = False

    @classmethod
    def from_flags(
        cls,
        *,
        paper_out: bool = False,
        head_open: bool = False,
        paused: bool = False,
        ribbon_out: bool = False,
        offline: bool = False,
        paper_near_end: bool = False,
        media_jam: bool = False,
        other: Sequence[str] = (),
    ) -> PrinterStatus:
        """A status from flags, with ``ready`` and ``detail`` worked out.

        ``other`` names faults no flag covers (an IPP printer's ``spool-area-full``): each
        makes the printer not ready and is listed in ``detail``.
        """
        flags = {
            "paper_out": paper_out,
            "head_open": head_open,
            "media_jam": media_jam,
            "paused": paused,
            "ribbon_out": ribbon_out,
            "offline": offline,
        }
        faults = [PRINTER_FAULTS[flag] for flag, on in flags.items() if on]
        faults.extend(other)
        ready = not faults
        ok = PAPER_NEAR_END if paper_near_end else "ready"
        detail = ok if ready else ", ".join(faults)
        return cls(
            ready=ready,
            paper_out=paper_out,
            head_open=head_open,
            paused=paused,
            ribbon_out=ribbon_out,
            offline=offline,
            paper_near_end=paper_near_end,
            detail=detail,
            media_jam=media_jam,
        )

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-friendly dict."""
        return {
            "ready": self.ready,
            "paper_out": self.paper_out,
            "head_open": self.head_open,
            "paused": self.paused,
            "ribbon_out": self.ribbon_out,
            "offline": self.offline,
            "media_jam": self.media_jam,
            "paper_near_end": self.paper_near_end,
            "detail": self.detail,
        }


NO_REPLY = NO_STATUS_REPLY


@dataclass(frozen=True, slots=True)
class PrintResult:
    """The outcome of one job.

    Attributes:
        job_id: the id given to ``submit``.
        ok: ``True`` when the job counts as printed (see the module docstring).
        reason: why it failed, or ``"already printed"`` for a duplicate; else ``None``.
        at: clock time (``time.monotonic()`` unless a clock was injected).
    """

    job_id: str
    ok: bool
    reason: str | None
    at: float


class PrinterLink(Protocol):
    """What a printer driver needs from a byte connection (``devices.backends``)."""

    @property
    def target(self) -> str:
        """Where the link goes, for logs."""
        ...

    @property
    def can_read(self) -> bool:
        """Whether the device's replies can be read."""
        ...

    @property
    def is_open(self) -> bool:
        """Whether the link is connected."""
        ...

    async def open(self) -> None:
        """Connect; ``DeviceUnavailable`` with the reason."""

    async def close(self) -> None:
        """Disconnect; safe to call twice."""

    async def write(self, data: bytes) -> None:
        """Send all of ``data``; ``DeviceUnavailable`` when the link breaks."""

    def discard_input(self) -> None:
        """Forget received bytes."""

    async def read_until(self, terminator: bytes, within: float) -> bytes | None:
        """Bytes up to and including ``terminator``, or ``None`` after ``within`` seconds."""

    def pending_input(self) -> bytes:
        """Bytes received and not consumed."""
        ...


@dataclass(slots=True)
class _Job:
    job_id: str
    data: bytes
    submitted: float
    sent_on: int | None = None  # the connection the job was written on

    @property
    def sent(self) -> bool:
        return self.sent_on is not None


@dataclass(frozen=True, slots=True)
class _Poll:
    status: PrinterStatus
    reachable: bool = True
    answered: bool = True


@dataclass(slots=True)
class _Counters:
    printed: int = 0
    failed: int = 0
    duplicates: int = 0
    bad_replies: int = 0


class Printer(Device):
    """A printer with a job queue; subclasses say how to talk to the hardware.

    Subclasses implement ``_connect``, ``_disconnect``, ``_write`` and ``_read_status``
    (raising ``DeviceUnavailable`` when the connection is gone and
    ``DeviceProtocolError`` for a reply that is not the protocol).

    Args:
        name: the configured device name.
        config: queue and timing settings.
        clock: the time source for job ages and result times (tests inject one).
        printed_ids: job ids the node persisted as printed; they are never printed again.
    """

    def __init__(
        self,
        name: str,
        config: PrinterQueueConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        printed_ids: Iterable[str] = (),
    ) -> None:
        super().__init__(name)
        self.config = config
        self._clock = clock
        self._jobs: deque[_Job] = deque()
        self._printed: OrderedDict[str, None] = OrderedDict()
        self.remember_printed(printed_ids)
        self._results: EventQueue[PrintResult] = EventQueue(name, maxsize=1000)
        self._wakeup = asyncio.Event()
        self._io = asyncio.Lock()
        self._connected = False
        self._connection = 0  # counts connections, so a confirmation is tied to one
        self._worker: asyncio.Task[None] | None = None
        self._last = PrinterStatus(ready=False, offline=True, detail="not polled yet")
        self._answered = False
        self._reachable = False
        self.counters = _Counters()

    # ----- the public API -----

    async def submit(self, job_id: str, data: bytes) -> None:
        """Queue ``data`` for printing as ``job_id``; the result comes out of ``events()``.

        Raises:
            PrintQueueFull: ``queue_limit`` jobs are waiting or printing.
            DeviceUnavailable: the printer is closed.
        """
        if self._closed or self._worker is None:
            raise DeviceUnavailable(f"printer {self.name} is not open")
        if job_id in self._printed:
            self.counters.duplicates += 1
            log.info("printer %s: job %s already printed; not printing again", self.name, job_id)
            self._results.put(PrintResult(job_id, True, "already printed", self._clock()))
            return
        if any(job.job_id == job_id for job in self._jobs):
            self.counters.duplicates += 1
            log.info("printer %s: job %s is already queued; ignoring the copy", self.name, job_id)
            return
        if len(self._jobs) >= self.config.queue_limit:
            raise PrintQueueFull(
                f"printer {self.name}: {len(self._jobs)} jobs waiting "
                f"({self._last.detail}); try again later"
            )
        self._jobs.append(_Job(job_id, bytes(data), self._clock()))
        self._wakeup.set()

    def events(self) -> AsyncIterator[PrintResult]:
        """Results of submitted jobs, in the order they finished."""
        return self._results.__aiter__()

    async def next_result(self) -> PrintResult:
        """Wait for the next result (a convenience over ``events()``)."""
        return await self._results.get()

    async def status(self) -> PrinterStatus:
        """Ask the printer now; health is updated from the answer."""
        return (await self._poll()).status

    @property
    def last_status(self) -> PrinterStatus:
        """The status of the latest poll, without asking the printer."""
        return self._last

    @property
    def last_answered(self) -> bool:
        """Whether the latest poll got a readable reply (not unreachable, silent, nonsense)."""
        return self._answered

    @property
    def last_reachable(self) -> bool:
        """Whether the latest poll reached the printer (connected; it may still be silent)."""
        return self._reachable

    @property
    def queued(self) -> list[str]:
        """Ids of jobs not finished yet, in print order."""
        return [job.job_id for job in self._jobs]

    def remember_printed(self, job_ids: Iterable[str]) -> None:
        """Treat ``job_ids`` as printed (seed with ids persisted before a restart)."""
        for job_id in job_ids:
            self._remember(job_id)

    def printed_ids(self) -> list[str]:
        """The remembered printed ids, oldest first (for the node to persist)."""
        return list(self._printed)

    # ----- hardware hooks -----

    async def _connect(self) -> None:
        raise NotImplementedError

    async def _disconnect(self) -> None:
        raise NotImplementedError

    async def _write(self, data: bytes) -> None:
        raise NotImplementedError

    async def _read_status(self) -> PrinterStatus | None:
        """The printer's status; ``None`` when it did not answer within the timeout."""
        raise NotImplementedError

    def _alive(self) -> bool:
        """Whether the connection is still up (the far end may have closed it)."""
        return True

    # ----- lifecycle -----

    async def _open(self) -> None:
        await self._poll()
        self._worker = asyncio.create_task(self._run(), name=f"printer {self.name}")

    async def _close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        async with self._io:
            await self._drop()

    # ----- internals -----

    def _remember(self, job_id: str) -> None:
        self._printed[job_id] = None
        self._printed.move_to_end(job_id)
        while len(self._printed) > PRINTED_MEMORY:
            self._printed.popitem(last=False)

    async def _drop(self) -> None:
        if self._connected:
            self._connected = False
            with contextlib.suppress(DeviceError, OSError):
                await self._disconnect()

    async def _poll(self) -> _Poll:
        async with self._io:
            try:
                if self._connected and not self._alive():
                    await self._drop()
                if not self._connected:
                    await self._connect()
                    self._connected = True
                    self._connection += 1
                status = await self._read_status()
                poll = (
                    _Poll(PrinterStatus(ready=False, offline=True, detail=NO_REPLY), answered=False)
                    if status is None
                    else _Poll(status)
                )
            except DeviceUnavailable as exc:
                await self._drop()
                detail = f"unreachable: {exc}"
                poll = _Poll(PrinterStatus(ready=False, offline=True, detail=detail), False, False)
            except DeviceProtocolError as exc:
                self.counters.bad_replies += 1
                log.warning("printer %s: unreadable status reply, reconnecting: %s", self.name, exc)
                # Resynchronise: a fresh connection has no half-read reply in it.
                await self._drop()
                detail = f"unreadable status reply: {exc}"
                poll = _Poll(PrinterStatus(ready=False, detail=detail), True, False)
        self._last = poll.status
        self._answered = poll.answered
        self._reachable = poll.reachable
        if poll.status.ready:
            warning = "" if poll.status.detail == "ready" else poll.status.detail
            self._set_health(HealthStatus.OK, warning)
        elif not poll.reachable:
            self._set_health(HealthStatus.UNAVAILABLE, poll.status.detail)
        else:
            self._set_health(HealthStatus.FAULT, poll.status.detail)
        return poll

    async def _send(self, job: _Job) -> bool:
        """Write the job; ``False`` when the connection was found down before any byte."""
        async with self._io:
            if not self._connected or not self._alive():
                await self._drop()
                return False
            try:
                await self._write(job.data)
            except DeviceUnavailable:
                await self._drop()
                raise
            job.sent_on = self._connection
            return True

    def _finish(self, job: _Job, ok: bool, reason: str | None) -> None:
        self._jobs.remove(job)
        if ok:
            self.counters.printed += 1
            self._remember(job.job_id)
            log.info("printer %s: printed job %s", self.name, job.job_id)
        else:
            self.counters.failed += 1
            log.warning("printer %s: job %s failed: %s", self.name, job.job_id, reason)
        self._results.put(PrintResult(job.job_id, ok, reason, self._clock()))

    def _expire(self, job: _Job | None) -> bool:
        """Report ``job`` failed if it waited more than ``max_wait_s``; whether it did."""
        if job is None or self._clock() - job.submitted <= self.config.max_wait_s:
            return False
        waited = f"not printed within {self.config.max_wait_s:g} s"
        if job.sent:
            reason = f"{waited}: sent, but {self._last.detail}; it may print once cleared"
        else:
            reason = f"{waited}: {self._last.detail}"
        self._finish(job, False, reason)
        return True

    async def _sleep(self, delay: float) -> None:
        """Wait ``delay`` seconds, or less when a job is submitted."""
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wakeup.wait()

    async def _run(self) -> None:
        first_backoff = min(self.config.retry_initial_s, self.config.retry_max_s)
        backoff = first_backoff
        while True:
            job = self._jobs[0] if self._jobs else None
            if self._expire(job):
                continue
            poll = await self._poll()
            if job is not None and job.sent:
                if poll.reachable and job.sent_on != self._connection:
                    # A reply on a new connection says nothing about the bytes sent on the
                    # old one: the printer may have rebooted and lost them, or printed them.
                    poll = _Poll(poll.status, reachable=False)
                if poll.status.ready and poll.reachable:
                    self._finish(job, True, None)
                    backoff = first_backoff
                    continue
                if not poll.reachable:
                    self._finish(
                        job,
                        False,
                        "connection lost after sending, before the printer confirmed it; it "
                        "may have printed: check the printer, resubmit if needed",
                    )
                    continue
            elif job is not None and poll.status.ready:
                try:
                    await self._send(job)
                except DeviceUnavailable as exc:
                    self._finish(
                        job,
                        False,
                        f"connection lost while sending ({exc}); it may have printed in "
                        "part or in full: check the printer, resubmit if needed",
                    )
                    continue
                # Sent: ask for the status behind the job at once. Not sent (the link was
                # found down before any byte): reconnect and try again.
                continue
            if poll.status.ready:
                backoff = first_backoff
                await self._sleep(self.config.idle_poll_s)
            else:
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.config.retry_max_s)
