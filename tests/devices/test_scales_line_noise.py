"""Line noise on a scale's serial line: stray bytes before a reply, and replies split in reads.

After a power-up or through a loose cable, bytes that are no protocol's arrive glued to the
start of a reply (no frame terminator between them). Every protocol must still read the
reply behind them, count the noise as a bad frame, and keep the scale's health ``ok``.
"""

from __future__ import annotations

import pytest
from scale_helpers import MODULES, rig, run

from devices.base import HealthStatus

PROTOCOLS = sorted(MODULES)

# Latin-1 strings, as the simulator's ``inject`` takes them. None of them holds a frame
# terminator of the protocol under test (each case says which bytes it adds).
NOISE = {
    "power-up zeros": "\x00\x00\x00",
    "high bytes (wrong baud, loose cable)": "\xff\xfe\x80\xf0",
    "printable junk": "q#x",
    "mixed": "\x00\xffS \x7f",
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("noise", sorted(NOISE))
def test_noise_glued_before_the_reply_is_skipped(protocol, noise, tmp_path):
    async def scenario():
        async with rig(protocol, tmp_path) as (sim, scale):
            await sim.control("set", {"grams": 1250.0})
            await sim.control("inject", {"data": NOISE[noise], "keep_reply": True})
            weight = await scale.read()
            return weight, scale.health.status, scale.bad_frames

    weight, status, bad = run(scenario())
    assert weight.grams == 1250.0
    assert weight.stable is True
    assert status is HealthStatus.OK
    assert bad == 1  # the noise is counted and logged, not silently eaten


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_noise_then_a_reply_split_across_reads(protocol, tmp_path):
    async def scenario():
        async with rig(protocol, tmp_path) as (sim, scale):
            await sim.control("set", {"grams": 2000.0, "split_s": 0.05})
            await sim.control("inject", {"data": "\xff\x00\xfe", "keep_reply": True})
            noisy = await scale.read()
            clean = await scale.read()
            return noisy, clean, scale.health.status

    noisy, clean, status = run(scenario())
    assert noisy.grams == clean.grams == 2000.0
    assert status is HealthStatus.OK


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_noise_alone_is_still_a_fault(protocol, tmp_path):
    """Noise with no reply behind it stays what it was: an unrecognised frame, a fault."""

    async def scenario():
        async with rig(protocol, tmp_path) as (sim, scale):
            end = type(scale).frame_end.decode("latin-1")
            await sim.control("inject", {"data": "\xff\xfe\x80" + end})
            with pytest.raises(Exception) as caught:
                await scale.read(timeout=0.3)
            return caught.value, scale.health.status

    error, status = run(scenario())
    assert "unrecognised frame" in str(error)
    assert status is HealthStatus.FAULT
