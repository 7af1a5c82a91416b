"""The HID keyboard-wedge scanner: key translation and the driver on the fake backend."""

from __future__ import annotations

import importlib.util

import pytest
from scanner_helpers import FakeClock, HealthLog, next_scan, run, wait_until

from devices import registry
from devices.backends.evdev import EvdevKeyboard, FakeKeyboard, KeyEvent, open_keyboard
from devices.base import HealthStatus
from devices.context import DeviceContext
from devices.events import Scan
from devices.scanners.hid_scanner import (
    US_LAYOUT,
    HidScanner,
    HidScannerConfig,
    HidScannerSimulator,
    KeyLine,
    KeyLineAssembler,
    keys_for_text,
)

ENTER, LSHIFT, RSHIFT, LCTRL, LALT, CAPS = 28, 42, 54, 29, 56, 58
A, B, ONE, MINUS, RBRACE, SLASH = 30, 48, 2, 12, 27, 53
KP0, KP2, KP9 = 82, 80, 73


def tap(code: int) -> list[KeyEvent]:
    return [KeyEvent(code, 1), KeyEvent(code, 0)]


def assembler(max_length: int = 64) -> KeyLineAssembler:
    return KeyLineAssembler("hid1", US_LAYOUT, (ENTER, 96), max_length)


def test_keys_with_shift_caps_and_enter():
    events = [
        *tap(A),
        KeyEvent(LSHIFT, 1),
        *tap(A),
        *tap(ONE),
        *tap(MINUS),
        *tap(SLASH),
        KeyEvent(LSHIFT, 0),
        *tap(A),
        KeyEvent(RSHIFT, 1),
        *tap(B),
        KeyEvent(RSHIFT, 0),
        *tap(CAPS),
        *tap(A),
        KeyEvent(LSHIFT, 1),
        *tap(A),  # shift undoes caps lock for letters
        *tap(ONE),  # caps lock does not shift digits
        KeyEvent(LSHIFT, 0),
        *tap(ONE),
        *tap(ENTER),
    ]
    assert assembler().feed(events) == [KeyLine("aA!_?aBAa!1")]


def test_gs_as_ctrl_bracket_and_as_alt_029():
    events = [
        *tap(A),
        KeyEvent(LCTRL, 1),
        *tap(RBRACE),
        KeyEvent(LCTRL, 0),
        *tap(B),
        KeyEvent(LALT, 1),
        *tap(KP0),
        *tap(KP2),
        *tap(KP9),
        KeyEvent(LALT, 0),
        *tap(A),
        *tap(96),  # keypad Enter also ends the line
    ]
    assert assembler().feed(events) == [KeyLine("a\x1db\x1da")]


def test_unmapped_keys_are_reported_and_autorepeat_ignored():
    events = [*tap(A), *tap(59), KeyEvent(A, 2), *tap(ENTER), *tap(ENTER)]
    assert assembler().feed(events) == [KeyLine("a\ufffd", (59,))]


def test_over_long_line_is_discarded_up_to_enter():
    lines = assembler(max_length=3)
    assert lines.feed([*tap(A)] * 5 + tap(ENTER) + tap(B) + tap(ENTER)) == [KeyLine("b")]
    assert lines.discarded == 1


def test_keys_for_text_round_trips_every_printable_ascii_and_gs():
    text = "".join(chr(c) for c in range(0x20, 0x7F)) + "\x1d"
    assert assembler(200).feed([*keys_for_text(text, US_LAYOUT), *tap(ENTER)]) == [KeyLine(text)]
    with pytest.raises(ValueError, match="cannot be typed"):
        keys_for_text("é", US_LAYOUT)


def test_registry_config_and_backend_choice():
    module = registry.module_for("hid_scanner")
    assert module.CONFIG is HidScannerConfig
    assert module.DRIVER is HidScanner
    assert module.SIMULATOR is HidScannerSimulator
    config = HidScannerConfig(name="hid1", kind="hid_scanner", device="Honeywell")
    assert (config.grab, config.layout, config.terminator) == (True, "us", "enter")
    assert config.claims() == ["input:Honeywell"]
    assert isinstance(open_keyboard("/dev/input/event3"), EvdevKeyboard)


def test_real_backend_without_evdev_is_unavailable_with_the_install_hint():
    # evdev is an optional extra; where it is missing the driver reports why and retries.
    if importlib.util.find_spec("evdev") is not None:
        pytest.skip("evdev is installed here")

    async def body():
        config = HidScannerConfig(name="hid1", kind="hid_scanner", device="Honeywell")
        driver = HidScanner.from_config(config, DeviceContext())
        async with driver:
            return driver.health

    health = run(body())
    assert health.status is HealthStatus.UNAVAILABLE
    assert health.detail == "python-evdev is not installed: pip install 'zone-agent[hid]'"


def _rig(**settings):
    config = HidScannerConfig(name="hid1", kind="hid_scanner", device="unused", **settings)
    return HidScannerSimulator(config, DeviceContext())


def test_driver_reads_gs1_through_the_simulator_with_dedupe():
    clock = FakeClock()

    async def body():
        sim = _rig(reopen_min_s=0.01, reopen_max_s=0.02)
        await sim.start()
        patched = sim.patched_config()
        driver = HidScanner(patched, open_keyboard(patched.device), clock=clock)
        async with driver:
            events = driver.events()
            code = "010950110153100010LOT42\x1d21SN0001"
            await sim.control("scan", {"code": code, "symbology": "]C1"})
            first = await next_scan(events)
            clock.now += 0.5
            await sim.control("scan", {"code": code, "symbology": "]C1"})  # double read
            await sim.control("scan", {"code": "BADGE-0042"})
            second = await next_scan(events)
            grabbed = sim.keyboard.grabbed
            state = sim.state()
        await sim.stop()
        return first, second, driver.duplicates, grabbed, state

    first, second, duplicates, grabbed, state = run(body())
    assert first == Scan(
        "hid1",
        "010950110153100010LOT42\x1d21SN0001",
        "]C1",
        gtin="09501101531000",
        fields={"01": "09501101531000", "10": "LOT42", "21": "SN0001"},
        at=100.0,
    )
    assert second == Scan("hid1", "BADGE-0042", at=100.5)
    assert duplicates == 1
    assert grabbed is True
    assert state == {"plugged": True, "scans_sent": 3, "last": "BADGE-0042"}


def test_gs_substitute_typed_by_the_scanner_is_read_as_gs():
    async def body():
        config = HidScannerConfig(
            name="hid1", kind="hid_scanner", device="unused", gs_substitute="^", prefix="*"
        )
        sim = HidScannerSimulator(config, DeviceContext())
        await sim.start()
        driver = HidScanner(sim.patched_config(), open_keyboard(sim.path), clock=FakeClock())
        async with driver:
            events = driver.events()
            await sim.control("scan", {"code": "010950110153100010L1\x1d3712"})
            scan = await next_scan(events)
        await sim.stop()
        return scan

    scan = run(body())
    assert scan.text == "010950110153100010L1\x1d3712"
    assert scan.fields == {"01": "09501101531000", "10": "L1", "37": "12"}
    assert scan.error is None


def test_unmapped_key_makes_an_error_scan_and_unplug_replug_recovers():
    async def body():
        fake = FakeKeyboard("fake:direct")
        config = HidScannerConfig(
            name="hid1", kind="hid_scanner", device="fake:direct", reopen_min_s=0.01
        )
        driver = HidScanner(config, fake, clock=FakeClock())
        health = HealthLog()
        driver.add_health_listener(health)
        async with driver:
            events = driver.events()
            fake.feed([*tap(A), *tap(59), *tap(ENTER)])  # 59 is F1
            bad = await next_scan(events)
            fake.feed(tap(B))  # half a read, then the cable goes
            await wait_until(lambda: driver._lines.pending == 1)
            fake.unplug()
            await wait_until(lambda: driver.health.status is HealthStatus.UNAVAILABLE)
            fake.replug()
            await wait_until(lambda: driver.health.status is HealthStatus.OK)
            fake.feed([*tap(A), *tap(ENTER)])
            after = await next_scan(events)
        return bad, after, health.statuses, driver.partial_dropped, fake.grabbed

    bad, after, statuses, dropped, grabbed = run(body())
    assert bad.error == "key code(s) 59 have no character in layout 'us'"
    assert bad.gtin is None
    assert after.text == "a"  # never "ba"
    assert statuses == [HealthStatus.OK, HealthStatus.UNAVAILABLE, HealthStatus.OK]
    assert dropped == 1
    assert grabbed is False  # released on close
