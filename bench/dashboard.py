"""``python -m bench.dashboard``: the site dashboard built from the site service's log.

A SQLite site log (``agent.oms.site.log.SqliteLog``, on ``--workdir``'s disk) with the births
of 100 pick zones of 300 slots, a pack station and a dock, and ``--events`` pick lines
(8-line orders, 1 line in 50 short); every order but the last ``--open`` is then packed and
shipped, so the log holds ``events / 8`` orders of which ``--open`` are still open.

Two parts:

* In this process: the dashboard of ``zone-agent site serve --dashboard-port`` is built
  from the log as after a restart (``agent.oms.site.board.LogBoard.catch_up``), and its page
  data (``SiteView.snapshot``) built and encoded as the event stream does: entries replayed
  per second, the first snapshot and the steady one (ms), the page data's size, orders and
  exceptions on it, and this process's peak RSS before and after the replay.
* ``zone-agent site serve`` itself on that log (unless ``--no-serve``), beside a private
  Mosquitto: the time until its dashboard listens (the replay), its RSS (VmRSS, VmHWM from
  /proc), ``GET /api/state`` (what a page refresh asks) timed, and the gaps between the
  first updates of the page's event stream (``/api/stream``): how often an open page is
  refreshed.

Prints and writes ``bench/dashboard_results.json`` (``--out``); ``--label`` names the run.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from agent.link.settings import BrokerConfig
from agent.oms import OmsClient
from agent.oms.site.board import LogBoard

try:
    from agent.oms.site.board import log_view
except ImportError:  # a release before the bounded view: the same run, for before/after
    from agent.oms.dashboard import SiteView

    def log_view(oms: OmsClient, store: SqliteLog) -> Any:  # type: ignore[misc]
        """The view as it was built then."""
        return SiteView(oms)


from agent.oms.site.log import NewEvent, SqliteLog
from agent.oms.site.service import HeadNotifier
from agent.wire.messages import DeviceHealth, State

NODES = 100
LINES = 8
T0 = 1_780_000_000_000


def fill(store: SqliteLog, events: int, open_orders: int) -> int:
    """Births, ``events`` pick lines, then packed and shipped for all but the last orders.

    Returns the number of orders.
    """
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
    for name, role in (("pack-01", "pack"), ("dock-1", "dispatch")):
        body = {**State(online=True, role=role, sw="1.0", store=name).model_dump(mode="json")}
        births.append(NewEvent(name, name, None, "online", T0, body | {"boot": 1}))
    store.append(births)
    orders = (events + LINES - 1) // LINES
    seqs: dict[str, int] = {}
    batch: list[NewEvent] = []

    def add(node: str, name: str, at: int, body: dict[str, Any]) -> None:
        seqs[node] = seqs.get(node, 0) + 1
        store_id = f"s{int(node[5:])}" if node.startswith("zone-") else node
        batch.append(NewEvent(node, store_id, seqs[node], name, at, body, body.get("order")))
        if len(batch) == 5000:
            store.append(batch)
            batch.clear()

    for n in range(events):
        node, order = n % NODES, f"SO-{n // LINES:07d}"
        name = "short" if n % 50 == 0 else "picked"
        at = T0 + n * 100
        add(
            f"zone-{node:03d}",
            name,
            at,
            {
                "order": order,
                "task": f"{order}-{n % LINES}",
                "sku": f"SKU-{n % 3000:05d}",
                "location": f"Z{node:03d}-{n % 300:03d}",
                "qty": 2,
                "picked": 1 if name == "short" else 2,
                "reason": "empty",
                "lit_at": at,
                "confirmed_at": at + 2500,
            },
        )
        number = n // LINES
        if n % LINES == LINES - 1 and number < orders - open_orders:
            add("pack-01", "packed", at + 60_000, {"order": order, "units": 2 * LINES})
            add("dock-1", "shipped", at + 120_000, {"order": order, "at": at + 120_000})
    if batch:
        store.append(batch)
    return orders


def in_process(path: Path) -> dict[str, Any]:
    """The dashboard rebuilt from the log in this process: replay, snapshots, peak RSS."""
    store = SqliteLog(path)
    oms = OmsClient(BrokerConfig(urls=["mqtt://127.0.0.1:1"]), "dc1")
    board = LogBoard(log_view(oms, store), store, HeadNotifier())
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    replayed = asyncio.run(board.catch_up())
    replay_s = time.perf_counter() - started
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    timings = []
    size = 0
    state: dict[str, Any] = {}
    for _ in range(4):
        started = time.perf_counter()
        state = board.view.snapshot()
        size = len(json.dumps(state, separators=(",", ":"), default=str))
        timings.append(time.perf_counter() - started)
    store.close()
    return {
        "replayed": replayed,
        "replay_s": round(replay_s, 2),
        "replay_per_s": round(replayed / replay_s),
        "first_snapshot_ms": round(timings[0] * 1000),
        "steady_snapshot_ms": round(min(timings[1:]) * 1000),
        "page_data_bytes": size,
        "orders_on_page": len(state["orders"]),
        "orders_total": state["orders_total"],
        "exceptions": len(state["exceptions"]),
        "peak_rss_mb_before_replay": round(rss_before / 1024),
        "peak_rss_mb_after_replay": round(rss_after / 1024),
    }


def _status_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def _get(url: str) -> tuple[float, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as reply:
        size = len(reply.read())
    return time.perf_counter() - started, size


def _stream_gaps(url: str, updates: int) -> list[float]:
    """Seconds between the first ``updates`` messages of the page's event stream."""
    arrivals = []
    with urllib.request.urlopen(url + "api/stream", timeout=120) as stream:
        while len(arrivals) < updates + 1:
            line = stream.readline()
            if not line:
                break
            if line.startswith(b"data: "):
                arrivals.append(time.perf_counter())
    return [round(b - a, 2) for a, b in itertools.pairwise(arrivals)]


def served(path: Path, workdir: Path) -> dict[str, Any]:
    """``zone-agent site serve`` on the log: replay time, RSS, page refresh costs."""
    from agent.oms.demo.broker import LocalBroker

    broker = LocalBroker(workdir / "broker")
    broker.start()
    site = workdir / "site.toml"
    site.write_text(f'site = "dc1"\n[broker]\nurls = ["{broker.url}"]\n[log]\npath = "{path}"\n')
    ready = workdir / "site.ready"
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "agent.cli", "site", "serve", str(site), "--port", "0"),
            *("--dashboard-port", "0", "--ready-file", str(ready)),
        ],
        stdout=(workdir / "site.out").open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        data: dict[str, Any] = {}
        while not data:
            if proc.poll() is not None:
                raise SystemExit((workdir / "site.out").read_text())
            try:
                data = json.loads(ready.read_text())
            except (OSError, ValueError):
                time.sleep(0.05)
        ready_s = time.perf_counter() - started
        url = data["dashboard"]
        time.sleep(2.0)  # settle: the service connects and leads
        rss = _status_mb(proc.pid)
        gets = []
        for _ in range(3):
            time.sleep(0.2)
            seconds, size = _get(url + "api/state")
            gets.append(seconds)
        page_s, page_bytes = _get(url)
        gaps = _stream_gaps(url, 5)
        after = _status_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        broker.stop()
    return {
        "serve_ready_s": round(ready_s, 1),
        "serve_rss_mb": rss["VmRSS"],
        "serve_rss_mb_after_pages": after["VmRSS"],
        "serve_peak_rss_mb": after["VmHWM"],
        "api_state_ms": [round(s * 1000) for s in gets],
        "api_state_bytes": size,
        "page_ms": round(page_s * 1000),
        "page_bytes": page_bytes,
        "stream_gaps_s": gaps,
    }


def main() -> None:
    """Run it (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard")
    parser.add_argument("--events", type=int, default=100_000, help="pick lines (8 an order)")
    parser.add_argument("--open", type=int, default=500, help="orders left open (the newest)")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    parser.add_argument("--no-serve", action="store_true", help="skip the site serve part")
    parser.add_argument("--label", default="", help="a name for this run in the results")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).with_name("dashboard_results.json")
    )
    args = parser.parse_args()
    result: dict[str, Any] = {"label": args.label, "load_average": os.getloadavg()[:3]}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        path = Path(tmp) / "site.db"
        store = SqliteLog(path)
        orders = fill(store, args.events, args.open)
        store.close()
        result |= {"events": args.events, "nodes": NODES + 2, "orders": orders, "open": args.open}
        result |= in_process(path)
        if not args.no_serve:
            result |= served(path, Path(tmp))
    result["load_average_end"] = os.getloadavg()[:3]
    for key, value in result.items():
        print(f"{key:28} {value}")
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
