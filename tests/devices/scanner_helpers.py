"""Helpers shared by the scanner tests (no conftest: import from here)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from devices.backends.serial import SerialPort
from devices.base import HealthStatus
from devices.context import DeviceContext
from devices.events import Scan
from devices.scanners.serial_scanner import (
    SerialScanner,
    SerialScannerConfig,
    SerialScannerSimulator,
)

T = TypeVar("T")
SAFETY_S = 3.0  # a safety net only; nothing asserts on elapsed time


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a test coroutine with a safety timeout."""

    async def guarded() -> T:
        async with asyncio.timeout(15):
            return await coro

    return asyncio.run(guarded())


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def next_scan(events: AsyncIterator[Scan]) -> Scan:
    return await asyncio.wait_for(anext(events), SAFETY_S)


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll until ``condition()`` holds (the safety timeout fails the test otherwise)."""
    async with asyncio.timeout(SAFETY_S):
        while not condition():  # polls driver state: there is no event to wait on
            await asyncio.sleep(0.005)


class HealthLog:
    """Records health statuses of a device, collapsing repeats."""

    def __init__(self) -> None:
        self.statuses: list[HealthStatus] = []

    def __call__(self, name: str, health: Any) -> None:
        if not self.statuses or self.statuses[-1] != health.status:
            self.statuses.append(health.status)


@asynccontextmanager
async def serial_rig(
    tmp_path: Path, clock: FakeClock | None = None, **settings: Any
) -> AsyncIterator[tuple[SerialScannerSimulator, SerialScanner, AsyncIterator[Scan], HealthLog]]:
    """A serial scanner simulator on a pty and an open driver reading it."""
    config = SerialScannerConfig(name="scan1", kind="serial_scanner", port="unused", **settings)
    sim = SerialScannerSimulator(config, DeviceContext(), link_dir=tmp_path)
    await sim.start()
    patched = sim.patched_config()
    port = SerialPort(patched.port, patched.settings())
    driver = SerialScanner(patched, port, clock=clock or FakeClock())
    health = HealthLog()
    driver.add_health_listener(health)
    try:
        async with driver:
            yield sim, driver, driver.events(), health
    finally:
        await sim.stop()
