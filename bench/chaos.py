"""``python -m bench.chaos``: exactly-once under chaos, the node driven as a black box.

A simulated pick node (``zone-agent run FILE --simulate``, a child process) is driven only
through the broker (the reference ``OmsClient``) and the node's control API (presses, and
``/api/state`` for the lights), while faults are injected in turn:

* the broker (a real Mosquitto, ``persistence false``) restarted ``--broker-restarts``
  times, alternately with SIGTERM and SIGKILL, down ``--down-s`` each time;
* the node SIGKILLed ``--node-kills`` times while tasks arrive and presses go in, and
  started again on the same state directory;
* a ``--partition-s`` partition: the node reaches the broker through ``Blackhole``, a TCP
  proxy on loopback that then stops forwarding (and serving new connections) without
  closing anything, as a dead link or a switch dropping packets would look;
* ``--oms-cuts`` OMS reconnects: the OMS reaches the broker through a proxy of its own,
  whose connections are closed.

Work runs throughout: rounds of one task per slot, sent while fewer than 3 rounds are open,
and a "picker" that presses each slot whose light shows a task (again if it still shows it
1.5 s later: the press may have died with the node). After each fault the runner pauses the
work, waits until every command is answered and the OMS has every event the node committed,
and checks the lights against the OMS's open tasks: a location is lit exactly when the OMS
has open tasks there, it shows one of them, and its ``open`` count is theirs. At the end
every accepted task must have been confirmed exactly once (distinct events at the OMS,
which de-duplicates by store and seq as the protocol says); the runner prints the counts,
and per fault the seconds from the fault healing to the node's next birth at the OMS.

``run_chaos`` is what ``tests/test_chaos_e2e.py`` runs with short parameters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.link.settings import BrokerConfig
from agent.oms import OmsClient
from agent.oms.demo.broker import LocalBroker, free_port
from agent.wire.messages import Reply
from bench.common import SITE

NODE = "zone-chaos"
SLOTS = [f"A{i + 1}" for i in range(8)]


@dataclass
class Params:
    """How long and how hard (the defaults are the full scenario of issue 11)."""

    broker_restarts: int = 5
    node_kills: int = 3
    oms_cuts: int = 2
    partition_s: float = 30.0
    down_s: float = 2.0
    work_s: float = 6.0
    open_rounds: int = 3
    settle_s: float = 90.0


class Blackhole:
    """A TCP proxy on loopback that can stop forwarding without closing anything.

    Args:
        upstream: the port it forwards to on 127.0.0.1.
    """

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen on 127.0.0.1."""
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def partition(self) -> None:
        """Stop forwarding: bytes stay where they are, nothing is closed."""
        self.flowing.clear()

    def heal(self) -> None:
        """Forward again (what waited in the socket buffers goes through)."""
        self.flowing.set()

    def cut(self) -> None:
        """Close every connection (a clean close: the clients reconnect)."""
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        await self.flowing.wait()  # during a partition: accepted, never served
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()  # the broker is down: a front that accepts and closes
            return
        self._writers.add(up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink, (writer, up_writer)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while True:
                await self.flowing.wait()
                data = await source.read(65536)
                if not data:
                    break
                await self.flowing.wait()
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            for w in pair:
                w.close()
                self._writers.discard(w)


def node_file(work: Path, proxy_port: int) -> Path:
    """A pick node with 8 simulated GPIO slots, reaching the broker through the proxy."""
    lines = [
        f'site = "{SITE}"',
        f'node = "{NODE}"',
        'role = "pick"',
        f'state_dir = "{work / NODE}"',
        "[broker]",
        f'urls = ["mqtt://127.0.0.1:{proxy_port}"]',
        "keepalive_s = 5",
        "backoff_initial_s = 0.2",
        "backoff_max_s = 2.0",
        "[[devices]]",
        'name = "shelf"',
        'kind = "gpio_slots"',
        "double_press_s = 0",
    ]
    for i, slot in enumerate(SLOTS):
        base = 2 + i * 3
        lines += ["[[devices.slots]]", f'id = "{slot}"', f"led = {base}", f"confirm = {base + 1}"]
    path = work / f"{NODE}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class NodeProcess:
    """The node as a child process, found through its ``control.json``."""

    def __init__(self, path: Path, state_dir: Path, log: Path) -> None:
        self.path = path
        self.state_dir = state_dir
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.url: str | None = None

    def start(self) -> None:
        """Start it (the URL is found by ``wait_control``)."""
        self.url = None
        env = dict(os.environ, ZONE_AGENT_HTTP_PORT="0")
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "run", str(self.path), "--simulate"],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
            )

    async def wait_control(self, timeout: float = 30) -> None:
        """Wait for the ``control.json`` of this process."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        path = self.state_dir / "control.json"
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                info = json.loads(path.read_text())
                if info.get("pid") == self.proc.pid:
                    self.url = info["url"]
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"the node exited ({self.proc.returncode}); see {self.log}")
            await asyncio.sleep(0.05)
        raise TimeoutError("the node wrote no control.json")

    def kill(self) -> None:
        """SIGKILL, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.url = None

    def stop(self) -> None:
        """SIGTERM (a clean stop), SIGKILL after 15 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def http(self, method: str, route: str, body: Any = None) -> Any:
        """One control API call (in a thread; ``None`` when the node does not answer)."""
        url = self.url
        if url is None:
            return None

        def call() -> Any:
            data = None if body is None else json.dumps(body).encode()
            request = urllib.request.Request(url + route, data=data, method=method)
            with urllib.request.urlopen(request, timeout=2) as response:
                return json.loads(response.read())

        try:
            return await asyncio.to_thread(call)
        except (OSError, ValueError, urllib.error.URLError):
            return None


@dataclass
class Figures:
    """What the run counted."""

    sent: dict[str, str] = field(default_factory=dict)  # task -> location
    accepted: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)
    confirmations: Counter[str] = field(default_factory=Counter)
    presses: int = 0
    births: list[float] = field(default_factory=list)  # monotonic times of online births
    confirmed_at: list[float] = field(default_factory=list)  # of confirmations at the OMS
    faults: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)

    def open_at(self) -> dict[str, set[str]]:
        """The OMS's open tasks by location."""
        out: dict[str, set[str]] = {slot: set() for slot in SLOTS}
        for task in self.accepted:
            if not self.confirmations[task]:
                out[self.sent[task]].add(task)
        return out


class Chaos:
    """One chaos run."""

    def __init__(self, work: Path, params: Params, log: Callable[[str], None]) -> None:
        self.work = work
        self.params = params
        self.say = log
        self.broker = LocalBroker(work / "broker")
        self.figures = Figures()
        self.working = asyncio.Event()
        self.generating = True
        self.replies: list[asyncio.Future[Reply]] = []
        self.rounds = 0
        self._pressed: dict[str, float] = {}
        self.pressing = asyncio.Lock()
        self.consumed: dict[str | None, int] = {}  # highest seq taken in, per store

    async def run(self) -> dict[str, Any]:
        """Start everything, inject the faults, check, tally."""
        self.broker.start()
        node_proxy = Blackhole(self.broker.port)
        oms_proxy = Blackhole(self.broker.port)
        await node_proxy.start()
        await oms_proxy.start()
        self.node_proxy, self.oms_proxy = node_proxy, oms_proxy
        path = node_file(self.work, node_proxy.port)
        self.node = NodeProcess(path, self.work / NODE, self.work / f"{NODE}.log")
        broker_cfg = BrokerConfig(
            urls=[f"mqtt://127.0.0.1:{oms_proxy.port}"],
            backoff_initial_s=0.1,
            backoff_max_s=1.0,
            keepalive_s=5,
        )
        self.oms = OmsClient(broker_cfg, SITE, client_id="chaos-oms", resend_s=3.0)
        workers: list[asyncio.Task[None]] = []
        try:
            async with self.oms:
                await self.oms.wait_connected(15)
                workers = [
                    asyncio.create_task(self._consume()),
                    asyncio.create_task(self._births()),
                    asyncio.create_task(self._send_work()),
                    asyncio.create_task(self._press()),
                ]
                self.node.start()
                await self.node.wait_control()
                await self._online_after(time.monotonic() - 60)
                self.working.set()
                await self._faults()
                return await self._finish()
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self.node.stop()
            await node_proxy.close()
            await oms_proxy.close()
            self.broker.stop()

    # --- the faults --------------------------------------------------------------------

    def _plan(self) -> list[str]:
        p = self.params
        broker = [
            "broker_sigterm" if i % 2 == 0 else "broker_sigkill" for i in range(p.broker_restarts)
        ]
        others = ["node_sigkill"] * p.node_kills + ["oms_reconnect"] * p.oms_cuts
        plan: list[str] = []
        while broker or others:
            if broker:
                plan.append(broker.pop(0))
            if others:
                plan.append(others.pop(0))
            if len(plan) == 3 and p.partition_s > 0:
                plan.append("partition")
        if p.partition_s > 0 and "partition" not in plan:
            plan.append("partition")
        return plan

    async def _faults(self) -> None:
        for fault in self._plan():
            await asyncio.sleep(self.params.work_s)
            self.say(f"fault: {fault}")
            began = time.monotonic()
            healed = await getattr(self, f"_{fault}")()
            flowing = await self._confirmed_after(healed)
            births = [t for t in self.figures.births if t >= healed]
            record = {
                "fault": fault,
                "seconds": round(healed - began, 2),
                # None: the node kept its connection (a partition shorter than keepalive)
                "healed_to_birth_s": round(births[0] - healed, 2) if births else None,
                "healed_to_confirmation_s": round(flowing - healed, 2) if flowing else None,
            }
            record["check"] = await self._check(fault)
            self.figures.faults.append(record)
            self.say(f"  {record}")

    async def _broker_down(self, sig: signal.Signals) -> float:
        proc = self.broker._proc
        assert proc is not None
        proc.send_signal(sig)
        await asyncio.to_thread(proc.wait, 10)
        self.broker._proc = None
        await asyncio.sleep(self.params.down_s)
        await asyncio.to_thread(self.broker.start)
        return time.monotonic()

    async def _broker_sigterm(self) -> float:
        return await self._broker_down(signal.SIGTERM)

    async def _broker_sigkill(self) -> float:
        return await self._broker_down(signal.SIGKILL)

    async def _node_sigkill(self) -> float:
        # Mid-work: right after a press went in and with a command on its way.
        await self._wait_pressing()
        self.node.kill()
        await asyncio.sleep(0.5)
        self.node.start()
        healed = time.monotonic()
        await self.node.wait_control()
        return healed

    async def _partition(self) -> float:
        self.node_proxy.partition()
        await asyncio.sleep(self.params.partition_s)
        self.node_proxy.heal()
        return time.monotonic()

    async def _oms_reconnect(self) -> float:
        self.oms_proxy.cut()
        return time.monotonic()

    async def _wait_pressing(self, timeout: float = 10) -> None:
        presses = self.figures.presses
        deadline = time.monotonic() + timeout
        # polled: the presser has no event to wait on
        while self.figures.presses == presses and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    async def _confirmed_after(self, since: float, timeout: float = 60) -> float | None:
        deadline = time.monotonic() + timeout
        # polled: the consumer has no event to wait on
        while time.monotonic() < deadline:
            later = [t for t in self.figures.confirmed_at if t >= since]
            if later:
                return later[0]
            await asyncio.sleep(0.02)
        return None

    async def _online_after(self, since: float, timeout: float = 60) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [t for t in self.figures.births if t >= since]
            if later:
                return later[0]
            await asyncio.sleep(0.02)
        return None

    # --- the checks --------------------------------------------------------------------

    async def _quiet(self) -> dict[str, Any] | None:
        """Pause the work; wait until every command is answered and every event is in.

        Quiet means: no press in flight, every command answered, the node's state the same
        twice in a row, and every event up to its last seq taken in by the consumer (not
        only delivered by the OMS client: its queue may still hold some).
        """
        self.working.clear()
        async with self.pressing:
            pass  # a press under way finishes first
        deadline = time.monotonic() + self.params.settle_s
        previous: Any = None
        while time.monotonic() < deadline:
            state = await self.node.http("GET", "/api/state")
            view = self.oms.nodes.get(NODE)
            if (
                state is not None
                and view is not None
                and all(r.done() for r in self.replies)
                and self.oms.events.empty()
                and self.consumed.get(view.store, 0) >= state["last_seq"]
                and state == previous
            ):
                return dict(state)
            previous = state
            await asyncio.sleep(0.2)
        return None

    async def _check(self, after: str) -> dict[str, Any]:
        state = await self._quiet()
        try:
            if state is None:
                result = {"after": after, "ok": False, "why": "never quiet"}
            else:
                result = self._compare(after, state)
            self.figures.checks.append(result)
            return result
        finally:
            self.working.set()

    def _compare(self, after: str, state: dict[str, Any]) -> dict[str, Any]:
        wrong: list[str] = []
        open_at = self.figures.open_at()
        locations = state["workflow"]["locations"]
        for slot in SLOTS:
            expected = open_at[slot]
            light = state["lights"].get(slot)
            view = locations.get(slot, {})
            shown = (view.get("shown") or {}).get("task")
            if bool(expected) != (light is not None):
                wrong.append(f"{slot}: lit={light is not None}, OMS has {len(expected)} open")
            if expected and shown not in expected:
                wrong.append(f"{slot}: shows {shown}, not one of the OMS's open tasks")
            if view.get("open", 0) != len(expected):
                wrong.append(f"{slot}: node open {view.get('open')}, OMS {len(expected)}")
        total = sum(len(v) for v in open_at.values())
        return {"after": after, "ok": not wrong, "open": total, "wrong": wrong[:10]}

    # --- the work ----------------------------------------------------------------------

    async def _consume(self) -> None:
        while True:
            event = await self.oms.events.get()
            if event.node == NODE and event.envelope.seq is not None:
                store = event.envelope.store
                self.consumed[store] = max(self.consumed.get(store, 0), event.envelope.seq)
            if event.node == NODE and event.name in ("picked", "short"):
                body = event.body
                task = body["task"] if isinstance(body, dict) else body.task  # type: ignore[attr-defined]
                self.figures.confirmations[task] += 1
                self.figures.confirmed_at.append(time.monotonic())

    async def _births(self) -> None:
        while True:
            node, state, _boot = await self.oms.state_changes.get()
            if node == NODE and state.online:
                self.figures.births.append(time.monotonic())

    async def _send_work(self) -> None:
        while True:
            await self.working.wait()
            open_now = sum(len(v) for v in self.figures.open_at().values())
            unanswered = sum(not r.done() for r in self.replies)
            if self.generating and open_now + unanswered * 8 < self.params.open_rounds * 8:
                self.rounds += 1
                tasks = [
                    {"task": f"C{self.rounds:05d}-{slot}", "order": f"CO-{self.rounds}"}
                    | {"location": slot, "sku": "SKU-1", "qty": 1}
                    for slot in SLOTS
                ]
                for t in tasks:
                    self.figures.sent[t["task"]] = t["location"]
                reply = self.oms.send(NODE, "pick", {"tasks": tasks})
                reply.add_done_callback(lambda f, ts=tasks: self._answered(f, ts))
                self.replies.append(reply)
            await asyncio.sleep(0.25)

    def _answered(self, future: asyncio.Future[Reply], tasks: list[dict[str, Any]]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        reply = future.result()
        refused = {item.id: item.reason or item.status for item in reply.items}
        for t in tasks:
            if reply.status == "accepted" and t["task"] not in refused:
                self.figures.accepted.add(t["task"])
            else:
                self.figures.refused[t["task"]] = refused.get(t["task"], reply.reason or "?")

    async def _press(self) -> None:
        while True:
            await self.working.wait()
            state = await self.node.http("GET", "/api/state")
            if state is None:
                await asyncio.sleep(0.1)
                continue
            now = time.monotonic()
            for slot, view in state["workflow"]["locations"].items():
                task = (view.get("shown") or {}).get("task")
                if task is None or now - self._pressed.get(task, -1e9) < 1.5:
                    continue
                async with self.pressing:
                    if not self.working.is_set():
                        break
                    pressed = await self.node.http("POST", "/sim/shelf/press", {"slot": slot})
                if pressed is not None:
                    self._pressed[task] = now
                    self.figures.presses += 1
            await asyncio.sleep(0.05)

    async def _finish(self) -> dict[str, Any]:
        self.generating = False
        self.say("no more work: confirming what is open")
        deadline = time.monotonic() + self.params.settle_s
        while time.monotonic() < deadline:
            if all(r.done() for r in self.replies) and not any(self.figures.open_at().values()):
                break
            await asyncio.sleep(0.2)
        final = await self._check("end")
        f = self.figures
        counts = Counter(f.confirmations[t] for t in f.accepted)
        stray = sorted(t for t in f.confirmations if t not in f.accepted)
        return {
            "params": self.params.__dict__,
            "tasks_sent": len(f.sent),
            "tasks_accepted": len(f.accepted),
            "tasks_refused": f.refused,
            "confirmed_exactly_once": counts.get(1, 0),
            "lost": counts.get(0, 0),
            "doubled": sum(n for k, n in counts.items() if k > 1),
            "confirmed_but_never_accepted": stray[:20],
            "presses": f.presses,
            "faults": f.faults,
            "light_checks": len(f.checks),
            "light_checks_failed": [c for c in f.checks if not c["ok"]],
            "final_check": final,
            "oms_duplicates_dropped": self.oms.duplicates,
        }


async def run_chaos(work: Path, params: Params, log: Callable[[str], None]) -> dict[str, Any]:
    """One chaos run in ``work``; returns the figures."""
    return await Chaos(work, params, log).run()


def main() -> None:
    """Command line: the scenario with its parameters; prints JSON figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    defaults = Params()
    for name, value in defaults.__dict__.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--workdir", default="/var/tmp")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    params = Params(**{k: getattr(args, k) for k in defaults.__dict__})
    work = Path(tempfile.mkdtemp(prefix="zone-agent-chaos-", dir=args.workdir))

    def say(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    try:
        result = asyncio.run(run_chaos(work, params, say))
        print(json.dumps(result, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"kept {work}")


if __name__ == "__main__":
    main()
