"""Shared helpers of the scale tests: a simulator plus its driver, on a pty under tmp_path."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from devices.base import Health
from devices.context import DeviceContext
from devices.scales import mt_sics, nci, toledo_8217

T = TypeVar("T")

MODULES: dict[str, ModuleType] = {
    "mt_sics": mt_sics,
    "toledo_8217": toledo_8217,
    "nci": nci,
}

# A safety net only: no test should come near it.
SAFETY_S = 15.0


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion with a safety timeout."""

    async def guarded() -> T:
        async with asyncio.timeout(SAFETY_S):
            return await coro

    return asyncio.run(guarded())


def make_config(protocol: str, **overrides: Any) -> Any:
    """A config of ``protocol`` for a scale named ``scale1`` (port patched by the simulator)."""
    module = MODULES[protocol]
    fields: dict[str, Any] = {"name": "scale1", "kind": protocol, "port": "/dev/ttyUSB9"}
    fields.update(overrides)
    return module.CONFIG(**fields)


@asynccontextmanager
async def simulator(protocol: str, tmp_path: Path, **overrides: Any) -> AsyncIterator[Any]:
    """A running simulator of ``protocol`` with its link under ``tmp_path``."""
    sim = MODULES[protocol].SIMULATOR(
        make_config(protocol, **overrides), DeviceContext(simulate=True), link_dir=tmp_path
    )
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@asynccontextmanager
async def rig(protocol: str, tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[Any, Any]]:
    """A simulator and an open driver talking to it."""
    async with simulator(protocol, tmp_path, **overrides) as sim:
        driver = MODULES[protocol].DRIVER.from_config(sim.patched_config(), DeviceContext())
        async with driver:
            yield sim, driver


class HealthLog:
    """Records health changes and lets a test wait for one."""

    def __init__(self, driver: Any) -> None:
        self.seen: list[str] = []
        self._changed = asyncio.Event()
        driver.add_health_listener(self._on_change)

    def _on_change(self, name: str, health: Health) -> None:
        self.seen.append(health.status.value)
        self._changed.set()

    async def wait_for(self, status: str) -> None:
        while not self.seen or self.seen[-1] != status:
            self._changed.clear()
            await self._changed.wait()


class SimThread:
    """A simulator on its own event loop in a thread, for in-process CLI tests."""

    def __init__(self, protocol: str, tmp_path: Path, **overrides: Any) -> None:
        self.config = make_config(protocol, **overrides)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.sim: Any = None
        self._protocol = protocol
        self._tmp_path = tmp_path

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(SAFETY_S)

    def __enter__(self) -> SimThread:
        self._thread.start()

        async def start() -> Any:
            sim = MODULES[self._protocol].SIMULATOR(
                self.config, DeviceContext(simulate=True), link_dir=self._tmp_path
            )
            await sim.start()
            return sim

        self.sim = self._call(start())
        return self

    @property
    def link(self) -> str:
        """The path the driver opens."""
        return str(self.sim.link)

    def control(self, action: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """Forward a control action to the simulator."""
        result: dict[str, Any] = self._call(self.sim.control(action, args or {}))
        return result

    def __exit__(self, *exc: object) -> None:
        self._call(self.sim.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(SAFETY_S)
        self._loop.close()
