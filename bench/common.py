"""What the benchmark sections share: node files, payloads, statistics, /proc readings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any

from agent.store import now_ms
from agent.wire import codec
from agent.wire.messages import PickTask

SITE = "dc1"
TICKS = os.sysconf("SC_CLK_TCK")

# reference/mqtt.md §9 (2026-11-28, 2 vCPUs): what the budgets of DESIGN.md §6 were set from.
REFERENCE = {
    "c_p50_ms": 0.44,
    "c_p99_ms": 0.80,
    "c_msg_s": 6400,
    "echo_p50_ms": 1.28,
    "echo_p99_ms": 1.93,
    "echo_msg_s": 1900,
    "echo_rss_mb": 39,
}


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (pct in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary_ms(samples_ns: list[int]) -> dict[str, float]:
    """p50, p99, max and count of nanosecond samples, in milliseconds."""
    ms = [s / 1e6 for s in samples_ns]
    return {
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "n": len(ms),
    }


def proc_status(pid: int) -> dict[str, float]:
    """RSS (MB) and CPU seconds (user + system) of a process, from /proc."""
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    return {"rss_mb": round(rss_kb / 1024, 1), "cpu_s": cpu}


def machine() -> dict[str, Any]:
    """nproc, CPU model, kernel and Python version."""
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def task(i: int, location: str, *, wave: str | None = None, tote: bool = True) -> PickTask:
    """A realistic pick line (~100 bytes of msgpack).

    With ``tote=False`` the line has no container, so confirming it makes exactly one event
    (no ``zone_done`` when a tote's lines are all picked).
    """
    return PickTask(
        task=f"T{i:08d}",
        order=f"ORD-{i // 7:07d}",
        location=location,
        sku=f"SKU-{(i * 7919) % 100000:06d}",
        qty=1 + i % 5,
        barcodes=[f"0{4000000000000 + i:013d}"],
        wave=wave,
        container=f"TOTE-{i % 300:04d}" if tote else None,
        description="Widget, blue, 12-pack",
    )


def pick_payload(tasks: list[PickTask], msg_id: str) -> bytes:
    """A ``pick`` command as the OMS sends it."""
    body = {"tasks": [t.model_dump(exclude_defaults=True) for t in tasks]}
    return codec.encode(body, msg_id=msg_id, ts=now_ms())


def line_safe(payload: bytes) -> bool:
    """Whether ``mosquitto_pub -l`` carries the payload unchanged (no NUL, no newline)."""
    return b"\n" not in payload and b"\x00" not in payload


def node_toml(
    state_dir: Path,
    port: int,
    *,
    node: str,
    gpio_slots: int = 0,
    strip_slots: int = 0,
    outbox_limit: int | None = None,
) -> str:
    """A pick node file: ``gpio_slots`` GPIO slots A1.. or a WS2812 strip of 1-LED slots."""
    lines = [
        f'site = "{SITE}"',
        f'node = "{node}"',
        'role = "pick"',
        f'state_dir = "{state_dir}"',
        "[broker]",
        f'urls = ["mqtt://127.0.0.1:{port}"]',
        "keepalive_s = 5",
        "backoff_initial_s = 0.05",
        "backoff_max_s = 0.25",
    ]
    if outbox_limit is not None:
        lines += ["[outbox]", f"limit = {outbox_limit}"]
    if gpio_slots:
        lines += ["[[devices]]", 'name = "shelf"', 'kind = "gpio_slots"']
        for i in range(gpio_slots):
            base = 2 + i * 3
            lines += [
                "[[devices.slots]]",
                f'id = "A{i + 1}"',
                f"led = {base}",
                f"confirm = {base + 1}",
            ]
    if strip_slots:
        lines += [
            "[[devices]]",
            'name = "strip"',
            'kind = "led_strip"',
            f"led_count = {strip_slots}",
        ]
        for i in range(strip_slots):
            lines += ["[[devices.slots]]", f'id = "S{i:04d}"', f"first = {i}"]
    return "\n".join(lines) + "\n"


class NodeHost:
    """The stdin/stdout JSON-lines link to a ``bench.nodehost`` process."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def send(self, req: dict[str, Any]) -> None:
        """Send one request."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(req).encode() + b"\n")
        self.proc.stdin.flush()

    async def read(self, timeout: float) -> dict[str, Any]:
        """The next answer line."""
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        if not line:
            raise RuntimeError("nodehost exited; see its log in the work directory")
        result: dict[str, Any] = json.loads(line)
        return result

    async def call(self, req: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        """Send and read the answer."""
        self.send(req)
        return await self.read(timeout)

    async def close(self) -> None:
        """Clean stop."""
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                await self.call({"op": "stop"}, 20)
            await asyncio.to_thread(self.proc.wait, 10)
