"""Helpers shared by the printer tests (no conftest: import from here)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from devices.printers.base import Printer, PrintResult
from devices.printers.escpos import EscposPrinterConfig
from devices.printers.sim import EscposSimulator, ZplSimulator, _TcpPrinterSim
from devices.printers.zpl import ZplPrinterConfig

T = TypeVar("T")
SAFETY_S = 5.0  # a safety net only; nothing asserts on elapsed time

# Short waits so faults and retries pass quickly; values are not asserted on.
FAST = {
    "status_timeout_s": 0.2,
    "connect_timeout_s": 1.0,
    "retry_initial_s": 0.01,
    "retry_max_s": 0.05,
    "idle_poll_s": 0.05,
}


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a test coroutine with a safety timeout."""

    async def guarded() -> T:
        async with asyncio.timeout(15):
            return await coro

    return asyncio.run(guarded())


def zpl_config(**overrides: Any) -> ZplPrinterConfig:
    """A ZPL config with short test timings (host/port from ``overrides``)."""
    fields: dict[str, Any] = {"name": "label1", "host": "127.0.0.1", **FAST, **overrides}
    return ZplPrinterConfig(**fields)


def escpos_config(**overrides: Any) -> EscposPrinterConfig:
    """An ESC/POS config with short test timings."""
    fields: dict[str, Any] = {"name": "receipt1", "host": "127.0.0.1", **FAST, **overrides}
    return EscposPrinterConfig(**fields)


class FakeClock:
    """A clock the test moves by hand (job ages, ``max_wait_s``)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def next_result(printer: Printer) -> PrintResult:
    """The next print result, within the safety net."""
    async with asyncio.timeout(SAFETY_S):
        return await printer.next_result()


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Wait until ``predicate()`` holds, within the safety net."""
    async with asyncio.timeout(SAFETY_S):
        # The simulators have no event to wait on, so look every few milliseconds.
        while True:
            if predicate():
                return
            await asyncio.sleep(0.005)


@contextmanager
def sim_in_thread(lang: str) -> Iterator[tuple[_TcpPrinterSim, Callable[..., Any]]]:
    """A simulator running on its own loop in a thread, for in-process CLI tests.

    Yields the simulator and ``call(coroutine_function, *args)`` to act on it from the test
    thread (control, state).
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    sim: _TcpPrinterSim = (
        ZplSimulator(zpl_config()) if lang == "zpl" else EscposSimulator(escpos_config())
    )

    def call(func: Callable[..., Any], *args: Any) -> Any:
        async def invoke() -> Any:
            result = func(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(invoke(), loop).result(SAFETY_S)

    try:
        call(sim.start)
        yield sim, call
    finally:
        call(sim.stop)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(SAFETY_S)
        loop.close()


HS_READY = (
    b"\x02030,0,0,1218,000,0,0,0,000,0,0,0\x03\r\n"
    b"\x02001,0,0,0,0,2,6,0,00000000,1,000\x03\r\n"
    b"\x021234,0\x03\r\n"
)


class ScriptedLink:
    """A fake ``PrinterLink`` for connection breaks a simulator cannot time exactly.

    It answers every ``~HS`` with a ready printer. ``fail_write_of`` makes the write of
    those bytes break the connection (a reset mid-write); ``drop_after_write_of`` lets
    the write succeed and then breaks the connection before any reply (once).

    Attributes:
        writes: every ``write`` attempt, in order, including the one that failed.
        opened: how many times the link was opened.
    """

    target = "fake"
    can_read = True

    def __init__(
        self, fail_write_of: bytes | None = None, drop_after_write_of: bytes | None = None
    ) -> None:
        self.fail_write_of = fail_write_of
        self.drop_after_write_of = drop_after_write_of
        self.writes: list[bytes] = []
        self.opened = 0
        self._open = False
        self._reply = bytearray()

    @property
    def is_open(self) -> bool:
        return self._open

    async def open(self) -> None:
        self._open = True
        self.opened += 1

    async def close(self) -> None:
        self._open = False

    async def write(self, data: bytes) -> None:
        from agent.errors import DeviceUnavailable

        if not self._open:
            raise DeviceUnavailable("fake: not connected")
        self.writes.append(data)
        if data == self.fail_write_of:
            self._open = False
            raise DeviceUnavailable("fake: connection reset by peer")
        if data == b"~HS":
            self._reply += HS_READY
        elif data == self.drop_after_write_of:
            self.drop_after_write_of = None  # once
            self._open = False

    def discard_input(self) -> None:
        self._reply.clear()

    async def read_until(self, terminator: bytes, within: float) -> bytes | None:
        from agent.errors import DeviceUnavailable

        if not self._open:
            raise DeviceUnavailable("fake: connection closed")
        end = self._reply.find(terminator)
        if end < 0:
            return None
        end += len(terminator)
        frame = bytes(self._reply[:end])
        del self._reply[:end]
        return frame

    def pending_input(self) -> bytes:
        return bytes(self._reply)
