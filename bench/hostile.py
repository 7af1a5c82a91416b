"""``python -m bench.hostile``: hostile payloads at volume against a node doing real work.

A pick node (``bench.nodehost``, 8 simulated GPIO slots, its own process) takes rounds of
hostile commands from a lean MQTT driver while it confirms real picks. Each round:

1. ``--round`` hostile payloads (the kinds in ``KINDS``, drawn from a seeded generator), each
   with what docs/protocol.md says the node must answer: nothing (``too_large``,
   ``bad_msgpack``, ``not_a_map``, an envelope with no readable id), a ``rejected`` reply
   with a given reason, an ``accepted`` reply with given per-item reasons, or, for a command
   id the node has applied before, the very reply it sent then (same message id, same seq);
2. one real ``pick`` of 8 tasks (one per slot) and a ``ping`` that closes the round: when its
   reply is in, with every seq before it, the node has handled the whole round;
3. a confirm press on each slot (``node.submit_input``): 8 real ``picked`` events.

Afterwards: every reply checked against its expectation (``mismatches`` lists the first
ones), every real task confirmed exactly once (by distinct seq: an OMS de-duplicates
redelivered seqs), the node alive, and its RSS before and after (MB, VmRSS). With
``--heap N`` the node runs under tracemalloc and the N biggest growths between the first
and the last round (by allocating line) are printed: what the flood left behind.

``run_hostile`` is what ``tests/test_hostile_e2e.py`` runs, a few thousand payloads strong.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.oms.demo.broker import LocalBroker
from agent.store import now_ms
from agent.wire import codec
from agent.wire.messages import Ack
from bench.common import SITE, node_toml
from bench.mqttraw import RawClient

SLOTS = [f"A{i + 1}" for i in range(8)]
NOWHERE = "NOWHERE-1"  # a location the node does not have: tasks there are refused per item


@dataclass(frozen=True)
class Case:
    """One payload and what the node must answer.

    Attributes:
        kind: which of ``KINDS`` made it.
        name: the command name (last topic level).
        payload: the bytes published.
        msg_id: the command id a reply carries; ``None`` when no reply may come.
        reason: the expected ``reason`` (``None`` with ``status`` accepted: no reason).
        status: the expected ``status``.
        items: expected per-item reasons, ``(task id, reason)``.
        same_as: for a repeated id, the id of the command whose reply must come again.
    """

    kind: str
    name: str
    payload: bytes
    msg_id: str | None
    reason: str | None = None
    status: str = "rejected"
    items: tuple[tuple[str, str], ...] = ()
    same_as: str | None = None


def _env(body: Any, msg_id: str | None, **extra: Any) -> dict[str, Any]:
    env: dict[str, Any] = {"v": 1, "ts": now_ms(), "body": body}
    if msg_id is not None:
        env["id"] = msg_id
    env.update(extra)
    return env


def _task(tid: str, location: str = NOWHERE, **over: Any) -> dict[str, Any]:
    task: dict[str, Any] = {"task": tid, "order": "O-1", "location": location, "sku": "SKU-1"}
    task["qty"] = 1
    task.update(over)
    return task


class Generator:
    """Seeded hostile payloads; remembers applied ids so repeats can be checked."""

    def __init__(self, seed: int, skip: frozenset[str] = frozenset()) -> None:
        self.rng = random.Random(seed)
        self.count = 0
        self.applied: list[str] = []  # ids the node applied (their reply is remembered)
        self.kinds: list[Callable[[str], Case]] = [
            self.random_bytes,
            self.truncated,
            self.wrong_type,
            self.missing_id,
            self.bad_id,
            self.big_string,
            self.megabyte,
            self.deep_nesting,
            self.too_deep,
            self.unknown_command,
            self.duplicate_id,
            self.absurd_qty,
            self.garbage_unicode,
            self.bad_utf8,
            self.not_a_map,
            self.wrong_version,
            self.unknown_location,
            self.envelope_extra,
        ]
        # The heavy kinds are rarer: a megabyte through the broker costs what 5,000 small
        # payloads do.
        self.weights = [10 if k not in (self.megabyte, self.big_string) else 1 for k in self.kinds]
        # --skip: leave kinds out, to see which one memory growth comes from
        self.weights = [
            0 if k.__name__ in skip else w for k, w in zip(self.kinds, self.weights, strict=True)
        ]

    def next(self) -> Case:
        """One more hostile payload."""
        self.count += 1
        make = self.rng.choices(self.kinds, self.weights)[0]
        case = make(f"H{self.count:08d}")
        if case.status == "accepted" and case.same_as is None:
            self.applied.append(case.msg_id or "")
            if len(self.applied) > 5000:
                del self.applied[: len(self.applied) - 5000]
        return case

    # --- no reply ----------------------------------------------------------------------

    def random_bytes(self, mid: str) -> Case:
        data = self.rng.randbytes(self.rng.randint(0, 300))
        return Case("random_bytes", "pick", data, None)

    def truncated(self, mid: str) -> Case:
        full = codec.pack_local(_env({"tasks": [_task(f"T-{mid}")]}, mid))
        return Case("truncated", "pick", full[: self.rng.randint(1, len(full) - 1)], None)

    def missing_id(self, mid: str) -> Case:
        return Case("missing_id", "pick", codec.pack_local(_env({"tasks": []}, None)), None)

    def bad_id(self, mid: str) -> Case:
        bad = self.rng.choice(["", "x" * 65, 12345, None, ["a"], b"bin-id"])
        env = _env({}, None)
        env["id"] = bad
        return Case("bad_id", "ping", codec.pack_local(env), None)

    def big_string(self, mid: str) -> Case:
        # Over the unpacker's 64 KiB string limit, under the payload limit: bad_msgpack.
        size = self.rng.randint(64 * 1024 + 1, 400 * 1024)
        env = _env({"tasks": [_task(f"T-{mid}", description="x" * size)]}, mid)
        return Case("big_string", "pick", codec.pack_local(env), None)

    def megabyte(self, mid: str) -> Case:
        env = _env({"blob": b"\x00" * (1024 * 1024)}, mid)  # over 512 KiB: too_large
        return Case("megabyte", "pick", codec.pack_local(env), None)

    def too_deep(self, mid: str) -> Case:
        depth = self.rng.randint(1100, 3000)
        return Case("too_deep", "pick", b"\x91" * depth + b"\x80", None)

    def bad_utf8(self, mid: str) -> Case:
        marker = "\x01" * 8
        raw = codec.pack_local(_env({"tasks": [_task(f"T-{mid}", sku=marker)]}, mid))
        raw = raw.replace(marker.encode(), b"\xff\xfe\xc3\x28\xa0\xa1\xe2\x28")
        return Case("bad_utf8", "pick", raw, None)

    def not_a_map(self, mid: str) -> Case:
        value = self.rng.choice([[1, 2, 3], "pick", 42, None, True, 1.5, b"raw"])
        return Case("not_a_map", "pick", codec.pack_local(value), None)

    # --- answered ----------------------------------------------------------------------

    def wrong_type(self, mid: str) -> Case:
        bad: dict[str, Any] = self.rng.choice(
            [
                {"qty": True},
                {"qty": "2"},
                {"qty": 2.0},
                {"qty": [1]},
                {"express": 1},
                {"location": 5},
                {"barcodes": "4006381333931"},
                {"priority": "high"},
                {"deadline": "tomorrow"},
                {"description": {"a": 1}},
            ]
        )
        body = {"tasks": [_task(f"T-{mid}", **bad)]}
        return Case("wrong_type", "pick", codec.pack_local(_env(body, mid)), mid, "invalid_body")

    def envelope_extra(self, mid: str) -> Case:
        extra = self.rng.choice([{"ts": "now"}, {"ts": -1}, {"colour": "red"}, {"body": [1]}])
        env = _env({}, mid)
        env.update(extra)
        return Case("envelope_extra", "ping", codec.pack_local(env), mid, "invalid_envelope")

    def wrong_version(self, mid: str) -> Case:
        env = _env({}, mid, v=self.rng.choice([0, 2, 255, 7]))
        return Case("wrong_version", "ping", codec.pack_local(env), mid, "unsupported_version")

    def deep_nesting(self, mid: str) -> Case:
        nested: Any = "x"
        for _ in range(self.rng.randint(20, 1000)):  # the envelope adds 2 levels
            nested = [nested]
        body = {"tasks": nested}
        return Case("deep_nesting", "pick", codec.pack_local(_env(body, mid)), mid, "invalid_body")

    def unknown_command(self, mid: str) -> Case:
        name = self.rng.choice(["put", "frobnicate", "PICK", "pick2", "ack", "x" * 64, "é-ü"])
        return Case("unknown_command", name, codec.pack_local(_env({}, mid)), mid, "unknown_type")

    def absurd_qty(self, mid: str) -> Case:
        over = self.rng.choice(
            [
                {"qty": 0},
                {"qty": -1},
                {"qty": 10_000},
                {"qty": 10**9},
                {"qty": 2**63 - 1},
                {"qty": -(2**63)},
                {"priority": 10},
                {"priority": -3},
                {"deadline": -5},
            ]
        )
        body = {"tasks": [_task(f"T-{mid}", **over)]}
        return Case("absurd_qty", "pick", codec.pack_local(_env(body, mid)), mid, "invalid_body")

    def garbage_unicode(self, mid: str) -> Case:
        text = self.rng.choice(
            [
                "\u202etask\u202c",  # right-to-left override
                "T\u200b1",  # zero-width space
                "\U0001f4a9" * 3,
                "T\x00\x01",  # control characters
                "Ā" * 10,
            ]
        )
        where = self.rng.choice(["task", "sku", "order", "description"])
        task = _task(f"T-{mid}")
        task[where] = text if where != "description" else "\U0001f4a9" * 300  # over 256
        body = {"tasks": [task]}
        return Case(
            "garbage_unicode", "pick", codec.pack_local(_env(body, mid)), mid, "invalid_body"
        )

    def unknown_location(self, mid: str) -> Case:
        # Applied: accepted, the task refused per item; the id is remembered.
        tid = f"T-{mid}"
        body = {"tasks": [_task(tid, description="\u00e9\u00e8 \u4e2d\u6587 \u202e")]}
        return Case(
            "unknown_location",
            "pick",
            codec.pack_local(_env(body, mid)),
            mid,
            None,
            status="accepted",
            items=((tid, "unknown_location"),),
        )

    def duplicate_id(self, mid: str) -> Case:
        if not self.applied:
            return self.unknown_location(mid)
        old = self.rng.choice(self.applied)
        # Same id, another body and even another command name: the first reply again.
        name, body = self.rng.choice(
            [("pick", {"tasks": [_task(f"T-{mid}", location=SLOTS[0])]}), ("ping", {})]
        )
        return Case(
            "duplicate_id",
            name,
            codec.pack_local(_env(body, old)),
            old,
            None,
            status="accepted",
            same_as=old,
        )


@dataclass
class Tally:
    """What the driver saw."""

    replies: dict[str, list[tuple[int, str, dict[str, Any]]]] = field(default_factory=dict)
    arrivals: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # redeliveries too
    picked: dict[str, set[int]] = field(default_factory=dict)
    seqs: set[int] = field(default_factory=set)
    contiguous: int = 0
    store: str | None = None
    events: int = 0


class Driver:
    """The OMS side: publishes, collects replies and confirmations, acknowledges."""

    def __init__(self, port: int, node: str) -> None:
        self.node = node
        self.prefix = f"wh/v1/{SITE}/{node}"
        self.client = RawClient("127.0.0.1", port, f"hostile-{os.getpid()}", self._on_message)
        self.tally = Tally()
        self.waiters: dict[str, asyncio.Future[None]] = {}
        self._acked = 0

    async def start(self) -> None:
        """Connect and subscribe to the node's events."""
        await self.client.connect()
        await self.client.subscribe(f"{self.prefix}/evt/+")

    def _on_message(self, topic: str, payload: bytes) -> None:
        data = codec.unpack(payload)
        if topic.endswith("/evt/batch"):
            for name, env in data["body"]["events"]:
                self._event(name, env)
        else:
            self._event(topic.rsplit("/", 1)[1], data)
        if self.tally.contiguous - self._acked >= 100:
            self.ack()

    def _event(self, name: str, env: dict[str, Any]) -> None:
        t = self.tally
        seq = env["seq"]
        t.store = env.get("store", t.store)
        if name == "reply":
            t.arrivals.setdefault(env["corr"], []).append((seq, env["id"]))
        if seq in t.seqs:
            return  # a redelivery: an OMS drops it
        t.seqs.add(seq)
        t.events += 1
        while t.contiguous + 1 in t.seqs:
            t.contiguous += 1
        if name == "reply":
            corr = env["corr"]
            t.replies.setdefault(corr, []).append((seq, env["id"], env["body"]))
            waiter = self.waiters.pop(corr, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif name == "picked":
            t.picked.setdefault(env["body"]["task"], set()).add(seq)

    def ack(self, resend: bool = False) -> None:
        """Acknowledge every event up to the last contiguous seq."""
        self._acked = self.tally.contiguous
        body = Ack(seq=self._acked, resend=resend, store=self.tally.store)
        payload = codec.encode(body, msg_id=codec.new_id(), ts=now_ms())
        task = asyncio.ensure_future(self.client.publish(f"{self.prefix}/ack", payload))
        task.add_done_callback(lambda _t: None)

    async def send(self, name: str, payload: bytes) -> None:
        """Publish one command (waits for an in-flight slot, not for PUBACK)."""
        await self.client.publish(f"{self.prefix}/cmd/{name}", payload)

    async def command(self, name: str, body: Any, timeout: float) -> str:
        """Send a command with a fresh id and wait for its reply; returns the id."""
        mid = codec.new_id()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters[mid] = fut
        payload = codec.encode(body, msg_id=mid, ts=now_ms())
        deadline = time.monotonic() + timeout
        # Resent, unchanged, until answered (as an OMS must): the node may not have
        # subscribed yet, or the broker dropped it.
        while not fut.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reply to {name} {mid} within {timeout} s")
            await self.send(name, payload)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(fut), 3.0)
        return mid

    async def caught_up(self, seq: int, timeout: float) -> None:
        """Wait until every event up to ``seq`` is in (asking for a resend if it stalls)."""
        deadline = time.monotonic() + timeout
        asked = time.monotonic()
        while self.tally.contiguous < seq:
            if time.monotonic() > deadline:
                raise TimeoutError(f"events stuck at seq {self.tally.contiguous} < {seq}")
            if time.monotonic() - asked > 2:
                self.ack(resend=True)
                asked = time.monotonic()
            await asyncio.sleep(0.01)


def check_repeat(old: str, repeats: int, tally: Tally) -> str | None:
    """Why the answers to ``repeats`` resends of the applied command ``old`` are wrong."""
    first = tally.replies.get(old, [])
    if not first:
        return "the original reply is missing"
    arrivals = tally.arrivals.get(old, [])
    if len(arrivals) < 1 + repeats:
        return f"{len(arrivals) - 1} answers to {repeats} repeats"
    if any(a != (first[0][0], first[0][1]) for a in arrivals):
        return f"a repeat was answered with another reply: {set(arrivals)}, first {first[0][:2]}"
    return None


def check(case: Case, got: list[tuple[int, str, dict[str, Any]]]) -> str | None:
    """Why the replies ``got`` for ``case`` are not what docs/protocol.md says, or None."""
    if case.msg_id is None or case.same_as is not None:
        return None  # no reply may come (see unexpected_replies) / checked by check_repeat
    if len(got) != 1:
        return f"{len(got)} replies"
    _seq, _mid, body = got[0]
    if body.get("status") != case.status or body.get("reason") != case.reason:
        return f"got {body.get('status')}/{body.get('reason')}: {body.get('detail')}"
    items = tuple((i["id"], i.get("reason")) for i in body.get("items", []))
    if items != case.items:
        return f"items {items}, expected {case.items}"
    expected_cmd = case.name if codec_name_ok(case.name) else "?"
    if body.get("cmd") != expected_cmd:
        return f"cmd {body.get('cmd')!r}, expected {expected_cmd!r}"
    if case.reason in ("invalid_body", "invalid_envelope") and not body.get("detail"):
        return "no detail naming the field"
    return None


def codec_name_ok(name: str) -> bool:
    """Whether a command name is echoed in ``reply.cmd`` (printable ASCII, 1-64)."""
    return 1 <= len(name) <= 64 and all("!" <= c <= "~" for c in name)


class NodeHost:
    """A ``bench.nodehost`` child process, steered over stdin/stdout."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    async def call(self, req: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        """Send one request and read one answer line."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req).encode() + b"\n")
        self.proc.stdin.flush()
        return await self.read(timeout)

    async def read(self, timeout: float) -> dict[str, Any]:
        """The next answer line."""
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        if not line:
            raise RuntimeError("the node host exited")
        result: dict[str, Any] = json.loads(line)
        return result


def spawn_host(path: Path, log_path: Path, *, tracemalloc: bool = False) -> subprocess.Popen[bytes]:
    """Start ``bench.nodehost`` on the node file ``path``, its log going to ``log_path``."""
    env = dict(os.environ)
    if tracemalloc:
        env["BENCH_TRACEMALLOC"] = "1"
    with log_path.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.nodehost", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
        )


async def run_hostile(
    work: Path,
    port: int,
    payloads: int,
    *,
    per_round: int = 400,
    seed: int = 1,
    heap: int = 0,
    skip: frozenset[str] = frozenset(),
    log: Callable[[str], None] = lambda _s: None,
) -> dict[str, Any]:
    """Flood a fresh node host with ``payloads`` hostile payloads; returns the figures.

    Args:
        work: a directory for the node file, its state and its log.
        port: the broker's port on 127.0.0.1.
        payloads: how many hostile payloads in all.
        per_round: payloads between two rounds of real work (below Mosquitto's 1,000
            queued messages per client, so the broker drops none).
        seed: the generator's seed.
        heap: with N > 0, run the node under tracemalloc and report its N biggest growths.
        skip: kinds to leave out (names of ``Generator`` methods).
        log: progress lines.
    """
    node = "zone-hostile"
    path = work / f"{node}.toml"
    path.write_text(node_toml(work / node, port, node=node, gpio_slots=len(SLOTS)))
    proc = spawn_host(path, work / f"{node}.log", tracemalloc=heap > 0)
    host = NodeHost(proc)
    driver = Driver(port, node)
    gen = Generator(seed, skip)
    cases: dict[str, Case] = {}
    mismatches: list[str] = []
    mismatched = 0
    repeats: Counter[str] = Counter()
    kinds: Counter[str] = Counter()

    def mismatch(text: str) -> None:
        nonlocal mismatched
        mismatched += 1
        if len(mismatches) < 50:
            mismatches.append(text)

    real: list[str] = []
    try:
        ready = await host.read(60)
        assert ready.get("ready"), ready
        await driver.start()
        await driver.command("ping", {}, 30)

        async def real_round(number: int) -> None:
            tasks = [
                {"task": f"R{number:06d}-{slot}", "order": f"RO-{number}", "location": slot}
                | {"sku": "SKU-REAL", "qty": 1}
                for slot in SLOTS
            ]
            mid = await driver.command("pick", {"tasks": tasks}, 60)
            body = driver.tally.replies[mid][0][2]
            if body.get("status") != "accepted" or body.get("items"):
                mismatch(f"real pick {mid}: {body}")
            real.extend(t["task"] for t in tasks)
            for slot in SLOTS:
                await host.call({"op": "press", "slot": slot})

        await real_round(0)
        before = await host.call({"op": "status"})
        if heap:
            await host.call({"op": "heap_mark"}, 120)
        log(f"before the flood: RSS {before['rss_mb']} MB")
        t0 = time.monotonic()
        rss_trace: list[tuple[int, float]] = [(0, before["rss_mb"])]
        sent = 0
        rounds = 0
        while sent < payloads:
            batch = [gen.next() for _ in range(min(per_round, payloads - sent))]
            for case in batch:
                kinds[case.kind] += 1
                if case.msg_id is not None and case.same_as is None:
                    cases[case.msg_id] = case
                await driver.send(case.name, case.payload)
            sent += len(batch)
            rounds += 1
            await real_round(rounds)
            sync = await driver.command("ping", {}, 120)
            await driver.caught_up(driver.tally.replies[sync][0][0], 120)
            for case in batch:
                if case.same_as is not None:
                    repeats[case.same_as] += 1
                why = check(case, driver.tally.replies.get(case.msg_id or "", []))
                if why is not None:
                    mismatch(f"{case.kind} {case.msg_id}: {why}")
            for old in {c.same_as for c in batch if c.same_as is not None}:
                assert old is not None
                why = check_repeat(old, repeats[old], driver.tally)
                if why is not None:
                    mismatch(f"duplicate_id {old}: {why}")
            if rounds % 25 == 0:
                rss = (await host.call({"op": "status"}))["rss_mb"]
                rss_trace.append((sent, rss))
                log(f"{sent} payloads sent, {len(real)} real tasks, RSS {rss} MB")
        elapsed = time.monotonic() - t0
        # Every real task confirmed: wait for the last presses to come through.
        deadline = time.monotonic() + 60
        # polled: the driver's tally has no event for "all confirmed"
        missing = [t for t in real if t not in driver.tally.picked]
        while missing and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            missing = [t for t in missing if t not in driver.tally.picked]
        driver.ack()
        after = await host.call({"op": "status"})
        growth: list[str] = []
        if heap:
            growth = (await host.call({"op": "heap_diff", "top": heap}, 300))["top"]
        # A reply to a payload that must get none (its id was inside, but unreadable).
        unexpected = sorted(c for c in driver.tally.replies if c.startswith("H") and c not in cases)
        counts = Counter(len(driver.tally.picked.get(t, ())) for t in real)
        result = {
            "payloads": sent,
            "kinds": dict(sorted(kinds.items())),
            "rounds": rounds,
            "seconds": round(elapsed, 1),
            "payloads_per_s": round(sent / elapsed) if elapsed else None,
            "answers_checked": len(cases),
            "repeats_checked": sum(repeats.values()),
            "mismatched": mismatched,
            "mismatches": mismatches,
            "unexpected_replies": unexpected[:20],
            "real_tasks": len(real),
            "confirmed_once": counts.get(1, 0),
            "lost": counts.get(0, 0),
            "doubled": sum(n for k, n in counts.items() if k > 1),
            "node_alive": proc.poll() is None,
            "rss_before_mb": before["rss_mb"],
            "rss_after_mb": after["rss_mb"],
            "rss_trace_mb": rss_trace,
            "open_after": after["open"],
            "node_stats": after.get("stats"),
            "heap_growth": growth,
            "log_lines": _lines(work / f"{node}.log"),
            "log_warnings": _lines(work / f"{node}.log", " WARNING "),
        }
        return result
    finally:
        with contextlib.suppress(Exception):
            await driver.client.close()
        if proc.poll() is None:
            with contextlib.suppress(Exception):
                await host.call({"op": "stop"}, 30)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _lines(path: Path, containing: str = "") -> int:
    """Lines of the node's log (containing ``containing``): what the flood cost the journal."""
    try:
        with path.open(errors="replace") as f:
            return sum(1 for line in f if containing in line)
    except OSError:
        return 0


def main() -> None:
    """Command line: one private broker, one node, the flood; prints JSON figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__)
    parser.add_argument("--payloads", type=int, default=100_000)
    parser.add_argument("--round", type=int, default=400, dest="per_round")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--heap", type=int, default=0, help="tracemalloc: top N growths")
    parser.add_argument("--skip", nargs="*", default=[], help="kinds to leave out")
    parser.add_argument("--workdir", default="/var/tmp")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zone-agent-hostile-", dir=args.workdir))

    def say(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    try:
        with LocalBroker(work / "broker") as broker:
            result = asyncio.run(
                run_hostile(
                    work,
                    broker.port,
                    args.payloads,
                    per_round=args.per_round,
                    seed=args.seed,
                    heap=args.heap,
                    skip=frozenset(args.skip),
                    log=say,
                )
            )
        print(json.dumps(result, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
