"""Label printers the operating system can drive, by IPP: PDF and PNG labels, 4x6 media, fit.

A driverless printer (IPP Everywhere, AirPrint) is reached directly
(``ipp://10.0.0.7/ipp/print``); any printer with a CUPS driver (Dymo LabelWriter 4XL,
Brother QL, Rollo, a Zebra in driver mode) through its CUPS queue
(``ipp://localhost:631/printers/dymo4xl``), which turns the PDF or PNG into the printer's
own language. ZPL labels stay on ``zpl_printer``.

A job is one Print-Job request: the document (PDF or PNG, told apart by its first bytes),
``job-name`` = our job id, ``media`` (default ``na_index-4x6_4x6in``) and
``print-scaling`` (default ``fit``: the carrier's page is scaled to the label). The printer
answers with its job id, and the job is then followed with Get-Job-Attributes:

* ``completed``: ``PrintResult(ok=True)``, the id is remembered as printed;
* ``aborted`` or ``canceled``: failed, with the printer's reason; it may have printed in
  part, so it is not sent again (a person decides, as for ZPL);
* pending or processing while the printer reports a fault (media empty, jam, door open,
  paused, offline): the printer holds the job and prints it once cleared; health says why.

Never twice: a job is sent only while no Print-Job for it may have reached the printer.
When a Print-Job's answer is lost (the connection broke after the document went out), the
driver asks the printer for jobs named after the job id (Get-Jobs, completed ones too) and
follows the one it finds; when there is none it reports the job failed ("may have
printed") rather than send it again, since a printer without job history would print a
second label. A job the printer forgets while followed (it restarted) is reported the same
way. After ``max_wait_s`` an unfinished job is reported failed.

Status: ``printer-state`` and ``printer-state-reasons`` become the same ``PrinterStatus`` a
ZPL printer's ``~HS`` gives (see ``status_from_ipp``), so health (ok, fault, unavailable)
means the same on both kinds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from devices.backends.ipp import (
    ABORTED,
    CANCELED,
    COMPLETED,
    STOPPED,
    IppAnswerLost,
    IppBackend,
    IppConnection,
    IppRefused,
    JobState,
    PrinterState,
)
from devices.context import DeviceContext
from devices.errors import DeviceError, DeviceUnavailable
from devices.printers.base import (
    Printer,
    PrinterQueueConfig,
    PrinterStatus,
    _Job,
    _Poll,
    log,
)
from devices.printers.ipp_sim import IppSimulator

MEDIA_4X6 = "na_index-4x6_4x6in"
"""The PWG media keyword of a 4 x 6 inch label."""

FORMATS = {"pdf": "application/pdf", "png": "image/png"}
"""Document formats by the short names the node file and the wire use."""

_log = logging.getLogger("devices.printers.ipp")


class UnsupportedDocument(DeviceError):
    """The document is not a PDF or PNG."""


class IppPrinterConfig(PrinterQueueConfig):
    """An IPP printer or CUPS queue (``kind = "ipp_printer"``).

    Attributes:
        url: ``ipp://host[:port]/path`` of a driverless printer (path usually
            ``/ipp/print``) or of a CUPS queue (``ipp://localhost:631/printers/NAME``);
            ``ipps://`` for TLS.
        media: the PWG media keyword sent with every job (``na_index-4x6_4x6in``; a CUPS
            queue also takes its PPD's size names, e.g. ``w296h452`` for a Dymo 4XL).
        print_scaling: IPP ``print-scaling``: ``fit`` scales a carrier's page to the label.
        formats: which documents the station may send here (``pdf``, ``png``); the pack
            station routes carrier labels by it and refuses those no printer takes.
        own_label: the format the station's own 4x6 label is rendered in.
        dpi: the printer's resolution, for rendering the station's own label.
        job_poll_s: how often, at most, a job is followed while the printer prints it (the
            first look is 50 ms after sending, then twice as long each time).
        verify_tls: check an ``ipps://`` printer's certificate.
        status_timeout_s: how long one IPP request may take (a Print-Job included).
    """

    kind: Literal["ipp_printer"] = "ipp_printer"
    url: str
    media: str = Field(default=MEDIA_4X6, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    print_scaling: Literal["auto", "auto-fit", "fill", "fit", "none"] = "fit"
    formats: tuple[Literal["pdf", "png"], ...] = Field(default=("pdf", "png"), min_length=1)
    own_label: Literal["pdf", "png"] = "pdf"
    dpi: Literal[203, 300] = 203
    job_poll_s: float = Field(default=0.25, gt=0)
    verify_tls: bool = False
    status_timeout_s: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _check_url(self) -> Self:
        parts = urlsplit(self.url)
        if parts.scheme not in ("ipp", "ipps", "http", "https"):
            raise ValueError(
                f"url must start with ipp://, ipps://, http:// or https://: {self.url}"
            )
        if not parts.hostname:
            raise ValueError(f"url has no host: {self.url}")
        if self.own_label not in self.formats:
            raise ValueError(f"own_label {self.own_label!r} is not one of formats {self.formats}")
        return self

    def claims(self) -> list[str]:
        """The printer's URL: two devices may not print to the same queue."""
        return [f"ipp:{self.url}"]


# printer-state-reasons keyword (severity suffix removed) -> PrinterStatus flag
_FLAG_OF_REASON = {
    "media-empty": "paper_out",
    "media-needed": "paper_out",
    "media-jam": "media_jam",
    "door-open": "head_open",
    "cover-open": "head_open",
    "interlock-open": "head_open",
    "paused": "paused",
    "moving-to-paused": "paused",
    "offline": "offline",
    "shutdown": "offline",
    "marker-supply-empty": "ribbon_out",
    "toner-empty": "ribbon_out",
    "media-low": "paper_near_end",
}
_SUFFIXES = ("-error", "-warning", "-report")


def _split(reason: str) -> tuple[str, str]:
    for suffix in _SUFFIXES:
        if reason.endswith(suffix):
            return reason[: -len(suffix)], suffix[1:]
    return reason, ""


def status_from_ipp(printer: PrinterState) -> PrinterStatus:
    """The ``PrinterStatus`` of an IPP printer's state and state reasons.

    Every severity of a known condition counts (``media-empty-report`` as much as
    ``media-empty-error``): RFC 8011 makes ``-report`` informational, but a label printer
    out of labels cannot print one whatever it calls it, ippeveprinter reports an empty
    roll as ``-report`` or ``-warning``, and CUPS reports an unplugged USB printer as
    ``offline-report``. ``media-low`` is a warning only. An unknown keyword counts as a
    fault only with the ``-error`` suffix (CUPS adds informational ones such as
    ``cups-waiting-for-job-completed``). A ``stopped`` printer, and a queue that does not
    accept jobs, are not ready even without a reason.
    """
    flags: dict[str, bool] = {}
    other: list[str] = []
    for reason in printer.reasons:
        keyword, severity = _split(reason)
        if keyword == "none":
            continue
        flag = _FLAG_OF_REASON.get(keyword)
        if flag is not None:
            flags[flag] = True
        elif severity == "error":
            other.append(keyword.replace("-", " "))
    if printer.accepting is False:
        other.append("not accepting jobs")
    status = PrinterStatus.from_flags(**flags, other=other)
    if printer.state == STOPPED and status.ready:
        why = printer.message or "no reason given"
        return PrinterStatus.from_flags(**flags, other=[f"stopped ({why})"])
    return status


def document_format(data: bytes) -> str | None:
    """The MIME type of ``data`` from its first bytes: PDF or PNG, else ``None``."""
    if data.startswith(b"%PDF-"):
        return FORMATS["pdf"]
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return FORMATS["png"]
    return None


@dataclass(slots=True)
class _Sent:
    """What is known of a job once a Print-Job for it went out."""

    ipp_id: int | None  # None: the answer was lost; look the job up by name
    state: JobState | None = None


class IppPrinter(Printer):
    """A label printer reached by IPP (driverless, or a CUPS queue): PDF and PNG labels.

    Set-up: a driverless printer needs IPP enabled and a fixed address (its URL is
    ``ipp://ADDRESS/ipp/print``; ``ippfind`` lists printers on the LAN). A USB printer
    with a CUPS driver is set up once as a queue on the Pi, then reached through
    ``ipp://localhost:631/printers/QUEUE`` (docs/wiring.md, "A label printer via
    CUPS/IPP"). The queue's default page size does not matter: every job says ``media``
    and ``print-scaling``.

    Example::

        config = IppPrinterConfig(name="label", url="ipp://localhost:631/printers/dymo4xl")
        async with IppPrinter.from_config(config, DeviceContext()) as printer:
            await printer.submit("o-4711-label", carrier_pdf)
            result = await printer.next_result()

    Args:
        config: the validated config.
        backend: ``IppConnection`` or ``FakeIppBackend``.
        clock: time source for job ages (tests inject one).
        printed_ids: ids persisted as printed, never printed again.
    """

    def __init__(
        self,
        config: IppPrinterConfig,
        backend: IppBackend,
        *,
        clock: Callable[[], float] = time.monotonic,
        printed_ids: Iterable[str] = (),
    ) -> None:
        super().__init__(config.name, config, clock=clock, printed_ids=printed_ids)
        self.ipp_config = config
        self.backend = backend
        self.formats: tuple[str, ...] = ()  # what the printer said it takes
        self._sent: dict[str, _Sent] = {}

    @classmethod
    def from_config(cls, config: IppPrinterConfig, context: DeviceContext) -> IppPrinter:
        """Build the printer with an ``IppConnection`` to ``config.url``."""
        backend = IppConnection(
            config.url,
            timeout=config.status_timeout_s,
            connect_timeout=config.connect_timeout_s,
            verify_tls=config.verify_tls,
        )
        return cls(config, backend)

    def describe(self) -> str:
        """Kind and URL, for the start-up log."""
        return f"IPP printer {self.name} at {self.backend.target}"

    async def submit(self, job_id: str, data: bytes) -> None:
        """Queue a PDF or PNG document as ``job_id`` (see ``Printer.submit``).

        The printer itself is the judge of whether it takes the format: a Print-Job it
        refuses (``client-error-document-format-not-supported``) fails the job with that
        reason. Its ``document-format-supported`` only makes a warning at start, since some
        printers list fewer formats than they take (ippeveprinter sends the attribute twice).

        Raises:
            UnsupportedDocument: not a PDF or PNG.
            PrintQueueFull: ``queue_limit`` jobs are waiting or printing.
            DeviceUnavailable: the printer is closed.
        """
        mime = document_format(data)
        if mime is None:
            raise UnsupportedDocument(
                f"printer {self.name}: job {job_id} is not a PDF or PNG document "
                f"(it starts {data[:8]!r}); an IPP printer takes PDF or PNG, ZPL goes to a "
                "zpl_printer"
            )
        await super().submit(job_id, data)

    # ----- hardware hooks -----

    async def _connect(self) -> None:
        await self.backend.open()

    async def _disconnect(self) -> None:
        await self.backend.close()

    async def _write(self, data: bytes) -> None:
        raise NotImplementedError("IPP jobs go by Print-Job (see _print)")

    async def _read_status(self) -> PrinterStatus | None:
        try:
            state = await self.backend.printer_state()
        except IppRefused as exc:
            if exc.not_found:
                # A wrong path, or the CUPS queue was deleted: reachable, but no printer.
                return PrinterStatus.from_flags(other=[f"no such printer or queue ({exc})"])
            raise DeviceUnavailable(str(exc)) from exc
        if state.formats and state.formats != self.formats:
            self.formats = state.formats
            wanted = {FORMATS[f] for f in self.ipp_config.formats}
            missing = sorted(wanted - set(state.formats))
            if missing:
                _log.warning(
                    "printer %s does not list %s in document-format-supported; jobs in "
                    "that format may be refused",
                    self.name,
                    ", ".join(missing),
                )
        return status_from_ipp(state)

    # ----- the job loop -----

    def _attributes(self) -> dict[str, str]:
        return {"media": self.ipp_config.media, "print-scaling": self.ipp_config.print_scaling}

    async def _print(self, job: _Job) -> str | None:
        """Send ``job`` by Print-Job; a reason when it failed for good, else ``None``."""
        mime = document_format(job.data) or FORMATS["pdf"]
        async with self._io:
            try:
                ipp_id = await self.backend.print_job(
                    job.data, mime, job.job_id, self._attributes()
                )
            except IppAnswerLost as exc:
                log.warning("printer %s: job %s: %s; looking it up", self.name, job.job_id, exc)
                job.sent_on = self._connection
                self._sent[job.job_id] = _Sent(None)
                return None
            except IppRefused as exc:
                if exc.retry_later:
                    return None  # not taken: sent again once the printer is ready
                return f"refused by the printer: {exc}"
            except DeviceUnavailable:
                return None  # nothing reached the printer: it waits
        job.sent_on = self._connection
        self._sent[job.job_id] = _Sent(ipp_id)
        log.info("printer %s: job %s is IPP job %d", self.name, job.job_id, ipp_id)
        return None

    async def _follow(self, job: _Job) -> tuple[bool, str | None] | None:
        """Ask how a sent job is doing: ``(ok, reason)`` once final, else ``None``."""
        sent = self._sent[job.job_id]
        async with self._io:
            try:
                if sent.ipp_id is None:
                    found = await self.backend.jobs_named(job.job_id)
                    if not found:
                        return (
                            False,
                            "the printer's answer to the job was lost and it lists no job "
                            "of that name; it may have printed: check the printer, resubmit "
                            "if needed",
                        )
                    state = max(found, key=lambda s: s.job_id)
                    sent.ipp_id = state.job_id
                    log.info(
                        "printer %s: found job %s as IPP job %d",
                        self.name,
                        job.job_id,
                        state.job_id,
                    )
                else:
                    state = await self.backend.job_state(sent.ipp_id)
            except IppRefused as exc:
                if exc.not_found:
                    return (
                        False,
                        f"the printer no longer knows IPP job {sent.ipp_id} (it restarted?); "
                        "it may have printed: check the printer, resubmit if needed",
                    )
                raise DeviceUnavailable(str(exc)) from exc
        if state.name is not None and state.name != job.job_id:
            return (
                False,
                f"IPP job {state.job_id} is now {state.name!r}: the printer restarted and "
                "lost the job; it may have printed: check the printer, resubmit if needed",
            )
        sent.state = state
        why = state.message or ", ".join(r for r in state.reasons if r != "none")
        if state.state == COMPLETED:
            return True, None
        if state.state == ABORTED:
            return False, f"the printer aborted IPP job {state.job_id} ({why}); it may have " \
                "printed in part: check the printer, resubmit if needed"  # fmt: skip
        if state.state == CANCELED:
            return False, f"IPP job {state.job_id} was canceled at the printer ({why})"
        return None

    def _finish(self, job: _Job, ok: bool, reason: str | None) -> None:
        self._sent.pop(job.job_id, None)
        super()._finish(job, ok, reason)

    async def _run(self) -> None:
        first_backoff = min(self.config.retry_initial_s, self.config.retry_max_s)
        backoff = first_backoff
        # A label prints in a fraction of a second: look again soon after sending, then
        # less often up to job_poll_s, so "printed" is heard early without a tight loop.
        first_follow = min(0.05, self.ipp_config.job_poll_s)
        follow = first_follow
        while True:
            job = self._jobs[0] if self._jobs else None
            if self._expire(job):
                continue
            poll: _Poll = await self._poll()
            if job is not None and job.sent and poll.reachable:
                try:
                    outcome = await self._follow(job)
                except DeviceUnavailable:
                    outcome = None  # the printer went away: keep the job, try again
                if outcome is not None:
                    self._finish(job, *outcome)
                    backoff = first_backoff
                    continue
                if poll.status.ready:
                    await self._sleep(follow)
                    follow = min(follow * 2, self.ipp_config.job_poll_s)
                else:
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, self.config.retry_max_s)
                continue
            if job is not None and not job.sent and poll.status.ready:
                failed = await self._print(job)
                if failed is not None:
                    self._finish(job, False, failed)
                    continue
                if job.sent:
                    backoff, follow = first_backoff, first_follow
                    continue  # follow it at once
            if poll.status.ready:
                backoff = first_backoff
                await self._sleep(self.config.idle_poll_s if job is None else backoff)
            else:
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.config.retry_max_s)


CONFIG = IppPrinterConfig
DRIVER = IppPrinter
SIMULATOR = IppSimulator
