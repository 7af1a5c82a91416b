"""ZPL printers against the ZPL simulator on a real TCP socket, and ~HS parsing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from printer_helpers import (
    FakeClock,
    ScriptedLink,
    next_result,
    run,
    wait_until,
    zpl_config,
)

from agent.errors import DeviceProtocolError
from devices.base import Health, HealthStatus
from devices.context import DeviceContext
from devices.printers.base import NO_REPLY, PrinterStatus, PrintQueueFull
from devices.printers.sim import ZplSimulator
from devices.printers.zpl import ZplPrinter, ZplPrinterConfig, parse_host_status, sample_label
from devices.ptysim import PtyEndpoint

LABEL_A = b"^XA^FO20,20^A0N,30,30^FDOrder 4711^FS^XZ"
LABEL_B = b"^XA\n^CI28\n^FO20,20^A0N,30,30^FD\xc3\x9cbergr\xc3\xb6\xc3\x9fe^FS\n^XZ"
LABEL_C = b"^XA^FO20,20^BY2^BCN,60,Y,N,N^FD>;>800106141412345678908^FS^XZ"

HS_READY = (
    b"\x02030,0,0,1218,000,0,0,0,000,0,0,0\x03\r\n"
    b"\x02001,0,0,0,0,2,6,0,00000000,1,000\x03\r\n"
    b"\x021234,0\x03\r\n"
)


def _printer(sim: ZplSimulator, clock: FakeClock | None = None, **overrides: object) -> ZplPrinter:
    config = zpl_config(port=sim.port, **overrides)
    printer = ZplPrinter.from_config(config, DeviceContext())
    if clock is not None:
        printer._clock = clock
    return printer


# ----- ~HS parsing -----


def test_parse_ready() -> None:
    status = parse_host_status(HS_READY)
    assert status == PrinterStatus(ready=True, detail="ready")


def test_parse_reads_all_three_strings() -> None:
    # Head up and ribbon out live in string 2: a parser stopping at the first ETX misses them.
    reply = (
        b"\x02030,0,0,1218,000,0,0,0,000,0,0,0\x03\r\n"
        b"\x02001,0,1,1,0,2,6,0,00000000,1,000\x03\r\n"
        b"\x021234,0\x03\r\n"
    )
    status = parse_host_status(reply)
    assert (status.ready, status.head_open, status.ribbon_out) == (False, True, True)
    assert (status.paper_out, status.paused) == (False, False)
    assert status.detail == "head open, ribbon out"


def test_parse_paper_out_and_pause() -> None:
    reply = HS_READY.replace(b"\x02030,0,0,", b"\x02030,1,1,")
    status = parse_host_status(reply)
    assert (status.paper_out, status.paused, status.head_open) == (True, True, False)
    assert status.detail == "paper out, paused"


def test_parse_rejects_one_string_and_bad_flags() -> None:
    with pytest.raises(DeviceProtocolError, match="1 of 3"):
        parse_host_status(HS_READY.split(b"\r\n")[0])
    with pytest.raises(DeviceProtocolError, match="not 0 or 1"):
        parse_host_status(HS_READY.replace(b"\x02030,0,0,", b"\x02030,X,0,"))


def test_simulator_answers_hs_with_its_state() -> None:
    sim = ZplSimulator(zpl_config())
    assert parse_host_status(sim.host_status()).ready
    sim._set_state("paused")
    assert parse_host_status(sim.host_status()).paused


# ----- printing end to end -----


def test_job_bytes_arrive_byte_exact_in_order() -> None:
    async def scenario() -> None:
        sim = ZplSimulator(zpl_config())
        await sim.start()
        try:
            async with _printer(sim) as printer:
                assert printer.health.status is HealthStatus.OK
                await printer.submit("a", LABEL_A)
                await printer.submit("b", LABEL_B)
                await printer.submit("c", LABEL_C)
                results = [await next_result(printer) for _ in range(3)]
                assert [(r.job_id, r.ok, r.reason) for r in results] == [
                    ("a", True, None),
                    ("b", True, None),
                    ("c", True, None),
                ]
            assert [job.encode() for job in sim.jobs] == [LABEL_A, LABEL_B, LABEL_C]
            assert sim.state()["pending"] == 0
        finally:
            await sim.stop()

    run(scenario())


def test_sample_label_prints() -> None:
    async def scenario() -> None:
        sim = ZplSimulator(zpl_config())
        await sim.start()
        try:
            async with _printer(sim) as printer:
                await printer.submit("t", sample_label("hello ^ world"))
                assert (await next_result(printer)).ok
            (job,) = sim.state()["jobs"]
            assert job.startswith("^XA") and job.endswith("^XZ")
            assert "^FDhello  world^FS" in job
        finally:
            await sim.stop()

    run(scenario())


def test_silence_is_a_fault() -> None:
    async def scenario() -> None:
        sim = ZplSimulator(zpl_config())
        await sim.start()
        await sim.control("set", {"state": "head_open"})
        try:
            async with _printer(sim) as printer:
                status = await printer.status()
                assert status.ready is False
                assert status.detail == NO_REPLY
                assert printer.health.status is HealthStatus.FAULT
                assert printer.health.detail == NO_REPLY
        finally:
            await sim.stop()

    run(scenario())


def test_answered_fault_flags_reach_health() -> None:
    async def scenario() -> None:
        sim = ZplSimulator(zpl_config())
        await sim.start()
        await sim.control("set", {"state": "paper_out", "silent": False})
        try:
            async with _printer(sim) as printer:
                status = await printer.status()
                assert (status.paper_out, status.ready) == (True, False)
                assert printer.health == Health(HealthStatus.FAULT, "paper out")
                await sim.control("set", {"state": "paused"})
                assert (await printer.status()).paused
                assert printer.health == Health(HealthStatus.FAULT, "paused")
                await sim.control("set", {"state": "ready"})
                assert (await printer.status()).ready
                assert printer.health == Health(HealthStatus.OK)
        finally:
            await sim.stop()

    run(scenario())


def test_paper_out_then_recovered_prints_held_jobs_once_in_order() -> None:
    async def scenario() -> None:
        sim = ZplSimulator(zpl_config())
        await sim.start()
        await sim.control("set", {"state": "paper_out"})
        try:
            async with _printer(sim, status_timeout_s=0.1) as printer:
                await printer.submit("a", LABEL_A)
                await printer.submit("b", LABEL_B)
                # Polls go unanswered; nothing is sent while the printer is faulted.
                polls = sim.status_requests
                await wait_until(lambda: sim.status_requests >= polls + 2)
                assert sim.state() == {
                    "state": "paper_out",
                    "jobs": [],
                    "pending": 0,
                    "received_bytes": 0,
                    "listening": True,
                }
                assert printer.queued == ["a", "b"]
                assert printer.health.status is HealthStatus.FAULT
                await sim.control("set", {"state": "ready"})
                first, second = await next_result(printer), await next_result(printer)
                assert [(first.job_id, first.ok), (second.job_id, second.ok)] == [
                    ("a", True),
                    ("b", True),
                ]
                assert printer.health == Health(HealthStatus.OK)
            assert [job.encode() for job in sim.jobs] == [LABEL_A, LABEL_B]
        finally:
            await sim.stop()

    run(scenario())


def test_duplicate_job_ids_print_once() -> None:
    async def scenario() -> None:
        sim = ZplSimulator(zpl_config())
        await sim.start()
        await sim.control("set", {"state": "paused"})
        try:
            async with _printer(sim) as printer:
                printer.remember_printed(["old-1"])
                await printer.submit("a", LABEL_A)
                await printer.submit("a", LABEL_A)  # queued: ignored
                await printer.submit("old-1", LABEL_C)  # printed before a restart
                dup = await next_result(printer)
                assert (dup.job_id, dup.ok, dup.reason) == ("old-1", True, "already printed")
                await sim.control("set", {"state": "ready"})
                result = await next_result(printer)
                assert (result.job_id, result.ok) == ("a", True)
                await printer.submit("a", LABEL_A)  # printed: not again
                again = await next_result(printer)
                assert (again.job_id, again.ok, again.reason) == ("a", True, "already printed")
                assert printer.printed_ids() == ["old-1", "a"]
            assert [job.encode() for job in sim.jobs] == [LABEL_A]
        finally:
            await sim.stop()

    run(scenario())


def test_queue_full() -> None:
    async def scenario() -> None:
        sim = ZplSimulator(zpl_config())
        await sim.start()
        await sim.control("set", {"state": "paused"})
        try:
            async with _printer(sim, queue_limit=2) as printer:
                await printer.submit("a", LABEL_A)
                await printer.submit("b", LABEL_B)
                with pytest.raises(PrintQueueFull, match="2 jobs waiting"):
                    await printer.submit("c", LABEL_C)
                assert printer.queued == ["a", "b"]
        finally:
            await sim.stop()

    run(scenario())


def test_job_waiting_longer_than_max_wait_fails() -> None:
    async def scenario() -> None:
        sim = ZplSimulator(zpl_config())
        await sim.start()
        await sim.control("set", {"state": "paused"})
        clock = FakeClock()
        try:
            async with _printer(sim, clock=clock, max_wait_s=600) as printer:
                await printer.submit("a", LABEL_A)
                clock.now += 300
                await printer.submit("b", LABEL_B)
                clock.now += 301  # a has waited 601 s, b 301 s
                failed = await next_result(printer)
                assert (failed.job_id, failed.ok) == ("a", False)
                assert failed.reason == "not printed within 600 s: paused"
                assert failed.at == clock.now
                assert printer.queued == ["b"]
                await sim.control("set", {"state": "ready"})
                printed = await next_result(printer)
                assert (printed.job_id, printed.ok) == ("b", True)
            assert [job.encode() for job in sim.jobs] == [LABEL_B]
        finally:
            await sim.stop()

    run(scenario())


def test_unplug_then_replug() -> None:
    async def scenario() -> None:
        sim = ZplSimulator(zpl_config())
        await sim.start()
        port = sim.port
        try:
            async with _printer(sim) as printer:
                await printer.submit("a", LABEL_A)
                assert (await next_result(printer)).ok
                await sim.control("unplug", {})
                assert sim.state()["listening"] is False
                await printer.submit("b", LABEL_B)
                await wait_until(lambda: printer.health.status is HealthStatus.UNAVAILABLE)
                assert printer.last_status.offline
                assert printer.queued == ["b"]
                await sim.control("replug", {})
                assert sim.port == port
                result = await next_result(printer)
                assert (result.job_id, result.ok) == ("b", True)
                assert printer.health.status is HealthStatus.OK
            assert [job.encode() for job in sim.jobs] == [LABEL_A, LABEL_B]
        finally:
            await sim.stop()

    run(scenario())


def test_unreachable_at_open_is_unavailable_not_an_error() -> None:
    async def scenario() -> None:
        sim = ZplSimulator(zpl_config())
        await sim.start()
        await sim.stop()  # a port nobody listens on
        async with _printer(sim) as printer:
            assert printer.health.status is HealthStatus.UNAVAILABLE
            assert "connection refused" in printer.health.detail

    run(scenario())


def test_simulator_holds_formats_while_faulted_and_prints_them_when_cleared() -> None:
    async def scenario() -> None:
        sim = ZplSimulator(zpl_config())
        await sim.start()
        await sim.control("set", {"state": "paper_out"})
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
            writer.write(LABEL_A + b"~HS" + LABEL_B)
            await writer.drain()
            await wait_until(lambda: sim.state()["pending"] == 2)
            assert sim.state()["jobs"] == []
            await sim.control("set", {"state": "ready"})
            assert [job.encode() for job in sim.jobs] == [LABEL_A, LABEL_B]
            writer.write(b"~HS")
            await writer.drain()
            reply = b""
            while reply.count(b"\x03") < 3:
                reply += await reader.read(4096)
            assert reply == HS_READY  # the silent ~HS while out of paper was never answered
            await sim.control("clear", {})
            assert sim.state()["jobs"] == []
            with pytest.raises(ValueError, match="state must be one of"):
                await sim.control("set", {"state": "on_fire"})
            writer.close()
        finally:
            await sim.stop()

    run(scenario())


def test_device_file_without_readback(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = tmp_path / "lp0"
        spool.write_bytes(b"")
        config = zpl_config(host=None, device=str(spool))
        async with ZplPrinter.from_config(config, DeviceContext()) as printer:
            assert printer.health.status is HealthStatus.OK
            await printer.submit("a", LABEL_A)
            await printer.submit("b", LABEL_B)
            assert (await next_result(printer)).ok
            assert (await next_result(printer)).ok
        assert spool.read_bytes() == LABEL_A + LABEL_B

    run(scenario())


def test_device_file_missing_is_unavailable(tmp_path: Path) -> None:
    async def scenario() -> None:
        config = zpl_config(host=None, device=str(tmp_path / "lp9"))
        async with ZplPrinter.from_config(config, DeviceContext()) as printer:
            assert printer.health.status is HealthStatus.UNAVAILABLE
            assert "no such device" in printer.health.detail
        assert not (tmp_path / "lp9").exists()

    run(scenario())


def test_config_needs_exactly_one_connection() -> None:
    with pytest.raises(ValueError, match="exactly one way"):
        ZplPrinterConfig(name="p", host="10.0.0.5", device="/dev/usb/lp0")
    with pytest.raises(ValueError, match="exactly one way"):
        ZplPrinterConfig(name="p")
    assert ZplPrinterConfig(name="p", host="10.0.0.5").claims() == ["tcp:10.0.0.5:9100"]
    assert ZplPrinterConfig(name="p", device="/dev/usb/lp0").claims() == ["serial:/dev/usb/lp0"]
    assert ZplPrinterConfig(name="p", host="h").max_wait_s == 600
    assert ZplPrinterConfig(name="p", host="h").queue_limit == 50


# ----- when a job counts as printed -----


def test_media_out_during_a_job_holds_it_until_cleared_then_counts_it_once() -> None:
    async def scenario() -> None:
        sim = ZplSimulator(zpl_config())
        await sim.start()
        try:
            async with _printer(sim, status_timeout_s=0.1) as printer:
                # The printer runs out of labels on the next format: it holds it and goes
                # silent, so the ~HS sent behind the job gets no answer.
                await sim.control("set", {"state": "paper_out", "after_formats": 1})
                await printer.submit("a", LABEL_A)
                await printer.submit("b", LABEL_B)
                await wait_until(lambda: sim.state()["pending"] == 1)
                polls = sim.status_requests
                await wait_until(lambda: sim.status_requests >= polls + 2)
                assert printer.health == Health(HealthStatus.FAULT, NO_REPLY)
                assert printer.queued == ["a", "b"]
                assert sim.state()["jobs"] == []  # b was not sent behind the held job
                await sim.control("set", {"state": "ready"})
                first, second = await next_result(printer), await next_result(printer)
                assert [(first.job_id, first.ok), (second.job_id, second.ok)] == [
                    ("a", True),
                    ("b", True),
                ]
            assert [job.encode() for job in sim.jobs] == [LABEL_A, LABEL_B]
        finally:
            await sim.stop()

    run(scenario())


def test_connection_lost_mid_write_fails_the_job_and_never_resends_it() -> None:
    async def scenario() -> None:
        link = ScriptedLink(fail_write_of=LABEL_A)
        printer = ZplPrinter(zpl_config(), link, clock=FakeClock())
        async with printer:
            await printer.submit("a", LABEL_A)
            await printer.submit("b", LABEL_B)
            failed, printed = await next_result(printer), await next_result(printer)
            assert (failed.job_id, failed.ok) == ("a", False)
            assert failed.reason is not None
            assert failed.reason.startswith("connection lost while sending (fake: connection")
            assert "it may have printed in part or in full" in failed.reason
            assert (printed.job_id, printed.ok) == ("b", True)
            assert "a" not in printer.printed_ids()
        assert [w for w in link.writes if w != b"~HS"] == [LABEL_A, LABEL_B]

    run(scenario())


def test_connection_lost_after_write_before_confirmation_fails_the_job() -> None:
    async def scenario() -> None:
        link = ScriptedLink(drop_after_write_of=LABEL_A)
        printer = ZplPrinter(zpl_config(), link, clock=FakeClock())
        async with printer:
            await printer.submit("a", LABEL_A)
            result = await next_result(printer)
            assert (result.job_id, result.ok) == ("a", False)
            assert result.reason == (
                "connection lost after sending, before the printer confirmed it; it may "
                "have printed: check the printer, resubmit if needed"
            )
            # A failed id is not remembered: a person may resubmit it and it prints.
            await printer.submit("a", LABEL_A)
            assert (await next_result(printer)).ok
        assert [w for w in link.writes if w != b"~HS"] == [LABEL_A, LABEL_A]
        assert link.opened == 2

    run(scenario())


def test_serial_port_reads_status_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        sim = ZplSimulator(zpl_config())
        received = bytearray()

        def on_data(data: bytes) -> None:
            received.extend(data)
            reply = sim.feed(received)
            if reply:
                endpoint.write(reply)

        endpoint = PtyEndpoint(tmp_path / "ttyZebra", on_data)
        path = endpoint.open()
        try:
            config = zpl_config(host=None, device=path, baudrate=9600, status_timeout_s=0.2)
            async with ZplPrinter.from_config(config, DeviceContext()) as printer:
                assert printer.health == Health(HealthStatus.OK)
                await printer.submit("a", LABEL_A)
                assert (await next_result(printer)).ok
                sim._set_state("paused")
                assert (await printer.status()).detail == "paused"
                sim._set_state("head_open")
                assert (await printer.status()).detail == NO_REPLY
            assert [job.encode() for job in sim.jobs] == [LABEL_A]
        finally:
            endpoint.close()

    run(scenario())
