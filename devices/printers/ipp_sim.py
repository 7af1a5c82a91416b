"""A simulated IPP label printer on 127.0.0.1, speaking IPP over HTTP (``--simulate``).

It answers the operations the driver uses (Get-Printer-Attributes, Print-Job,
Get-Job-Attributes, Get-Jobs, Validate-Job, Cancel-Job) as a driverless 4x6 printer would:
it takes PDF and PNG with the configured ``media``, refuses other formats
(``client-error-document-format-not-supported``) and other media
(``client-error-attributes-or-values-not-supported``), and "prints" a job ``print_s`` after
it arrived, unless it cannot print: then the job stays ``processing`` and prints when the
state returns to ``ready``. The tests of the driver run against CUPS's own ippeveprinter
(``testing/ippserver.py``); this one is for ``--simulate``, where a node must run without
CUPS, avahi or D-Bus.

Control actions (``await sim.control(action, args)``):

* ``set`` ``{"state": "ready"|"media_empty"|"media_jam"|"door_open"|"paused"|"offline"}``,
  with ``"after_jobs": n`` to switch only when the n-th next job arrives (the roll runs
  out during that job: it is held);
* ``clear``: forget the jobs;
* ``unplug`` / ``replug``: stop / start listening on the same port (held jobs are kept).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from devices.backends.ipp import (
    ABORTED,
    CANCELED,
    COMPLETED,
    IDLE,
    JOB_PROCESSING,
    PROCESSING,
    STOPPED,
    Group,
    IppRequest,
    IppServer,
)
from devices.config import DeviceConfig
from devices.context import DeviceContext
from devices.sim import Simulator

FORMATS = ("application/pdf", "image/png")

# state -> (printer-state-reasons, whether the printer stops)
_REASONS = {
    "ready": ((), False),
    "media_empty": (("media-empty-error",), True),
    "media_jam": (("media-jam-error",), True),
    "door_open": (("door-open-error",), True),
    "paused": (("paused",), True),
    "offline": (("offline-report",), True),
}


@dataclass(slots=True)
class SimJob:
    """A job the simulated printer took."""

    job_id: int
    name: str
    document_format: str
    media: str
    scaling: str
    data: bytes
    state: int = JOB_PROCESSING
    arrived: float = 0.0

    def record(self) -> dict[str, Any]:
        """The job for ``state()``."""
        return {
            "job_id": self.job_id,
            "name": self.name,
            "format": self.document_format,
            "media": self.media,
            "scaling": self.scaling,
            "size": len(self.data),
        }


class IppSimulator(Simulator):
    """A driverless 4x6 label printer on a local port (see the module docstring).

    Args:
        config: the device's config (its ``media`` is the one loaded).
        context: the node's device context.
        host: the address to listen on.
        port: the port (0: a free one, kept for replug).
        print_s: how long printing a label takes.
    """

    states = tuple(_REASONS)

    def __init__(
        self,
        config: DeviceConfig,
        context: DeviceContext | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        print_s: float = 0.05,
    ) -> None:
        super().__init__(config, context or DeviceContext(simulate=True))
        self.host = host
        self.port = port
        self.print_s = print_s
        self.media = str(getattr(config, "media", "na_index-4x6_4x6in"))
        self.mode = "ready"
        self.jobs: list[SimJob] = []
        self._armed: tuple[str, int] | None = None
        self._server = IppServer(self._handle)

    @property
    def url(self) -> str:
        """The printer's IPP URL."""
        return f"ipp://{self.host}:{self.port}/ipp/print"

    async def start(self) -> None:
        """Listen; the first start with port 0 picks a free port, kept for replug."""
        if not self._server.listening:
            self.port = await self._server.start(self.host, self.port)

    async def stop(self) -> None:
        """Stop listening; safe to call twice."""
        await self._server.stop()

    def patched_config(self) -> DeviceConfig:
        """The device's config pointed at this simulator."""
        return self.config.model_copy(update={"url": self.url})

    # ----- the printer -----

    def _advance(self) -> None:
        """Print what is due: jobs older than ``print_s`` while the printer can print."""
        if self.mode != "ready":
            return
        now = time.monotonic()
        for job in self.jobs:
            if job.state == JOB_PROCESSING and now - job.arrived >= self.print_s:
                job.state = COMPLETED

    def _printer(self) -> Group:
        self._advance()
        reasons, stopped = _REASONS[self.mode]
        busy = any(job.state == JOB_PROCESSING for job in self.jobs)
        state = STOPPED if stopped else (PROCESSING if busy else IDLE)
        return (
            "printer",
            {
                "printer-state": state,
                "printer-state-reasons": list(reasons) or ["none"],
                "printer-state-message": self.mode.replace("_", " "),
                "printer-is-accepting-jobs": True,
                "document-format-supported": list(FORMATS),
                "media-supported": [self.media],
            },
        )

    def _job(self, job: SimJob) -> Group:
        self._advance()
        reasons = {
            COMPLETED: "job-completed-successfully",
            CANCELED: "job-canceled-by-user",
            ABORTED: "aborted-by-system",
        }.get(job.state, "job-printing")
        return (
            "job",
            {
                "job-id": job.job_id,
                "job-uri": f"{self.url}/{job.job_id}",
                "job-name": job.name,
                "job-state": job.state,
                "job-state-reasons": [reasons],
            },
        )

    def _handle(self, request: IppRequest) -> tuple[int, list[Group]]:
        attrs = request.attributes
        match request.operation:
            case "get-printer-attributes":
                return 0, [self._printer()]
            case "print-job" | "validate-job":
                fmt = str(attrs.get("document-format", "application/octet-stream"))
                if fmt not in FORMATS:
                    return 0x040A, []
                if attrs.get("media", self.media) != self.media:
                    return 0x040B, []
                if request.operation == "validate-job":
                    return 0, []
                job = SimJob(
                    len(self.jobs) + 1,
                    str(attrs.get("job-name", "")),
                    fmt,
                    str(attrs.get("media", self.media)),
                    str(attrs.get("print-scaling", "auto")),
                    request.data,
                    arrived=time.monotonic(),
                )
                self.jobs.append(job)
                self._arrived()
                return 0, [self._job(job)]
            case "get-job-attributes" | "cancel-job":
                job_id = attrs.get("job-id")
                found = next((j for j in self.jobs if j.job_id == job_id), None)
                if found is None:
                    return 0x0406, []
                if request.operation == "cancel-job" and found.state == JOB_PROCESSING:
                    found.state = CANCELED
                return 0, [self._job(found)]
            case _:  # get-jobs
                return 0, [self._job(job) for job in reversed(self.jobs)]

    def _arrived(self) -> None:
        if self._armed is None:
            return
        mode, left = self._armed
        self._armed = (mode, left - 1) if left > 1 else None
        if left == 1:
            self.mode = mode

    # ----- control -----

    async def control(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        """Act on the simulated printer (see the module docstring)."""
        if action == "set":
            mode = args.get("state")
            if mode not in self.states:
                raise ValueError(f"state must be one of {', '.join(self.states)}, not {mode!r}")
            after = args.get("after_jobs")
            if after is None:
                self._advance()
                self.mode = str(mode)
                if self.mode == "ready":
                    for job in self.jobs:  # held jobs print now, print_s from here
                        if job.state == JOB_PROCESSING:
                            job.arrived = time.monotonic()
            elif not isinstance(after, int) or isinstance(after, bool) or after < 1:
                raise ValueError("after_jobs must be a whole number of 1 or more")
            else:
                self._armed = (str(mode), after)
        elif action == "clear":
            self.jobs.clear()
        elif action == "unplug":
            await self.stop()
        elif action == "replug":
            await self.start()
        else:
            raise ValueError(f"unknown action {action!r}: set, clear, unplug or replug")
        return self.state()

    def state(self) -> dict[str, Any]:
        """``{"state", "jobs": [printed job records], "pending", "listening"}``."""
        self._advance()
        return {
            "state": self.mode,
            "jobs": [job.record() for job in self.jobs if job.state == COMPLETED],
            "pending": sum(1 for job in self.jobs if job.state == JOB_PROCESSING),
            "listening": self._server.listening,
        }
