"""USB HID point-of-sale scales: the report decoder, the driver on the fake backend and the
simulator, and the hidraw backend on a sysfs tree and device node the test makes.

Report bytes are written out from the HID POS layout (hardware-next.md §3.1), not produced
by the driver's code.
"""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from scale_helpers import HealthLog, run

from devices import registry
from devices.backends import hidraw
from devices.backends.hidraw import FakeHidraw, HidrawDevice, list_hidraw, usage_pages
from devices.base import HealthStatus
from devices.context import DeviceContext
from devices.errors import DeviceProtocolError, DeviceUnavailable
from devices.scales.base import (
    Condition,
    Reading,
    ScaleCommandUnsupported,
    ScaleFault,
    ScaleNoReply,
    ScaleNotStable,
    ScaleOverload,
    ScaleUnderload,
)
from devices.scales.hid_pos import (
    HidPosConfig,
    HidPosScale,
    HidStatus,
    HidUnit,
    decode_report,
    known_scale,
    report_reading,
)
from devices.scales.hid_sim import RECORDED, HidPosSimulator

# -- the decoder -----------------------------------------------------------------------------

# (unit byte, exponent byte, raw weight bytes little-endian) -> grams
UNIT_CASES = {
    "mg 12345 mg": ("01", "00", "3930", 12.345),
    "g 1500 g": ("02", "00", "dc05", 1500.0),
    "kg 1.500 kg": ("03", "fd", "dc05", 1500.0),
    "carat 50.0 ct": ("04", "ff", "f401", 10.0),
    "tael 2.00 tael": ("05", "fe", "c800", 75.599),
    "grain 1000 gr": ("06", "00", "e803", 64.799),
    "pennyweight 10.0 dwt": ("07", "ff", "6400", 15.552),
    "metric ton 0.0015 t": ("08", "fc", "0f00", 1500.0),
    "avoir ton 0.0010 ton": ("09", "fc", "0a00", 907.185),
    "troy oz 10.0 ozt": ("0a", "ff", "6400", 311.035),
    "oz 28.3 oz": ("0b", "ff", "1b01", 802.291),
    "lb 3.31 lb": ("0c", "fe", "4b01", 1501.391),
}


@pytest.mark.parametrize("case", sorted(UNIT_CASES))
def test_every_unit_converted_to_grams(case):
    unit, exponent, weight, grams = UNIT_CASES[case]
    report = decode_report(bytes.fromhex(f"0304{unit}{exponent}{weight}"))
    assert report is not None
    assert report.status is HidStatus.STABLE
    assert report.unit is HidUnit(int(unit, 16))
    assert report.grams == pytest.approx(grams, abs=0.001)


def test_the_exponent_is_signed():
    # 1500 g with exponent 0 vs +1 (x10) vs -1 (x0.1): usbscale divided by 10 and broke grams.
    assert decode_report(bytes.fromhex("03040200dc05")).grams == 1500.0
    assert decode_report(bytes.fromhex("03040201dc05")).grams == 15000.0
    assert decode_report(bytes.fromhex("030402ffdc05")).grams == 150.0


# status byte -> (condition, stable) or the fault text
STATUS_CASES = {
    0x01: "fault",
    0x02: (Condition.WEIGHT, True),
    0x03: (Condition.WEIGHT, False),
    0x04: (Condition.WEIGHT, True),
    0x05: (Condition.UNDERLOAD, False),
    0x06: (Condition.OVERLOAD, False),
    0x07: "calibration",
    0x08: "re-zeroing",
}


@pytest.mark.parametrize("status", sorted(STATUS_CASES))
def test_every_status_maps_to_what_the_check_weigh_understands(status):
    report = decode_report(bytes([0x03, status, 0x0B, 0xFF, 0x1B, 0x01]))
    assert report is not None
    expected = STATUS_CASES[status]
    if isinstance(expected, str):
        with pytest.raises(ScaleFault, match=expected):
            report_reading(report)
        return
    reading = report_reading(report)
    assert (reading.condition, reading.stable) == expected


def test_weights_and_zero():
    assert report_reading(decode_report(bytes.fromhex("03020bff0000"))) == Reading(
        Condition.WEIGHT, 0.0, stable=True
    )
    moving = report_reading(decode_report(bytes.fromhex("03030bff7800")))
    assert (moving.grams, moving.stable) == (pytest.approx(340.194, abs=0.001), False)
    # Under zero: the field is a magnitude, the status gives the sign.
    assert decode_report(bytes.fromhex("03050bff0a00")).grams == pytest.approx(-28.35, abs=0.01)


def test_status_report_id_is_read_too_and_other_reports_are_not_scale_reports():
    assert decode_report(bytes.fromhex("04040200dc05")).grams == 1500.0
    assert decode_report(bytes.fromhex("02020000")) is None
    assert decode_report(b"") is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("030402", "3 bytes, a scale report has 6"),
        ("03000200dc05", r"byte 1 \(status\) 00h is not a HID POS scale status"),
        ("03090200dc05", r"byte 1 \(status\) 09h"),
        ("03040d00dc05", r"byte 2 \(unit\) 0dh is not a HID POS weight unit"),
    ],
)
def test_malformed_scale_reports_are_named(data, message):
    with pytest.raises(DeviceProtocolError, match=message):
        decode_report(bytes.fromhex(data))


def test_longer_reports_decode_their_first_six_bytes():
    assert decode_report(bytes.fromhex("03040200dc05000000")).grams == 1500.0


def test_known_ids():
    assert known_scale(0x0922, 0x8009).name.startswith("DYMO S")
    assert known_scale(0x0B67, 0x555E).name.startswith("Fairbanks")
    assert known_scale(0x1234, 0x5678) is None


@pytest.mark.parametrize("device", ["auto", "0922:8009", "0B67:555E", "/dev/hidraw0"])
def test_config_takes_a_device_in_each_form(device):
    assert HidPosConfig(name="s", kind="hid_pos", device=device).device == device


@pytest.mark.parametrize("device", ["hidraw0", "0922-8009", "922:8009", "Dymo", ""])
def test_config_refuses_a_device_in_no_form(device):
    with pytest.raises(ValidationError, match="is not a HID device"):
        HidPosConfig(name="s", kind="hid_pos", device=device)


def test_registry_knows_the_kind():
    module = registry.module_for("hid_pos")
    config = module.CONFIG(name="pack-scale", kind="hid_pos", device="0922:8009")
    assert config.claims() == ["hid:0922:8009"]
    assert module.DRIVER is HidPosScale


# -- the driver on the fake backend ------------------------------------------------------------


def make_driver(name: str = "hidscale", **overrides) -> tuple[FakeHidraw, HidPosScale]:
    fake = FakeHidraw.register(f"fake:{name}")
    fields = {"name": name, "kind": "hid_pos", "device": f"fake:{name}"}
    fields.update({"reconnect_min_s": 0.05, "reconnect_max_s": 0.2, **overrides})
    config = HidPosConfig(**fields)
    return fake, HidPosScale.from_config(config, DeviceContext())


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_the_first_report_after_open_is_skipped_then_a_recorded_parcel_settles():
    async def scenario():
        fake, scale = make_driver()
        async with scale:
            fake.feed(bytes.fromhex("03040200e803"))  # stale: 1000 g from before
            fake.feed(*RECORDED["parcel_oz"])
            weight = await scale.read_stable(2.0)
            return weight, scale.health.status

    weight, status = run(scenario())
    assert weight.grams == pytest.approx(802.291, abs=0.001)
    assert (weight.stable, weight.net) == (True, False)
    assert status is HealthStatus.OK


@pytest.mark.parametrize(
    ("sequence", "error", "health"),
    [
        ("over_limit", ScaleOverload, "overload"),
        ("under_zero", ScaleUnderload, "underload"),
        ("fault", ScaleFault, "the scale reports a fault"),
        ("needs_calibration", ScaleFault, "the scale needs calibration"),
        ("needs_rezero", ScaleFault, "the scale needs re-zeroing"),
    ],
)
def test_faults_raise_and_set_health(sequence, error, health):
    async def scenario():
        fake, scale = make_driver(skip_first_report=False)
        async with scale:
            fake.feed(*RECORDED[sequence])
            with pytest.raises(error):
                await scale.read_stable(1.0)
            detail = scale.health.detail
            status = scale.health.status
            fake.feed(*RECORDED["empty_oz"])
            await settle()
            return status, detail, await scale.read(1.0), scale.health.status

    status, detail, after, healed = run(scenario())
    assert status is HealthStatus.FAULT
    assert health in detail
    assert (after.grams, after.stable) == (0.0, True)
    assert healed is HealthStatus.OK


def test_in_motion_only_is_not_stable_and_keeps_the_last_weight():
    async def scenario():
        fake, scale = make_driver(skip_first_report=False)
        async with scale:
            fake.feed(bytes.fromhex("03030bff7800"))
            with pytest.raises(ScaleNotStable) as caught:
                await scale.read_stable(0.3)
            return caught.value.last

    last = run(scenario())
    assert last is not None and last.stable is False
    assert last.grams == pytest.approx(340.194, abs=0.001)


def test_bad_reports_are_counted_and_skipped():
    async def scenario():
        fake, scale = make_driver(skip_first_report=False)
        async with scale:
            fake.feed(bytes.fromhex("03000200dc05"), bytes.fromhex("0102"), RECORDED["fault"][0])
            fake.feed(bytes.fromhex("03040200dc05"))
            weight = await scale.read_stable(1.0)
            return weight, scale.bad_reports

    weight, bad = run(scenario())
    assert weight.grams == 1500.0
    assert bad == 1  # the report id 01h is another report of the device, not a bad one


def test_no_report_is_no_reply():
    async def scenario():
        _, scale = make_driver()
        async with scale:
            with pytest.raises(ScaleNoReply, match="no scale report within"):
                await scale.read(0.1)

    run(scenario())


def test_tare_and_zero_are_the_scales_own_keys():
    async def scenario():
        _, scale = make_driver()
        async with scale:
            for command in (scale.tare, scale.zero, scale.clear_tare):
                with pytest.raises(ScaleCommandUnsupported):
                    await command()

    run(scenario())


def test_events_yield_each_change_once():
    async def scenario():
        fake, scale = make_driver(skip_first_report=False)
        seen = []
        async with scale:
            events = scale.events()

            async def collect():
                async for weight in events:
                    seen.append((weight.grams, weight.stable))
                    if len(seen) == 4:
                        return

            task = asyncio.create_task(collect())
            await settle()
            parcel = RECORDED["parcel_oz"]
            fake.feed(parcel[0], parcel[0], parcel[1], parcel[2], parcel[3], parcel[3])
            fake.feed(*RECORDED["over_limit"], parcel[3])
            await asyncio.wait_for(task, 2.0)
        return seen

    seen = run(scenario())
    assert [stable for _, stable in seen] == [True, False, False, True]
    assert seen[0][0] == 0.0 and seen[3][0] == pytest.approx(802.291, abs=0.001)


def test_unplug_makes_it_unavailable_and_replug_brings_it_back():
    async def scenario():
        fake, scale = make_driver(skip_first_report=False)
        async with scale:
            health = HealthLog(scale)
            fake.feed(bytes.fromhex("03040200dc05"))
            before = await scale.read(1.0)
            fake.unplug()
            await asyncio.wait_for(health.wait_for("unavailable"), 2.0)
            with pytest.raises(DeviceUnavailable):
                await scale.read(0.2)
            fake.replug()
            await asyncio.wait_for(health.wait_for("ok"), 2.0)
            fake.feed(bytes.fromhex("030402007d00"))
            after = await scale.read(1.0)
            return before, after, health.seen, fake.opens

    before, after, seen, opens = run(scenario())
    assert (before.grams, after.grams) == (1500.0, 125.0)
    # Unavailable (removed, then each failed reopen says why), then ok once reopened.
    assert set(seen[:-1]) == {"unavailable"} and seen[-1] == "ok"
    assert opens == 2


def test_absent_at_start_then_plugged_in():
    async def scenario():
        fake, scale = make_driver(skip_first_report=False)
        fake.unplug()
        async with scale:
            health = HealthLog(scale)
            first = scale.health.status
            fake.replug()
            await asyncio.wait_for(health.wait_for("ok"), 2.0)
            fake.feed(bytes.fromhex("03040200dc05"))
            return first, await scale.read(1.0)

    first, weight = run(scenario())
    assert first is HealthStatus.UNAVAILABLE
    assert weight.grams == 1500.0


# -- the simulator -----------------------------------------------------------------------------


async def sim_rig(name: str = "simscale"):
    config = HidPosConfig(name=name, kind="hid_pos", reconnect_min_s=0.05)
    sim = HidPosSimulator(config, DeviceContext(simulate=True), report_interval_s=0.05)
    await sim.start()
    scale = HidPosScale.from_config(sim.patched_config(), DeviceContext())
    await scale.open()
    return sim, scale


@pytest.mark.parametrize("unit", ["g", "kg", "oz", "lb", "grain", "troy_oz"])
def test_simulator_puts_weight_on_in_every_unit(unit):
    async def scenario():
        sim, scale = await sim_rig()
        try:
            await sim.control("set", {"grams": 1250.0, "unit": unit})
            for _ in range(50):
                weight = await scale.read_stable(2.0)
                if weight.grams:
                    return weight
            return weight
        finally:
            await scale.close()
            await sim.stop()

    weight = run(scenario())
    # Within one step of the unit's resolution (0.1 oz is 2.8 g, 0.01 lb 4.5 g).
    assert weight.grams == pytest.approx(1250.0, abs=4.6)
    assert weight.stable


def test_simulator_moving_settles_and_unplug_replug():
    async def scenario():
        sim, scale = await sim_rig()
        health = HealthLog(scale)
        try:
            await sim.control("set", {"grams": 800.0, "mode": "moving", "settle_after": 3})
            weight = await scale.read_stable(3.0)
            await sim.control("unplug", {})
            await asyncio.wait_for(health.wait_for("unavailable"), 3.0)
            state = sim.state()
            await sim.control("replug", {})
            await asyncio.wait_for(health.wait_for("ok"), 3.0)
            await sim.control("set", {"grams": 900.0})
            again = await scale.read_stable(3.0)
            while again.grams != 900.0:
                again = await scale.read_stable(3.0)
            return weight, state, again
        finally:
            await scale.close()
            await sim.stop()

    weight, state, again = run(scenario())
    assert (weight.grams, weight.stable) == (800.0, True)
    assert state["plugged"] is False
    assert again.grams == 900.0


def test_simulator_refuses_bad_control():
    async def scenario():
        sim, scale = await sim_rig()
        try:
            for action, args in (
                ("set", {"mode": "flying"}),
                ("set", {"unit": "stone"}),
                ("play", {"sequence": "nothing"}),
                ("dance", {}),
            ):
                with pytest.raises(ValueError):
                    await sim.control(action, args)
        finally:
            await scale.close()
            await sim.stop()

    run(scenario())


# -- the hidraw backend on a sysfs tree the test makes ---------------------------------------

SCALE_DESCRIPTOR = bytes.fromhex("058d0920a101") + bytes.fromhex("c0")
KEYBOARD_DESCRIPTOR = bytes.fromhex("05010906a101c0")


def make_node(sysfs: Path, dev: Path, name: str, hid_id: str, descriptor: bytes) -> int:
    """A hidraw entry in ``sysfs`` and its node in ``dev`` (a FIFO: one write, one report).

    Returns a write end of the FIFO, opened first so the node is not at end of file.
    """
    device = sysfs / name / "device"
    device.mkdir(parents=True)
    (device / "uevent").write_text(f"DRIVER=hid-generic\nHID_ID={hid_id}\nHID_NAME=Test {name}\n")
    (device / "report_descriptor").write_bytes(descriptor)
    node = dev / name
    os.mkfifo(node)
    return os.open(node, os.O_RDWR | os.O_NONBLOCK)


def test_usage_pages_of_descriptors():
    assert usage_pages(SCALE_DESCRIPTOR) == {0x8D}
    assert usage_pages(KEYBOARD_DESCRIPTOR) == {0x01}
    assert usage_pages(bytes.fromhex("068d00")) == {0x8D}  # a 2-byte usage page item
    assert usage_pages(bytes.fromhex("fe0201aabb058d")) == {0x8D}  # after a long item


def test_list_hidraw_reads_ids_and_pages(tmp_path):
    sysfs, dev = tmp_path / "sys", tmp_path / "dev"
    dev.mkdir()
    make_node(sysfs, dev, "hidraw0", "0003:0000046D:0000C31C", KEYBOARD_DESCRIPTOR)
    make_node(sysfs, dev, "hidraw1", "0003:00000922:00008009", SCALE_DESCRIPTOR)
    found = list_hidraw(sysfs, dev)
    assert [(i.node.name, i.vid_pid, i.scale_page) for i in found] == [
        ("hidraw0", "046d:c31c", False),
        ("hidraw1", "0922:8009", True),
    ]


def test_hidraw_by_vid_pid_reads_reports_and_follows_a_renumbering_replug(tmp_path):
    sysfs, dev = tmp_path / "sys", tmp_path / "dev"
    dev.mkdir()
    writer = make_node(sysfs, dev, "hidraw3", "0003:00000922:00008009", SCALE_DESCRIPTOR)

    async def scenario():
        backend = HidrawDevice("0922:8009", sysfs=sysfs, dev_dir=dev)
        await backend.open()
        os.write(writer, bytes.fromhex("03040200dc05"))
        first = await asyncio.wait_for(backend.read(), 2.0)
        os.write(writer, bytes.fromhex("030402007d00"))
        second = await asyncio.wait_for(backend.read(), 2.0)
        node_before = backend.node
        # Unplug: the node goes away (the FIFO's last writer closes: end of file).
        os.close(writer)
        with pytest.raises(DeviceUnavailable, match="device removed"):
            await asyncio.wait_for(backend.read(), 2.0)
        await backend.close()
        (dev / "hidraw3").unlink()
        for path in sorted((sysfs / "hidraw3").rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (sysfs / "hidraw3").rmdir()
        with pytest.raises(DeviceUnavailable, match="no HID device 0922:8009 plugged in"):
            await backend.open()
        new_writer = make_node(sysfs, dev, "hidraw4", "0003:00000922:00008009", SCALE_DESCRIPTOR)
        await backend.open()
        os.write(new_writer, bytes.fromhex("03040200e803"))
        third = await asyncio.wait_for(backend.read(), 2.0)
        await backend.close()
        os.close(new_writer)
        return first, second, third, node_before, backend.node

    first, second, third, before, after = run(scenario())
    assert (first, second, third) == (
        bytes.fromhex("03040200dc05"),
        bytes.fromhex("030402007d00"),
        bytes.fromhex("03040200e803"),
    )
    assert (Path(before).name, Path(after).name) == ("hidraw3", "hidraw4")


def test_hidraw_auto_finds_the_scale_usage_page_or_a_known_id(tmp_path, monkeypatch):
    sysfs, dev = tmp_path / "sys", tmp_path / "dev"
    dev.mkdir()
    make_node(sysfs, dev, "hidraw0", "0003:0000046D:0000C31C", KEYBOARD_DESCRIPTOR)
    # A Fairbanks whose descriptor the test leaves without the page: found by its ids.
    make_node(sysfs, dev, "hidraw1", "0003:00000B67:0000555E", KEYBOARD_DESCRIPTOR)
    monkeypatch.setattr(hidraw, "SYSFS_HIDRAW", sysfs)
    monkeypatch.setattr(hidraw, "DEV_DIR", dev)
    from devices.scales.hid_pos import KNOWN_IDS

    assert HidrawDevice("auto", vid_pids=KNOWN_IDS).find().name == "hidraw1"
    with pytest.raises(DeviceUnavailable, match="no USB HID scale plugged in"):
        HidrawDevice("auto").find()


def test_hidraw_errors_say_what_to_do(tmp_path, monkeypatch):
    async def scenario():
        missing = HidrawDevice(str(tmp_path / "hidraw9"))
        with pytest.raises(DeviceUnavailable, match="no such device"):
            await missing.open()

        real_open = os.open

        def denied(path, *args, **kwargs):
            if str(path) == "/dev/hidraw0":
                raise PermissionError(errno.EACCES, "Permission denied")
            return real_open(path, *args, **kwargs)

        # An OS fact: the node exists but the service user may not read it (root may).
        monkeypatch.setattr(hidraw.os, "open", denied)
        with pytest.raises(DeviceUnavailable, match=r"60-zone-agent-hid-scales\.rules"):
            await HidrawDevice("/dev/hidraw0").open()

    run(scenario())
