"""``zone-agent scale read`` and ``scale probe`` with a USB HID scale.

The scale is a hidraw entry in a sysfs tree the test makes and a FIFO as its node, into
which a thread writes a 6-byte scale report every 50 ms, as a shipping scale streams them
(the bytes written out from the HID POS layout). Where sysfs and /dev are is an OS fact
the test points elsewhere.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.cli import main
from agent.commands import scales as scale_commands
from agent.errors import EXIT_DEVICE, EXIT_OK, EXIT_USAGE
from devices.backends import hidraw

SCALE_DESCRIPTOR = bytes.fromhex("058d0920a101c0")
DYMO = "0003:00000922:00008009"


@contextmanager
def hid_scale(
    tmp_path: Path, monkeypatch, report: bytes | None, hid_id: str = DYMO
) -> Iterator[Path]:
    sysfs, dev = tmp_path / "sys", tmp_path / "dev"
    device = sysfs / "hidraw2" / "device"
    device.mkdir(parents=True)
    (device / "uevent").write_text(f"HID_ID={hid_id}\nHID_NAME=DYMO S250 Postal Scale\n")
    (device / "report_descriptor").write_bytes(SCALE_DESCRIPTOR)
    dev.mkdir()
    node = dev / "hidraw2"
    os.mkfifo(node)
    writer = os.open(node, os.O_RDWR | os.O_NONBLOCK)
    monkeypatch.setattr(hidraw, "SYSFS_HIDRAW", sysfs)
    monkeypatch.setattr(hidraw, "DEV_DIR", dev)
    # No serial ports on this machine, as far as the probe is told.
    monkeypatch.setattr(scale_commands, "list_ports", lambda: [])
    stop = threading.Event()

    def stream() -> None:
        while report is not None and not stop.wait(0.05):
            try:
                os.write(writer, report)
            except BlockingIOError:
                pass  # nobody reads: the pipe is full, as a scale's reports are dropped

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    try:
        yield node
    finally:
        stop.set()
        thread.join(5)
        os.close(writer)


@pytest.mark.parametrize("port", [None, "0922:8009", "auto"])
def test_scale_read_hid(port, tmp_path, monkeypatch, capsys):
    # 3.31 lb, stable.
    with hid_scale(tmp_path, monkeypatch, bytes.fromhex("0304 0c fe 4b01")) as node:
        chosen = ["--port", port] if port else []
        code = main(["scale", "read", "--protocol", "hid_pos", *chosen, "--json"])
    assert code == EXIT_OK, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out) == {
        "port": str(node),
        "protocol": "hid_pos",
        "grams": 1501.391,
        "stable": True,
        "net": False,
    }


def test_scale_read_hid_refuses_line_settings_and_serial_needs_a_port(capsys):
    assert main(["scale", "read", "--protocol", "hid_pos", "--baud", "9600"]) == EXIT_USAGE
    assert "--baud: a USB HID scale has no line" in capsys.readouterr().err
    assert main(["scale", "read", "--protocol", "nci"]) == EXIT_USAGE
    assert "--port is required for nci" in capsys.readouterr().err


def test_scale_read_hid_overload_exits_3(tmp_path, monkeypatch, capsys):
    with hid_scale(tmp_path, monkeypatch, bytes.fromhex("03060cfe0000")):
        code = main(["scale", "read", "--protocol", "hid_pos", "--stable-timeout", "1"])
    assert code == EXIT_DEVICE
    assert "overload" in capsys.readouterr().err


def test_scale_read_without_a_hid_scale_exits_3(tmp_path, monkeypatch, capsys):
    (tmp_path / "sys").mkdir()
    monkeypatch.setattr(hidraw, "SYSFS_HIDRAW", tmp_path / "sys")
    code = main(["scale", "read", "--protocol", "hid_pos"])
    assert code == EXIT_DEVICE
    assert "no USB HID scale plugged in" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["scale", "probe"], ["probe"]])
def test_probe_finds_the_hid_scale(command, tmp_path, monkeypatch, capsys):
    with hid_scale(tmp_path, monkeypatch, bytes.fromhex("03020bff0000")) as node:
        code = main([*command, "--timeout", "0.5"])
    assert code == EXIT_OK
    assert capsys.readouterr().out == f"{node}  hid_pos  [DYMO S180 / S250 0922:8009]\n"


def test_probe_says_a_silent_hid_scale_sent_no_report(tmp_path, monkeypatch, capsys):
    with hid_scale(tmp_path, monkeypatch, None) as node:
        code = main(["scale", "probe", "--timeout", "0.2", "--json"])
    assert code == EXIT_DEVICE
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["port"] == str(node)
    assert entry["protocol"] is None
    assert "no protocol answered" in entry["hint"]
    assert "DYMO S180 / S250 0922:8009 sent no valid scale report within 0.2 s" in entry["hint"]
