"""The process: open the store and the devices, run the node, stop cleanly on a signal.

A clean stop (SIGTERM from systemd, SIGINT from a terminal) turns every light off,
publishes the offline state, closes the devices and checkpoints the store, in that order.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from agent.config import NodeConfig
from agent.errors import ConfigError
from agent.floor import DeviceFloor
from agent.i18n import catalogue
from agent.link.clock import wait_for_clock
from agent.metrics import render
from agent.node import Node
from agent.roles import ROLES, manifest
from agent.status import node_families, node_state
from agent.store import AsyncStore, StateLock
from agent.systemd import feed_watchdog, notify, watchdog_interval
from agent.web import WebServer
from agent.workflows.base import Workflow
from devices.context import DeviceContext

log = logging.getLogger("agent")

STATE_FILE = "state.sqlite3"
OUTBOX_HEADROOM = 100
"""Events the store takes beyond ``limit + reserve``: the node stops taking input exactly at
``limit + reserve`` (``Node._outbox_total``), and the last input it took may emit a few
events more (a confirmation and its ``zone_done``). Only a bug reaches the store's refusal."""
_gc_frozen = False


def build_workflow(config: NodeConfig, floor: DeviceFloor) -> Workflow:
    """The state machine for the node's role.

    Raises:
        ConfigError: the role has no workflow in this build.
    """
    try:
        role = manifest(config.role)
    except ModuleNotFoundError as exc:
        if exc.name != ROLES[config.role]:
            raise
        raise ConfigError(
            "(node file)", "role", f"no {config.role!r} workflow in this build"
        ) from None
    workflow: Workflow = role.workflow.from_config(config, floor)
    return workflow


def device_context(simulate: bool) -> DeviceContext:
    """Drivers' injected dependencies: MockFactory pins when simulated."""
    if simulate:
        from devices.backends.gpio import mock_factory

        return DeviceContext(pin_factory=mock_factory(), simulate=True)
    return DeviceContext()


async def run_node(
    config: NodeConfig,
    *,
    simulate: bool = False,
    stop: asyncio.Event | None = None,
    sim_dir: Path | None = None,
    started: Callable[[Node, DeviceFloor], None] | None = None,
) -> None:
    """Run a node until ``stop`` is set or SIGTERM/SIGINT arrives.

    ``started(node, floor)`` is called once both exist (in-process tests and tools use it).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass  # not the main thread (tests): the caller sets ``stop``
    lock = StateLock(config.state_dir)
    lock.acquire()  # before the store: a second process must not even bump the boot counter
    try:
        await _run_locked(config, simulate, stop, sim_dir, started)
    finally:
        lock.release()
    log.info("stopped")


async def _run_locked(
    config: NodeConfig,
    simulate: bool,
    stop: asyncio.Event,
    sim_dir: Path | None,
    started: Callable[[Node, DeviceFloor], None] | None,
) -> None:
    loop = asyncio.get_running_loop()
    # Before anything opens: a Pi without NTP yet would fail every TLS handshake.
    if not await wait_for_clock(config.broker, notify=notify, stop=stop):
        return
    store = await AsyncStore.open(
        config.state_dir / STATE_FILE,
        outbox_hard_limit=config.outbox.limit + config.outbox.reserve + OUTBOX_HEADROOM,
    )
    try:
        async with DeviceFloor(
            config, device_context(simulate), simulate=simulate, sim_dir=sim_dir
        ) as floor:
            node = Node(config, store, build_workflow(config, floor), floor)
            floor.on_health_change(lambda: _spawn(loop, node.republish_birth()))
            if started is not None:
                started(node, floor)
            web = await start_web(config, node, floor)
            try:
                await _serve(node, floor, stop)
            finally:
                await web.close()
    finally:
        await store.close()


async def start_web(config: NodeConfig, node: Node, floor: DeviceFloor) -> WebServer:
    """Start the screen/API server and write its URL to ``state_dir/control.json``."""

    async def control(device: str, action: str, args: dict[str, Any]) -> dict[str, Any]:
        return await floor.simulators[device].control(action, args)

    def sim_state(device: str | None) -> dict[str, Any]:
        if device is None:
            return {name: sim.state() for name, sim in floor.simulators.items()}
        return floor.simulators[device].state()

    web = WebServer(
        lambda: node_state(node, floor),
        page=manifest(config.role).page,
        control=control if floor.simulate else None,
        sim_state=sim_state if floor.simulate else None,
        metrics=lambda: render(node_families(node, floor)),
        language=config.http.language,
        words=catalogue(config.http.language, config.http.messages),
    )
    http = config.http
    port = await _listen(web.start, http.bind, http.port, ("http.bind", "http.port"))
    url = f"http://{http.bind}:{port}"
    # Written whole, then renamed: a script waiting for the file never reads half of it.
    control_file = config.state_dir / "control.json"
    partial = control_file.with_name(".control.json.tmp")
    partial.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    partial.replace(control_file)
    log.info("screen and API on %s", url)
    if http.metrics_port is not None:
        try:
            fields = ("http.metrics_bind", "http.metrics_port")
            await _listen(web.start_metrics, http.metrics_bind, http.metrics_port, fields)
        except BaseException:
            await web.close()
            raise
        log.info("metrics only on http://%s:%d/metrics", http.metrics_bind, http.metrics_port)
    return web


async def _listen(
    start: Callable[[str, int], Awaitable[int]], bind: str, port: int, fields: tuple[str, str]
) -> int:
    """``start(bind, port)``; a port taken or an address not on this machine is the file's.

    Exit 2 with the field, not a traceback and a restart loop: restarting cannot free it.
    """
    try:
        return await start(bind, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                "(node file)",
                fields[1],
                f"{bind}:{port} is already in use (another zone-agent instance or program: "
                f"ss -ltnp 'sport = :{port}')",
            ) from None
        reason = f"cannot listen on {bind}:{port}: {exc.strerror or exc}"
        raise ConfigError("(node file)", fields[0], reason) from None


def _freeze_startup_objects() -> None:
    """Keep what start-up built (modules, schemas, restored state) out of later GC passes.

    Every full collection would otherwise walk the few hundred thousand objects of the
    imports and models again: about a third of the CPU of ingesting a wave. Once per process
    (in-process tests start many nodes); objects are still freed by reference counting.
    The young generation is collected every 20,000 allocations instead of 700: a wave makes
    and frees hundreds of thousands of objects, almost none of them in cycles, and each
    young collection also walked the lines the wave had just added.
    """
    global _gc_frozen
    if not _gc_frozen:
        _gc_frozen = True
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 10, 10)


def _spawn(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> None:
    loop.create_task(coro)


async def _serve(node: Node, floor: DeviceFloor, stop: asyncio.Event) -> None:
    runner = asyncio.create_task(node.run(), name="node")
    watchdog = None
    ready = asyncio.create_task(node.ready.wait())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({ready, stopping, runner}, return_when=asyncio.FIRST_COMPLETED)
    if runner.done():
        stopping.cancel()
        runner.result()  # raises what made the node fail
        return
    if node.ready.is_set():
        _freeze_startup_objects()
        notify("READY=1")
        interval = watchdog_interval()
        if interval:
            watchdog = asyncio.create_task(feed_watchdog(interval))
    await asyncio.wait({stopping, runner}, return_when=asyncio.FIRST_COMPLETED)
    notify("STOPPING=1")
    log.info("stopping")
    try:
        await floor.all_off()
        if node.online.is_set():
            await node.say_offline()
    finally:
        for task in (runner, watchdog, ready, stopping):
            if task is not None:
                task.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    if runner.done() and not runner.cancelled() and runner.exception() is not None:
        raise runner.exception()  # type: ignore[misc]
