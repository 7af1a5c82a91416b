"""Protocol identification: each simulator is found by its unique reply, noise is not.

The fifteen cases of issue 22 (each protocol with and without an echoing line or the 8217
echo test, line noise before the reply, replies split over reads, a silent and a noisy
port) run against the pty simulators, which speak the manuals' bytes. The simulators do
not help the probe with the pty's line-settings quirk: a 7E1 open after an 8N1 one meets
it every time.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Any

import pytest
from scale_helpers import MODULES, make_config, run, simulator

from agent.errors import DeviceUnavailable
from devices.backends import serial as serial_backend
from devices.context import DeviceContext
from devices.scales.probe import identify, probe_port

PROBE_S = 0.5
# A protocol that does answer is found as soon as it does; the probes before it wait this
# long for nothing. 0.1 s failed on a loaded 2-core machine (the pty reply came later).
# Waiting for a reply that never comes: every attempt runs to its timeout, so keep it short
# (the simulator answers within a millisecond).
SILENCE_S = 0.1

NOISE = "\xff\x00\xfeq#"

# (protocol, simulator keywords, control actions before probing)
CASES: dict[str, tuple[str, dict[str, Any], list[tuple[str, dict[str, Any]]]]] = {
    "mt_sics": ("mt_sics", {}, []),
    # The probe's leading line end is answered ES, then the I4: noise before both.
    "mt_sics noise": ("mt_sics", {}, [("inject", {"data": NOISE, "keep_reply": True})] * 2),
    "mt_sics split": ("mt_sics", {}, [("set", {"split_s": 0.05})]),
    "mt_sics line echo": ("mt_sics", {"line_echo": True}, []),
    "nci": ("nci", {}, []),
    # The first reply answers the MT-SICS attempt's I4 (with "?"), the second the S.
    "nci noise": ("nci", {}, [("inject", {"data": NOISE, "keep_reply": True})] * 2),
    "nci split": ("nci", {}, [("set", {"split_s": 0.05})]),
    "nci line echo": ("nci", {"line_echo": True}, []),
    "toledo_8217 echo test": ("toledo_8217", {}, []),
    "toledo_8217 no echo test": ("toledo_8217", {"echo_test": False}, []),
    "toledo_8217 no echo test, noise": (
        "toledo_8217",
        {"echo_test": False},
        [("inject", {"data": NOISE, "keep_reply": True})],
    ),
    "toledo_8217 no echo test, split": (
        "toledo_8217",
        {"echo_test": False},
        [("set", {"split_s": 0.05, "grams": 1250.0})],
    ),
    "toledo_8217 no echo test, line echo, moving": (
        "toledo_8217",
        {"echo_test": False, "line_echo": True},
        [("set", {"mode": "moving"})],
    ),
}


@asynccontextmanager
async def custom_simulator(protocol: str, tmp_path: Any, **keywords: Any) -> Any:
    sim = MODULES[protocol].SIMULATOR(
        make_config(protocol), DeviceContext(simulate=True), link_dir=tmp_path, **keywords
    )
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.mark.parametrize("case", sorted(CASES))
def test_identifies_the_scale(case, tmp_path):
    protocol, keywords, actions = CASES[case]

    async def scenario():
        async with custom_simulator(protocol, tmp_path, **keywords) as sim:
            for action, args in actions:
                await sim.control(action, args)
            before = sim.state()
            result = await probe_port(str(sim.link), PROBE_S)
            return result, before, sim.state()

    result, before, after = run(scenario())
    assert result.protocol == protocol, result.hint
    assert result.hint is None
    assert result.tried[-1].protocol == protocol
    # The probe changed nothing on the scale.
    assert (after["grams"], after["tare_g"]) == (before["grams"], before["tare_g"])


async def received_once_settled(sim: Any, length: int) -> bytes:
    """What the simulator received, once ``length`` bytes are in (or 2 s passed).

    The probe's last write (the 8217's F) is in the pty when the probe returns, but the
    simulator reads it on its next turn of the loop.
    """
    for _ in range(200):
        if len(sim.received) >= length:
            break
        await asyncio.sleep(0.01)
    return bytes(sim.received)


@pytest.mark.parametrize("protocol", sorted(MODULES))
def test_bytes_sent_to_each_scale(protocol, tmp_path):
    expected = {
        "mt_sics": b"\r\nI4\r\n",
        "nci": b"\r\nI4\r\n\rS\r",
        "toledo_8217": b"\r\nI4\r\n\rS\rEhelloF",
    }

    async def scenario():
        async with simulator(protocol, tmp_path) as sim:
            found = await identify(str(sim.link), PROBE_S)
            return found, await received_once_settled(sim, len(expected[protocol]))

    found, received = run(scenario())
    assert found == protocol
    assert received == expected[protocol]


def test_weight_request_after_an_unanswered_echo_test(tmp_path):
    async def scenario():
        async with custom_simulator("toledo_8217", tmp_path, echo_test=False) as sim:
            result = await probe_port(str(sim.link), PROBE_S)
            return result, await received_once_settled(sim, 16)

    result, received = run(scenario())
    assert result.protocol == "toledo_8217"
    # No F: the scale never said it entered echo mode.
    assert received == b"\r\nI4\r\n\rS\rEhelloW"
    assert result.tried[-1].sent == (b"Ehello", b"W")
    assert result.tried[-1].heard.startswith(b"\x02")


def test_toledo_echo_mode_is_left(tmp_path):
    async def scenario():
        async with simulator("toledo_8217", tmp_path) as sim:
            await identify(str(sim.link), PROBE_S)
            await received_once_settled(sim, 16)
            return sim.echo

    assert run(scenario()) is False


def test_silent_port_says_no_protocol_answered_and_what_was_tried(tmp_path):
    async def scenario():
        async with simulator("mt_sics", tmp_path) as sim:
            await sim.control("set", {"mode": "silent"})
            return await probe_port(str(sim.link), SILENCE_S)

    result = run(scenario())
    assert (result.protocol, result.heard) == (None, b"")
    assert result.hint is not None
    assert "no protocol answered" in result.hint
    assert "nothing came back" in result.hint
    assert "line settings" not in result.hint
    for clause in (
        r"mt_sics at 9600 8N1: sent b'\r\nI4\r\n': heard nothing",
        r"nci at 9600 8N1: sent b'\rS\r': heard nothing",
        r"toledo_8217 at 9600 7E1: sent b'Ehello', b'W': heard nothing",
    ):
        assert clause in result.hint
    assert [t.error for t in result.tried] == [None, None, None]


@pytest.mark.parametrize("protocol", sorted(MODULES))
def test_garbage_device_is_not_a_scale_and_gets_a_hint(protocol, tmp_path):
    async def scenario():
        async with simulator(protocol, tmp_path) as sim:
            await sim.control("set", {"mode": "garbage"})
            return await probe_port(str(sim.link), SILENCE_S)

    result = run(scenario())
    assert result.protocol is None
    assert result.hint is not None
    assert "no protocol answered" in result.hint
    assert "wrong baud rate or parity" in result.hint
    assert [(t.protocol, t.settings) for t in result.tried] == [
        ("mt_sics", "9600 8N1"),
        ("nci", "9600 8N1"),
        ("toledo_8217", "9600 7E1"),
    ]
    assert result.heard and all(byte >= 0x80 or byte in b"\r\n\x03" for byte in result.heard)


def test_a_real_refusal_of_line_settings_is_named_and_the_rest_tried(tmp_path, monkeypatch):
    # An OS fact: make the pty look like a real adapter, whose EINVAL is a real refusal.
    monkeypatch.setattr(serial_backend, "is_pseudo_terminal", lambda port: False)

    async def scenario():
        async with custom_simulator("toledo_8217", tmp_path, echo_test=False) as sim:
            await sim.control("set", {"mode": "silent"})
            return await probe_port(str(sim.link), SILENCE_S)

    result = run(scenario())
    assert result.protocol is None
    assert [t.protocol for t in result.tried] == ["mt_sics", "nci", "toledo_8217"]
    refused = result.tried[-1]
    assert refused.error is not None
    assert "refused the line settings 9600 7E1" in refused.error
    assert "toledo_8217 at 9600 7E1: not tried:" in (result.hint or "")


def test_identify_logs_the_hint(tmp_path, caplog):
    async def scenario():
        async with simulator("nci", tmp_path) as sim:
            await sim.control("set", {"mode": "garbage"})
            return await identify(str(sim.link), SILENCE_S)

    with caplog.at_level(logging.WARNING, logger="devices.scales"):
        assert run(scenario()) is None
    assert any("no protocol answered" in r.getMessage() for r in caplog.records)


def test_missing_port_is_unavailable(tmp_path):
    with pytest.raises(DeviceUnavailable, match="no such port"):
        run(identify(str(tmp_path / "nothing.tty"), PROBE_S))
