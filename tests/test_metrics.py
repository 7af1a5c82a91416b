"""GET /metrics of a real pack node (its own process): the exposition parses, the counters move.

The node is ``zone-agent run --simulate`` with a simulated scanner, scale and printers; the
OMS is the reference client on a real Mosquitto; scans go in through the control API.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.metrics import Histogram
from agent.oms.demo.broker import LocalBroker
from tests.harness import NodeProcess, oms_for
from tests.test_packing_e2e import GTIN_A, NODE, order, pack_node_file, started, wait_online
from tests.test_picking_e2e import Control

pytestmark = pytest.mark.broker

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(url: str) -> tuple[str, Samples]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        kind = response.headers["Content-Type"]
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):  # raises on a malformed exposition
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return kind, samples


def _text(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        return str(response.read().decode())


async def scrape(control: Control) -> Samples:
    kind, samples = await asyncio.to_thread(_scrape, control.url)
    assert kind.startswith("text/plain; version=0.0.4")
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def until(control: Control, check: object, timeout: float = 10) -> Samples:
    """Scrape until ``check(samples)`` holds (the node publishes and commits concurrently)."""
    samples: Samples = {}
    async with asyncio.timeout(timeout):
        while True:
            samples = await scrape(control)
            if check(samples):  # type: ignore[operator]
                return samples
            await asyncio.sleep(0.05)


def test_a_pack_node_counts_commands_scans_misscans_events_commits_and_reconnects(
    tmp_path: Path, broker: LocalBroker
) -> None:
    node = NodeProcess(pack_node_file(tmp_path, broker))
    control = Control(tmp_path / NODE)

    async def scenario() -> None:
        async with oms_for(broker, auto_ack=False) as oms:
            await started(node, control, oms)
            before = await scrape(control)
            text = await asyncio.to_thread(_text, control.url)
            names = set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))
            names |= {n + "_total" for n in names}  # the TYPE line of a counter drops _total
            documented = {n for n in documented_metrics() if n.startswith("zone_")}
            assert documented <= names, documented - names
            assert value(before, "zone_node_info", site="dc1", node=NODE, role="pack", boot="1")
            assert value(before, "zone_mqtt_connected") == 1
            assert value(before, "zone_mqtt_connects_total") == 1
            assert value(before, "zone_mqtt_reconnects_total") == 0
            assert value(before, "zone_device_up", device="scanner", kind="serial_scanner") == 1
            status = value(
                before, "zone_device_status", device="scanner", kind="serial_scanner", status="ok"
            )
            assert status == 1
            assert value(before, "zone_scans_total", device="scanner") == 0
            assert value(before, "process_resident_memory_bytes") > 10e6

            assert (await oms.call(NODE, "pack", order("o1"))).status == "accepted"
            bad = await oms.call(NODE, "pack", {"order": "o2"})  # no lines: refused unread
            assert (bad.status, bad.reason) == ("rejected", "invalid_body")
            await control.scan("T-o1")
            await control.scan(GTIN_A)
            await control.scan("NO-SUCH-ITEM")
            after = await until(
                control,
                lambda s: (
                    value(s, "zone_scans_total", device="scanner") == 3
                    and value(s, "zone_events_published_total", event="pack_refused") == 1
                ),
            )
            assert value(after, "zone_commands_total", command="pack", outcome="accepted") == 1
            assert value(after, "zone_commands_total", command="pack", outcome="invalid") == 1
            refused = [
                k
                for k in after
                if k[0] == "zone_misscans_total" and ("event", "pack_refused") in k[1]
            ]
            assert len(refused) == 1 and after[refused[0]] == 1, refused
            published = value(after, "zone_events_published_total", event="pack_refused")
            assert published == 1
            assert value(after, "zone_events_published_total", event="reply") >= 2
            # Nothing acknowledged yet (auto_ack off): the outbox holds every event, and
            # its oldest has an age.
            depth = value(after, "zone_outbox_events")
            assert depth >= 3
            assert depth == value(after, "zone_outbox_last_seq")
            assert value(after, "zone_outbox_oldest_unacked_age_seconds") > 0
            commits = value(after, "zone_commit_duration_seconds_count")
            assert commits >= 3
            assert value(after, "zone_commit_duration_seconds_bucket", le="+Inf") == commits
            assert value(after, "zone_commit_duration_seconds_sum") > 0

            oms.ack_now()
            acked = await until(control, lambda s: value(s, "zone_outbox_events") == 0)
            assert value(acked, "zone_outbox_oldest_unacked_age_seconds") == 0

            # The broker goes away and comes back: one reconnect.
            broker.stop()
            await until(control, lambda s: value(s, "zone_mqtt_connected") == 0, timeout=20)
            broker.start()
            await wait_online(oms)
            back = await until(
                control, lambda s: value(s, "zone_mqtt_reconnects_total") == 1, timeout=20
            )
            assert value(back, "zone_mqtt_connects_total") == 2
        assert node.terminate() == 0

    try:
        asyncio.run(scenario())
    finally:
        node.stop()


def test_histogram_buckets_are_cumulative_and_le_is_inclusive() -> None:
    hist = Histogram((0.001, 0.01))
    for v in (0.0005, 0.001, 0.005, 0.5):
        hist.observe(v)
    assert hist.cumulative() == [("0.001", 2), ("0.01", 3), ("+Inf", 4)]
    assert hist.total == pytest.approx(0.5065)


DOCS = Path(__file__).resolve().parent.parent / "docs"


def documented_metrics() -> set[str]:
    """The metric names in the tables of docs/metrics.md."""
    text = (DOCS / "metrics.md").read_text()
    return set(re.findall(r"^\| `([a-z_]+)` \|", text, re.MULTILINE))


def test_the_grafana_dashboard_uses_only_documented_metrics() -> None:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for e in exprs
        for name in re.findall(r"\b((?:zone|oms)_[a-z_]+)", e)
    }
    assert used, exprs
    assert used <= documented_metrics() | {"process_resident_memory_bytes"}


def test_repeat_log_writes_one_line_per_reason_then_a_count_per_interval(caplog) -> None:
    import logging

    from agent.metrics import RepeatLog

    now = [100.0]
    repeats = RepeatLog(logging.getLogger("t.repeat"), interval_s=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "t.repeat"):
        for i in range(1000):
            repeats.note("invalid_ack", "invalid ack ignored: %s", f"bad {i}")
        repeats.note("foreign_topic", "message on a topic that is not ours: %s", "x/y")
        assert [r.getMessage() for r in caplog.records] == [
            "invalid ack ignored: bad 0",
            "message on a topic that is not ours: x/y",
        ]
        now[0] += 59
        repeats.flush()
        assert len(caplog.records) == 2  # the interval is not over
        now[0] += 1
        repeats.flush()
        assert [r.getMessage() for r in caplog.records[2:]] == [
            "invalid_ack: 999 more in the last 60 s (the latest: invalid ack ignored: bad 999)"
        ]
        repeats.note("invalid_ack", "invalid ack ignored: %s", "again")  # a new interval
        assert caplog.records[-1].getMessage() == "invalid ack ignored: again"
    assert repeats.total == {"invalid_ack": 1001, "foreign_topic": 1}
