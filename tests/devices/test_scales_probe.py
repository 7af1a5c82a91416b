"""Protocol identification: each simulator is found by its unique reply, noise is not."""

from __future__ import annotations

import logging

import pytest
from scale_helpers import MODULES, run, simulator

from agent.errors import DeviceUnavailable
from devices.scales.probe import identify, probe_port

PROBE_S = 0.5
# A protocol that does answer is found as soon as it does; the probes before it wait this
# long for nothing. 0.1 s failed on a loaded 2-core machine (the pty reply came later).
# Waiting for a reply that never comes: every attempt runs to its timeout, so keep it short
# (the simulator answers within a millisecond).
SILENCE_S = 0.1


@pytest.mark.parametrize("protocol", sorted(MODULES))
def test_identifies_each_simulator(protocol, tmp_path):
    async def scenario():
        async with simulator(protocol, tmp_path) as sim:
            found = await identify(str(sim.link), PROBE_S)
            return found, bytes(sim.received), sim.state()

    found, received, state = run(scenario())
    assert found == protocol
    # The probe changed nothing on the scale.
    assert (state["grams"], state["tare_g"]) == (0.0, 0.0)
    expected = {
        "mt_sics": b"\r\nI4\r\n",
        "nci": b"\r\nI4\r\n\rS\r",
        "toledo_8217": b"\r\nI4\r\n\rS\rEhelloF",
    }
    assert received == expected[protocol]


def test_toledo_echo_mode_is_left(tmp_path):
    async def scenario():
        async with simulator("toledo_8217", tmp_path) as sim:
            await identify(str(sim.link), PROBE_S)
            return sim.echo

    assert run(scenario()) is False


def test_silent_device_is_not_a_scale(tmp_path):
    async def scenario():
        async with simulator("mt_sics", tmp_path) as sim:
            await sim.control("set", {"mode": "silent"})
            return await probe_port(str(sim.link), SILENCE_S)

    result = run(scenario())
    assert (result.protocol, result.hint, result.heard) == (None, None, b"")


@pytest.mark.parametrize("protocol", sorted(MODULES))
def test_garbage_device_is_not_a_scale_and_gets_a_hint(protocol, tmp_path):
    async def scenario():
        async with simulator(protocol, tmp_path) as sim:
            await sim.control("set", {"mode": "garbage"})
            return await probe_port(str(sim.link), SILENCE_S)

    result = run(scenario())
    assert result.protocol is None
    assert result.hint is not None
    assert "wrong baud rate or parity" in result.hint
    assert "mt_sics 9600 8N1, nci 9600 8N1, toledo_8217 9600 7E1" in result.hint
    assert result.heard and all(byte >= 0x80 or byte in b"\r\n\x03" for byte in result.heard)


def test_identify_logs_the_hint(tmp_path, caplog):
    async def scenario():
        async with simulator("nci", tmp_path) as sim:
            await sim.control("set", {"mode": "garbage"})
            return await identify(str(sim.link), SILENCE_S)

    with caplog.at_level(logging.WARNING, logger="devices.scales"):
        assert run(scenario()) is None
    assert any("wrong baud rate or parity" in r.getMessage() for r in caplog.records)


def test_missing_port_is_unavailable(tmp_path):
    with pytest.raises(DeviceUnavailable, match="no such port"):
        run(identify(str(tmp_path / "nothing.tty"), PROBE_S))
