"""Work per press, counted instead of timed: instructions and system calls of the node.

``python -m bench.presscount [--tree DIR ...] [--presses 300] [--rounds 1] [--out FILE]``
(valgrind, strace): the press section of ``python -m bench`` (a simulated pick node with 8
GPIO slots and over 1,000 open tasks, in ``bench.nodehost``; a private Mosquitto; the
reference OMS of this checkout here; one press at a time, each waited for until the OMS has
its ``picked``), run once per tree with the node under ``valgrind --tool=callgrind
--instr-atstart=no`` (instrumented only while the presses run, then for 5 s of idling,
which is subtracted) and once with ``strace -c -f`` attached for the presses alone.

Wall-clock latencies on a shared machine move with everyone else's load; these counts do
not: two trees that count the same instructions and system calls per press do the same work
for a press (what remains is the disk's fsync time and the scheduler). ``--tree`` runs the
node of another checkout (the baseline's worktree: its own ``bench/nodehost.py`` and
``agent``, on this checkout's interpreter, as bench/wifi.py does), so before and after are
counted in one run; the trees alternate when ``--rounds`` is above 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.link.settings import BrokerConfig
from agent.oms import OmsClient
from agent.oms.demo.broker import LocalBroker
from bench.common import SITE, NodeHost, node_toml, task

HERE = Path(__file__).resolve().parent
SLOTS = [f"A{i + 1}" for i in range(8)]
WARM = 50
OPEN = 1000
IDLE_S = 5.0


def start_node(tree: Path, work: Path, port: int, tool: str) -> subprocess.Popen[bytes]:
    """``bench.nodehost`` of ``tree`` on a fresh node file; under callgrind if ``tool`` says."""
    path = work / "node.toml"
    path.write_text(node_toml(work / "state", port, node="zone-count", gpio_slots=8))
    argv = [sys.executable, "-m", "bench.nodehost", str(path)]
    if tool == "callgrind":
        argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
        argv += [f"--callgrind-out-file={work / 'node.callgrind'}", sys.executable, "-m"]
        argv += ["bench.nodehost", str(path)]
    with (work / "node.log").open("ab") as log:
        return subprocess.Popen(
            argv,
            cwd=tree,
            env={**os.environ, "PYTHONPATH": str(tree)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )


async def press_run(tree: Path, work: Path, presses: int, tool: str) -> dict[str, Any]:
    """One node of ``tree``; ``presses`` presses counted with ``tool`` (callgrind, strace)."""
    await asyncio.to_thread(work.mkdir, parents=True)
    broker = LocalBroker(work / "broker")
    broker.start()
    host: NodeHost | None = None
    try:
        proc = start_node(tree, work, broker.port, tool)
        host = NodeHost(proc)
        ready = await host.read(600)  # under valgrind the imports alone take a minute
        assert ready.get("ready"), ready
        config = BrokerConfig(urls=[broker.url], backoff_initial_s=0.02, backoff_max_s=0.1)
        picked: asyncio.Queue[None] = asyncio.Queue()
        async with OmsClient(config, SITE, client_id=f"presscount-{os.getpid()}") as oms:
            await oms.wait_connected()

            async def consume() -> None:
                while True:
                    if (await oms.events.get()).name == "picked":
                        picked.put_nowait(None)

            consumer = asyncio.create_task(consume())
            tasks = [task(100_000 + i, SLOTS[i % 8]) for i in range(OPEN + presses + WARM)]
            await asyncio.wait_for(asyncio.gather(*oms.send_tasks("zone-count", tasks)), 600)

            async def press(i: int) -> None:
                await host.call({"op": "press", "slot": SLOTS[i % 8]}, 60)
                await asyncio.wait_for(picked.get(), 60)

            for i in range(WARM):
                await press(i)
            await asyncio.sleep(0.5)  # the warm-up's last ack is committed
            counter = _Counter(tool, proc.pid, work)
            counter.start()
            t0 = time.monotonic()
            for i in range(WARM, WARM + presses):
                await press(i)
            await asyncio.sleep(0.5)  # the last ack is committed too: it is part of a press
            wall = time.monotonic() - t0
            result = counter.stop("presses")
            if tool == "callgrind":
                counter.start()
                t1 = time.monotonic()
                await asyncio.sleep(IDLE_S)
                idle = counter.stop("idle")["instructions"] / (time.monotonic() - t1)
                net = result["instructions"] - idle * wall
                result = {
                    "instructions_per_press": round(net / presses),
                    "idle_instructions_per_s": round(idle),
                }
            consumer.cancel()
        return result
    finally:
        if host is not None:
            await host.close()
        broker.stop()


class _Counter:
    """Switches callgrind's instrumentation on and off, or attaches strace, by pid."""

    def __init__(self, tool: str, pid: int, work: Path) -> None:
        self.tool = tool
        self.pid = pid
        self.work = work
        self.strace: subprocess.Popen[bytes] | None = None
        self.dumps = 0

    def _control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.pid)], check=True, capture_output=True)

    def start(self) -> None:
        if self.tool == "callgrind":
            self._control("-z")
            self._control("-i", "on")
            return
        out = self.work / "strace.txt"
        self.strace = subprocess.Popen(
            ["strace", "-c", "-f", "-p", str(self.pid), "-o", str(out)],
            stderr=subprocess.PIPE,
        )
        assert self.strace.stderr is not None
        # strace says "Process N attached" (once per thread) when it is in place
        os.set_blocking(self.strace.stderr.fileno(), True)
        self.strace.stderr.readline()
        time.sleep(0.2)  # the other threads

    def stop(self, name: str) -> dict[str, Any]:
        if self.tool == "callgrind":
            self._control("-d", name)
            self._control("-i", "off")
            self.dumps += 1
            text = Path(f"{self.work / 'node.callgrind'}.{self.dumps}").read_text()
            total = re.search(r"^summary: (\d+)", text, re.M)
            assert total is not None, "no summary in the callgrind dump"
            return {"instructions": int(total.group(1))}
        assert self.strace is not None
        self.strace.send_signal(signal.SIGINT)
        self.strace.wait(30)
        calls: dict[str, int] = {}
        for line in (self.work / "strace.txt").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[-1] not in ("syscall", "total") and parts[3].isdigit():
                calls[parts[-1]] = int(parts[3])
        return {"syscalls": calls}


def main() -> int:
    """Count, print a table, write the results."""
    parser = argparse.ArgumentParser(prog="python -m bench.presscount", description=__doc__)
    parser.add_argument("--tree", type=Path, action="append", help="a checkout (repeatable)")
    parser.add_argument("--presses", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workdir", default="/var/tmp", help="where state goes (a disk)")
    parser.add_argument("--out", type=Path, default=HERE / "presscount_results.json")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control", "strace"):
        if shutil.which(tool) is None:
            print(f"needs {tool} (apt-get install valgrind strace)", file=sys.stderr)
            return 2
    trees = [t.resolve() for t in (args.tree or [HERE.parent])]
    rows: list[dict[str, Any]] = []
    for r in range(args.rounds):
        order = trees if r % 2 == 0 else trees[::-1]
        for tree in order:
            with tempfile.TemporaryDirectory(prefix="presscount-", dir=args.workdir) as tmp:
                cg = asyncio.run(press_run(tree, Path(tmp) / "cg", args.presses, "callgrind"))
                st = asyncio.run(press_run(tree, Path(tmp) / "st", args.presses, "strace"))
            per_press = {
                k: round(v / args.presses, 2)
                for k, v in sorted(st["syscalls"].items(), key=lambda kv: -kv[1])
            }
            commit = subprocess.run(
                ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            row = {"tree": str(tree), "commit": commit, "round": r + 1, "presses": args.presses}
            row |= cg
            row["syscalls_per_press"] = per_press
            rows.append(row)
            print(
                f"{tree} ({commit}, round {r + 1}): {cg['instructions_per_press'] / 1e6:.3f} M"
                f" instructions per press (idle {cg['idle_instructions_per_s'] / 1e6:.2f} M/s);"
                " system calls per press: "
                + ", ".join(f"{k} {v}" for k, v in per_press.items() if v >= 0.5),
                flush=True,
            )
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
