"""IPP (RFC 8010/8011) to a driverless printer or a CUPS queue, through ippx over httpx.

The only module that imports ``ippx`` and ``httpx``. Four operations are used:
Get-Printer-Attributes (state, state reasons, formats), Print-Job (one document per job,
named after our job id), Get-Job-Attributes (follow a job to completed or aborted) and
Get-Jobs (find a job by its name when a Print-Job's answer was lost).

Why ippx: pyipp (MIT, the client Home Assistant uses) needs aiohttp, 12-13 MB on import
alone, over the pack node's 5 MB budget; ippx (MIT, typed, a sans-IO codec, 0.1.x since
2026-06, one maintainer: young, so pinned below 0.2 and wrapped here alone) runs over
httpx: a pack node with it online is 4.4 MB (1.09x) over the same node with a Zebra
(bench/README.md, "IPP labels"). pycups is GPLv2+ and needs a local cupsd; ``lp`` needs
cupsd too and cannot reach a driverless printer without a queue.

Errors end here: a refused connection is ``DeviceUnavailable`` (nothing reached the
printer); a request that may have reached it and got no answer is ``IppAnswerLost`` (the
caller must not send it again blindly); an IPP error status is ``IppRefused`` with the
status name; bytes that are not IPP are ``DeviceProtocolError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

# httpx imports its command-line client (httpx._main: click, rich, pygments) whenever
# those are installed, and rich is one of our dependencies: 5 MB of a pack node's memory
# for a program a node never runs. A None entry makes that import fail, and httpx then
# leaves it out, as it does where they are not installed (bench/README.md, "IPP labels").
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

import httpx  # noqa: E402 - after the entry above
import ippx  # noqa: E402

from devices.errors import DeviceError, DeviceProtocolError, DeviceUnavailable  # noqa: E402

# httpx logs every request at INFO: a line per status poll (every 2 s on a pack station)
# would drown the node's journal. Failures reach the log through the driver's health.
logging.getLogger("httpx").setLevel(logging.WARNING)

IDLE, PROCESSING, STOPPED = 3, 4, 5
"""``printer-state`` values."""

PENDING, HELD, JOB_PROCESSING, JOB_STOPPED, CANCELED, ABORTED, COMPLETED = range(3, 10)
"""``job-state`` values; the last three are final."""

FINAL_JOB_STATES = frozenset({CANCELED, ABORTED, COMPLETED})

USER = "zone-agent"
"""``requesting-user-name`` of every request (CUPS shows it as the job's owner)."""


class IppAnswerLost(DeviceUnavailable):
    """The request may have reached the printer, but no answer came (timeout, reset).

    For a Print-Job this means the job may exist: look it up by name, never resend blindly.
    """


class IppRefused(DeviceError):
    """The printer answered with an IPP error status.

    Attributes:
        status: the status code (``0x040A``).
        name: its keyword (``client-error-document-format-not-supported``).
    """

    def __init__(self, status: int, name: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.name = name

    @property
    def retry_later(self) -> bool:
        """Whether the printer may take it later (busy, not accepting, temporary error)."""
        return self.status in (0x0502, 0x0505, 0x0506, 0x0507)

    @property
    def not_found(self) -> bool:
        """Whether the job (or the queue) is unknown to the printer."""
        return self.status in (0x0406, 0x0407)


@dataclass(frozen=True, slots=True)
class PrinterState:
    """The printer's answer to Get-Printer-Attributes.

    Attributes:
        state: ``printer-state``: 3 idle, 4 processing, 5 stopped.
        reasons: ``printer-state-reasons`` keywords as sent (``media-empty-error``).
        message: ``printer-state-message``.
        accepting: ``printer-is-accepting-jobs`` (``None`` when not sent).
        formats: ``document-format-supported``.
        media: ``media-supported``.
    """

    state: int
    reasons: tuple[str, ...] = ()
    message: str = ""
    accepting: bool | None = None
    formats: tuple[str, ...] = ()
    media: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class JobState:
    """A job as the printer reports it.

    Attributes:
        job_id: the printer's ``job-id``.
        state: ``job-state`` (3 pending ... 9 completed).
        reasons: ``job-state-reasons``.
        message: ``job-state-message``.
        name: ``job-name`` (our job id).
    """

    job_id: int
    state: int
    reasons: tuple[str, ...] = ()
    message: str = ""
    name: str | None = None

    @property
    def final(self) -> bool:
        """Completed, aborted or canceled: the printer will do nothing more with it."""
        return self.state in FINAL_JOB_STATES


class IppBackend(Protocol):
    """What the IPP printer driver needs (``IppConnection`` or ``FakeIppBackend``)."""

    @property
    def target(self) -> str:
        """Where the printer is, for logs."""
        ...

    async def open(self) -> None:
        """Get ready to send requests (no request is made)."""

    async def close(self) -> None:
        """Drop connections; safe to call twice."""

    async def printer_state(self) -> PrinterState:
        """Get-Printer-Attributes."""
        ...

    async def print_job(
        self, data: bytes, document_format: str, job_name: str, attributes: dict[str, str]
    ) -> int:
        """Print-Job; the printer's job id."""
        ...

    async def job_state(self, job_id: int) -> JobState:
        """Get-Job-Attributes; ``IppRefused`` with ``not_found`` for an unknown job."""
        ...

    async def jobs_named(self, name: str) -> list[JobState]:
        """Get-Jobs (all, completed included) whose ``job-name`` is ``name``."""
        ...


def _texts(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    return (str(value),)


def _text(value: Any) -> str:
    texts = _texts(value)
    return texts[0] if texts else ""


def _job(job: ippx.Job) -> JobState:
    attrs = job.attributes
    state = job.state if job.state is not None else attrs.get("job-state", 0)
    return JobState(
        job_id=job.job_id,
        state=int(state),
        reasons=tuple(job.state_reasons) or _texts(attrs.get("job-state-reasons")),
        message=_text(attrs.get("job-state-message")),
        name=job.name if job.name is not None else (_text(attrs.get("job-name")) or None),
    )


_PRINTER_ATTRIBUTES = [
    "printer-state",
    "printer-state-reasons",
    "printer-state-message",
    "printer-is-accepting-jobs",
    "document-format-supported",
    "media-supported",
]
_JOB_ATTRIBUTES = ["job-id", "job-state", "job-state-reasons", "job-state-message", "job-name"]


class IppConnection:
    """A printer (``ipp://host/ipp/print``) or a CUPS queue (``ipp://host:631/printers/Q``).

    Args:
        url: ``ipp://``, ``ipps://``, ``http://`` or ``https://`` URL of the printer.
        timeout: seconds one request may take (a Print-Job included).
        connect_timeout: seconds to wait for a TCP connection.
        verify_tls: check an ``ipps://`` printer's certificate (printers mostly carry
            self-signed ones; off by default, the link is still encrypted).
    """

    def __init__(
        self, url: str, *, timeout: float, connect_timeout: float, verify_tls: bool = False
    ) -> None:
        self.url = url
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self.verify_tls = verify_tls
        self._client: ippx.AsyncIppClient | None = None

    @property
    def target(self) -> str:
        """Where the printer is, for logs."""
        return self.url

    async def open(self) -> None:
        """Build the HTTP client; no request is made yet."""
        await self.close()
        try:
            self._client = ippx.AsyncIppClient(
                self.url,
                tls=ippx.TlsConfig(verify=self.verify_tls),
                timeout=self.timeout,
                requesting_user_name=USER,
            )
        except ValueError as exc:
            raise DeviceUnavailable(f"{self.url}: {exc}") from exc

    async def close(self) -> None:
        """Drop the HTTP client and its connections; safe to call twice."""
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.close()
            except (httpx.HTTPError, OSError):
                pass  # the printer is gone already; nothing left to release

    def _check(self) -> ippx.AsyncIppClient:
        if self._client is None:
            raise DeviceUnavailable(f"{self.url}: not open")
        return self._client

    def _translate(self, exc: Exception) -> DeviceError:
        where = self.url
        if isinstance(exc, httpx.ConnectTimeout):
            return DeviceUnavailable(
                f"{where}: connect timed out (printer off, or a wrong address)"
            )
        if isinstance(exc, httpx.ConnectError):
            why = str(exc) or type(exc).__name__
            return DeviceUnavailable(
                f"{where}: cannot connect ({why}): printer off or unplugged, print server "
                "down, or a wrong address or port"
            )
        if isinstance(exc, httpx.TimeoutException):
            return IppAnswerLost(f"{where}: no answer in time")
        if isinstance(exc, httpx.HTTPError | OSError):
            return IppAnswerLost(f"{where}: connection lost: {exc or type(exc).__name__}")
        if isinstance(exc, ippx.IppResponseError):
            text = exc.status_message or ""
            return IppRefused(
                exc.status_code,
                exc.status_name,
                f"{where}: {exc.status_name}" + (f": {text}" if text else ""),
            )
        if isinstance(exc, ippx.IppHttpError):
            if exc.status_code == 404:
                return IppRefused(
                    0x0406, "not-found", f"{where}: HTTP 404: no printer or queue there"
                )
            return DeviceProtocolError(f"{where}: {exc}")
        if isinstance(exc, ippx.IppDecodeError):
            return DeviceProtocolError(f"{where}: the answer is not IPP: {exc}")
        return DeviceProtocolError(f"{where}: {type(exc).__name__}: {exc}")

    async def printer_state(self) -> PrinterState:
        """Get-Printer-Attributes: state, reasons, message, formats, media."""
        client = self._check()
        try:
            printer = await client.get_printer_attributes(_PRINTER_ATTRIBUTES)
        except (httpx.HTTPError, OSError, ippx.IppError) as exc:
            raise self._translate(exc) from exc
        attrs = printer.attributes
        if printer.state is None:
            raise DeviceProtocolError(f"{self.url}: the answer has no printer-state")
        return PrinterState(
            state=int(printer.state),
            reasons=tuple(printer.state_reasons),
            message=printer.state_message or "",
            accepting=printer.is_accepting_jobs,
            formats=tuple(printer.document_formats),
            media=_texts(attrs.get("media-supported")),
        )

    async def print_job(
        self, data: bytes, document_format: str, job_name: str, attributes: dict[str, str]
    ) -> int:
        """Print-Job: one document; the printer's job id."""
        client = self._check()
        try:
            job = await client.print_job(
                data,
                document_format=document_format,
                job_name=job_name,
                job_attributes=dict(attributes),
            )
        except httpx.ConnectError as exc:
            raise self._translate(exc) from exc  # refused: nothing was sent
        except (httpx.HTTPError, OSError, ippx.IppError) as exc:
            raise self._translate(exc) from exc
        return job.job_id

    async def job_state(self, job_id: int) -> JobState:
        """Get-Job-Attributes of ``job_id``."""
        client = self._check()
        try:
            job = await client.get_job_attributes(job_id, _JOB_ATTRIBUTES)
        except (httpx.HTTPError, OSError, ippx.IppError) as exc:
            raise self._translate(exc) from exc
        return _job(job)

    async def jobs_named(self, name: str) -> list[JobState]:
        """Every job the printer lists (completed ones too) named ``name``."""
        client = self._check()
        try:
            jobs = await client.get_jobs(which_jobs="all", requested_attributes=_JOB_ATTRIBUTES)
        except (httpx.HTTPError, OSError, ippx.IppError) as exc:
            raise self._translate(exc) from exc
        return [state for state in map(_job, jobs) if state.name == name]


@dataclass(slots=True)
class FakeJob:
    """A job the fake printer holds: the document and its attributes."""

    job_id: int
    name: str
    document_format: str
    data: bytes
    attributes: dict[str, str]
    state: int = PENDING
    reasons: tuple[str, ...] = ()
    message: str = ""


@dataclass(slots=True)
class FakeIppBackend:
    """An in-memory IPP printer for unit tests of the driver's decisions.

    Set ``reachable``, ``state``, ``reasons`` and ``accepting`` to play the printer; finish
    jobs with ``finish(job_id, state)``; make the next Print-Job lose its answer (after the
    job was taken) with ``lose_next_answer``. ``complete_at_once`` completes every job as it
    arrives. Every request is counted in ``requests``.
    """

    target: str = "fake ipp"
    reachable: bool = True
    state: int = IDLE
    reasons: tuple[str, ...] = ()
    accepting: bool = True
    formats: tuple[str, ...] = ("application/pdf", "image/png")
    complete_at_once: bool = True
    lose_next_answer: bool = False
    keeps_history: bool = True
    jobs: list[FakeJob] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)

    def _request(self, op: str) -> None:
        self.requests[op] = self.requests.get(op, 0) + 1
        if not self.reachable:
            raise DeviceUnavailable(f"{self.target}: connection refused")

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def printer_state(self) -> PrinterState:
        """The state the test set."""
        self._request("get-printer-attributes")
        return PrinterState(self.state, self.reasons or ("none",), "", self.accepting, self.formats)

    async def print_job(
        self, data: bytes, document_format: str, job_name: str, attributes: dict[str, str]
    ) -> int:
        """Take the job (and maybe lose the answer)."""
        self._request("print-job")
        if document_format not in self.formats:
            name = "client-error-document-format-not-supported"
            raise IppRefused(0x040A, name, f"{self.target}: {name}: {document_format}")
        job = FakeJob(len(self.jobs) + 1, job_name, document_format, data, dict(attributes))
        if self.complete_at_once:
            job.state = COMPLETED
        self.jobs.append(job)
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise IppAnswerLost(f"{self.target}: no answer in time")
        return job.job_id

    def finish(self, job_id: int, state: int, message: str = "") -> None:
        """Move a job to ``state`` (``COMPLETED``, ``ABORTED``, ``CANCELED``...)."""
        job = self.jobs[job_id - 1]
        job.state = state
        job.message = message

    def _listed(self) -> Iterable[FakeJob]:
        return (j for j in self.jobs if self.keeps_history or j.state not in FINAL_JOB_STATES)

    async def job_state(self, job_id: int) -> JobState:
        """The job's state; unknown ids are refused as not found."""
        self._request("get-job-attributes")
        for job in self._listed():
            if job.job_id == job_id:
                return JobState(job.job_id, job.state, job.reasons, job.message, job.name)
        name = "client-error-not-found"
        raise IppRefused(0x0406, name, f"{self.target}: {name}: job {job_id}")

    async def jobs_named(self, name: str) -> list[JobState]:
        """Jobs named ``name`` the printer still lists."""
        self._request("get-jobs")
        return [
            JobState(j.job_id, j.state, j.reasons, j.message, j.name)
            for j in self._listed()
            if j.name == name
        ]


# ----- the far end, for the simulator: IPP over HTTP/1.1 on a loopback socket -----

_TAGS: dict[str, ippx.Tag] = {
    "attributes-charset": ippx.Tag.CHARSET,
    "attributes-natural-language": ippx.Tag.NATURAL_LANGUAGE,
    "printer-state": ippx.Tag.ENUM,
    "printer-state-reasons": ippx.Tag.KEYWORD,
    "printer-state-message": ippx.Tag.TEXT,
    "printer-is-accepting-jobs": ippx.Tag.BOOLEAN,
    "printer-make-and-model": ippx.Tag.TEXT,
    "document-format-supported": ippx.Tag.MIME_TYPE,
    "media-supported": ippx.Tag.KEYWORD,
    "job-id": ippx.Tag.INTEGER,
    "job-uri": ippx.Tag.URI,
    "job-name": ippx.Tag.NAME,
    "job-state": ippx.Tag.ENUM,
    "job-state-reasons": ippx.Tag.KEYWORD,
    "job-state-message": ippx.Tag.TEXT,
}
_GROUPS = {"printer": ippx.Tag.PRINTER_ATTRS, "job": ippx.Tag.JOB_ATTRS}

OPERATIONS = {
    0x0002: "print-job",
    0x0004: "validate-job",
    0x0008: "cancel-job",
    0x0009: "get-job-attributes",
    0x000A: "get-jobs",
    0x000B: "get-printer-attributes",
}
"""The operations ``IppServer`` hands on, by operation id; others are refused."""


@dataclass(frozen=True, slots=True)
class IppRequest:
    """A decoded request: the operation's name, its attributes (every group), the document."""

    operation: str
    attributes: dict[str, Any]
    data: bytes


Group = tuple[str, dict[str, Any]]
"""A response group: ``("printer" | "job", {attribute: value or list of values})``."""

IppHandler = Callable[[IppRequest], tuple[int, list[Group]]]


def _response(request_id: int, status: int, groups: list[Group]) -> bytes:
    operation = [
        ippx.Attribute("attributes-charset", ippx.Tag.CHARSET, ["utf-8"]),
        ippx.Attribute("attributes-natural-language", ippx.Tag.NATURAL_LANGUAGE, ["en"]),
    ]
    out: list[tuple[ippx.Tag, list[ippx.Attribute]]] = [(ippx.Tag.OPERATION_ATTRS, operation)]
    for kind, attrs in groups:
        out.append(
            (
                _GROUPS[kind],
                [
                    ippx.Attribute(name, _TAGS[name], list(v) if isinstance(v, list) else [v])
                    for name, v in attrs.items()
                ],
            )
        )
    return ippx.encode(ippx.IppMessage((2, 0), status, request_id, out))


class IppServer:
    """An IPP printer's HTTP side on a local socket: requests in, ``handler``'s answers out.

    Only what the simulator needs: HTTP/1.1 POST with ``Content-Length`` (httpx sends it),
    keep-alive, 404 for another path than ``path``. ``handler`` answers a decoded request
    with an IPP status and the response groups.
    """

    def __init__(self, handler: IppHandler, path: str = "/ipp/print") -> None:
        self.handler = handler
        self.path = path
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen; the port (a free one for 0)."""
        self._server = await asyncio.start_server(self._serve, host, port)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    @property
    def listening(self) -> bool:
        """Whether it accepts connections."""
        return self._server is not None

    async def stop(self) -> None:
        """Stop listening and drop every connection (a pulled cable); safe to call twice."""
        server, self._server = self._server, None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        if server is not None:
            server.close()
            with contextlib.suppress(OSError):
                await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = [*lines[0].split(" "), "", ""][:3]
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if method != "POST" or path != self.path:
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    await writer.drain()
                    continue
                payload = self._answer(body)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/ipp\r\n"
                    + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):
            pass  # the client went away, or sent what is not HTTP: drop the connection
        finally:
            self._writers.discard(writer)
            writer.close()

    def _answer(self, body: bytes) -> bytes:
        try:
            request = ippx.decode(body)
        except ippx.IppDecodeError:
            return _response(0, 0x0400, [])  # client-error-bad-request
        operation = OPERATIONS.get(request.code)
        if operation is None:
            return _response(request.request_id, 0x0501, [])  # operation-not-supported
        attributes: dict[str, Any] = {}
        for _, attrs in request.groups:
            for attr in attrs:
                attributes[attr.name] = attr.values[0] if len(attr.values) == 1 else attr.values
        status, groups = self.handler(IppRequest(operation, attributes, request.data))
        return _response(request.request_id, status, groups)
