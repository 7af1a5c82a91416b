"""``python -m bench.dashboard``: the site dashboard built from the site service's log.

A SQLite site log (``agent.oms.site.log.SqliteLog``, on ``--workdir``'s disk) with the births
of 100 pick zones of 300 slots and ``--events`` node events (8-line orders, 1 line in 50
short); then the dashboard of ``zone-agent site serve --dashboard-port`` is built from it
as after a restart (``agent.oms.site.board.LogBoard.catch_up``), and its page data
(``SiteView.snapshot``) built and encoded as the event stream does. Prints and writes
``bench/dashboard_results.json``: entries replayed per second, the first snapshot and the
steady one (ms), the page data's size, orders and exceptions on it, and the process's peak
RSS before and after the replay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.link.settings import BrokerConfig
from agent.oms import OmsClient
from agent.oms.dashboard import SiteView
from agent.oms.site.board import LogBoard
from agent.oms.site.log import NewEvent, SqliteLog
from agent.oms.site.service import HeadNotifier
from agent.wire.messages import DeviceHealth, State

NODES = 100
T0 = 1_780_000_000_000


def fill(store: SqliteLog, events: int) -> None:
    """Births of ``NODES`` pick zones, then ``events`` confirmations spread over them."""
    births = []
    for i in range(NODES):
        state = State(
            online=True,
            role="pick",
            sw="1.0",
            store=f"s{i}",
            locations=[f"Z{i:03d}-{s:03d}" for s in range(300)],
            devices={"shelf": DeviceHealth(kind="ptl_serial", status="ok")},
        )
        body = {**state.model_dump(mode="json"), "boot": 1}
        births.append(NewEvent(f"zone-{i:03d}", f"s{i}", None, "online", T0, body))
    store.append(births)
    batch: list[NewEvent] = []
    for n in range(events):
        node, order = n % NODES, f"SO-{n // 8:07d}"
        name = "short" if n % 50 == 0 else "picked"
        body: dict[str, Any] = {
            "order": order,
            "task": f"{order}-{n % 8}",
            "sku": f"SKU-{n % 3000:05d}",
            "location": f"Z{node:03d}-{n % 300:03d}",
            "qty": 2,
            "picked": 1 if name == "short" else 2,
            "reason": "empty",
            "lit_at": T0 + n * 100,
            "confirmed_at": T0 + n * 100 + 2500,
        }
        seq = n // NODES + 1
        batch.append(NewEvent(f"zone-{node:03d}", f"s{node}", seq, name, T0 + n * 100, body, order))
        if len(batch) == 5000:
            store.append(batch)
            batch = []
    if batch:
        store.append(batch)


def main() -> None:
    """Run it (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        store = SqliteLog(Path(tmp) / "site.db")
        fill(store, args.events)
        board = LogBoard(
            SiteView(OmsClient(BrokerConfig(urls=["mqtt://127.0.0.1:1"]), "dc1")),
            store,
            HeadNotifier(),
        )
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        replayed = asyncio.run(board.catch_up())
        replay_s = time.perf_counter() - started
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        timings = []
        size = 0
        for _ in range(4):
            started = time.perf_counter()
            state = board.view.snapshot()
            size = len(json.dumps(state, separators=(",", ":"), default=str))
            timings.append(time.perf_counter() - started)
        store.close()
    result = {
        "events": args.events,
        "nodes": NODES,
        "replayed": replayed,
        "replay_s": round(replay_s, 2),
        "replay_per_s": round(replayed / replay_s),
        "first_snapshot_ms": round(timings[0] * 1000),
        "steady_snapshot_ms": round(min(timings[1:]) * 1000),
        "page_data_bytes": size,
        "orders": len(state["orders"]),
        "exceptions": len(state["exceptions"]),
        "peak_rss_mb_before_replay": round(rss_before / 1024),
        "peak_rss_mb_after_replay": round(rss_after / 1024),
    }
    for key, value in result.items():
        print(f"{key:28} {value}")
    out = Path(__file__).with_name("dashboard_results.json")
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
