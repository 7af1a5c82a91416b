"""A node run in-process (``agent.app.run_node``) in its own process, steered over stdin.

``python -m bench.nodehost FILE`` starts the node simulated, then answers one JSON line
on stdout for each JSON line on stdin, so the OMS side of a benchmark runs in another
process (its own CPU) while input can still be injected with ``node.submit_input``. Times
are ``time.monotonic_ns()``, which is CLOCK_MONOTONIC and so comparable across processes.

Operations:

* ``{"op": "press", "slot": S}``: one confirm press; answers ``{"t": ns}`` taken just
  before the press enters the node.
* ``{"op": "press_many", "slots": [...], "count": N, "until_seq": Q}``: N presses, round
  robin over the slots, in one go; answers when the store's last seq reaches Q (every
  press committed), with the start and end times.
* ``{"op": "wait_lit", "count": N, "timeout": s}``: answers ``{"armed": true}`` at once, then
  ``{"t": ns, "lit": n}`` when N slots are lit (or the timeout passes).
* ``{"op": "sim_press", "device": D, "slot": S}``: a press through the device's simulator
  (a GPIO slot's mock pin, an ATOP tag's key sending its CCB over TCP); answers
  ``{"t": ns}`` taken just before the simulator acts.
* ``{"op": "sim_control", "device": D, "action": A, "args": {...}}``: any control action
  of a simulator (kill and restart an ATOP controller); answers ``{"t": ns, "result"}``.
* ``{"op": "wait_shown", "count": N, "timeout": s}``: as ``wait_lit``, but counting the
  slots the simulated *hardware* shows lit (an ATOP tag that took the CCBs), not what the
  driver was asked.
* ``{"op": "status"}``: pid, open tasks, last seq, outbox, RSS, drivers' counters.
* ``{"op": "heap_mark"}`` / ``{"op": "heap_diff", "top": N}``: with ``BENCH_TRACEMALLOC=1``
  in the environment the node runs under tracemalloc (25 frames); ``heap_mark`` takes a
  snapshot after a full collection, ``heap_diff`` answers ``{"top": [...]}``: the N biggest
  growths since the mark, by allocating traceback (bench/hostile.py uses it).
* ``{"op": "stop"}``: clean stop.

With ``BENCH_PROFILE=FILE`` in the environment the whole run is profiled with cProfile
(the event loop's thread only; the store's thread is not seen) and the stats written there.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from agent.app import run_node
from agent.config import load_config
from agent.floor import DeviceFloor
from agent.node import Node
from bench.common import proc_status
from devices.events import Button, ButtonPress


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _lit(floor: DeviceFloor) -> int:
    count = 0
    for dev in floor.devices.values():
        lit = getattr(dev, "lit", None)
        if lit is not None:
            count += len(lit())
    return count


def _shown(floor: DeviceFloor) -> int:
    count = 0
    for sim in floor.simulators.values():
        controller = getattr(sim, "controller", None)
        if controller is not None:  # ATOP: read the tags, not the whole state dict
            count += sum(1 for tag in controller.tags.values() if tag.led != "off")
    return count


async def _wait_lit(
    floor: DeviceFloor, count: int, timeout: float, counter: Callable[[DeviceFloor], int] = _lit
) -> None:
    """Answer when ``counter(floor)`` (lit slots, by default) reaches ``count``."""
    deadline = time.monotonic() + timeout
    lit = counter(floor)
    while lit < count and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
        lit = counter(floor)
    _say({"t": time.monotonic_ns(), "lit": lit})


async def _press_many(node: Node, slots: list[str], count: int, until_seq: int) -> None:
    device = "strip" if slots[0].startswith("S") else "shelf"
    t0 = time.monotonic_ns()
    for i in range(count):
        node.submit_input(ButtonPress(device, slots[i % len(slots)], Button.CONFIRM))
    # polled: the store offers no event for "seq reached"
    while node.store.store.last_seq < until_seq:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    _say({"t0": t0, "t1": time.monotonic_ns(), "last_seq": node.store.store.last_seq})


def _heap_diff(base: tracemalloc.Snapshot, top: int) -> list[str]:
    """The ``top`` biggest growths since ``base``, each with the innermost frames of ours."""
    now = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    out = []
    for stat in now.compare_to(base, "traceback")[:top]:
        frames = [f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}" for f in stat.traceback]
        ours = [f for f in frames if "site-packages" not in f][-4:]
        out.append(
            f"{stat.size_diff / 2**20:+.2f} MB ({stat.count_diff:+d} blocks) "
            + " <- ".join(reversed(ours or frames[-3:]))
        )
    return out


async def main(path: str) -> None:
    """Run the node and serve stdin until ``stop`` or end of input."""
    logging.basicConfig(level=logging.WARNING, format="nodehost %(levelname)s %(message)s")
    config = load_config(path, env={})
    stop = asyncio.Event()
    made: asyncio.Future[tuple[Node, DeviceFloor]] = asyncio.get_running_loop().create_future()
    runner = asyncio.create_task(
        run_node(config, simulate=True, stop=stop, started=lambda n, f: made.set_result((n, f)))
    )
    node, floor = await asyncio.wait_for(made, 10)
    await asyncio.wait_for(node.ready.wait(), 10)
    _say({"ready": True, "pid": os.getpid()})
    background: set[asyncio.Task[None]] = set()
    marks: dict[str, tracemalloc.Snapshot] = {}
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            break
        req = json.loads(line)
        op = req["op"]
        if op == "press":
            device = "strip" if req["slot"].startswith("S") else "shelf"
            t = time.monotonic_ns()
            node.submit_input(ButtonPress(device, req["slot"], Button.CONFIRM))
            _say({"t": t})
        elif op == "press_many":
            task = asyncio.create_task(
                _press_many(node, req["slots"], req["count"], req["until_seq"])
            )
            background.add(task)
        elif op == "sim_press":
            sim = floor.simulators[req["device"]]
            t = time.monotonic_ns()
            await sim.control("press", {"slot": req["slot"]})
            _say({"t": t})
        elif op == "sim_control":
            sim = floor.simulators[req["device"]]
            t = time.monotonic_ns()
            result = await sim.control(req["action"], req.get("args", {}))
            _say({"t": t, "result": result})
        elif op == "wait_shown":
            _say({"armed": True})
            task = asyncio.create_task(_wait_lit(floor, req["count"], req["timeout"], _shown))
            background.add(task)
        elif op == "wait_lit":
            _say({"armed": True})
            task = asyncio.create_task(_wait_lit(floor, req["count"], req["timeout"]))
            background.add(task)
        elif op == "status":
            _say(
                {
                    "pid": os.getpid(),
                    "open": len(getattr(node.workflow, "tasks", {})),
                    "last_seq": node.store.store.last_seq,
                    "outbox": node.sender.pending,
                    "online": node.online.is_set(),
                    "stats": dict(node.stats),
                    "counters": floor.counters(),
                    **proc_status(os.getpid()),
                }
            )
        elif op == "heap_mark":
            gc.collect()
            marks["base"] = tracemalloc.take_snapshot()
            traced = tracemalloc.get_traced_memory()[0]
            _say({"marked": True, "traced_mb": round(traced / 2**20, 1)})
        elif op == "heap_diff":
            gc.collect()
            _say({"top": _heap_diff(marks["base"], int(req.get("top", 15)))})
        elif op == "stop":
            break
    stop.set()
    await asyncio.wait_for(runner, 15)
    _say({"stopped": True})


if __name__ == "__main__":
    if os.environ.get("BENCH_TRACEMALLOC"):
        tracemalloc.start(25)
    profile_to = os.environ.get("BENCH_PROFILE")
    if profile_to:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            asyncio.run(main(sys.argv[1]))
        finally:
            profiler.disable()
            profiler.dump_stats(profile_to)
    else:
        asyncio.run(main(sys.argv[1]))
