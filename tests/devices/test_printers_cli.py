"""``zone-agent printer status|test`` and ``sim printer`` end to end against the simulators."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from printer_helpers import sim_in_thread

from agent.cli import main
from agent.errors import EXIT_DEVICE, EXIT_OK, EXIT_USAGE
from devices.printers.escpos import sample_slip
from devices.printers.sim import EscposSimulator
from devices.printers.zpl import sample_label


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_zpl_status_json(capsys: pytest.CaptureFixture[str]) -> None:
    with sim_in_thread("zpl") as (sim, _):
        code = main(["printer", "status", "--lang", "zpl", "--host", "127.0.0.1",
                     "--port", str(sim.port), "--json"])  # fmt: skip
    record = json.loads(capsys.readouterr().out)
    assert code == EXIT_OK
    assert record == {
        "printer": f"ZPL printer cli on tcp 127.0.0.1:{sim.port}",
        "health": "ok",
        "reachable": True,
        "answered": True,
        "ready": True,
        "paper_out": False,
        "head_open": False,
        "paused": False,
        "ribbon_out": False,
        "offline": False,
        "media_jam": False,
        "paper_near_end": False,
        "detail": "ready",
    }


def test_zpl_status_silent_printer_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    with sim_in_thread("zpl") as (sim, call):
        call(sim.control, "set", {"state": "paper_out"})
        code = main(["printer", "status", "--lang", "zpl", "--host", "127.0.0.1",
                     "--port", str(sim.port), "--json", "--timeout", "0.2"])  # fmt: skip
    record = json.loads(capsys.readouterr().out)
    assert code == EXIT_DEVICE
    assert (record["health"], record["answered"], record["ready"]) == ("fault", False, False)
    assert record["reachable"] is True  # connected, then silence
    assert record["detail"] == "no status reply: media out, head open or offline"
    # Silence says nothing about which fault: no flag is claimed, offline included.
    flags = ("paper_out", "head_open", "paused", "ribbon_out", "offline", "paper_near_end")
    assert {flag: record[flag] for flag in flags} == dict.fromkeys(flags)


def test_zpl_status_paused_printer_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    with sim_in_thread("zpl") as (sim, call):
        call(sim.control, "set", {"state": "paused"})
        code = main(["printer", "status", "--lang", "zpl", "--host", "127.0.0.1",
                     "--port", str(sim.port)])  # fmt: skip
    captured = capsys.readouterr()
    assert code == EXIT_DEVICE  # as `printer test` on a paused printer
    assert captured.out == f"ZPL printer cli on tcp 127.0.0.1:{sim.port}: paused\n"
    assert captured.err == "zone-agent: not ready: paused\n"


def test_escpos_status_paper_out(capsys: pytest.CaptureFixture[str]) -> None:
    with sim_in_thread("escpos") as (sim, call):
        call(sim.control, "set", {"state": "paper_out"})
        code = main(["printer", "status", "--lang", "escpos", "--host", "127.0.0.1",
                     "--port", str(sim.port), "--json"])  # fmt: skip
    record = json.loads(capsys.readouterr().out)
    assert code == EXIT_DEVICE  # it answered; the answer is a fault: it cannot print
    assert (record["health"], record["paper_out"], record["offline"]) == ("fault", True, True)
    assert (record["answered"], record["ready"]) == (True, False)
    assert record["detail"] == "paper out, offline"


def test_status_unreachable_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    port = _free_port()
    code = main(["printer", "status", "--lang", "zpl", "--host", "127.0.0.1",
                 "--port", str(port)])  # fmt: skip
    captured = capsys.readouterr()
    assert code == EXIT_DEVICE
    assert f"127.0.0.1:{port}: connection refused" in captured.out
    assert captured.err.splitlines()[-1].startswith("zone-agent: no usable answer: unreachable")


def test_zpl_test_prints_a_label(capsys: pytest.CaptureFixture[str]) -> None:
    with sim_in_thread("zpl") as (sim, call):
        code = main(["printer", "test", "--lang", "zpl", "--host", "127.0.0.1",
                     "--port", str(sim.port)])  # fmt: skip
        state = call(sim.state)
    out = capsys.readouterr().out.splitlines()
    assert code == EXIT_OK
    assert out[0].startswith("printed test label test-")
    assert out[1] == f"ZPL printer cli on tcp 127.0.0.1:{sim.port}: ready"
    assert [job.encode() for job in state["jobs"]] == [sample_label().strip()]


def test_escpos_test_prints_a_slip_json(capsys: pytest.CaptureFixture[str]) -> None:
    with sim_in_thread("escpos") as (sim, _):
        code = main(["printer", "test", "--lang", "escpos", "--host", "127.0.0.1",
                     "--port", str(sim.port), "--json"])  # fmt: skip
        assert isinstance(sim, EscposSimulator)
        received = bytes(sim.received)
    record = json.loads(capsys.readouterr().out)
    assert code == EXIT_OK
    assert (record["printed"], record["reason"], record["status"]["detail"]) == (
        True,
        None,
        "ready",
    )
    assert received == sample_slip()


def test_test_print_on_a_faulted_printer_fails(capsys: pytest.CaptureFixture[str]) -> None:
    with sim_in_thread("zpl") as (sim, call):
        call(sim.control, "set", {"state": "paused"})
        code = main(["printer", "test", "--lang", "zpl", "--host", "127.0.0.1",
                     "--port", str(sim.port), "--wait", "0.3"])  # fmt: skip
        state = call(sim.state)
    assert code == EXIT_DEVICE
    assert "test print failed: not printed within 0.3 s: paused" in capsys.readouterr().err
    assert state["jobs"] == [] and state["pending"] == 0


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["printer", "status", "--lang", "zpl"])  # neither --host nor --device
    assert raised.value.code == EXIT_USAGE
    code = main(["printer", "status", "--lang", "zpl", "--host", "h", "--port", "70000"])
    assert code == EXIT_USAGE
    assert "less than or equal to 65535" in capsys.readouterr().err


def test_sim_printer_command_prints_its_address_first(tmp_path: Path) -> None:
    port = _free_port()
    exe = Path(sys.executable).with_name("zone-agent")
    proc = subprocess.Popen(
        [str(exe), "sim", "printer", "--lang", "zpl", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == f"127.0.0.1:{port}\n"
        code = main(["printer", "test", "--lang", "zpl", "--host", "127.0.0.1",
                     "--port", str(port)])  # fmt: skip
        assert code == EXIT_OK
        assert proc.stdout.readline() == "jobs printed: 1\n"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
