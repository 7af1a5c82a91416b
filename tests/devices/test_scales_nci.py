"""NCI / Weigh-Tronix driver against its byte-exact simulator on a pty."""

from __future__ import annotations

import pytest
from scale_helpers import rig, run, simulator

from agent.errors import DeviceProtocolError
from devices.backends.serial import SerialPort
from devices.base import HealthStatus
from devices.scales.base import (
    ScaleCommandRefused,
    ScaleCommandUnsupported,
    ScaleErrorReply,
    ScaleFault,
    ScaleNoReply,
    ScaleNotStable,
    ScaleOverload,
    ScaleUnderload,
)
from devices.scales.nci import parse_status, parse_weight_text


def test_simulator_speaks_exact_bytes(tmp_path):
    async def scenario():
        async with simulator("nci", tmp_path) as sim:
            port = SerialPort(str(sim.link))
            await port.open()
            replies = []
            try:
                for settings, command in (
                    ({"grams": 1250.0}, b"W\r"),
                    ({}, b"S\r"),
                    ({"mode": "moving"}, b"W\r"),
                    ({"mode": "overload"}, b"W\r"),
                    ({"mode": "underload"}, b"S\r"),
                    ({"mode": "stable", "grams": 30.0}, b"Z\r"),
                    ({}, b"H\r"),
                    ({"grams": 500.0}, b"T\r"),
                    ({"grams": 1500.0}, b"W\r"),
                ):
                    await sim.control("set", settings)
                    await port.write(command)
                    replies.append(await port.read_until(b"\x03", 2.0))
            finally:
                await port.close()
            return replies

    assert run(scenario()) == [
        b"\n0001.25kg\r\n00\r\x03",
        b"\n00\r\x03",
        b"\n10\r\x03",
        b"\n02\r\x03",
        b"\n01\r\x03",
        b"\n20\r\x03",
        b"\n?\r\x03",
        b"\n2p4\r\x03",
        b"\n0001.00kg\r\n0p4\r\x03",
    ]


def test_status_and_weight_parsing():
    assert parse_status(b"00") == parse_status(b"S00")
    status = parse_status(b"3p4")
    assert status is not None
    assert (status.motion, status.at_zero, status.under, status.over, status.net) == (
        True,
        True,
        False,
        False,
        True,
    )
    assert parse_status(b"?") is None
    assert parse_status(b"0p") is None  # byte 3 announced but missing
    assert parse_status(b"\xb0\xb0") is not None  # parity bits masked
    assert parse_status(b"40").errors == ("RAM error",)
    assert parse_weight_text(b"0001.25kg") == 1250.0
    assert parse_weight_text(b"0002.50lb") == 1133.981
    assert parse_weight_text(b"01250 g") == 1250.0
    assert parse_weight_text(b"02lb 04.0oz") == 1020.583
    assert parse_weight_text(b"12") is None


def test_stable_reading(tmp_path):
    async def scenario():
        async with rig("nci", tmp_path) as (sim, scale):
            await sim.control("set", {"grams": 1250.0})
            return await scale.read(), bytes(sim.received)

    weight, sent = run(scenario())
    assert (weight.grams, weight.stable, weight.net) == (1250.0, True, False)
    assert sent == b"W\r"


@pytest.mark.parametrize(("unit", "expected"), [("lb", 907.185), ("g", 907.0), ("oz", 907.185)])
def test_units(tmp_path, unit, expected):
    async def scenario():
        async with rig("nci", tmp_path) as (sim, scale):
            await sim.control("set", {"grams": 907.18474, "unit": unit})
            return await scale.read()

    # oz prints one decimal: 32.0 oz is 907.185 g.
    assert run(scenario()).grams == expected


def test_moving_then_stable(tmp_path):
    async def scenario():
        async with rig("nci", tmp_path) as (sim, scale):
            await sim.control("set", {"grams": 600.0, "mode": "moving", "settle_after": 1})
            weight = await scale.read_stable(timeout=5.0)
            return weight, bytes(sim.received)

    weight, sent = run(scenario())
    assert (weight.grams, weight.stable) == (600.0, True)
    assert sent == b"W\rW\r"


def test_overload_underload_and_hardware_errors(tmp_path):
    async def scenario():
        async with rig("nci", tmp_path) as (sim, scale):
            await sim.control("set", {"mode": "overload"})
            with pytest.raises(ScaleOverload):
                await scale.read()
            await sim.control("set", {"mode": "underload"})
            with pytest.raises(ScaleUnderload):
                await scale.read_stable()
            await sim.control("set", {"mode": "stable"})
            await sim.control("inject", {"data": "\n04\r\x03"})  # byte 2 bit 2: ROM error
            with pytest.raises(ScaleFault, match="ROM error"):
                await scale.read()
            health = scale.health
            await scale.read()
            return health, scale.health.status

    health, after = run(scenario())
    assert health.status is HealthStatus.FAULT
    assert "ROM error" in health.detail
    assert after is HealthStatus.OK


def test_question_mark_reply_and_garbage(tmp_path):
    async def scenario():
        async with rig("nci", tmp_path) as (sim, scale):
            await sim.control("inject", {"data": "\n?\r\x03"})
            with pytest.raises(ScaleErrorReply):
                await scale.read()
            await sim.control("set", {"mode": "garbage"})
            with pytest.raises(DeviceProtocolError):
                await scale.read(timeout=0.15)
            bad = scale.bad_frames
            await sim.control("set", {"mode": "stable", "grams": 50.0})
            await sim.control("inject", {"data": "\xfe\xfe\x03", "keep_reply": True})
            weight = await scale.read()
            return bad, weight, scale.bad_frames

    bad, weight, bad_after = run(scenario())
    assert bad == 1
    assert weight.grams == 50.0
    assert bad_after == 2


def test_reply_split_across_writes(tmp_path):
    async def scenario():
        async with rig("nci", tmp_path) as (sim, scale):
            await sim.control("set", {"grams": 2500.0, "split_s": 0.05})
            return await scale.read()

    assert run(scenario()).grams == 2500.0


def test_silent(tmp_path):
    async def scenario():
        async with rig("nci", tmp_path) as (sim, scale):
            await sim.control("set", {"mode": "silent"})
            with pytest.raises(ScaleNoReply):
                await scale.read_stable(timeout=0.15)
            return scale.health.status

    assert run(scenario()) is HealthStatus.UNAVAILABLE


def test_zero(tmp_path):
    async def scenario():
        async with rig("nci", tmp_path) as (sim, scale):
            await sim.control("set", {"grams": 60.0})
            await scale.zero()
            zeroed = sim.state()["grams"]
            await sim.control("set", {"grams": 1250.0})
            with pytest.raises(ScaleCommandRefused, match="zero range"):
                await scale.zero()
            await sim.control("set", {"mode": "moving"})
            with pytest.raises(ScaleNotStable):
                await scale.zero()
            return zeroed, bytes(sim.received)

    zeroed, sent = run(scenario())
    assert zeroed == 0.0
    # A zero that leaves the scale off zero is checked once more with S.
    assert sent == b"Z\rZ\rS\rZ\r"


def test_tare_needs_supports_tare(tmp_path):
    async def scenario():
        async with rig("nci", tmp_path) as (sim, scale):
            with pytest.raises(ScaleCommandUnsupported, match="supports_tare"):
                await scale.tare()
            return bytes(sim.received)

    assert run(scenario()) == b""


def test_tare_when_supported(tmp_path):
    async def scenario():
        async with rig("nci", tmp_path, supports_tare=True) as (sim, scale):
            await sim.control("set", {"grams": 200.0})
            await scale.tare()
            await sim.control("set", {"grams": 700.0})
            net = await scale.read()
            with pytest.raises(ScaleCommandUnsupported):
                await scale.clear_tare()
            return net

    net = run(scenario())
    assert (net.grams, net.net) == (500.0, True)
