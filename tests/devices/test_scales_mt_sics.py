"""MT-SICS driver against its byte-exact simulator on a pty."""

from __future__ import annotations

import pytest
from scale_helpers import rig, run, simulator

from agent.errors import DeviceProtocolError, DeviceUnavailable
from devices.backends.serial import SerialPort
from devices.base import HealthStatus
from devices.context import DeviceContext
from devices.scales.base import (
    ScaleCommandRefused,
    ScaleErrorReply,
    ScaleNoReply,
    ScaleNotStable,
    ScaleOverload,
    ScaleUnderload,
)
from devices.scales.mt_sics import MtSicsConfig, MtSicsScale, split_reply


def test_simulator_speaks_exact_bytes(tmp_path):
    async def scenario():
        async with simulator("mt_sics", tmp_path) as sim:
            await sim.control("set", {"grams": 12.345, "unit": "g"})
            port = SerialPort(str(sim.link))
            await port.open()
            try:
                replies = []
                for command in (b"S\r\n", b"SI\r\n", b"I4\r\n", b"XYZ\r\n", b"Z\r\n"):
                    await port.write(command)
                    replies.append(await port.read_until(b"\r\n", 2.0))
                await sim.control("set", {"mode": "moving", "grams": 114870, "unit": "kg"})
                await port.write(b"SI\r\n")
                replies.append(await port.read_until(b"\r\n", 2.0))
                await port.write(b"S\r\n")
                replies.append(await port.read_until(b"\r\n", 2.0))
            finally:
                await port.close()
            return replies

    assert run(scenario()) == [
        b"S S      12.35 g\r\n",
        b"S S      12.35 g\r\n",
        b'I4 A "B123456789"\r\n',
        b"ES\r\n",
        b"Z A\r\n",
        b"S D  114.87000 kg\r\n",
        b"S I\r\n",
    ]


def test_stable_reading_in_grams(tmp_path):
    async def scenario():
        async with rig("mt_sics", tmp_path) as (sim, scale):
            await sim.control("set", {"grams": 1250.5})
            weight = await scale.read()
            return weight, bytes(sim.received), scale.health.status

    weight, sent, health = run(scenario())
    assert (weight.device, weight.grams, weight.stable, weight.net) == (
        "scale1",
        1250.5,
        True,
        False,
    )
    assert sent == b"SI\r\n"
    assert health is HealthStatus.OK


@pytest.mark.parametrize(
    ("unit", "grams", "expected"),
    [("kg", 1234.56, 1234.56), ("lb", 907.18474, 907.185), ("oz", 85.048569375, 85.049)],
)
def test_units_are_normalised_to_grams(tmp_path, unit, grams, expected):
    async def scenario():
        async with rig("mt_sics", tmp_path) as (sim, scale):
            await sim.control("set", {"grams": grams, "unit": unit})
            return await scale.read()

    assert run(scenario()).grams == expected


def test_moving_then_stable(tmp_path):
    async def scenario():
        async with rig("mt_sics", tmp_path) as (sim, scale):
            await sim.control("set", {"grams": 500.0, "mode": "moving", "settle_after": 2})
            first = await scale.read()
            stable = await scale.read_stable(timeout=5.0)
            return first, stable, bytes(sim.received)

    first, stable, sent = run(scenario())
    assert (first.grams, first.stable) == (500.0, False)
    assert (stable.grams, stable.stable) == (500.0, True)
    assert sent == b"SI\r\n" * 3


def test_never_settles_raises_not_stable_with_last_reading(tmp_path):
    async def scenario():
        async with rig("mt_sics", tmp_path) as (sim, scale):
            await sim.control("set", {"grams": 42.0, "mode": "moving"})
            with pytest.raises(ScaleNotStable) as caught:
                await scale.read_stable(timeout=0.15)
            return caught.value

    error = run(scenario())
    assert error.last is not None
    assert (error.last.grams, error.last.stable) == (42.0, False)


def test_overload_and_underload_are_faults_and_clear(tmp_path):
    async def scenario():
        async with rig("mt_sics", tmp_path) as (sim, scale):
            await sim.control("set", {"mode": "overload"})
            with pytest.raises(ScaleOverload):
                await scale.read_stable(timeout=5.0)
            over = scale.health
            await sim.control("set", {"mode": "underload"})
            with pytest.raises(ScaleUnderload):
                await scale.read()
            under = scale.health
            await sim.control("set", {"mode": "stable", "grams": 10.0})
            weight = await scale.read()
            return over, under, weight, scale.health.status, bytes(sim.received)

    over, under, weight, health, sent = run(scenario())
    assert (over.status, over.detail) == (HealthStatus.FAULT, "overload")
    assert (under.status, under.detail) == (HealthStatus.FAULT, "underload")
    assert weight.grams == 10.0
    assert health is HealthStatus.OK
    # read_stable gave up at the first overload reply instead of asking again.
    assert sent == b"SI\r\n" * 3


def test_garbage_is_counted_and_the_driver_carries_on(tmp_path):
    async def scenario():
        async with rig("mt_sics", tmp_path) as (sim, scale):
            await sim.control("set", {"mode": "garbage", "grams": 7.0})
            with pytest.raises(DeviceProtocolError):
                await scale.read(timeout=0.15)
            bad, faulty = scale.bad_frames, scale.health
            await sim.control("set", {"mode": "stable"})
            return bad, faulty, await scale.read(), scale.health.status

    bad, faulty, weight, healed = run(scenario())
    assert bad == 1
    assert faulty.status is HealthStatus.FAULT
    assert "unrecognised frame(s) and no weight reply" in faulty.detail
    assert weight.grams == 7.0
    assert healed is HealthStatus.OK


def test_garbage_line_before_the_reply_is_skipped(tmp_path):
    async def scenario():
        async with rig("mt_sics", tmp_path) as (sim, scale):
            await sim.control("set", {"grams": 99.5})
            await sim.control("inject", {"data": "\xff\x00noise\r\n", "keep_reply": True})
            weight = await scale.read()
            return weight, scale.bad_frames

    weight, bad = run(scenario())
    assert weight.grams == 99.5
    assert bad == 1


@pytest.mark.parametrize("code", ["ES", "ET", "EL"])
def test_error_lines_raise_error_reply(tmp_path, code):
    async def scenario():
        async with rig("mt_sics", tmp_path) as (sim, scale):
            await sim.control("inject", {"data": f"{code}\r\n"})
            with pytest.raises(ScaleErrorReply) as caught:
                await scale.read()
            after = await scale.read()
            return caught.value, after, scale.health.status

    error, after, health = run(scenario())
    assert error.code == code
    assert after.grams == 0.0
    assert health is HealthStatus.OK


def test_read_stable_retries_after_a_transmission_error(tmp_path):
    async def scenario():
        async with rig("mt_sics", tmp_path) as (sim, scale):
            await sim.control("set", {"grams": 3.0})
            await sim.control("inject", {"data": "ET\r\n"})
            return await scale.read_stable(timeout=5.0), bytes(sim.received)

    weight, sent = run(scenario())
    assert weight.grams == 3.0
    assert sent == b"SI\r\n" * 2


def test_reply_split_across_writes(tmp_path):
    async def scenario():
        async with rig("mt_sics", tmp_path) as (sim, scale):
            await sim.control("set", {"grams": 321.25, "split_s": 0.05})
            return await scale.read()

    assert run(scenario()).grams == 321.25


def test_partial_frame_only_is_a_protocol_error(tmp_path):
    async def scenario():
        async with rig("mt_sics", tmp_path) as (sim, scale):
            await sim.control("inject", {"data": "S S    12"})
            with pytest.raises(DeviceProtocolError, match="unrecognised"):
                await scale.read(timeout=0.15)
            return scale.bad_frames

    assert run(scenario()) == 1


def test_silent_scale_is_no_reply_and_unavailable(tmp_path):
    async def scenario():
        async with rig("mt_sics", tmp_path) as (sim, scale):
            await sim.control("set", {"mode": "silent"})
            with pytest.raises(ScaleNoReply, match="9600 8N1"):
                await scale.read(timeout=0.1)
            health = scale.health.status
            with pytest.raises(DeviceUnavailable):
                await scale.read_stable(timeout=0.15)
            await sim.control("set", {"mode": "stable"})
            await scale.read()
            return health, scale.health.status

    assert run(scenario()) == (HealthStatus.UNAVAILABLE, HealthStatus.OK)


def test_tare_clear_tare_and_zero(tmp_path):
    async def scenario():
        async with rig("mt_sics", tmp_path) as (sim, scale):
            await sim.control("set", {"grams": 300.0})
            await scale.tare()
            tared = dict(sim.state())
            await sim.control("set", {"grams": 1300.0})
            net = await scale.read()
            await scale.clear_tare()
            gross = await scale.read()
            await sim.control("set", {"grams": 50.0})
            await scale.zero()
            zeroed = dict(sim.state())
            return tared, net, gross, zeroed, bytes(sim.received)

    tared, net, gross, zeroed, sent = run(scenario())
    assert tared["tare_g"] == 300.0
    assert (net.grams, net.net) == (1000.0, True)
    assert (gross.grams, gross.net) == (1300.0, False)
    assert (zeroed["grams"], zeroed["tare_g"]) == (0.0, 0.0)
    assert sent == b"T\r\nSI\r\nTAC\r\nSI\r\nZ\r\n"


def test_zero_and_tare_refusals(tmp_path):
    async def scenario():
        async with rig("mt_sics", tmp_path) as (sim, scale):
            await sim.control("set", {"grams": 1250.0})
            with pytest.raises(ScaleCommandRefused, match=r"Z \+"):
                await scale.zero()
            await sim.control("set", {"mode": "moving"})
            with pytest.raises(ScaleNotStable, match="Z I"):
                await scale.zero()
            with pytest.raises(ScaleNotStable, match="T I"):
                await scale.tare()
            await sim.control("set", {"mode": "overload"})
            with pytest.raises(ScaleCommandRefused, match=r"T \+"):
                await scale.tare()
            return sim.state()

    state = run(scenario())
    assert (state["grams"], state["tare_g"]) == (1250.0, 0.0)


def test_tolerant_line_parsing():
    assert split_reply(b'I4 A "0123456789"\r\n') == ["I4", "A", "0123456789"]
    assert split_reply(b"I4 A 0123456789\r\n") == ["I4", "A", "0123456789"]
    scale = _offline_scale()
    parsed = [
        scale._parse_weight(frame)
        for frame in (
            b"S S     -1.23 g\r\n",
            b"S  S  - 1.5   kg\r\n",
            b"S S 2.486 G\r\n",
            b"S Q 1 g\r\n",
            b"S S\r\n",
            b"I4 A x\r\n",
        )
    ]
    assert [(r.grams, r.stable) for r in parsed[:3]] == [
        (-1.23, True),
        (-1500.0, True),
        (2.486, True),
    ]
    assert parsed[3:] == [None, None, None]


def _offline_scale():
    config = MtSicsConfig(name="s", kind="mt_sics", port="/dev/null")
    return MtSicsScale.from_config(config, DeviceContext())


def test_unknown_unit_is_a_protocol_error():
    scale = _offline_scale()
    with pytest.raises(DeviceProtocolError, match="parsec"):
        scale._parse_weight(b"S S 1 parsec\r\n")
