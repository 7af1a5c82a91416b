"""``python -m bench.site``: the site service with 100 simulated zones (issue 23 item 7).

One private Mosquitto, one ``zone-agent site serve`` process (SQLite log), and in this
process 100 simulated pick nodes (``testing.fakefleet``: one MQTT connection each, the wire
protocol and nothing else), a cursor reader (long-poll) and two webhook receivers (a
minimal HTTP/1.1 server with keep-alive). Phases:

1. **Wave burst**: a wave of ``--lines`` one-line orders over all nodes goes in through
   ``POST /v1/waves``; the router sends the pick commands; every node confirms all its lines
   at once. Events per second into the log (``logged`` of the first and last), out through
   the cursor and out through two webhook endpoints, ``batch`` 100 and ``batch`` 1.
2. **Steady rate**: the nodes emit confirmations at ``--rate`` per second in total for
   ``--seconds``; event to log, to cursor reader and to webhook (``batch`` 1 and 100) p50/p99,
   from the node's own timestamp (same clock).
3. **Takeover** (``--pg``): two instances on a private PostgreSQL, the active one
   SIGKILLed while the nodes confirm: time until the standby is active, and until an event
   made after the kill is readable through its API.

The service's RSS and CPU seconds are read from /proc around each phase.
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
from pathlib import Path
from typing import Any

import httpx

from agent.link.settings import BrokerConfig
from agent.oms.demo.broker import LocalBroker
from bench.common import machine, percentile, proc_status
from testing.fakefleet import FakeNode

SITE = "dc1"
TOKEN = "bench-token-0123456789"


class Receiver:
    """A webhook endpoint: keeps when each event id arrived (ms)."""

    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}
        self.ts: dict[int, int] = {}
        self.messages = 0
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                now = time.time() * 1000
                data = json.loads(body)
                events = data["data"]["events"] if data["type"] == "events" else [data["data"]]
                self.messages += 1
                for event in events:
                    self.arrived.setdefault(event["id"], now)
                    self.ts[event["id"]] = event["ts"]
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()


class Service:
    """``zone-agent site serve`` as a child process."""

    def __init__(self, work: Path, broker: LocalBroker, name: str, log: str) -> None:
        self.file = work / f"{name}.toml"
        self.file.write_text(
            f'site = "{SITE}"\n[broker]\nurls = ["{broker.url}"]\nbackoff_initial_s = 0.05\n'
            f"backoff_max_s = 0.5\n[log]\n{log}\n[api]\nmax_body_bytes = 33554432\n"
            '[webhooks]\nallow_networks = ["127.0.0.0/8"]\n'  # the bench's receiver
        )
        self.ready = work / f"{name}.ready"
        self.out = work / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        out = self.out.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent.cli",
                "site",
                "serve",
                str(self.file),
                "--port",
                "0",
                "--ready-file",
                str(self.ready),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "ZONE_AGENT_SITE_TOKENS": TOKEN},
        )
        out.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, KeyError):
                data = json.loads(self.ready.read_text())
                if data["pid"] == self.proc.pid:
                    self.url = data["url"]
                    return
            time.sleep(0.05)
        raise RuntimeError(self.out.read_text())

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
        )

    def status(self) -> dict[str, float]:
        assert self.proc is not None
        return proc_status(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def role(api: httpx.AsyncClient) -> str:
    with contextlib.suppress(httpx.HTTPError):
        return str((await api.get("/v1/health")).json()["role"])
    return "down"


async def read_cursor(
    api: httpx.AsyncClient,
    after: int,
    want: int,
    name: str,
    seen: dict[int, float],
    ts: dict[int, int],
    timeout: float,
) -> None:
    """Long-poll the cursor until ``want`` events named ``name`` came."""
    deadline = time.monotonic() + timeout
    while len(seen) < want and time.monotonic() < deadline:
        page = (
            await api.get(
                "/v1/events", params={"after": after, "wait": 5, "name": name, "limit": 1000}
            )
        ).json()
        now = time.time() * 1000
        for event in page["events"]:
            seen.setdefault(event["id"], now)
            ts[event["id"]] = event["ts"]
        after = page["next"]


async def fleet_up(broker: LocalBroker, nodes: int, slots: int) -> list[FakeNode]:
    config = BrokerConfig(
        urls=[broker.url], backoff_initial_s=0.05, backoff_max_s=0.5, max_inflight=1000
    )
    fleet = [
        FakeNode(config, SITE, f"zone-{n:03d}", [f"Z{n:03d}-{s:03d}" for s in range(slots)])
        for n in range(nodes)
    ]
    for node in fleet:
        await node.__aenter__()
    return fleet


async def wait_online(api: httpx.AsyncClient, nodes: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = (await api.get("/v1/nodes")).json()
        if sum(1 for n in listed if n["online"]) >= nodes:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("nodes not online")


async def burst(service: Service, fleet: list[FakeNode], lines: int) -> dict[str, Any]:
    # Orders of 4 lines in one zone (a wave takes at most 5,000 orders).
    per_node = lines // len(fleet) // 4
    orders = []
    for n, node in enumerate(fleet):
        for i in range(per_node):
            orders.append(
                {
                    "order": f"B{n:03d}-{i:05d}",
                    "lines": [
                        {
                            "sku": f"SKU-{n:03d}-{i:05d}-{k}",
                            "qty": 1,
                            "location": node.locations[(4 * i + k) % len(node.locations)],
                            "barcodes": [f"{n:03d}{i:08d}{k:02d}"],
                        }
                        for k in range(4)
                    ],
                }
            )
    total = 4 * len(orders)
    hook, single = Receiver(), Receiver()
    await hook.start()
    await single.start()
    async with service.client() as api:
        start = (await api.get("/v1/health")).json()["head"]
        for receiver, batch in ((hook, 100), (single, 1)):
            await api.post(
                "/v1/webhooks",
                json={"url": receiver.url, "names": ["picked"], "batch": batch, "after": start},
                headers={"Idempotency-Key": f"burst-hook-{batch}-{start}"},
            )
        before = service.status()
        cursor_seen: dict[int, float] = {}
        cursor_ts: dict[int, int] = {}
        reader = asyncio.create_task(
            read_cursor(api, start, total, "picked", cursor_seen, cursor_ts, 600)
        )
        t0 = time.time() * 1000
        answer = await api.post(
            "/v1/waves",
            json={"wave": "BURST", "orders": orders},
            headers={"Idempotency-Key": "burst-wave"},
        )
        submitted = time.time() * 1000
        assert answer.status_code == 202, answer.text
        await reader
        deadline = time.monotonic() + 600
        while (len(hook.arrived) < total or len(single.arrived) < total) and (  # noqa: ASYNC110 - polled over HTTP or another object's state
            time.monotonic() < deadline
        ):
            await asyncio.sleep(0.05)
        after = service.status()
        page = (
            await api.get("/v1/events", params={"after": start, "name": "picked", "limit": 1})
        ).json()
        first_logged = page["events"][0]["logged"]
        last = (
            await api.get("/v1/events", params={"after": max(cursor_seen) - 1, "limit": 1})
        ).json()["events"][0]
    for receiver in (hook, single):
        assert receiver.server is not None
        receiver.server.close()
    log_s = (last["logged"] - first_logged) / 1000
    cursor_s = (max(cursor_seen.values()) - first_logged) / 1000
    hook_s = (max(hook.arrived.values()) - first_logged) / 1000
    single_s = (max(single.arrived.values()) - first_logged) / 1000
    return {
        "lines": total,
        "nodes": len(fleet),
        "submit_ms": round(submitted - t0),
        "into_log_per_s": round(total / log_s) if log_s else None,
        "out_cursor_per_s": round(total / cursor_s),
        "out_webhook_batch100_per_s": round(total / hook_s),
        "out_webhook_batch1_per_s": round(total / single_s),
        "cursor_got": len(cursor_seen),
        "webhook_got": len(hook.arrived),
        "webhook_messages": hook.messages,
        "webhook_batch1_got": len(single.arrived),
        "service_cpu_s": round(after["cpu_s"] - before["cpu_s"], 2),
        "service_rss_mb": after["rss_mb"],
    }


async def steady(
    service: Service, fleet: list[FakeNode], rate: float, seconds: float
) -> dict[str, Any]:
    one, hundred = Receiver(), Receiver()
    await one.start()
    await hundred.start()
    async with service.client() as api:
        start = (await api.get("/v1/health")).json()["head"]
        for hook, batch in ((one, 1), (hundred, 100)):
            await api.post(
                "/v1/webhooks",
                json={"url": hook.url, "names": ["steady"], "batch": batch, "after": start},
                headers={"Idempotency-Key": f"steady-{batch}-{start}"},
            )
        total = int(rate * seconds)
        cursor_seen: dict[int, float] = {}
        cursor_ts: dict[int, int] = {}
        reader = asyncio.create_task(
            read_cursor(api, start, total, "steady", cursor_seen, cursor_ts, seconds + 120)
        )
        before = service.status()
        me_before = proc_status(os.getpid())
        t0 = time.monotonic()
        for i in range(total):
            fleet[i % len(fleet)].emit("steady", {"n": i})
            due = t0 + (i + 1) / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await reader
        deadline = time.monotonic() + 120
        while (len(one.arrived) < total or len(hundred.arrived) < total) and (  # noqa: ASYNC110 - polled over HTTP or another object's state
            time.monotonic() < deadline
        ):
            await asyncio.sleep(0.05)
        after = service.status()
        me_after = proc_status(os.getpid())
        logged: list[float] = []
        after_id = start
        while True:
            page = (
                await api.get(
                    "/v1/events", params={"after": after_id, "name": "steady", "limit": 1000}
                )
            ).json()
            if not page["events"]:
                break
            logged.extend(e["logged"] - e["ts"] for e in page["events"])
            after_id = page["next"]
    for hook in (one, hundred):
        assert hook.server is not None
        hook.server.close()

    def lat(seen: dict[int, float], ts: dict[int, int]) -> dict[str, float]:
        values = [seen[i] - ts[i] for i in seen]
        return {
            "p50_ms": round(percentile(values, 50), 1),
            "p99_ms": round(percentile(values, 99), 1),
            "n": len(values),
        }

    return {
        "rate_per_s": rate,
        "seconds": seconds,
        "events": total,
        "event_to_log": {
            "p50_ms": round(percentile(logged, 50), 1),
            "p99_ms": round(percentile(logged, 99), 1),
            "n": len(logged),
        },
        "event_to_cursor": lat(cursor_seen, cursor_ts),
        "event_to_webhook_batch1": lat(one.arrived, one.ts),
        "event_to_webhook_batch100": lat(hundred.arrived, hundred.ts),
        "service_cpu_pct": round(
            100 * (after["cpu_s"] - before["cpu_s"]) / (time.monotonic() - t0), 1
        ),
        "service_rss_mb": after["rss_mb"],
        "bench_process_cpu_pct": round(
            100 * (me_after["cpu_s"] - me_before["cpu_s"]) / (time.monotonic() - t0), 1
        ),
    }


async def takeover(work: Path, broker: LocalBroker, nodes: int, rounds: int) -> dict[str, Any]:
    from testing.postgres import LocalPostgres

    results = []
    with LocalPostgres() as pg:
        log = f'postgres = "{pg.dsn}"\nlease_s = 0.5'
        fleet = await fleet_up(broker, nodes, 4)
        try:
            for r in range(rounds):
                one = Service(work, broker, f"pg-{r}-a", log)
                two = Service(work, broker, f"pg-{r}-b", log)
                one.start()
                async with one.client() as a:
                    while await role(a) != "active":  # noqa: ASYNC110 - polled over HTTP or another object's state
                        await asyncio.sleep(0.05)
                two.start()
                async with two.client() as b:
                    while await role(b) != "standby":  # noqa: ASYNC110 - polled over HTTP or another object's state
                        await asyncio.sleep(0.05)
                    await asyncio.sleep(1.0)
                    assert one.proc is not None
                    one.proc.send_signal(signal.SIGKILL)
                    killed = time.monotonic()
                    killed_ms = time.time() * 1000
                    fleet[0].emit("after_kill", {"round": r})
                    while await role(b) != "active":  # noqa: ASYNC110 - polled over HTTP or another object's state
                        await asyncio.sleep(0.01)
                    active_s = time.monotonic() - killed
                    head = 0
                    while True:
                        page = (
                            await b.get("/v1/events", params={"name": "after_kill", "after": head})
                        ).json()
                        got = [e for e in page["events"] if e["body"]["round"] == r]
                        if got:
                            break
                        head = page["next"]
                        await asyncio.sleep(0.01)
                    readable_s = time.monotonic() - killed
                    results.append(
                        {
                            "standby_active_s": round(active_s, 3),
                            "event_after_kill_readable_s": round(readable_s, 3),
                            "event_logged_after_kill_ms": round(got[0]["logged"] - killed_ms),
                        }
                    )
                two.stop()
                one.stop()
        finally:
            for node in fleet:
                await node.__aexit__()
    return {"rounds": results}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-site-"))
    out: dict[str, Any] = {
        "loadavg_before": os.getloadavg(),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    with LocalBroker(work / "broker") as broker:
        service = Service(work, broker, "site", f'path = "{work / "site.db"}"')
        service.start()
        fleet = await fleet_up(broker, args.nodes, args.slots)
        try:
            async with service.client() as api:
                t0 = time.monotonic()
                await wait_online(api, args.nodes)
                out["births_s"] = round(time.monotonic() - t0, 2)
            out["idle"] = service.status()
            out["burst"] = await burst(service, fleet, args.lines)
            out["steady"] = await steady(service, fleet, args.rate, args.seconds)
            out["unacknowledged_after"] = sum(n.pending for n in fleet)
        finally:
            for node in fleet:
                await node.__aexit__()
            service.stop()
        if args.pg:
            out["takeover"] = await takeover(work, broker, 20, args.rounds)
    shutil.rmtree(work, ignore_errors=True)
    out["loadavg_after"] = os.getloadavg()
    return out


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--slots", type=int, default=300)
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pg", action="store_true", help="also the two-instance takeover")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    result = asyncio.run(main(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    cli()
