"""Helpers for end-to-end tests: node files, a node in this process or in a child process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from agent.app import run_node
from agent.config import NodeConfig, load_config
from agent.floor import DeviceFloor
from agent.link.memory import MemoryBroker
from agent.link.settings import BrokerConfig
from agent.node import Node
from agent.oms import OmsClient
from agent.oms.demo.broker import LocalBroker

SITE = "dc1"

Broker = MemoryBroker | LocalBroker
"""A broker a test runs on: anything with a ``url`` (conftest.py's fixtures)."""


def node_file(
    tmp_path: Path, broker: Broker, *, node: str = "zone-a1", slots: int = 4, extra: str = ""
) -> Path:
    """A pick node with ``slots`` simulated GPIO slots named A1.. (4 pins per slot)."""
    lines = [
        f'site = "{SITE}"',
        f'node = "{node}"',
        'role = "pick"',
        f'state_dir = "{tmp_path / node}"',
        "[broker]",
        f'urls = ["{broker.url}"]',
        "keepalive_s = 5",
        "backoff_initial_s = 0.05",
        "backoff_max_s = 0.5",
        extra,
        "[[devices]]",
        'name = "shelf"',
        'kind = "gpio_slots"',
    ]
    for i in range(slots):
        base = 2 + i * 3
        if base + 2 > 27:
            break
        lines += ["[[devices.slots]]", f'id = "A{i + 1}"', f"led = {base}", f"confirm = {base + 1}"]
    path = tmp_path / f"{node}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def oms_for(broker: Broker, **kw: object) -> OmsClient:
    """A reference OMS on the test broker."""
    return OmsClient(
        BrokerConfig(urls=[broker.url], backoff_initial_s=0.05, backoff_max_s=0.5), SITE, **kw
    )  # type: ignore[arg-type]


@dataclass
class Running:
    """A node running in this event loop."""

    config: NodeConfig
    node: Node
    floor: DeviceFloor


@contextlib.asynccontextmanager
async def node_in_process(
    path: Path, *, simulate: bool = True, env: dict[str, str] | None = None
) -> AsyncIterator[Running]:
    """Run the node of ``path`` in this event loop until the block ends.

    ``env`` stands in for the environment (empty by default, so tests are isolated).
    """
    config = load_config(path, env=env or {})
    stop = asyncio.Event()
    made: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_node(
            config,
            simulate=simulate,
            stop=stop,
            started=lambda node, floor: made.set_result(Running(config, node, floor)),
        )
    )
    try:
        done, _ = await asyncio.wait({made, task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        running = made.result()
        await asyncio.wait_for(running.node.ready.wait(), 10)
        yield running
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


class NodeProcess:
    """The node of ``path`` as a child process (``zone-agent run FILE --simulate``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = path.with_suffix(".log")

    def start(self) -> None:
        """Start the node."""
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", str(self.path), "--simulate"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ},
        )
        out.close()

    def kill(self) -> None:
        """SIGKILL: no clean stop, no offline message (the broker sends the Will)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        """SIGTERM and wait for a clean stop; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)

    def stop(self) -> None:
        """Make sure the process is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
