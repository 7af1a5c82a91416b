"""``python -m bench.soak``: a pick node's memory over a soak of picks and control-API reads.

A pick node (``bench.nodehost``, 6 simulated GPIO slots with displays, its own process, a private
Mosquitto) takes rounds of real work from an OMS in this process: one ``pick`` command of 6
lines (one per slot, 60-character descriptions, a tote per order) and a confirm press on
each slot, so 6 picks a round, each acknowledged by the OMS; between rounds, ``--reads``
``GET /api/state`` on the node's web server. ``--via-http`` presses through the control
API (``POST /sim/shelf/press``) as a black-box test does; ``--one-task-commands`` sends each
line in a command of its own. After ``--warmup`` rounds (caches filled, the
first scrape's imports done) the node's RSS is noted every ``--every`` rounds and, with
``--heap N``, a tracemalloc mark is taken and the N biggest growths by allocating line are
printed at the end: what the soak left behind.

Figures: RSS at the mark and at the end, the growth per pick and per read (the read-only
phase runs after the pick phase, so each gets its own slope), and the RSS trace: a bounded
node shows a plateau, a leak a line (issue 18: 6-7 KB per pick, 1 KB per read).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from agent.link.settings import BrokerConfig
from agent.oms import OmsClient
from agent.oms.demo.broker import LocalBroker
from agent.wire.messages import PickTask
from bench.common import SITE, node_toml
from bench.hostile import NodeHost, spawn_host

SLOTS = [f"A{i + 1}" for i in range(6)]
NODE = "zone-soak"


def _node_file(state_dir: Path, port: int) -> str:
    """Slots as a pick zone has them: a light, a confirm button and a TM1637 display each."""
    toml = node_toml(state_dir, port, node=NODE)
    # Rounds press each slot every few tens of ms: no double-press guard.
    lines = ["[[devices]]", 'name = "shelf"', 'kind = "gpio_slots"', "double_press_s = 0"]
    for i, slot in enumerate(SLOTS):
        base = 2 + i * 4
        lines += [
            "[[devices.slots]]",
            f'id = "{slot}"',
            f"led = {base}",
            f"confirm = {base + 1}",
            f"display = {{ clk = {base + 2}, dio = {base + 3} }}",
        ]
    return toml + "\n".join(lines) + "\n"


def _tasks(round_: int) -> list[PickTask]:
    return [
        PickTask(
            task=f"R{round_:07d}-{slot}",
            order=f"ORD-{round_:07d}",
            location=slot,
            sku=f"SKU-{(round_ * 8 + i) % 5000:06d}",
            qty=1 + i % 3,
            barcodes=[f"0{4000000000000 + round_ * 8 + i:013d}"],
            container=f"TOTE-{round_ % 300:04d}",
            description=f"Stainless steel kitchen scissors, 21 cm, soft grip, no {i:04d}"[:60],
        )
        for i, slot in enumerate(SLOTS)
    ]


def _get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=10) as response:
        response.read()


def _post(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


async def run_soak(
    work: Path,
    port: int,
    *,
    rounds: int,
    reads: int,
    read_rounds: int,
    warmup: int,
    every: int,
    heap: int,
    via_http: bool = False,
    one_task_commands: bool = False,
    log: Any = print,
) -> dict[str, Any]:
    """Run the soak; returns the figures (see the module doc)."""
    path = work / f"{NODE}.toml"
    path.write_text(_node_file(work / NODE, port))
    proc = spawn_host(path, work / f"{NODE}.log", tracemalloc=heap > 0)
    host = NodeHost(proc)
    broker_cfg = BrokerConfig(
        urls=[f"mqtt://127.0.0.1:{port}"], backoff_initial_s=0.05, backoff_max_s=0.5
    )
    try:
        ready = await host.read(60)
        assert ready.get("ready"), ready
        base = json.loads((work / NODE / "control.json").read_text())["url"]
        url, press_url = base + "/api/state", base + "/sim/shelf/press"
        async with OmsClient(broker_cfg, SITE) as oms:
            await oms.wait_connected()
            picked = 0

            async def pick_round(number: int) -> None:
                nonlocal picked
                tasks = [t.model_dump() for t in _tasks(number)]
                per = 1 if one_task_commands else len(tasks)
                replies = await asyncio.gather(
                    *(
                        oms.call(NODE, "pick", {"tasks": tasks[i : i + per]}, 60)
                        for i in range(0, len(tasks), per)
                    )
                )
                assert all(r.status == "accepted" and not r.items for r in replies), replies
                if via_http:
                    # A press binds to what its slot shows: press once the lines are lit.
                    assert (
                        await host.call({"op": "wait_lit", "count": len(SLOTS), "timeout": 30})
                    )["armed"]
                    assert (await host.read(40))["lit"] >= len(SLOTS)
                for slot in SLOTS:
                    if via_http:
                        await asyncio.to_thread(_post, press_url, {"slot": slot})
                    else:
                        await host.call({"op": "press", "slot": slot})
                want = picked + len(SLOTS)
                async with asyncio.timeout(60):
                    while picked < want:
                        event = await oms.events.get()
                        if event.name in ("picked", "short"):
                            picked += 1

            async def read_round() -> None:
                for _ in range(reads):
                    await asyncio.to_thread(_get, url)

            for number in range(warmup):
                await pick_round(number)
                await read_round()
            if heap:
                await host.call({"op": "heap_mark"}, 120)
            start = await host.call({"op": "status"})
            log(f"after {warmup} warm-up rounds: RSS {start['rss_mb']} MB")
            trace: list[tuple[str, int, float]] = [("picks", 0, start["rss_mb"])]
            t0 = time.monotonic()
            for number in range(warmup, warmup + rounds):
                await pick_round(number)
                done = number - warmup + 1
                if done % every == 0:
                    rss = (await host.call({"op": "status"}))["rss_mb"]
                    trace.append(("picks", done * len(SLOTS), rss))
                    log(f"{done * len(SLOTS)} picks: RSS {rss} MB")
            after_picks = await host.call({"op": "status"})
            for number in range(read_rounds):
                await read_round()
                if (number + 1) % every == 0:
                    rss = (await host.call({"op": "status"}))["rss_mb"]
                    trace.append(("reads", (number + 1) * reads, rss))
                    log(f"{(number + 1) * reads} reads: RSS {rss} MB")
            end = await host.call({"op": "status"})
            growth: list[str] = []
            if heap:
                growth = (await host.call({"op": "heap_diff", "top": heap}, 300))["top"]
        picks = rounds * len(SLOTS)
        total_reads = read_rounds * reads
        return {
            "picks": picks,
            "reads": total_reads,
            "seconds": round(time.monotonic() - t0, 1),
            "rss_start_mb": start["rss_mb"],
            "rss_after_picks_mb": after_picks["rss_mb"],
            "rss_end_mb": end["rss_mb"],
            "kb_per_pick": round((after_picks["rss_mb"] - start["rss_mb"]) * 1024 / picks, 2),
            "kb_per_read": round(
                (end["rss_mb"] - after_picks["rss_mb"]) * 1024 / max(1, total_reads), 3
            ),
            "open_after": end["open"],
            "trace": trace,
            "heap_growth": growth,
        }
    finally:
        if proc.poll() is None:
            try:
                await host.call({"op": "stop"}, 30)
            except Exception:  # stopping anyway
                pass
            proc.wait(15)


def main() -> None:
    """Command line: a private broker, one node, the soak; prints JSON figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--rounds", type=int, default=500, help="pick rounds (6 picks each)")
    parser.add_argument("--reads", type=int, default=20, help="API reads per read round")
    parser.add_argument("--read-rounds", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--heap", type=int, default=0, help="tracemalloc: top N growths")
    parser.add_argument("--via-http", action="store_true", help="press via POST /sim/...")
    parser.add_argument("--one-task-commands", action="store_true", help="a command per line")
    parser.add_argument("--workdir", default="/var/tmp")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="soak-", dir=args.workdir))
    broker = LocalBroker(work / "broker")
    broker.start()
    try:
        result = asyncio.run(
            run_soak(
                work,
                broker.port,
                rounds=args.rounds,
                reads=args.reads,
                read_rounds=args.read_rounds,
                warmup=args.warmup,
                every=args.every,
                heap=args.heap,
                via_http=args.via_http,
                one_task_commands=args.one_task_commands,
                log=lambda s: print(s, file=sys.stderr),
            )
        )
        print(json.dumps(result, indent=1))
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
