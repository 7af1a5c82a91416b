"""Two site service instances on one private PostgreSQL: one active, one standby.

The leadership is PostgreSQL's: only one instance holds it, and the standby takes it when
the active one dies. The active instance is SIGKILLed in the middle of a wave; the OMS,
reading through the standby's API, sees every confirmation once, none lost, and the log
holds the node's seqs once and without a gap.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.oms.demo.broker import LocalBroker
from agent.oms.site.log import NewEvent
from agent.oms.site.pglog import PostgresLog
from testing.postgres import LocalPostgres, find_bin
from tests.harness import NodeProcess
from tests.site_harness import SiteProcess, pick_node, site_file
from tests.test_picking_e2e import Control
from tests.test_site_e2e import NODE, SLOTS, read_all, read_everything, wave_body

pytestmark = pytest.mark.skipif(find_bin() is None, reason="PostgreSQL not installed")


@pytest.fixture
def postgres() -> Iterator[LocalPostgres]:
    with LocalPostgres() as pg:
        yield pg


def test_leadership_is_one_sessions_and_the_log_keeps_each_event_once(
    postgres: LocalPostgres,
) -> None:
    first, second = PostgresLog(postgres.dsn), PostgresLog(postgres.dsn)
    try:
        assert first.try_lead() and first.still_leading()
        assert not second.try_lead() and not second.still_leading()
        event = NewEvent("zone-a1", "s1", 1, "picked", 1, {"order": "o1"}, "o1")
        assert first.append([event, event]) == [1, None]
        assert first.append([event]) == [None]
        assert second.positions() == {("zone-a1", "s1"): 1}
        first.close()  # as a killed process's connection closes
        deadline = time.monotonic() + 10
        while not second.try_lead():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert second.still_leading()
    finally:
        first.close()
        second.close()


@pytest.mark.broker
@pytest.mark.slow
def test_the_standby_takes_over_mid_wave_and_no_confirmation_is_lost_or_doubled(
    tmp_path: Path, broker: LocalBroker, postgres: LocalPostgres
) -> None:
    node = NodeProcess(pick_node(tmp_path, broker, NODE, SLOTS))
    control = Control(tmp_path / NODE)
    log = f'postgres = "{postgres.dsn}"\nlease_s = 0.5'
    one = SiteProcess(site_file(tmp_path, broker, name="one", log=log))
    two = SiteProcess(site_file(tmp_path, broker, name="two", log=log))
    try:
        node.start()
        assert node.proc is not None
        asyncio.run(control.connect(node.proc.pid))
        one.start()
        one.wait_role("active")
        two.start()
        two.wait_role("standby")
        with one.client() as api:
            deadline = time.monotonic() + 30
            while not any(n["online"] for n in api.get("/v1/nodes").json()):
                assert time.monotonic() < deadline, one.text()
                time.sleep(0.05)
            sent = api.post("/v1/waves", json=wave_body("F1"), headers={"Idempotency-Key": "F1"})
            assert sent.status_code == 202, sent.text
        with two.client() as standby:
            refused = standby.post(
                "/v1/waves", json=wave_body("F2"), headers={"Idempotency-Key": "F2"}
            )
            assert refused.status_code == 503 and refused.json()["error"] == "standby"

        async def pick(slots: range) -> None:
            for i in slots:
                slot = f"{NODE}-S{i}"
                async with asyncio.timeout(30):
                    while not (await control.slot(slot))["on"]:
                        await asyncio.sleep(0.02)
                await control.press(slot)

        asyncio.run(pick(range(1, SLOTS // 2 + 1)))
        with two.client() as reader:
            # The first half is in the log (the standby reads the same database) ...
            assert len(read_all(reader, 0, SLOTS // 2, "picked")) == SLOTS // 2
            killed = time.monotonic()
            one.kill()
            # ... and the second half is confirmed while nobody acknowledges.
            asyncio.run(pick(range(SLOTS // 2 + 1, SLOTS + 1)))
            two.wait_role("active")
            takeover = time.monotonic() - killed
            picked = read_all(reader, 0, SLOTS, "picked")
            everything = read_everything(reader)
        print(f"takeover: standby active {takeover:.2f} s after SIGKILL of the active")
    finally:
        one.stop()
        two.stop()
        node.stop()
    assert sorted(e["body"]["order"] for e in picked) == sorted(f"F1-O{i}" for i in range(1, 9))
    assert len({e["id"] for e in picked}) == len(picked) == SLOTS
    seqs = [e["seq"] for e in everything if e["node"] == NODE and e["seq"] is not None]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
