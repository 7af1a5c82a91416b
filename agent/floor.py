"""The node's devices, built from the node file, as the node uses them.

``DeviceFloor`` opens every device of the node file (under ``--simulate`` it first starts a
simulator for each, unless the device's table says ``simulate = false``, and points the
driver at it: a pty, a local TCP port, MockFactory pins), merges their input into one
stream, carries out the workflows' light, print and packing-slip actions, and reports
health: to the node's listeners (the birth) and, as a
``devices.events.DeviceHealthChanged`` in the input stream, to the workflow. Drivers are
closed in reverse order on the way out, which turns every light off. A pack station's
printers are polled every ``PACK_IDLE_POLL_S`` while idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from agent.config import NodeConfig
from agent.wire.messages import MAX_PARTS, DeviceHealth, PartHealth
from agent.workflows.base import ZONE_LAMP, Action, Light, Print, PrintLabel, PrintSlip
from devices import registry
from devices.base import Device, Health
from devices.config import DeviceConfig
from devices.context import DeviceContext
from devices.events import ButtonPress, DeviceHealthChanged
from devices.sim import Simulator

log = logging.getLogger("agent.floor")

PACK_IDLE_POLL_S = 2.0
"""How often a pack station's printers are asked for their status while idle.

A printer that runs out of paper between parcels must be on the packer's screen before the
next label, not up to 30 s later (the printers' own default). Neither ZPL on TCP 9100 nor
ESC/POS gives an unsolicited status the drivers could wait for (Zebra alerts go by SNMP or
e-mail; ESC/POS automatic status back, GS a, is not on every model), so the node polls:
one ~HS or DLE EOT every 2 s is a few bytes on the LAN. A device table's own
``idle_poll_s`` wins."""


class DeviceFloor:
    """Every device of one node.

    Args:
        config: the node file.
        context: injected dependencies for drivers (pin factory).
        simulate: start a simulator for each device and drive the simulator.
        sim_dir: where simulators put their pty links.
    """

    def __init__(
        self,
        config: NodeConfig,
        context: DeviceContext,
        *,
        simulate: bool = False,
        sim_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.context = context
        self.simulate = simulate
        self.sim_dir = sim_dir or (config.state_dir / "sim")
        self.devices: dict[str, Device] = {}
        self.kinds: dict[str, str] = {}
        self.simulators: dict[str, Simulator] = {}
        self._by_location: dict[str, Any] = {}
        self._shows: dict[str, str | None] = {}  # location -> Light.shows of what it shows
        self._lighting: dict[str, str] = {}  # dark locations lighting up now -> what they show
        self._stack = contextlib.AsyncExitStack()
        self._inputs: asyncio.Queue[object] = asyncio.Queue()
        self._pumps: list[asyncio.Task[None]] = []
        self._health_listeners: list[Callable[[], None]] = []
        self._renders: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        try:
            for dev_config in self.config.devices:
                await self._add(dev_config)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    def _tuned(self, dev_config: DeviceConfig) -> DeviceConfig:
        """The device's config with the role's defaults for what its table leaves out."""
        if (
            self.config.role == "pack"
            and "idle_poll_s" in type(dev_config).model_fields
            and "idle_poll_s" not in dev_config.model_fields_set
        ):
            return dev_config.model_copy(update={"idle_poll_s": PACK_IDLE_POLL_S})
        return dev_config

    async def _add(self, dev_config: DeviceConfig) -> None:
        module = registry.module_for(dev_config.kind)
        dev_config = self._tuned(dev_config)
        context = self.context
        if self.simulate and not dev_config.simulate:
            # The real device beside simulated ones: real pins, not the node's MockFactory.
            context = DeviceContext()
            log.info(
                "device %s: simulate = false: the real device, not a simulator", dev_config.name
            )
        elif self.simulate and hasattr(module, "SIMULATOR"):
            sim: Simulator = module.SIMULATOR(dev_config, self.context)
            if hasattr(sim, "link_dir"):
                sim.link_dir = self.sim_dir
            await sim.start()
            self._stack.push_async_callback(sim.stop)
            self.simulators[dev_config.name] = sim
            dev_config = sim.patched_config()
        driver: Device = module.DRIVER.from_config(dev_config, context)
        driver.add_health_listener(self._health_changed)
        log.info("device %s", driver.describe())
        await driver.open()
        self._stack.push_async_callback(driver.close)
        self.devices[dev_config.name] = driver
        self.kinds[dev_config.name] = dev_config.kind
        for location in dev_config.locations():
            self._by_location[location] = driver
        if hasattr(driver, "events"):
            self._pumps.append(asyncio.create_task(self._pump(driver)))

    async def _pump(self, driver: Any) -> None:
        async for event in driver.events():
            if isinstance(event, ButtonPress) and event.shown is None:
                # Bound here, as it comes out of the driver: what its slot shows now is
                # what the picker saw, however long the press then waits to be handled.
                shown = self._shows.get(event.slot)
                if not shown:
                    # A dark slot being lit (the driver's pins change in a worker thread,
                    # so the light can be on before ``apply`` returns): the press is for
                    # what lights up, a press on a dark button stands for nothing else.
                    # A slot changing from one line to another is not here: a press there
                    # stays bound to what it showed before, and confirms nothing new.
                    shown = self._lighting.get(event.slot, shown)
                event = replace(event, shown=shown)
            self._inputs.put_nowait(event)

    def shown(self, location: str) -> str | None:
        """What the light of ``location`` stands for now (``Light.shows``; ``""``: dark)."""
        return self._shows.get(location)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in [*self._pumps, *self._renders]:
            task.cancel()
        await asyncio.gather(*self._pumps, *self._renders, return_exceptions=True)
        await self._stack.aclose()

    def locations(self) -> list[str]:
        """Every location (slot) the node's lights cover."""
        return list(self._by_location)

    def on_health_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` whenever any device's health changes."""
        self._health_listeners.append(listener)

    def _health_changed(self, name: str, health: Health) -> None:
        # Listeners are added before a driver opens, so the workflow also hears each
        # device's first health (starting -> ok or fault) before it handles anything else.
        self._inputs.put_nowait(DeviceHealthChanged(name, health.status.value, health.detail))
        for listener in self._health_listeners:
            listener()

    def health(self) -> dict[str, DeviceHealth]:
        """Every device's kind and health, for the birth (with parts not ok, if any)."""
        out = {}
        for name, dev in self.devices.items():
            parts_of = getattr(dev, "parts", None)
            parts = {}
            if parts_of is not None:
                parts = {
                    where: PartHealth(status=part.status.value, detail=part.detail)
                    for where, part in list(parts_of().items())[:MAX_PARTS]
                }
            out[name] = DeviceHealth(
                kind=self.kinds[name],
                status=dev.health.status.value,
                detail=dev.health.detail,
                parts=parts,
            )
        return out

    def counters(self) -> dict[str, dict[str, int]]:
        """Drivers' own counters (bus frames, events, bad input), by device."""
        return {
            name: dict(counts)
            for name, dev in self.devices.items()
            if (counts := getattr(dev, "counts", None)) is not None
        }

    async def perform(self, actions: list[Action]) -> None:
        """Carry out light, print and slip actions; a failing device is logged, not fatal.

        Light changes are grouped per device, so a strip shows a whole wave in one frame.
        """
        from devices.lights.palette import Colour, Indication, Pattern

        changes: dict[Any, list[tuple[str, Indication | None]]] = {}
        shows: dict[Any, dict[str, str | None]] = {}
        zone: list[Indication | None] = []
        for action in actions:
            if isinstance(action, Light):
                shown = None
                if action.colour is not None:
                    shown = Indication(
                        Colour(action.colour), Pattern(action.pattern), action.qty, action.text
                    )
                if action.location == ZONE_LAMP:
                    zone.append(shown)
                    continue
                bar = self._by_location.get(action.location)
                if bar is None:
                    continue
                changes.setdefault(bar, []).append((action.location, shown))
                shows.setdefault(bar, {})[action.location] = (
                    "" if action.colour is None else action.shows
                )
            elif isinstance(action, Print):
                await self._submit(action.printer, action.job_id, action.data)
            elif isinstance(action, PrintSlip):
                # Imported here: only a node that prints slips loads the ESC/POS stack.
                from devices.printers.escpos import PackingSlip, render_slip

                try:
                    data = render_slip(PackingSlip(**asdict(action.slip)))
                except Exception as exc:  # noqa: BLE001 - one device must not stop the node
                    self._not_submitted(action.printer, action.job_id, f"not rendered: {exc}")
                    continue
                await self._submit(action.printer, action.job_id, data)
            elif isinstance(action, PrintLabel):
                # Drawing a label takes 0.1-0.3 s of CPU: in a task and a thread, so the
                # scans and presses after it are handled meanwhile.
                task = asyncio.create_task(self._render_and_submit(action))
                self._renders.add(task)
                task.add_done_callback(self._renders.discard)
        for bar, bar_changes in changes.items():
            lighting = {
                location: now
                for location, now in shows[bar].items()
                if now and not self._shows.get(location)
            }
            self._lighting.update(lighting)
            try:
                await bar.apply(bar_changes)
            except Exception as exc:  # noqa: BLE001 - one device must not stop the node
                log.warning("lights on %s failed: %s", bar.name, exc)
                # What the slots show is not known now: presses there bind to nothing.
                self._shows.update(dict.fromkeys(shows[bar]))
                continue
            else:
                self._shows.update(shows[bar])
            finally:
                for location in lighting:
                    self._lighting.pop(location, None)
        if zone:
            await self._show_zone(zone[-1])  # a step may turn the lamp off, then on

    async def _render_and_submit(self, action: PrintLabel) -> None:
        # Imported here: only a node that renders labels loads Pillow.
        from devices.printers.render import ShippingLabel, render

        label = ShippingLabel(**asdict(action.label))
        try:
            data = await asyncio.to_thread(render, label, action.fmt, action.dpi)
        except Exception as exc:  # noqa: BLE001 - one device must not stop the node
            self._not_submitted(action.printer, action.job_id, f"not rendered: {exc}")
            return
        await self._submit(action.printer, action.job_id, data)

    async def _submit(self, printer: str, job_id: str, data: bytes) -> None:
        device = self.devices.get(printer)
        if device is None or not hasattr(device, "submit"):
            self._not_submitted(printer, job_id, f"no printer {printer!r} on this node")
            return
        try:
            await device.submit(job_id, data)
        except Exception as exc:  # noqa: BLE001 - one device must not stop the node
            self._not_submitted(printer, job_id, f"not accepted by the printer: {exc}")

    def _not_submitted(self, printer: str, job_id: str, reason: str) -> None:
        # The printer never took the job, so no result would ever come: say so as a failed
        # result, or the workflow would wait for it until its own timeout.
        from devices.printers.base import PrintResult

        log.warning("print %s on %s failed: %s", job_id, printer, reason)
        self._inputs.put_nowait(PrintResult(job_id, False, reason, time.monotonic()))

    def _zone_lamps(self) -> list[Any]:
        return [d for d in self.devices.values() if getattr(d, "has_zone_lamp", lambda: False)()]

    async def _show_zone(self, shown: Any) -> None:
        for bar in self._zone_lamps():
            try:
                await bar.show_zone(shown)
            except Exception as exc:  # noqa: BLE001 - one device must not stop the node
                log.warning("zone lamp on %s failed: %s", bar.name, exc)

    def lights(self) -> dict[str, Any]:
        """What every light shows now, by location, and the zone lamp as ``@zone``."""
        shown: dict[str, Any] = {}
        lit = [(location, bar.lit().get(location)) for location, bar in self._by_location.items()]
        lamps = self._zone_lamps()
        if lamps:
            lit.append((ZONE_LAMP, lamps[0].zone()))
        for location, indication in lit:
            shown[location] = (
                None
                if indication is None
                else {
                    "colour": indication.colour.value,
                    "pattern": indication.pattern.value,
                    "qty": indication.qty,
                    "text": indication.text,
                }
            )
        return shown

    async def all_off(self) -> None:
        """Turn every light off (on a clean stop, before the offline state goes out)."""
        for dev in self.devices.values():
            clear = getattr(dev, "clear", None)
            if clear is not None:
                with contextlib.suppress(Exception):
                    await clear()

    async def inputs(self) -> AsyncIterator[object]:
        """Input from every device, in arrival order."""
        while True:
            yield await self._inputs.get()
