"""IPP label printers: the status mapping, the job rules on the fake backend, and the driver
against a real IPP server (CUPS's ippeveprinter, started by the test on a loopback port)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from printer_helpers import FAST, next_result, run, wait_until
from pydantic import ValidationError

from agent.cli import main
from agent.errors import EXIT_DEVICE, EXIT_OK, EXIT_USAGE
from devices.backends.ipp import (
    ABORTED,
    CANCELED,
    IDLE,
    PROCESSING,
    STOPPED,
    FakeIppBackend,
    PrinterState,
)
from devices.base import HealthStatus
from devices.context import DeviceContext
from devices.printers.ipp import (
    MEDIA_4X6,
    IppPrinter,
    IppPrinterConfig,
    UnsupportedDocument,
    document_format,
    status_from_ipp,
)
from devices.printers.ipp_sim import IppSimulator
from testing.ippserver import IppEvePrinter, missing_ippeveprinter


def _pdf(text: str = "x") -> bytes:
    image = Image.new("L", (812, 1218), 255)
    image.putpixel((len(text) % 800, 10), 0)  # documents differ, as labels do
    out = io.BytesIO()
    image.save(out, "PDF", resolution=203)
    return out.getvalue()


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("1", (812, 1218), 1).save(out, "PNG")
    return out.getvalue()


PDF = _pdf()
PNG = _png()
ZPL = b"^XA^FO20,20^A0N,30,30^FDOrder 4711^FS^XZ"


def _config(url: str = "ipp://127.0.0.1:1/ipp/print", **overrides: Any) -> IppPrinterConfig:
    fields: dict[str, Any] = {"name": "label", "url": url, **FAST, "job_poll_s": 0.02}
    fields["status_timeout_s"] = 5.0
    return IppPrinterConfig(**(fields | overrides))


# ----- the status mapping -----


@pytest.mark.parametrize(
    ("reasons", "state", "ready", "flag", "detail"),
    [
        (("none",), IDLE, True, None, "ready"),
        (("media-empty-error",), IDLE, False, "paper_out", "paper out"),
        (("media-empty-report",), IDLE, False, "paper_out", "paper out"),
        (("media-empty-warning",), PROCESSING, False, "paper_out", "paper out"),
        (("media-needed",), IDLE, False, "paper_out", "paper out"),
        (("media-jam-error",), STOPPED, False, "media_jam", "media jam"),
        (("door-open-error",), STOPPED, False, "head_open", "head open"),
        (("cover-open",), STOPPED, False, "head_open", "head open"),
        (("offline-report",), IDLE, False, "offline", "offline"),
        (("paused",), STOPPED, False, "paused", "paused"),
        (("marker-supply-empty-error",), STOPPED, False, "ribbon_out", "ribbon out"),
        (("media-low-warning",), IDLE, True, "paper_near_end", "ready, paper near end"),
        (("cups-waiting-for-job-completed",), PROCESSING, True, None, "ready"),
        (("spool-area-full-error",), IDLE, False, None, "spool area full"),
        (("media-empty-error", "door-open"), STOPPED, False, "paper_out", "paper out, head open"),
    ],
)  # fmt: skip
def test_status_from_ipp(
    reasons: tuple[str, ...], state: int, ready: bool, flag: str | None, detail: str
) -> None:
    status = status_from_ipp(PrinterState(state, reasons, "", True))
    assert (status.ready, status.detail) == (ready, detail)
    if flag is not None:
        assert getattr(status, flag) is True


def test_stopped_printer_without_reason_is_not_ready() -> None:
    status = status_from_ipp(PrinterState(STOPPED, ("none",), "Out of labels", True))
    assert (status.ready, status.detail) == (False, "stopped (Out of labels)")


def test_queue_not_accepting_jobs_is_not_ready() -> None:
    status = status_from_ipp(PrinterState(IDLE, ("none",), "", False))
    assert (status.ready, status.detail) == (False, "not accepting jobs")


def test_document_format_by_first_bytes() -> None:
    assert document_format(PDF) == "application/pdf"
    assert document_format(PNG) == "image/png"
    assert document_format(ZPL) is None
    assert document_format(b"") is None


def test_config_checks_url_and_own_label() -> None:
    with pytest.raises(ValidationError, match="ipp://"):
        IppPrinterConfig(name="label", url="lpd://10.0.0.7/queue")
    with pytest.raises(ValidationError, match="no host"):
        IppPrinterConfig(name="label", url="ipp:///ipp/print")
    with pytest.raises(ValidationError, match="own_label 'png'"):
        IppPrinterConfig(name="label", url="ipp://p/ipp/print", formats=("pdf",), own_label="png")
    config = IppPrinterConfig(name="label", url="ipp://localhost:631/printers/dymo4xl")
    assert config.claims() == ["ipp:ipp://localhost:631/printers/dymo4xl"]
    assert (config.media, config.print_scaling) == ("na_index-4x6_4x6in", "fit")


# ----- the job rules, on the fake backend -----


def _fake_printer(fake: FakeIppBackend, **overrides: Any) -> IppPrinter:
    return IppPrinter(_config(**overrides), fake)


def test_a_lost_answer_is_looked_up_by_name_not_sent_again() -> None:
    fake = FakeIppBackend(lose_next_answer=True)

    async def scenario() -> None:
        async with _fake_printer(fake) as printer:
            await printer.submit("o1-label", PDF)
            result = await next_result(printer)
            assert (result.job_id, result.ok) == ("o1-label", True)
        assert fake.requests["print-job"] == 1
        assert fake.requests["get-jobs"] == 1

    run(scenario())


def test_a_lost_answer_with_no_such_job_fails_rather_than_print_twice() -> None:
    # The printer keeps no history: the job may have printed and be forgotten already.
    fake = FakeIppBackend(lose_next_answer=True, keeps_history=False)

    async def scenario() -> None:
        async with _fake_printer(fake) as printer:
            await printer.submit("o1-label", PDF)
            result = await next_result(printer)
            assert result.ok is False
            assert result.reason is not None and "may have printed" in result.reason
        assert fake.requests["print-job"] == 1

    run(scenario())


@pytest.mark.parametrize(
    ("state", "words"), [(ABORTED, "aborted IPP job 1 (jam)"), (CANCELED, "canceled")]
)
def test_aborted_and_canceled_jobs_fail_with_the_printers_reason(state: int, words: str) -> None:
    fake = FakeIppBackend(complete_at_once=False)

    async def scenario() -> None:
        async with _fake_printer(fake) as printer:
            await printer.submit("o1-label", PDF)
            await wait_until(lambda: len(fake.jobs) == 1)
            fake.finish(1, state, "jam")
            result = await next_result(printer)
            assert result.ok is False
            assert result.reason is not None and words in result.reason
            assert "o1-label" not in printer.printed_ids()

    run(scenario())


def test_a_refused_format_fails_at_once() -> None:
    fake = FakeIppBackend(formats=("application/pdf",))

    async def scenario() -> None:
        async with _fake_printer(fake) as printer:
            await printer.submit("o1-label", PNG)
            result = await next_result(printer)
            assert result.ok is False
            assert result.reason is not None
            assert "client-error-document-format-not-supported" in result.reason

    run(scenario())


def test_zpl_is_refused_at_submit() -> None:
    async def scenario() -> None:
        async with _fake_printer(FakeIppBackend()) as printer:
            with pytest.raises(UnsupportedDocument, match="not a PDF or PNG"):
                await printer.submit("o1-label", ZPL)

    run(scenario())


def test_a_job_the_printer_forgets_fails_and_is_not_sent_again() -> None:
    fake = FakeIppBackend(complete_at_once=False)

    async def scenario() -> None:
        async with _fake_printer(fake) as printer:
            await printer.submit("o1-label", PDF)
            await wait_until(lambda: len(fake.jobs) == 1)
            fake.jobs.clear()  # the printer restarted
            result = await next_result(printer)
            assert result.ok is False
            assert result.reason is not None and "no longer knows IPP job 1" in result.reason
        assert fake.requests["print-job"] == 1

    run(scenario())


def test_duplicates_print_once() -> None:
    fake = FakeIppBackend()

    async def scenario() -> None:
        async with _fake_printer(fake) as printer:
            await printer.submit("o1-label", PDF)
            await printer.submit("o1-label", PDF)
            assert (await next_result(printer)).ok
            await printer.submit("o1-label", PDF)
            again = await next_result(printer)
            assert (again.ok, again.reason) == (True, "already printed")
        assert fake.requests["print-job"] == 1

    run(scenario())


# ----- against ippeveprinter -----


@pytest.fixture(scope="module")
def eve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IppEvePrinter]:
    """One real IPP printer for the module (each test leaves it running and clear)."""
    why = missing_ippeveprinter()
    if why is not None:
        pytest.fail(f"{why}: make test installs it (packaging/apt-install.sh)")
    with IppEvePrinter(tmp_path_factory.mktemp("ipp")) as printer:
        yield printer


def _real(eve: IppEvePrinter, **overrides: Any) -> IppPrinter:
    return IppPrinter.from_config(_config(**({"url": eve.url} | overrides)), DeviceContext())


def _printed(eve: IppEvePrinter, name: str) -> int:
    return sum(1 for job in eve.printed() if job.name == name)


def test_pdf_and_png_print_with_4x6_media_and_fit(eve: IppEvePrinter) -> None:
    async def scenario() -> None:
        async with _real(eve) as printer:
            assert printer.health.status is HealthStatus.OK
            await printer.submit("real-pdf", PDF)
            await printer.submit("real-png", PNG)
            results = [await next_result(printer), await next_result(printer)]
            assert [(r.job_id, r.ok) for r in results] == [("real-pdf", True), ("real-png", True)]

    run(scenario())
    jobs = {job.name: job for job in eve.printed()}
    assert jobs["real-pdf"].document_format == "application/pdf"
    assert jobs["real-png"].document_format == "image/png"
    assert jobs["real-pdf"].path.read_bytes() == PDF
    assert {(j.media, j.scaling) for j in jobs.values()} == {("na_index-4x6_4x6in", "fit")}


def test_media_empty_in_the_middle_of_a_job(eve: IppEvePrinter) -> None:
    async def scenario() -> None:
        async with _real(eve) as printer:
            eve.hold("media-empty-error")
            await printer.submit("held-1", PDF)
            await wait_until(lambda: printer.health.status is HealthStatus.FAULT)
            assert printer.health.detail == "paper out"
            assert printer.queued == ["held-1"]  # no result while the printer holds it
            assert _printed(eve, "held-1") == 0
            eve.release()  # a new roll
            result = await next_result(printer)
            assert (result.job_id, result.ok) == ("held-1", True)
            await wait_until(lambda: printer.health.status is HealthStatus.OK)

    run(scenario())
    assert _printed(eve, "held-1") == 1


def test_an_aborted_job_fails_and_is_not_printed_again(eve: IppEvePrinter) -> None:
    async def scenario() -> None:
        async with _real(eve) as printer:
            eve.abort_next()
            await printer.submit("aborted-1", PDF)
            result = await next_result(printer)
            assert result.ok is False
            assert result.reason is not None and "aborted IPP job" in result.reason

    run(scenario())
    assert _printed(eve, "aborted-1") == 0
    assert [name for _, _, name in eve.received()].count("aborted-1") == 1


def test_printer_going_away_and_coming_back(eve: IppEvePrinter) -> None:
    async def scenario() -> None:
        async with _real(eve) as printer:
            eve.kill()
            await wait_until(lambda: printer.health.status is HealthStatus.UNAVAILABLE)
            assert "cannot connect" in printer.health.detail
            await printer.submit("while-away", PDF)  # waits for the printer
            await asyncio.sleep(0.2)
            assert printer.queued == ["while-away"]
            eve.start()  # not in a thread: the printer would die with it (PDEATHSIG)
            result = await next_result(printer)
            assert (result.job_id, result.ok) == ("while-away", True)

    run(scenario())
    assert _printed(eve, "while-away") == 1


def test_printer_dies_while_holding_a_job(eve: IppEvePrinter) -> None:
    # The job was taken, then the printer lost power: it may or may not have printed, so
    # the job fails for a person to check; it is never sent a second time.
    async def scenario() -> None:
        async with _real(eve) as printer:
            eve.hold("media-empty-error")
            await printer.submit("lost-1", PDF)
            await wait_until(lambda: printer.health.status is HealthStatus.FAULT)
            eve.kill()
            eve.release()
            eve.start()  # not in a thread: the printer would die with it (PDEATHSIG)
            result = await next_result(printer)
            assert result.ok is False
            assert result.reason is not None and "may have printed" in result.reason

    run(scenario())
    assert [name for _, _, name in eve.received()].count("lost-1") == 1
    assert _printed(eve, "lost-1") == 0


def test_wrong_queue_path_is_a_fault_that_names_it(eve: IppEvePrinter) -> None:
    url = eve.url.replace("/ipp/print", "/printers/nosuch")

    async def scenario() -> None:
        async with _real(eve, url=url) as printer:
            assert printer.health.status is HealthStatus.FAULT
            assert "no such printer or queue" in printer.health.detail

    run(scenario())


# ----- zone-agent printer status|test --lang ipp -----


def test_cli_status_of_an_ipp_printer(
    eve: IppEvePrinter, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["printer", "status", "--lang", "ipp", "--url", eve.url, "--json"])
    record = json.loads(capsys.readouterr().out)
    assert code == EXIT_OK
    assert record["printer"] == f"IPP printer cli at {eve.url}"
    assert (record["health"], record["ready"], record["detail"]) == ("ok", True, "ready")


def test_cli_test_prints_the_4x6_pdf_label(
    eve: IppEvePrinter, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["printer", "test", "--lang", "ipp", "--url", eve.url])
    out = capsys.readouterr().out.splitlines()
    assert code == EXIT_OK
    assert out[0].startswith("printed test label test-")
    job = next(j for j in eve.printed() if j.name == out[0].split()[-1])
    assert (job.document_format, job.media, job.scaling) == ("application/pdf", MEDIA_4X6, "fit")
    assert job.path.read_bytes().startswith(b"%PDF-")


def test_cli_unreachable_ipp_printer_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = main(
        ["printer", "status", "--lang", "ipp", "--url", f"ipp://127.0.0.1:{port}/ipp/print"]
    )
    captured = capsys.readouterr()
    assert code == EXIT_DEVICE
    assert "cannot connect" in captured.out


def test_cli_url_goes_with_lang_ipp_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["printer", "status", "--lang", "zpl", "--url", "ipp://p/ipp/print"]) == EXIT_USAGE
    assert "--lang ipp takes --url" in capsys.readouterr().err
    assert main(["printer", "status", "--lang", "ipp", "--host", "10.0.0.5"]) == EXIT_USAGE


def test_the_ipp_backend_leaves_httpx_command_line_client_out() -> None:
    # httpx imports click, rich and pygments for its CLI when they are installed: 5 MB of a
    # pack node's memory. The backend keeps that import out (bench/README.md, IPP labels).
    code = (
        "import sys, devices.backends.ipp; print(sorted({'click', 'pygments'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----- the simulator (--simulate), through the same driver -----


def test_simulator_prints_holds_on_media_empty_mid_job_and_survives_unplug() -> None:
    async def scenario() -> None:
        sim = IppSimulator(_config())
        await sim.start()
        try:
            config = sim.patched_config()
            assert isinstance(config, IppPrinterConfig)
            async with IppPrinter.from_config(config, DeviceContext()) as printer:
                assert printer.health.status is HealthStatus.OK
                await printer.submit("s-1", PDF)
                assert (await next_result(printer)).ok
                await sim.control("set", {"state": "media_empty", "after_jobs": 1})
                await printer.submit("s-2", PNG)
                await wait_until(lambda: printer.health.detail == "paper out")
                assert sim.state()["pending"] == 1
                await sim.control("set", {"state": "ready"})
                assert (await next_result(printer)).job_id == "s-2"
                await sim.control("unplug", {})
                await wait_until(lambda: printer.health.status is HealthStatus.UNAVAILABLE)
                await printer.submit("s-3", PDF)
                await sim.control("replug", {})
                assert (await next_result(printer)).job_id == "s-3"
            jobs = sim.state()["jobs"]
            assert [(j["name"], j["format"], j["media"], j["scaling"]) for j in jobs] == [
                ("s-1", "application/pdf", MEDIA_4X6, "fit"),
                ("s-2", "image/png", MEDIA_4X6, "fit"),
                ("s-3", "application/pdf", MEDIA_4X6, "fit"),
            ]
        finally:
            await sim.stop()

    run(scenario())


def test_simulator_refuses_media_it_has_not_loaded() -> None:
    async def scenario() -> None:
        sim = IppSimulator(_config())
        await sim.start()
        try:
            url = sim.url
            async with IppPrinter.from_config(
                _config(url, media="na_letter_8.5x11in"), DeviceContext()
            ) as printer:
                await printer.submit("letter", PDF)
                result = await next_result(printer)
                assert result.ok is False
                assert "client-error-attributes-or-values-not-supported" in (result.reason or "")
        finally:
            await sim.stop()

    run(scenario())


def test_sim_printer_lang_ipp_prints_its_url_then_counts_jobs() -> None:
    # --port 0: a port found free here could be taken by another process before the child
    # binds it (it happened on this shared machine); the child says which one it got.
    exe = Path(sys.executable).with_name("zone-agent")
    proc = subprocess.Popen(
        [str(exe), "sim", "printer", "--lang", "ipp", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"ipp://127\.0\.0\.1:\d+/ipp/print", url), proc.stderr
        assert main(["printer", "test", "--lang", "ipp", "--url", url]) == EXIT_OK
        assert proc.stdout.readline() == "jobs printed: 1\n"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
