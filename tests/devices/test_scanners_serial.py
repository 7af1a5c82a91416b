"""The serial scanner driver against its pty simulator, byte for byte."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from scanner_helpers import FakeClock, next_scan, run, serial_rig, wait_until

from devices import registry
from devices.base import HealthStatus
from devices.context import DeviceContext
from devices.events import Scan
from devices.scanners.framing import LineFramer, strip_line_noise, unwrap
from devices.scanners.serial_scanner import SerialScanner, SerialScannerConfig

GS = "\x1d"


def test_registry_module_exports_the_contract():
    module = registry.module_for("serial_scanner")
    assert module.CONFIG is SerialScannerConfig
    assert module.DRIVER is SerialScanner
    config = SerialScannerConfig(name="scan1", kind="serial_scanner", port="/dev/ttyACM0")
    assert config.claims() == ["serial:/dev/ttyACM0"]
    assert (config.baudrate, config.bytesize, config.parity, config.stopbits) == (9600, 8, "N", 1)
    assert (config.terminator, config.dedupe_window_s, config.max_length) == ("\r", 1.0, 512)
    driver = SerialScanner.from_config(config, DeviceContext())
    assert driver.describe() == "serial scanner scan1 on /dev/ttyACM0 (9600 8N1, terminator cr)"


@pytest.mark.parametrize(
    "bad",
    [
        {"terminator": "\r\r"},
        {"gs_substitute": ""},
        {"gs_substitute": "\x1d"},
        {"baudrate": 0},
        {"max_length": 5},
    ],
)
def test_config_rejects_nonsense(bad):
    with pytest.raises(ValidationError):
        SerialScannerConfig(name="scan1", kind="serial_scanner", port="/dev/x", **bad)


def test_gs1_128_with_aim_id_and_gs_arrives_interpreted(tmp_path):
    async def body():
        async with serial_rig(tmp_path) as (sim, _driver, events, _health):
            code = "010950110153100031030012501726123110LOT42" + GS + "21SN0001"
            await sim.control("scan", {"code": code, "symbology": "]C1"})
            return await next_scan(events), sim.state()

    scan, state = run(body())
    assert scan == Scan(
        "scan1",
        "010950110153100031030012501726123110LOT42\x1d21SN0001",
        "]C1",
        gtin="09501101531000",
        fields={
            "01": "09501101531000",
            "3103": "001250",
            "17": "261231",
            "10": "LOT42",
            "21": "SN0001",
        },
        at=100.0,
    )
    assert state == {"plugged": True, "scans_sent": 1, "last": scan.text}


def test_raw_bytes_prefix_suffix_aim_and_crlf(tmp_path):
    async def body():
        settings = {"terminator": "\r\n", "prefix": "#", "suffix": "!"}
        async with serial_rig(tmp_path, **settings) as (sim, _driver, events, _health):
            await sim.control("garbage", {"hex": b"#]E09501101531000!\r\n".hex()})
            await sim.control("garbage", {"hex": b"#A-01-03!\r\n".hex()})
            # The simulator frames a scan the same way the config says.
            await sim.control("scan", {"code": "BADGE-0042"})
            return [await next_scan(events) for _ in range(3)]

    first, second, third = run(body())
    assert first == Scan("scan1", "9501101531000", "]E0", gtin="09501101531000", at=100.0)
    assert second == Scan("scan1", "A-01-03", at=100.0)
    assert third == Scan("scan1", "BADGE-0042", at=100.0)


def test_frame_split_across_writes_and_two_frames_in_one_write(tmp_path):
    async def body():
        async with serial_rig(tmp_path) as (sim, driver, events, _health):
            await sim.control("garbage", {"hex": b"]C100106141".hex()})
            await wait_until(lambda: driver._framer.pending == 11)
            await sim.control("garbage", {"hex": b"412345678908\r".hex()})
            await sim.control("garbage", {"hex": b"A-01-03\rA-01-04\r".hex()})
            return [await next_scan(events) for _ in range(3)]

    split, one, two = run(body())
    assert split.text == "00106141412345678908"
    assert split.sscc == "106141412345678908"
    assert (one.text, two.text) == ("A-01-03", "A-01-04")


def test_duplicates_inside_the_window_are_one_scan(tmp_path):
    clock = FakeClock(100.0)

    async def body():
        async with serial_rig(tmp_path, clock) as (sim, driver, events, _health):
            got = []
            await sim.control("scan", {"code": "A-01-03"})
            got.append(await next_scan(events))
            clock.now = 100.9  # inside the 1 s window: a double read
            await sim.control("scan", {"code": "A-01-03"})
            await sim.control("scan", {"code": "A-01-04"})
            got.append(await next_scan(events))
            clock.now = 101.0
            await sim.control("scan", {"code": "A-01-03"})  # A, B, A: a new scan
            got.append(await next_scan(events))
            clock.now = 102.1  # outside the window of the last reported A
            await sim.control("scan", {"code": "A-01-03"})
            got.append(await next_scan(events))
            return got, driver.duplicates, driver.scans

    got, duplicates, scans = run(body())
    assert [(s.text, s.at) for s in got] == [
        ("A-01-03", 100.0),
        ("A-01-04", 100.9),
        ("A-01-03", 101.0),
        ("A-01-03", 102.1),
    ]
    assert (duplicates, scans) == (1, 4)


def test_same_text_with_another_symbology_is_not_a_duplicate(tmp_path):
    async def body():
        async with serial_rig(tmp_path) as (sim, _driver, events, _health):
            await sim.control("scan", {"code": "9501101531000", "symbology": "]E0"})
            await sim.control("scan", {"code": "9501101531000", "symbology": "]C0"})
            return [await next_scan(events) for _ in range(2)]

    first, second = run(body())
    assert (first.symbology, first.gtin) == ("]E0", "09501101531000")
    assert (second.symbology, second.gtin) == ("]C0", None)


def test_over_long_line_is_discarded_and_the_next_read_survives(tmp_path, caplog):
    async def body():
        async with serial_rig(tmp_path, max_length=16) as (sim, driver, events, _health):
            await sim.control("garbage", {"hex": ("55" * 40)})
            await wait_until(lambda: driver.discarded == 1)
            await sim.control("garbage", {"hex": ("55" * 10) + "0d"})  # the end of that line
            await sim.control("scan", {"code": "A-01-03"})
            return await next_scan(events), driver.discarded

    scan, discarded = run(body())
    assert scan == Scan("scan1", "A-01-03", at=100.0)
    assert discarded == 1
    lines = [r.getMessage() for r in caplog.records if "discarded" in r.getMessage()]
    assert lines == [
        "device scan1: discarded a 40+ byte line without a terminator (limit 16): "
        "wrong scanner mode or baud?"
    ]


def test_bad_check_digit_and_garbage_bytes_are_error_scans(tmp_path):
    async def body():
        async with serial_rig(tmp_path) as (sim, driver, events, _health):
            await sim.control("scan", {"code": "9501101531001"})
            await sim.control("garbage", {"hex": "41ff420d"})
            return [await next_scan(events) for _ in range(2)], driver.bad_reads

    (bad_digit, bad_bytes), bad_reads = run(body())
    assert bad_digit.error == "bad GTIN check digit in 9501101531001: expected 0, got 1"
    assert bad_digit.gtin is None
    assert bad_bytes == Scan(
        "scan1", "A\\xffB", error="byte 0xff at position 1 is not valid text", at=100.0
    )
    assert bad_reads == 2


def test_unplug_replug_drops_the_partial_frame_and_reports_health(tmp_path):
    async def body():
        settings = {"reopen_min_s": 0.01, "reopen_max_s": 0.02}
        async with serial_rig(tmp_path, **settings) as (sim, driver, events, health):
            await sim.control("garbage", {"hex": b"PART".hex()})
            await wait_until(lambda: driver._framer.pending == 4)
            await sim.control("unplug", {})
            await wait_until(lambda: driver.health.status is HealthStatus.UNAVAILABLE)
            unplugged_state = sim.state()
            sent_while_unplugged = await sim.control("scan", {"code": "LOST"})
            await sim.control("replug", {})
            await wait_until(lambda: driver.health.status is HealthStatus.OK)
            await sim.control("scan", {"code": "NEXT"})
            scan = await next_scan(events)
            return (
                scan,
                health.statuses,
                driver.partial_dropped,
                unplugged_state,
                sent_while_unplugged,
            )

    scan, statuses, dropped, unplugged_state, sent = run(body())
    assert scan.text == "NEXT"  # never "PARTNEXT"
    assert statuses == [HealthStatus.OK, HealthStatus.UNAVAILABLE, HealthStatus.OK]
    assert dropped == 1
    assert unplugged_state == {"plugged": False, "scans_sent": 0, "last": None}
    assert sent == {"sent": False}


def test_missing_port_at_start_is_unavailable_then_recovers(tmp_path):
    async def body():
        settings = {"reopen_min_s": 0.01, "reopen_max_s": 0.02}
        async with serial_rig(tmp_path, **settings) as (sim, driver, events, _health):
            await sim.control("unplug", {})
            await wait_until(lambda: driver.health.status is HealthStatus.UNAVAILABLE)
            detail = driver.health.detail
            await sim.control("replug", {})
            await wait_until(lambda: driver.health.status is HealthStatus.OK)
            await sim.control("scan", {"code": "BACK"})
            return (await next_scan(events)).text, detail

    text, detail = run(body())
    assert text == "BACK"
    assert "scan1.tty" in detail


def test_line_framer_exact_chunks():
    framer = LineFramer("s", b"\r\n", 8)
    assert framer.feed(b"AB") == []
    assert framer.feed(b"C\r") == []
    assert framer.feed(b"\nDE\r\nF") == [b"ABC", b"DE"]
    assert framer.pending == 1
    assert framer.feed(b"123456789") == []  # F + 9 bytes: over the limit, skipped
    assert framer.feed(b"XYZ\r\nOK\r\n") == [b"OK"]
    assert framer.discarded == 1
    assert framer.reset() == b""


def test_line_framer_tolerates_crlf_on_a_cr_port():
    framer = LineFramer("s", b"\r", 64)
    assert framer.feed(b"A-01\r\nA-02\r\n") == [b"A-01", b"A-02"]
    assert framer.feed(b"\r\r") == []  # empty lines are not reads


@pytest.mark.parametrize(
    ("frame", "data", "symbology"),
    [
        ("]C1011234", "011234", "]C1"),
        ("]d2010950", "010950", "]d2"),
        ("]Q3X", "X", "]Q3"),
        ("]E09501101531000", "9501101531000", "]E0"),
        ("]Y9ABC", "]Y9ABC", None),  # system expansion: not stripped
        ("]", "]", None),
        ("]C", "]C", None),
        ("A]C1", "A]C1", None),
        ("PRE]C1X~", "X", "]C1"),
    ],
)
def test_unwrap(frame, data, symbology):
    result = unwrap(frame, prefix="PRE", suffix="~")
    assert (result.data, result.symbology) == (data, symbology)
    assert unwrap("]C1X", aim_ids=False).data == "]C1X"


@pytest.mark.parametrize(
    "noise",
    [b"\x00\x00", b"\xff\xfe\x80", b"\x00\xff\x07", b"\x7f\xc3"],
    ids=["power-up zeros", "high bytes", "mixed", "del and half a utf-8 char"],
)
def test_line_noise_before_a_read_is_dropped_and_the_read_kept(tmp_path, noise):
    async def body():
        async with serial_rig(tmp_path) as (sim, driver, events, health):
            # Noise glued to a read, then the same read split across two writes.
            await sim.control("garbage", {"hex": (noise + b"]C10010614141").hex()})
            await wait_until(lambda: driver._framer.pending > 0)
            await sim.control("garbage", {"hex": b"2345678908\r".hex()})
            await sim.control("garbage", {"hex": (noise + b"A-01-03\r").hex()})
            scans = [await next_scan(events) for _ in range(2)]
            return scans, driver.line_noise, driver.bad_reads, health.statuses

    (first, second), noisy, bad_reads, statuses = run(body())
    assert first.text == "00106141412345678908"
    assert first.sscc == "106141412345678908"
    assert first.error is None
    assert second == Scan("scan1", "A-01-03", at=100.0)
    assert (noisy, bad_reads) == (2, 0)
    assert statuses == [HealthStatus.OK]


def test_strip_line_noise_keeps_text_and_gives_up_on_pure_noise():
    assert strip_line_noise(b"\xc3\x89TE", "utf-8") == (b"", b"\xc3\x89TE")  # a real É
    assert strip_line_noise(b"\xff\xc3\x89TE", "utf-8") == (b"\xff", b"\xc3\x89TE")
    assert strip_line_noise(b"\x1d0112", "utf-8") == (b"", b"\x1d0112")  # GS is data
    assert strip_line_noise(b"\xff\xfe", "utf-8") == (b"", b"\xff\xfe")  # all noise: a bad read
    assert strip_line_noise(b"\xffA\xffB", "utf-8") == (b"\xff", b"A\xffB")
    assert strip_line_noise(b"\xe9t\xe9", "latin-1") == (b"", b"\xe9t\xe9")  # latin-1 text
