"""``zone-agent scale read``, ``probe`` and ``sim scale`` end to end against simulators."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import serial
from scale_helpers import SimThread

from agent.cli import main
from agent.errors import EXIT_DEVICE, EXIT_OK, EXIT_USAGE

ZONE_AGENT = Path(sys.executable).parent / "zone-agent"


@pytest.mark.parametrize(
    ("protocol", "grams", "extra"),
    [("mt_sics", 1250.5, []), ("toledo_8217", 1250.0, []), ("nci", 2500.0, ["--baud", "9600"])],
)
def test_scale_read_json(protocol, grams, extra, tmp_path, capsys):
    with SimThread(protocol, tmp_path) as sim:
        sim.control("set", {"grams": grams})
        code = main(["scale", "read", "--port", sim.link, "--protocol", protocol, "--json", *extra])
    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert json.loads(out) == {
        "port": sim.link,
        "protocol": protocol,
        "grams": grams,
        "stable": True,
        "net": False,
    }


def test_scale_read_plain_waits_for_stability(tmp_path, capsys):
    with SimThread("mt_sics", tmp_path) as sim:
        sim.control("set", {"grams": 80.0, "mode": "moving", "settle_after": 2})
        code = main(["scale", "read", "--port", sim.link, "--protocol", "mt_sics"])
    assert code == EXIT_OK
    assert capsys.readouterr().out == "80 g stable gross\n"


def test_scale_read_never_stable(tmp_path, capsys):
    with SimThread("mt_sics", tmp_path) as sim:
        sim.control("set", {"grams": 80.0, "mode": "moving"})
        args = ["--port", sim.link, "--protocol", "mt_sics", "--stable-timeout", "0.15"]
        code = main(["scale", "read", *args])
    captured = capsys.readouterr()
    assert code == EXIT_DEVICE
    assert "no stable weight within 0.15 s (last 80 g)" in captured.err
    assert captured.out == ""


def test_scale_read_no_reply_names_the_expected_settings(tmp_path, capsys):
    with SimThread("toledo_8217", tmp_path) as sim:
        sim.control("set", {"mode": "silent"})
        code = main(
            [
                "scale",
                "read",
                "--port",
                sim.link,
                "--protocol",
                "toledo_8217",
                "--parity",
                "N",
                "--bytesize",
                "8",
                "--stable-timeout",
                "0.2",
            ]
        )
    err = capsys.readouterr().err
    assert code == EXIT_DEVICE
    assert "no reply" in err
    assert "configured at 9600 8N1; this protocol usually runs at 9600 7E1" in err


def test_scale_read_overload(tmp_path, capsys):
    with SimThread("nci", tmp_path) as sim:
        sim.control("set", {"mode": "overload"})
        code = main(["scale", "read", "--port", sim.link, "--protocol", "nci"])
    assert code == EXIT_DEVICE
    assert "overload" in capsys.readouterr().err


def test_scale_read_wrong_port(tmp_path, capsys):
    port = str(tmp_path / "ttyUSB7")
    code = main(["scale", "read", "--port", port, "--protocol", "nci"])
    assert code == EXIT_DEVICE
    assert f"zone-agent scale read: {port}: no such port" in capsys.readouterr().err


def test_scale_read_busy_port(tmp_path, capsys):
    with SimThread("mt_sics", tmp_path) as sim:
        holder = serial.Serial(sim.link, exclusive=True)
        try:
            code = main(["scale", "read", "--port", sim.link, "--protocol", "mt_sics"])
        finally:
            holder.close()
    assert code == EXIT_DEVICE
    assert "busy (another process holds it" in capsys.readouterr().err


def test_scale_read_no_permission(tmp_path, capsys):
    # Tests run as root, where chmod cannot take access away: the OS answer is mocked.
    port = str(tmp_path / "ttyUSB0")
    denied = serial.SerialException(13, f"could not open port {port}: Permission denied")
    with mock.patch("serial.Serial", side_effect=denied):
        code = main(["scale", "read", "--port", port, "--protocol", "mt_sics"])
    assert code == EXIT_DEVICE
    assert "permission denied (add the service user to the 'dialout' group)" in (
        capsys.readouterr().err
    )


def test_usage_errors(capsys):
    assert main(["scale", "read", "--port", "/dev/x", "--protocol", "nci", "--unit", "kg"]) == (
        EXIT_USAGE
    )
    assert "--unit applies to toledo_8217 only" in capsys.readouterr().err
    assert main(["scale", "read", "--port", "/dev/x", "--protocol", "nci", "--baud", "0"]) == (
        EXIT_USAGE
    )
    assert "baudrate" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        main(["scale", "read", "--port", "/dev/x", "--protocol", "adam"])
    assert caught.value.code == EXIT_USAGE


@pytest.mark.parametrize("command", [["scale", "probe"], ["probe"]])
def test_probe_one_port(command, tmp_path, capsys):
    with SimThread("nci", tmp_path) as sim:
        code = main([*command, "--port", sim.link, "--timeout", "0.2"])
    assert code == EXIT_OK
    assert capsys.readouterr().out == f"{sim.link}  nci\n"


def test_probe_lists_ports_and_finds_nothing_on_noise(tmp_path, capsys):
    toledo_dir, noisy_dir = tmp_path / "a", tmp_path / "b"
    with SimThread("toledo_8217", toledo_dir) as toledo, SimThread("mt_sics", noisy_dir) as noisy:
        noisy.control("set", {"mode": "garbage"})
        ports = [(toledo.link, "USB-RS232 cable"), (noisy.link, "FTDI")]
        with mock.patch("agent.commands.scales.list_ports", return_value=ports):
            code = main(["scale", "probe", "--timeout", "0.1", "--json"])
    assert code == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert {key: report[0][key] for key in ("port", "protocol", "hint", "error")} == {
        "port": toledo.link,
        "protocol": "toledo_8217",
        "hint": None,
        "error": None,
    }
    assert [t["protocol"] for t in report[0]["tried"]] == ["mt_sics", "nci", "toledo_8217"]
    assert report[0]["tried"][-1]["sent"] == ["Ehello"]
    assert report[1]["protocol"] is None
    assert "no protocol answered" in report[1]["hint"]
    assert "wrong baud rate or parity" in report[1]["hint"]


def test_probe_silent_port_exits_3(tmp_path, capsys):
    with SimThread("mt_sics", tmp_path) as sim:
        sim.control("set", {"mode": "silent"})
        code = main(["scale", "probe", "--port", sim.link, "--timeout", "0.1"])
    assert code == EXIT_DEVICE
    out = capsys.readouterr().out
    assert out.startswith(f"{sim.link}  - ({sim.link}: no protocol answered (nothing came back")
    assert "toledo_8217 at 9600 7E1: sent b'Ehello', b'W': heard nothing" in out


def test_sim_scale_subprocess_serves_scale_read(tmp_path, capsys):
    link = tmp_path / "sim.tty"
    command = ["sim", "scale", "--protocol", "mt_sics", "--link", str(link), "--grams", "777.25"]
    process = subprocess.Popen(
        [str(ZONE_AGENT), *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        assert first_line == f"{link}\n"
        code = main(["scale", "read", "--port", str(link), "--protocol", "mt_sics", "--json"])
        assert code == EXIT_OK
        assert json.loads(capsys.readouterr().out)["grams"] == 777.25
    finally:
        process.send_signal(signal.SIGINT)
        returncode = process.wait(timeout=10)
    assert returncode == EXIT_OK
    assert not link.exists()
