"""The far end of a ``modbus_io`` bus for ``--simulate`` and the tests: pymodbus's own server.

The driver speaks real Modbus frames to it: TCP on a free loopback port, or RTU over a
pseudo-terminal pair (see :class:`devices.backends.modbus.ModbusServer`). Control actions
(``args`` name a button by ``slot``):

* ``press`` ``{"slot"}``: the slot's button goes down and, after ``hold_s`` (default 0.15 s,
  longer than a poll), up again; ``down`` / ``up`` hold it or let it go;
* ``silent`` ``{"unit", "silent": true|false}``: a unit stops answering (unplugged);
* ``kill`` / ``restart``: the bus goes away (TCP refused; RTU: nobody answers) / comes back;
* state: every slot whose lamp output is on now, and the stack light's tiers.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from devices.backends.modbus import ModbusServer
from devices.context import DeviceContext
from devices.lights.modbus.config import ModbusIoConfig
from devices.ptysim import PtyEndpoint
from devices.sim import Simulator


class ModbusIoSimulator(Simulator):
    """Plays the Modbus modules of one ``modbus_io`` bus.

    Args:
        config: the bus as the node file describes it.
        context: the node's device context.
        link_dir: where an RTU bus's pty links are made (the node sets its sim directory).
    """

    config: ModbusIoConfig
    default_link_dir: ClassVar[Path] = Path(tempfile.gettempdir()) / "zone-agent-sim"

    def __init__(
        self, config: ModbusIoConfig, context: DeviceContext, link_dir: str | Path | None = None
    ) -> None:
        super().__init__(config, context)
        self.link_dir = Path(link_dir) if link_dir is not None else self.default_link_dir
        self._where = {slot: (u.unit, ch) for u in config.units for slot, ch in u.slot_channels()}
        self._units = {u.unit: u for u in config.units}
        self.server: ModbusServer | None = None
        self.wire: NullModem | None = None
        self._releases: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Serve the units (RTU: on the far end of a pty pair; the driver opens the near)."""
        serial_port = ""
        if self.config.transport == "rtu":
            self.wire = NullModem(self.link_dir / self.config.name)
            serial_port = self.wire.open()
        self.server = ModbusServer(list(self._units), self.config.transport, serial_port)
        await self.server.start()

    async def stop(self) -> None:
        """Stop serving; safe twice."""
        for task in self._releases:
            task.cancel()
        if self.server is not None:
            await self.server.stop()
            self.server = None
        if self.wire is not None:
            self.wire.close()
            self.wire = None

    def patched_config(self) -> ModbusIoConfig:
        """The config pointing at this simulator."""
        assert self.server is not None
        if self.config.transport == "tcp":
            return self.config.model_copy(update={"host": "127.0.0.1", "port": self.server.port})
        assert self.wire is not None
        return self.config.model_copy(update={"serial_port": self.wire.master_port})

    def _button(self, slot: str, down: bool) -> None:
        assert self.server is not None
        unit, ch = self._where[slot]
        module = self._units[unit].module
        if module.inputs == "none":
            raise ValueError(f"slot {slot!r}: unit {unit} has no inputs")
        if module.inputs in ("discrete_input", "coil"):
            table: Any = module.inputs
            self.server.set_bits(table, unit, module.input_base + ch, [down])
            return
        reg_table: Any = "holding" if module.inputs == "holding" else "input"
        address = module.input_base + ch // 16
        value = self.server.get_registers(reg_table, unit, address, 1)[0]
        bit = 1 << (ch % 16)
        self.server.set_registers(reg_table, unit, address, [value | bit if down else value & ~bit])

    async def _release_later(self, slot: str, hold_s: float) -> None:
        await asyncio.sleep(hold_s)
        self._button(slot, False)

    async def control(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run a control action (see the module docstring)."""
        server = self.server
        assert server is not None
        if action in ("press", "down", "up"):
            slot = str(args.get("slot", ""))
            if slot not in self._where:
                raise ValueError(f"unknown slot {slot!r} on {self.config.name}")
            self._button(slot, action != "up")
            if action == "press":
                hold_s = float(args.get("hold_s", max(0.15, self.config.poll_ms / 1000 * 3)))
                task = asyncio.create_task(self._release_later(slot, hold_s))
                self._releases.add(task)
                task.add_done_callback(self._releases.discard)
            return {"slot": slot, "unit": self._where[slot][0], "channel": self._where[slot][1]}
        if action == "silent":
            unit = int(args["unit"])
            if unit not in self._units:
                raise ValueError(f"no unit {unit} on {self.config.name}")
            await server.set_silent(unit, bool(args.get("silent", True)))
            return {"silent": sorted(server.silent)}
        if action == "kill":
            await server.stop()
            return {"running": False}
        if action == "restart":
            await server.start()
            return {"running": True}
        raise ValueError(f"unknown action {action!r} (press, down, up, silent, kill, restart)")

    def lamp(self, slot: str) -> bool:
        """Whether the slot's lamp output is on now."""
        assert self.server is not None
        unit, ch = self._where[slot]
        return self._output(unit, ch)

    def _output(self, unit: int, ch: int) -> bool:
        assert self.server is not None
        module = self._units[unit].module
        if module.outputs == "coil":
            return self.server.get_bits("coil", unit, module.output_base + ch, 1)[0]
        return bool(self.server.get_registers("holding", unit, module.output_base + ch, 1)[0])

    def state(self) -> dict[str, Any]:
        """Lamps on now, the stack light's tiers, and the silent units."""
        if self.server is None:
            return {}
        lamp = self.config.zone_lamp
        tower = {}
        if lamp is not None:
            tower = {name: self._output(lamp.unit, ch) for name, ch in lamp.tiers().items()}
            if lamp.buzzer is not None:
                tower["buzzer"] = self._output(lamp.unit, lamp.buzzer)
        return {
            "lit": sorted(slot for slot in self._where if self.lamp(slot)),
            "zone_lamp": tower,
            "silent": sorted(self.server.silent),
        }


class NullModem:
    """Two pseudo-terminals joined back to back: the RS-485 pair between master and units."""

    def __init__(self, link_dir: Path) -> None:
        self.master_end = PtyEndpoint(link_dir / "modbus-master", self._to_units)
        self.units_end = PtyEndpoint(link_dir / "modbus-units", self._to_master)
        self.master_port = ""

    def open(self) -> str:
        """Make both ends; returns the units' end (the master's is ``master_port``)."""
        self.master_port = self.master_end.open()
        return self.units_end.open()

    def _to_units(self, data: bytes) -> None:
        self.units_end.write(data)

    def _to_master(self, data: bytes) -> None:
        self.master_end.write(data)

    def close(self) -> None:
        """Take the wire away."""
        self.master_end.close()
        self.units_end.close()
