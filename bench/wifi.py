"""Warehouse Wi-Fi: a pick node behind a bad link made by the kernel (issue 18).

``python -m bench.wifi [--profile NAME ...] [--seconds S] [--tree DIR] [--out FILE]`` (root,
iproute2 and nftables): a simulated pick node (``zone-agent run --simulate``, from ``--tree``,
default this checkout) runs in a network namespace of its own, reaching a private Mosquitto
on the root side over a veth pair; its screen and control API sit on a second, clean veth
pair, so the driver's presses and reads never share the bad link. The link is made bad in the
namespace: nftables drops a random share of the MQTT port's packets (``numgen random mod
100 < N drop``), all of them for an outage or a roam, or only those of the node's current
connection for a half-open one; ``tbf`` on both ends of the veth makes it slow (no netem on
the machines this was written on). The reference OMS (from the same tree) runs here on
loopback and feeds the node 50-task pick commands; a picker presses the slot showing a task,
presses again when the light is still on 3 s later (as people do), and every press is timed
to the OMS's ``picked``.

Per profile it reports: exactly once (lost, doubled, and confirmations of tasks no press was
made for while they were shown), press-to-OMS p50/p99/max, each fault's time to the node's
state API saying offline and, after the fault ends, online again; the OMS's command sends
per command, the bytes the broker sent down the link, the node's outbox resends and
reconnects, and the node's RSS. Nothing is asserted; tests/test_wifi_e2e.py uses ``Lab``
for its checks. Figures go to bench/README.md by hand.

Profiles: ``loss5``, ``loss20``, ``roam`` (3 s of total loss every 20 s), ``outage`` (60 s),
``partition30`` (30 s),
``halfopen`` (the node's connection silently dead, twice), ``kbit64``, ``kbit256``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # the module paths of issue 20's re-layering, and the ones before it (the baseline)
    from agent.oms.demo.broker import LocalBroker, die_with_parent
except ImportError:  # pragma: no cover - the baseline tree
    from agent.localbroker import LocalBroker, die_with_parent  # type: ignore[no-redef]
from agent.config import BrokerConfig
from agent.oms import OmsClient
from agent.oms.demo.site import Control

SITE = "dc1"
NODE = "zone-w1"
SLOTS = [f"A{i}" for i in range(1, 9)]
DESCRIPTION = "Stainless steel insulated bottle 750 ml, matte black, lot "  # + 6: 60
MQTT_PORT = 1883  # the broker's port on the veth (its own address, so no clash)


def available() -> str | None:
    """Why the lab cannot run here (``None``: it can): root, ``ip``, ``nft``, ``tc``."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"needs {tool} (apt-get install iproute2 nftables)"
    return None


def _sh(*args: str, check: bool = True) -> str:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


class Lab:
    """A network namespace with two veth pairs to the root side, and the faults to apply.

    The ``data`` pair carries MQTT (root ``data_root``, namespace ``data_ns``); the ``ctl``
    pair carries the node's screen and control API and is never made bad. Addresses come
    from 10.200.0.0/13, chosen by the process id, so parallel labs do not clash.
    """

    def __init__(self) -> None:
        n = os.getpid() % 16384
        self.ns = f"zw{n}"
        a, b = 200 + (n >> 11), (n >> 3) & 0xFF
        c = (n & 7) * 32
        self.data_root, self.data_ns = f"10.{a}.{b}.{c + 1}", f"10.{a}.{b}.{c + 2}"
        self.ctl_root, self.ctl_ns = f"10.{a}.{b}.{c + 5}", f"10.{a}.{b}.{c + 6}"
        self._dev = {
            "data": (f"{self.ns}d0", f"{self.ns}d1"),
            "ctl": (f"{self.ns}c0", f"{self.ns}c1"),
        }
        self.faults: list[str] = []

    def up(self) -> None:
        """Create the namespace, the veth pairs and an empty nftables table."""
        self.down()
        _sh("ip", "netns", "add", self.ns)
        for pair, (root, inner), (root_ip, ns_ip) in (
            ("data", self._dev["data"], (self.data_root, self.data_ns)),
            ("ctl", self._dev["ctl"], (self.ctl_root, self.ctl_ns)),
        ):
            del pair
            _sh("ip", "link", "add", root, "type", "veth", "peer", "name", inner)
            _sh("ip", "link", "set", inner, "netns", self.ns)
            _sh("ip", "addr", "add", f"{root_ip}/30", "dev", root)
            _sh("ip", "link", "set", root, "up")
            _sh("ip", "-n", self.ns, "addr", "add", f"{ns_ip}/30", "dev", inner)
            _sh("ip", "-n", self.ns, "link", "set", inner, "up")
        _sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        self._nft(
            "add table inet zw\n"
            "add chain inet zw out { type filter hook output priority 0; }\n"
            "add chain inet zw in { type filter hook input priority 0; }\n"
        )

    def down(self) -> None:
        """Remove the namespace and the root ends of the pairs (ignores what is not there)."""
        for root, _ in self._dev.values():
            _sh("ip", "link", "del", root, check=False)
        _sh("ip", "netns", "del", self.ns, check=False)

    def _nft(self, script: str) -> None:
        done = subprocess.run(
            ["ip", "netns", "exec", self.ns, "nft", "-f", "-"],
            input=script,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"nft: {done.stderr.strip()}")

    def clear(self) -> None:
        """Take every fault away (the link is good again)."""
        self._nft("flush chain inet zw out\nflush chain inet zw in\n")
        self.faults = []

    def loss(self, percent: int) -> None:
        """Drop ``percent`` % of the MQTT port's packets, each way, at random."""
        self._nft(
            f"add rule inet zw out tcp dport {MQTT_PORT} numgen random mod 100 < {percent} drop\n"
            f"add rule inet zw in tcp sport {MQTT_PORT} numgen random mod 100 < {percent} drop\n"
        )
        self.faults.append(f"loss {percent}")

    def blackout(self) -> None:
        """Drop every packet of the MQTT port both ways (no RST: an outage or a roam)."""
        self._nft(
            f"add rule inet zw out tcp dport {MQTT_PORT} drop\n"
            f"add rule inet zw in tcp sport {MQTT_PORT} drop\n"
        )
        self.faults.append("blackout")

    def half_open(self) -> bool:
        """Silently kill the node's current MQTT connection; new connections still work.

        False when the node has no connection to kill.
        """
        out = _sh(
            "ip",
            "netns",
            "exec",
            self.ns,
            "ss",
            "-Htn",
            "state",
            "established",
            f"dport = :{MQTT_PORT}",
        )
        ports = sorted(
            {line.split()[2].rsplit(":", 1)[1] for line in out.splitlines() if line.strip()}
        )
        if not ports:
            return False
        for port in ports:
            self._nft(
                f"add rule inet zw out tcp sport {port} drop\n"
                f"add rule inet zw in tcp dport {port} drop\n"
            )
        self.faults.append(f"half-open {','.join(ports)}")
        return True

    def rate(self, kbit: int | None) -> None:
        """Make the data pair ``kbit`` kbit/s each way with tbf (``None``: no limit)."""
        root, inner = self._dev["data"]
        for cmd in (("ip", "netns", "exec", self.ns, "tc"), ("tc",)):
            dev = inner if len(cmd) > 1 else root
            _sh(*cmd, "qdisc", "del", "dev", dev, "root", check=False)
            if kbit is not None:
                # A deep queue (1 s), as Wi-Fi drivers and access points buffer.
                _sh(
                    *cmd,
                    "qdisc",
                    "add",
                    "dev",
                    dev,
                    "root",
                    "tbf",
                    "rate",
                    f"{kbit}kbit",
                    "burst",
                    "4kb",
                    "latency",
                    "1000ms",
                )

    def bytes_down(self) -> int:
        """Bytes the root side sent down the data pair (broker to node)."""
        return int(Path(f"/sys/class/net/{self._dev['data'][0]}/statistics/tx_bytes").read_text())

    def bytes_up(self) -> int:
        """Bytes the root side received on the data pair (node to broker)."""
        return int(Path(f"/sys/class/net/{self._dev['data'][0]}/statistics/rx_bytes").read_text())


def node_file(path: Path, state_dir: Path, lab: Lab, *, extra: str = "") -> Path:
    """A pick node on eight simulated GPIO slots with the stock broker settings."""
    lines = [
        f'site = "{SITE}"',
        f'node = "{NODE}"',
        'role = "pick"',
        f'state_dir = "{state_dir}"',
        "[broker]",
        f'urls = ["mqtt://{lab.data_root}:{MQTT_PORT}"]',
        extra,
        "[http]",
        f'bind = "{lab.ctl_ns}"',
        "port = 8080",
        "[[devices]]",
        'name = "shelf"',
        'kind = "gpio_slots"',
        "double_press_s = 0",
    ]
    for i, slot in enumerate(SLOTS):
        base = 2 + i * 3
        lines += ["[[devices.slots]]", f'id = "{slot}"', f"led = {base}", f"confirm = {base + 1}"]
    path.write_text("\n".join(lines) + "\n")
    return path


class Site:
    """The broker, the node in the lab's namespace and its control API.

    Args:
        lab: the namespace (``up`` already).
        workdir: for the broker's and the node's files and logs.
        tree: the checkout whose ``agent`` the node runs (the baseline's worktree, or this).
        node_extra: more ``[broker]`` lines for the node file.
    """

    def __init__(self, lab: Lab, workdir: Path, tree: Path, node_extra: str = "") -> None:
        self.lab = lab
        self.workdir = workdir
        self.tree = tree
        self.broker = LocalBroker(
            workdir / "broker",
            extra_config=f"listener {MQTT_PORT} {lab.data_root}\nmax_queued_messages 100000\n",
        )
        self.state_dir = workdir / NODE
        self.path = node_file(workdir / f"{NODE}.toml", self.state_dir, lab, extra=node_extra)
        self.api = f"http://{lab.ctl_ns}:8080"
        self.control = Control(self.api)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the broker, then the node (in the namespace)."""
        self.broker.start()
        self.start_node()

    def start_node(self) -> None:
        """Start the node process in the namespace, its log in ``workdir/node.log``."""
        log = (self.workdir / "node.log").open("ab")
        env = {**os.environ, "PYTHONPATH": str(self.tree)}
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.lab.ns,
                sys.executable,
                "-m",
                "agent.cli",
                "run",
                str(self.path),
                "--simulate",
            ],
            cwd=self.tree,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        log.close()

    def stop(self) -> None:
        """Stop the node (SIGTERM, then SIGKILL) and the broker."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.broker.stop()

    @property
    def broker_url(self) -> str:
        """The broker on loopback, for the OMS."""
        return self.broker.url

    async def get(self, path: str) -> Any:
        """GET JSON from the node's API (off the loop)."""
        return await self.control.get(path)

    async def press(self, slot: str) -> None:
        """Press the confirm button of ``slot``."""
        await self.control.press("shelf", slot)

    async def state(self) -> dict[str, Any]:
        """``GET /api/state``."""
        result: dict[str, Any] = await self.get("/api/state")
        return result

    async def wait_api(self, timeout: float = 30.0) -> None:
        """Wait until the node's API answers."""
        async with asyncio.timeout(timeout):
            while True:
                with contextlib.suppress(OSError):
                    await self.state()
                    return
                await asyncio.sleep(0.1)

    def node_pid(self) -> int | None:
        """The node's process id (from ``control.json``)."""
        with contextlib.suppress(OSError, ValueError, KeyError):
            return int(json.loads((self.state_dir / "control.json").read_text())["pid"])
        return None

    def rss_mb(self) -> float | None:
        """The node's RSS in MB."""
        pid = self.node_pid()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return None

    def metric(self, name: str) -> float:
        """One value of the node's ``/metrics`` (0 when absent)."""
        request = urllib.request.Request(self.api + "/metrics")
        with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=10) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
        return 0.0


def oms_client(url: str, **kw: Any) -> OmsClient:
    """The reference OMS (whatever resend rule its tree has), on loopback."""
    return OmsClient(BrokerConfig(urls=[url], backoff_initial_s=0.1, backoff_max_s=2), SITE, **kw)


@dataclass
class Record:
    """What one run saw."""

    presses: list[tuple[float, str, str]] = field(default_factory=list)  # (t, slot, task)
    picked: dict[str, list[float]] = field(default_factory=dict)  # task -> arrival times
    online: list[tuple[float, bool]] = field(default_factory=list)  # API transitions
    faults: list[tuple[float, float | None, str]] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    sent_tasks: int = 0
    commands: list[Any] = field(default_factory=list)
    link_states: dict[str, int] = field(default_factory=dict)


class Run:
    """One profile: feed, pick, make faults, watch; then the figures."""

    def __init__(self, site: Site, oms: OmsClient, seconds: float) -> None:
        self.site = site
        self.oms = oms
        self.seconds = seconds
        self.rec = Record()
        self.t0 = time.monotonic()
        self.t0_wall = time.time()
        self._task_no = 0
        self._open = 0

    def now(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.t0

    async def feed(
        self, per_command: int = 50, wave: int = 8, every_s: float = 20, most: int = 1200
    ) -> None:
        """A wave of ``wave`` 50-task commands every ``every_s`` (fewer than ``most`` open).

        A wave is what a slow link chokes on: 400 tasks are several seconds of a 64 kbit/s
        link, so the replies to its last commands come after a short resend timer has fired.
        """
        while True:
            open_tasks = self.rec.sent_tasks - len(self.rec.picked)
            for _ in range(wave if open_tasks < most else 0):
                tasks = []
                for _ in range(per_command):
                    self._task_no += 1
                    n = self._task_no
                    tasks.append(
                        {
                            "task": f"T{n:06d}",
                            "order": f"ORD-{n // 8:05d}",
                            "location": SLOTS[n % len(SLOTS)],
                            "sku": f"SKU-{n:06d}",
                            "description": f"{DESCRIPTION}{n:06d}",
                            "qty": 1,
                        }
                    )
                self.oms.send(NODE, "pick", {"tasks": tasks})
                self.rec.commands.extend(
                    c for c in self.oms.pending.values() if c not in self.rec.commands
                )
                self.rec.sent_tasks += len(tasks)
            await asyncio.sleep(every_s)

    async def pick(self, every_s: float = 0.5, repress_s: float = 3.0) -> None:
        """One picker: presses the next slot showing a task; again if still lit later."""
        pressed: dict[str, tuple[str, float]] = {}  # slot -> (task, t)
        turn = 0
        while True:
            await asyncio.sleep(every_s)
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel.
                async with asyncio.timeout(10):
                    state = await self.site.state()
            except (OSError, TimeoutError):
                continue
            locations = state.get("workflow", {}).get("locations", {})
            for i in range(len(SLOTS)):
                slot = SLOTS[(turn + i) % len(SLOTS)]
                shown = (locations.get(slot) or {}).get("shown")
                if not shown:
                    continue
                task = shown["task"]
                before = pressed.get(slot)
                if before is not None and before[0] == task and self.now() - before[1] < repress_s:
                    continue
                turn = (turn + i + 1) % len(SLOTS)
                pressed[slot] = (task, self.now())
                self.rec.presses.append((self.now(), slot, task))
                with contextlib.suppress(OSError):
                    await self.site.press(slot)
                break

    async def collect(self) -> None:
        """Take the OMS's events: each ``picked`` with its arrival time."""
        while True:
            event = await self.oms.events.get()
            if event.name == "picked":
                body = event.body if isinstance(event.body, dict) else event.body.model_dump()
                self.rec.picked.setdefault(str(body.get("task")), []).append(self.now())

    async def watch(self) -> None:
        """The node's own view of its link (API ``online``/``link``) and its RSS."""
        last: bool | None = None
        ticks = 0
        while True:
            try:
                async with asyncio.timeout(5):
                    state = await self.site.state()
                online = bool(state.get("online"))
                link = str(state.get("link", "online" if online else "offline"))
                self.rec.link_states[link] = self.rec.link_states.get(link, 0) + 1
                if online != last:
                    self.rec.online.append((self.now(), online))
                    last = online
            except (OSError, TimeoutError):
                pass
            ticks += 1
            if ticks % 10 == 0:
                rss = self.site.rss_mb()
                if rss is not None:
                    self.rec.rss.append(rss)
            await asyncio.sleep(0.1)

    async def fault(
        self, start: float, length: float | None, apply: Callable[[], object], name: str
    ) -> None:
        """Apply a fault at ``start`` s for ``length`` s (``None``: to the end)."""
        await asyncio.sleep(max(0.0, start - self.now()))
        apply()
        t = self.now()
        if length is None:
            self.rec.faults.append((t, None, name))
            return
        await asyncio.sleep(length)
        if length:
            self.site.lab.clear()
        self.rec.faults.append((t, self.now(), name))


PROFILES: dict[str, str] = {
    "loss5": "5 % of packets dropped each way",
    "loss20": "20 % of packets dropped each way",
    "roam": "3 s of total loss every 20 s",
    "outage": "60 s of total loss",
    "partition30": "30 s of total loss (a silent partition)",
    "halfopen": "the node's connection silently dead (new ones work), twice",
    "kbit64": "64 kbit/s each way",
    "kbit256": "256 kbit/s each way",
    "kbit64roam": "64 kbit/s each way and a 30 s roam at 20 s (the broker keeps a backlog)",
}


def schedule(run: Run, profile: str, seconds: float) -> list[Any]:
    """The fault coroutines of ``profile``."""
    lab = run.site.lab
    if profile.startswith("loss"):
        return [run.fault(5, None, lambda: lab.loss(int(profile[4:])), profile)]
    if profile == "roam":
        return [run.fault(t, 3, lab.blackout, "roam") for t in range(10, int(seconds) - 5, 20)]
    if profile == "outage":
        return [run.fault(15, 60, lab.blackout, "outage")]
    if profile == "partition30":
        return [run.fault(15, 30, lab.blackout, "partition")]
    if profile == "halfopen":
        # New connections work all along: the fault "ends" as it starts.
        return [
            run.fault(15, 0, lab.half_open, "half-open"),
            run.fault(45, 0, lab.half_open, "half-open"),
        ]
    if profile == "kbit64roam":
        return [
            run.fault(0, None, lambda: lab.rate(64), "kbit64"),
            run.fault(20, 30, lab.blackout, "roam"),
        ]
    if profile.startswith("kbit"):
        return [run.fault(0, None, lambda: lab.rate(int(profile[4:])), profile)]
    raise ValueError(f"unknown profile {profile!r}")


_DOWN = ("link to ", "session set-up failed", "cannot connect to ")


def link_log(path: Path, t0_wall: float) -> list[tuple[float, bool]]:
    """(run time, up) for each link up / link down line of the node's log."""
    out: list[tuple[float, bool]] = []
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            if " agent.link: " not in line:
                continue
            up = "link up:" in line
            if not up and not any(d in line for d in _DOWN):
                continue
            with contextlib.suppress(ValueError):
                stamp = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
                out.append((stamp + int(line[20:23]) / 1000 - t0_wall, up))
    return out


def figures(run: Run, profile: str, extra: dict[str, Any]) -> dict[str, Any]:
    """The profile's figures from what the run recorded."""
    rec = run.rec
    shown_pressed = {task for _, _, task in rec.presses}
    first_press: dict[str, float] = {}
    for t, _, task in rec.presses:
        first_press.setdefault(task, t)
    latencies = sorted(
        (times[0] - first_press[task]) * 1000
        for task, times in rec.picked.items()
        if task in first_press
    )

    def pct(p: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))], 1)

    notice, back, api_offline = [], [], []
    links = link_log(run.site.workdir / "node.log", run.t0_wall)
    faults = sorted(rec.faults)
    for k, (start, end, _name) in enumerate(faults):
        # A fault's effects are looked for up to the next fault (or the end of the run).
        until = faults[k + 1][0] if k + 1 < len(faults) else run.seconds + 60
        down = next((t for t, up in links if not up and start <= t <= until), None)
        if down is not None:
            notice.append(round(down - start, 2))
            since = max(down, end if end is not None else down)
            online = next((t for t, up in links if up and t >= since), None)
            if online is not None and end is not None:
                back.append(round(online - since, 2))
        offline = next((t for t, on in rec.online if not on and start <= t <= until), None)
        api_offline.append(None if offline is None else round(offline - start, 2))
    sends = [c.sends for c in rec.commands]
    return {
        "profile": profile,
        "what": PROFILES.get(profile, profile),
        "tasks_sent": rec.sent_tasks,
        "presses": len(rec.presses),
        "represses": len(rec.presses) - len(shown_pressed),
        "picked": len(rec.picked),
        "doubled": sum(1 for times in rec.picked.values() if len(times) > 1),
        "never_shown": sorted(set(rec.picked) - shown_pressed)[:20],
        "never_shown_count": len(set(rec.picked) - shown_pressed),
        "press_to_oms_ms": {
            "p50": pct(50),
            "p99": pct(99),
            "max": round(latencies[-1], 1) if latencies else None,
        },
        "dead_noticed_s": notice,
        "back_s": back,
        "api_offline_after_s": api_offline,
        "online_transitions": len(rec.online),
        "command_sends_mean": round(sum(sends) / len(sends), 2) if sends else None,
        "command_sends_max": max(sends) if sends else None,
        "rss_mb": {
            "start": round(rec.rss[0], 1) if rec.rss else None,
            "max": round(max(rec.rss), 1) if rec.rss else None,
            "end": round(rec.rss[-1], 1) if rec.rss else None,
        },
        "link_states_seen": rec.link_states,
        **extra,
    }


async def run_profile(
    profile: str, seconds: float, tree: Path, workdir: Path, oms_kw: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One profile on a fresh lab, broker and node; its figures."""
    lab = Lab()
    lab.up()
    site = Site(lab, workdir, tree)
    try:
        site.start()
        async with oms_client(site.broker_url, **(oms_kw or {})) as oms:
            await oms.wait_connected(30)
            await site.wait_api(60)
            async with asyncio.timeout(60):
                while not (oms.nodes.get(NODE) and oms.nodes[NODE].online):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            if profile.startswith("kbit"):
                lab.rate(int(profile[4:6] if profile.startswith("kbit64") else profile[4:]))
            run = Run(site, oms, seconds)
            down0, up0 = lab.bytes_down(), lab.bytes_up()
            workers = [
                asyncio.create_task(c) for c in (run.feed(), run.pick(), run.collect(), run.watch())
            ]
            faults = [asyncio.create_task(c) for c in schedule(run, profile, seconds)]
            await asyncio.sleep(seconds)
            workers[1].cancel()  # the picker stops; the link gets good; the rest drains
            workers[0].cancel()
            for f in faults:
                f.cancel()
            lab.clear()
            lab.rate(None)
            pressed = {task for _, _, task in run.rec.presses}
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not pressed <= set(run.rec.picked):  # noqa: ASYNC110
                await asyncio.sleep(0.5)
            final = await site.state()
            extra = {
                "open_at_node_end": final.get("workflow", {}).get("open_lines"),
                "pressed_not_picked": len(pressed - set(run.rec.picked)),
                "mb_down": round((lab.bytes_down() - down0) / 1e6, 3),
                "mb_up": round((lab.bytes_up() - up0) / 1e6, 3),
                "node_outbox_resends": site.metric("zone_outbox_resends_total"),
                "node_reconnects": site.metric("zone_mqtt_reconnects_total"),
                "oms_duplicates": oms.duplicates,
            }
            for w in workers:
                w.cancel()
            await asyncio.wait([*workers, *faults], timeout=15)
            return figures(run, profile, extra)
    finally:
        site.stop()
        lab.down()


def main() -> None:
    """Run the chosen profiles and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", nargs="*", default=list(PROFILES))
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    why = available()
    if why:
        sys.exit(f"bench.wifi {why}")
    # SIGTERM ends the run through its finally clauses (namespace, node, broker removed);
    # SIGUSR1 prints every thread's stack (a run that hangs).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    results = []
    for profile in args.profile:
        with tempfile.TemporaryDirectory(prefix="wifi-") as tmp:
            result = asyncio.run(
                asyncio.wait_for(
                    run_profile(profile, args.seconds, args.tree, Path(tmp)), args.seconds + 300
                )
            )
        result["label"] = args.label
        print(json.dumps(result), flush=True)
        results.append(result)
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
