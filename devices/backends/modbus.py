"""Modbus through pymodbus: the one module that imports it (client, and simulator's server).

pymodbus is pinned to 3.11.x (pyproject.toml says why): it changes its API in minor
releases (``slave=`` became ``device_id=`` in 3.10, the server datastore turned async-only
in 3.13 and is deprecated from 3.14). Everything the drivers need goes through
:class:`ModbusBus`, so the next upgrade touches this file only.

Errors are translated here, named by what happens next:

* :class:`DeviceUnavailable`: the bus is gone (TCP refused or dropped, the serial adapter
  unplugged): reconnect with backoff, show everything again;
* :class:`UnitSilent`: one unit did not answer in time: mark that module down, keep going;
* :class:`DeviceProtocolError`: the unit answered with a Modbus exception (illegal address,
  function, value): a map that does not fit the module; count it and say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from devices.errors import DeviceProtocolError, DeviceUnavailable

log = logging.getLogger("devices")
# pymodbus logs every frame at DEBUG and a lost unit at ERROR; the driver reports both.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

BitTable = Literal["coil", "discrete_input"]
RegisterTable = Literal["holding", "input"]


class UnitSilent(DeviceProtocolError):
    """A unit did not answer within the timeout (unplugged, wrong address, wrong baud)."""

    def __init__(self, unit: int, why: str) -> None:
        super().__init__(f"unit {unit}: no answer ({why})")
        self.unit = unit


@dataclass(frozen=True, slots=True)
class BusSettings:
    """How to reach a Modbus bus.

    Attributes:
        transport: ``tcp`` (Modbus TCP) or ``rtu`` (RS-485 through a serial adapter).
        host / port: the TCP module or gateway.
        serial_port / baudrate / parity / stopbits: the RTU line.
        timeout_s: how long a unit may take to answer.
    """

    transport: Literal["tcp", "rtu"]
    host: str = "127.0.0.1"
    port: int = 502
    serial_port: str = ""
    baudrate: int = 19_200
    parity: Literal["N", "E", "O"] = "N"
    stopbits: int = 1
    timeout_s: float = 0.2

    @property
    def where(self) -> str:
        """The bus in words, for logs and health."""
        if self.transport == "tcp":
            return f"{self.host}:{self.port}"
        return f"{self.serial_port} {self.baudrate} 8{self.parity}{self.stopbits}"


class ModbusBus:
    """One Modbus master on one bus (a TCP connection or an RS-485 line).

    Args:
        settings: where the bus is and its timing.
    """

    def __init__(self, settings: BusSettings) -> None:
        self.settings = settings
        self._client: Any = None
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        """Whether the bus is open."""
        return self._client is not None and bool(self._client.connected)

    async def connect(self) -> None:
        """Open the bus.

        Raises:
            DeviceUnavailable: refused, unreachable, or the serial port cannot be opened.
        """
        from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

        s = self.settings
        self.close()
        # retries=0 and no reconnect of its own: the driver decides what a failure means.
        if s.transport == "tcp":
            client: Any = AsyncModbusTcpClient(
                s.host, port=s.port, timeout=s.timeout_s, retries=0, reconnect_delay=0
            )
        else:
            client = AsyncModbusSerialClient(
                s.serial_port,
                baudrate=s.baudrate,
                bytesize=8,
                parity=s.parity,
                stopbits=s.stopbits,
                timeout=s.timeout_s,
                retries=0,
                reconnect_delay=0,
            )
        try:
            ok = await client.connect()
        except Exception as exc:
            client.close()
            raise DeviceUnavailable(f"{s.where}: {exc}") from exc
        if not ok:
            client.close()
            raise DeviceUnavailable(f"{s.where}: cannot connect")
        self._client = client

    def close(self) -> None:
        """Close the bus (safe when not open)."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    async def _call(self, unit: int, method: str, *args: Any, **kw: Any) -> Any:
        from pymodbus.exceptions import ConnectionException, ModbusIOException

        client = self._client
        if client is None or not client.connected:
            raise DeviceUnavailable(f"{self.settings.where}: not connected")
        async with self._lock:  # one request at a time on a bus
            try:
                result = await getattr(client, method)(*args, device_id=unit, **kw)
            except ConnectionException as exc:
                self.close()
                raise DeviceUnavailable(f"{self.settings.where}: {exc}") from exc
            except (ModbusIOException, TimeoutError) as exc:
                if not client.connected:
                    self.close()
                    raise DeviceUnavailable(f"{self.settings.where}: connection lost") from exc
                raise UnitSilent(unit, str(exc) or "timeout") from exc
        if result.isError():
            code = getattr(result, "exception_code", None)
            if code in (10, 11):  # a TCP gateway saying its RTU unit did not answer
                raise UnitSilent(unit, _EXCEPTIONS[code])
            raise DeviceProtocolError(
                f"unit {unit}: {method} refused with Modbus exception {code} "
                f"({_EXCEPTIONS.get(code or 0, 'unknown')})"
            )
        return result

    async def read_bits(self, table: BitTable, unit: int, address: int, count: int) -> list[bool]:
        """Read ``count`` coils or discrete inputs from wire address ``address``."""
        method = "read_coils" if table == "coil" else "read_discrete_inputs"
        result = await self._call(unit, method, address, count=count)
        return [bool(b) for b in result.bits[:count]]

    async def read_registers(
        self, table: RegisterTable, unit: int, address: int, count: int
    ) -> list[int]:
        """Read ``count`` holding or input registers from wire address ``address``."""
        method = "read_holding_registers" if table == "holding" else "read_input_registers"
        result = await self._call(unit, method, address, count=count)
        return [int(r) for r in result.registers[:count]]

    async def write_bits(self, unit: int, address: int, values: Sequence[bool]) -> None:
        """Write coils from ``address`` (FC05 for one, FC15 for several)."""
        if len(values) == 1:
            await self._call(unit, "write_coil", address, bool(values[0]))
        else:
            await self._call(unit, "write_coils", address, [bool(v) for v in values])

    async def write_registers(self, unit: int, address: int, values: Sequence[int]) -> None:
        """Write holding registers from ``address`` (FC06 for one, FC16 for several)."""
        if len(values) == 1:
            await self._call(unit, "write_register", address, int(values[0]))
        else:
            await self._call(unit, "write_registers", address, [int(v) for v in values])


_EXCEPTIONS = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    6: "server device busy",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


# --- the simulator's far end: pymodbus's own server ---------------------------------------


class ModbusServer:
    """Modbus units served by pymodbus's server: the far end of the simulator and the tests.

    Real Modbus frames: TCP on a free loopback port, or RTU on a serial port (the
    simulator hands it one end of a pseudo-terminal pair that plays the RS-485 wire). Each
    unit has 256 coils, discrete inputs, holding and input registers.

    Args:
        units: the unit ids served.
        transport: ``tcp`` or ``rtu``.
        serial_port: the port the RTU server opens (``rtu`` only).
    """

    SIZE = 256

    def __init__(
        self, units: Sequence[int], transport: Literal["tcp", "rtu"], serial_port: str = ""
    ) -> None:
        self.units = list(units)
        self.transport = transport
        self.serial_port = serial_port
        self.port = 0
        self.silent: set[int] = set()
        self._server: Any = None
        self._contexts: dict[int, Any] = {}

    def _context(self) -> Any:
        from pymodbus import datastore

        # Untyped in pymodbus 3.11; the simulator's far end only.
        store: Any = datastore
        ModbusDeviceContext = store.ModbusDeviceContext
        ModbusSequentialDataBlock = store.ModbusSequentialDataBlock
        ModbusServerContext = store.ModbusServerContext

        if not self._contexts:
            for unit in self.units:
                self._contexts[unit] = ModbusDeviceContext(
                    co=ModbusSequentialDataBlock(0, [0] * self.SIZE),
                    di=ModbusSequentialDataBlock(0, [0] * self.SIZE),
                    hr=ModbusSequentialDataBlock(0, [0] * self.SIZE),
                    ir=ModbusSequentialDataBlock(0, [0] * self.SIZE),
                )
        served = {u: c for u, c in self._contexts.items() if u not in self.silent}
        return ModbusServerContext(devices=served, single=False)

    async def start(self) -> None:
        """Serve (again, after ``stop``, with the same values and the same address)."""
        from pymodbus import FramerType
        from pymodbus.server import ModbusSerialServer, ModbusTcpServer

        context = self._context()
        if self.transport == "tcp":
            self._server = ModbusTcpServer(context, address=("127.0.0.1", self.port))
        else:
            self._server = ModbusSerialServer(
                context,
                port=self.serial_port,
                baudrate=19_200,
                framer=FramerType.RTU,
                ignore_missing_devices=True,  # on RS-485 a missing unit says nothing
            )
        await self._server.serve_forever(background=True)
        if self.transport == "tcp":
            self.port = self._server.transport.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop serving (a TCP client sees the connection refused and dropped)."""
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(Exception):
                await server.shutdown()

    async def set_silent(self, unit: int, silent: bool) -> None:
        """A unit stops (or starts again) answering, as if unplugged."""
        if silent:
            self.silent.add(unit)
        else:
            self.silent.discard(unit)
        await self.stop()
        await self.start()

    def get_bits(self, table: BitTable, unit: int, address: int, count: int) -> list[bool]:
        """What the unit holds now."""
        fc = 1 if table == "coil" else 2
        return [bool(v) for v in self._contexts[unit].getValues(fc, address, count)]

    def set_bits(self, table: BitTable, unit: int, address: int, values: Sequence[bool]) -> None:
        """Change inputs (a button pressed) or coils."""
        fc = 1 if table == "coil" else 2
        self._contexts[unit].setValues(fc, address, [int(v) for v in values])

    def get_registers(self, table: RegisterTable, unit: int, address: int, count: int) -> list[int]:
        """What the unit's registers hold now."""
        fc = 3 if table == "holding" else 4
        return [int(v) for v in self._contexts[unit].getValues(fc, address, count)]

    def set_registers(
        self, table: RegisterTable, unit: int, address: int, values: Sequence[int]
    ) -> None:
        """Change registers."""
        fc = 3 if table == "holding" else 4
        self._contexts[unit].setValues(fc, address, [int(v) for v in values])
