"""The clock check before TLS: a Pi that booted without NTP waits, saying why, then goes on.

The CA is made by openssl now, so its notBefore is real; only the wall clock the check
reads (and the sleep between reads) is the test's, as on a Pi whose clock is months
behind until NTP answers.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from agent.link.clock import POLL_S, build_time, clock_floor, wait_for_clock
from agent.link.settings import BrokerConfig

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ca")
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key"]
    subprocess.run(
        ["openssl", *request, "-out", "ca.crt", "-days", "30", "-subj", "/CN=dc1 broker CA"],
        cwd=folder,
        check=True,
        capture_output=True,
    )
    return folder / "ca.crt"


def _not_before(ca_file: Path) -> float:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(ca_file))
    return ssl.cert_time_to_seconds(str(context.get_ca_certs()[0]["notBefore"]))


class BootClock:
    """A wall clock stuck where fake-hwclock left it until NTP sets it after ``polls``."""

    def __init__(self, start: float, synced: float, polls: int) -> None:
        self.value, self.synced, self.polls_left = start, synced, polls
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.value

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.value += seconds
        self.polls_left -= 1
        if self.polls_left == 0:
            self.value = self.synced  # NTP answered
        await asyncio.sleep(0)


def test_the_floor_is_the_later_of_the_build_and_the_ca(ca_file: Path) -> None:
    broker = BrokerConfig(urls=["mqtts://broker.example:8883"], ca_file=ca_file)
    floor, why = clock_floor(broker)
    assert floor == max(build_time(), _not_before(ca_file))
    assert floor <= time.time()
    if floor == _not_before(ca_file):
        assert why == f"'dc1 broker CA' in {ca_file} becomes valid"
    else:
        assert why == "this build of zone-agent"


def test_a_clock_behind_the_ca_waits_says_why_and_goes_on_once_set(
    ca_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = BrokerConfig(urls=["mqtts://broker.example:8883"], ca_file=ca_file)
    fake_hwclock = _not_before(ca_file) - 40 * 86_400  # the last shutdown, 40 days ago
    clock = BootClock(fake_hwclock, synced=time.time(), polls=3)
    told: list[str] = []
    with caplog.at_level(logging.INFO, logger="agent.link"):
        ok = asyncio.run(wait_for_clock(broker, notify=told.append, now=clock, sleep=clock.sleep))
    assert ok and clock.slept == [POLL_S] * 3
    first = caplog.records[0]
    assert first.levelno == logging.WARNING
    text = first.getMessage()
    assert text.startswith("the clock says ") and "no real-time clock" in text
    assert "not yet valid" in text and "timedatectl" in text
    assert caplog.records[-1].getMessage().startswith("the clock is set (")
    assert sum(m.startswith("STATUS=waiting for the clock: it says ") for m in told) == 3
    assert told.count("WATCHDOG=1") == 3
    assert all(int(m.split("=")[1]) > POLL_S * 1e6 for m in told if m.startswith("EXTEND_"))
    assert told[-1] == "STATUS="


def test_a_right_clock_and_a_plain_mqtt_node_do_not_wait(
    ca_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def never(seconds: float) -> None:
        raise AssertionError("slept")

    tls = BrokerConfig(urls=["mqtts://broker.example:8883"], ca_file=ca_file)
    plain = BrokerConfig(urls=["mqtt://broker.example:1883"], ca_file=ca_file)
    with caplog.at_level(logging.INFO, logger="agent.link"):
        assert asyncio.run(wait_for_clock(tls, sleep=never))
        assert asyncio.run(wait_for_clock(plain, now=lambda: 0.0, sleep=never))
    assert caplog.records == []


def test_sigterm_while_waiting_starts_nothing(ca_file: Path) -> None:
    broker = BrokerConfig(urls=["mqtts://broker.example:8883"], ca_file=ca_file)
    clock = BootClock(0.0, synced=0.0, polls=-1)  # 1970, and NTP never answers
    stop = asyncio.Event()

    async def scenario() -> bool:
        async def sigterm() -> None:
            while len(clock.slept) < 2:
                await asyncio.sleep(0)
            stop.set()

        hit = asyncio.create_task(sigterm())
        result = await wait_for_clock(broker, stop=stop, now=clock, sleep=clock.sleep)
        await hit
        return result

    assert asyncio.run(scenario()) is False
