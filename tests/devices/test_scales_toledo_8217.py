"""Mettler-Toledo 8217 driver against its byte-exact simulator on a pty."""

from __future__ import annotations

import pytest
from scale_helpers import rig, run, simulator

from agent.errors import DeviceProtocolError
from devices.backends.serial import SerialPort, SerialSettings
from devices.base import HealthStatus
from devices.scales.base import (
    ScaleCommandRefused,
    ScaleNoReply,
    ScaleNotStable,
    ScaleOverload,
    ScaleUnderload,
)
from devices.scales.toledo_8217 import Toledo8217Config


async def _exchange(port, command, size):
    await port.write(command)
    data = b""
    while len(data) < size:
        chunk = await port.read_available(2.0)
        assert chunk, f"no reply to {command!r} after {data!r}"
        data += chunk
    return data


def test_config_defaults_to_7e1():
    config = Toledo8217Config(name="s", kind="toledo_8217", port="/dev/ttyUSB0")
    assert config.serial_settings() == SerialSettings(9600, 7, "E", 1)
    assert config.claims() == ["serial:/dev/ttyUSB0"]


def test_simulator_speaks_exact_bytes(tmp_path):
    async def scenario():
        async with simulator("toledo_8217", tmp_path) as sim:
            port = SerialPort(str(sim.link), SerialSettings(9600, 7, "E", 1))
            await port.open()
            try:
                await sim.control("set", {"grams": 1250.0})
                replies = [await _exchange(port, b"W", 8)]
                await sim.control("set", {"mode": "moving"})
                replies.append(await _exchange(port, b"W", 4))
                await sim.control("set", {"mode": "overload"})
                replies.append(await _exchange(port, b"W", 4))
                await sim.control("set", {"mode": "stable", "grams": 50.0})
                replies.append(await _exchange(port, b"Z", 4))
                replies.append(await _exchange(port, b"Ehello", 8))
                await port.write(b"F")
                await sim.control("set", {"grams": 500.0})
                replies.append(await _exchange(port, b"T\r", 4))
                await sim.control("set", {"grams": 1750.0})
                replies.append(await _exchange(port, b"W", 9))
            finally:
                await port.close()
            return replies, sim.echo

    replies, echo = run(scenario())
    assert replies == [
        b"\x0201.250\r",
        b"\x02?A\r",  # 0x40 | motion
        b"\x02?B\r",  # 0x40 | over capacity
        b"\x02?P\r",  # 0x40 | centre of zero
        b"\x02E\rhello",
        b"\x02?p\r",  # 0x40 | centre of zero | net
        b"\x0201.250N\r",
    ]
    assert echo is False


def test_stable_reading_kg(tmp_path):
    async def scenario():
        async with rig("toledo_8217", tmp_path) as (sim, scale):
            await sim.control("set", {"grams": 1250.0})
            return await scale.read(), bytes(sim.received)

    weight, sent = run(scenario())
    assert (weight.grams, weight.stable, weight.net) == (1250.0, True, False)
    assert sent == b"W"


def test_stable_reading_lb(tmp_path):
    async def scenario():
        async with rig("toledo_8217", tmp_path, unit="lb") as (sim, scale):
            await sim.control("set", {"grams": 907.18474})
            return await scale.read()

    assert run(scenario()).grams == 907.185


def test_moving_sends_no_weight_then_settles(tmp_path):
    async def scenario():
        async with rig("toledo_8217", tmp_path) as (sim, scale):
            await sim.control("set", {"grams": 800.0, "mode": "moving", "settle_after": 2})
            with pytest.raises(ScaleNotStable, match="in motion"):
                await scale.read()
            weight = await scale.read_stable(timeout=5.0)
            return weight, bytes(sim.received)

    weight, sent = run(scenario())
    assert (weight.grams, weight.stable) == (800.0, True)
    assert sent == b"WWW"


def test_never_settles(tmp_path):
    async def scenario():
        async with rig("toledo_8217", tmp_path) as (sim, scale):
            await sim.control("set", {"grams": 800.0, "mode": "moving"})
            with pytest.raises(ScaleNotStable) as caught:
                await scale.read_stable(timeout=0.15)
            return caught.value.last

    assert run(scenario()) is None  # the 8217 sends no number while moving


def test_overload_underload(tmp_path):
    async def scenario():
        async with rig("toledo_8217", tmp_path) as (sim, scale):
            await sim.control("set", {"mode": "overload"})
            with pytest.raises(ScaleOverload):
                await scale.read_stable()
            over = scale.health.status
            await sim.control("set", {"mode": "underload"})
            with pytest.raises(ScaleUnderload):
                await scale.read()
            await sim.control("set", {"mode": "stable", "grams": 1.0})
            await scale.read()
            return over, scale.health.status

    assert run(scenario()) == (HealthStatus.FAULT, HealthStatus.OK)


def test_status_parity_bit_is_masked(tmp_path):
    async def scenario():
        async with rig("toledo_8217", tmp_path) as (sim, scale):
            await sim.control("inject", {"data": "\x02?\xc1\r"})  # 'A' with bit 7 set
            with pytest.raises(ScaleNotStable):
                await scale.read()
            return scale.bad_frames

    assert run(scenario()) == 0


def test_garbage_and_noise_before_stx(tmp_path):
    async def scenario():
        async with rig("toledo_8217", tmp_path) as (sim, scale):
            await sim.control("set", {"grams": 2000.0, "mode": "garbage"})
            with pytest.raises(DeviceProtocolError):
                await scale.read(timeout=0.15)
            bad = scale.bad_frames
            await sim.control("set", {"mode": "stable"})
            await sim.control("inject", {"data": "junk\r", "keep_reply": True})
            weight = await scale.read()
            return bad, weight, scale.bad_frames

    bad, weight, bad_after = run(scenario())
    assert bad == 1
    assert weight.grams == 2000.0
    assert bad_after == 2


def test_reply_split_across_writes(tmp_path):
    async def scenario():
        async with rig("toledo_8217", tmp_path) as (sim, scale):
            await sim.control("set", {"grams": 4321.0, "split_s": 0.05})
            return await scale.read()

    assert run(scenario()).grams == 4321.0


def test_silent(tmp_path):
    async def scenario():
        async with rig("toledo_8217", tmp_path) as (sim, scale):
            await sim.control("set", {"mode": "silent"})
            with pytest.raises(ScaleNoReply, match="9600 7E1"):
                await scale.read(timeout=0.1)
            return scale.health.status

    assert run(scenario()) is HealthStatus.UNAVAILABLE


def test_tare_net_and_clear(tmp_path):
    async def scenario():
        async with rig("toledo_8217", tmp_path) as (sim, scale):
            await sim.control("set", {"grams": 300.0})
            await scale.tare()
            await sim.control("set", {"grams": 1300.0})
            net = await scale.read()
            await scale.clear_tare()
            gross = await scale.read()
            return net, gross, bytes(sim.received)

    net, gross, sent = run(scenario())
    assert (net.grams, net.net) == (1000.0, True)
    assert (gross.grams, gross.net) == (1300.0, False)
    assert sent == b"T\rWCW"


def test_zero_and_refusals(tmp_path):
    async def scenario():
        async with rig("toledo_8217", tmp_path) as (sim, scale):
            await sim.control("set", {"grams": 40.0})
            await scale.zero()
            zeroed = sim.state()["grams"]
            await sim.control("set", {"grams": 1250.0})
            with pytest.raises(ScaleCommandRefused, match="zero capture range"):
                await scale.zero()
            await scale.tare()
            with pytest.raises(ScaleCommandRefused, match="gross mode"):
                await scale.zero()
            await sim.control("set", {"mode": "moving"})
            with pytest.raises(ScaleNotStable):
                await scale.clear_tare()
            await sim.control("set", {"mode": "stable", "grams": 0.0})
            await scale.clear_tare()
            with pytest.raises(ScaleCommandRefused, match="no load"):
                await scale.tare()
            return zeroed

    assert run(scenario()) == 0.0
