"""Simulated printers on a real TCP socket (127.0.0.1), speaking the real byte protocols.

``ZplSimulator`` plays a Zebra on raw port 9100: it splits what it receives into
``^XA``…``^XZ`` formats, answers ``~HS`` with the three host-status strings, and, like a
real Zebra, stays silent to ``~HS`` while media is out, the head is open, the ribbon is out
or it is offline. Formats received while it cannot print are held as *pending* and count
as printed when the state returns to ``ready``.

``EscposSimulator`` plays an ESC/POS receipt printer: it answers ``DLE EOT 1/2/4`` with
status bytes and keeps every other byte it receives.

Control actions (``await sim.control(action, args)``):

* ``set`` ``{"state": "ready"|"paper_out"|"head_open"|"paused"|"offline"}`` (ZPL also
  ``"ribbon_out"``, ESC/POS also ``"paper_near_end"``); ZPL takes ``"silent": false`` to
  answer ``~HS`` with the fault flags instead of staying silent, and ZPL takes
  ``"after_formats": n`` to switch only when the n-th next format arrives (media running
  out mid-job: that format is held);
* ``clear``: forget the jobs (and pending formats, received bytes);
* ``unplug`` / ``replug``: stop / start listening on the same port; unplug drops every
  open connection, as pulling the cable and the printer rebooting would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from devices.config import DeviceConfig
from devices.context import DeviceContext
from devices.sim import Simulator

log = logging.getLogger("devices.printers.sim")

STX, ETX = b"\x02", b"\x03"
DLE_EOT = b"\x10\x04"


class _TcpPrinterSim(Simulator):
    """Shared TCP plumbing: listen, one task per connection, unplug and replug."""

    states: tuple[str, ...] = ()

    def __init__(
        self,
        config: DeviceConfig,
        context: DeviceContext | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(config, context or DeviceContext(simulate=True))
        self.host = host
        self.port = port
        self.mode = "ready"
        self.silent = True
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Listen; the first start with port 0 picks a free port, kept for replug."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every connection; safe to call twice."""
        server, self._server = self._server, None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        if server is not None:
            server.close()
            with contextlib.suppress(OSError):
                await server.wait_closed()

    @property
    def address(self) -> str:
        """``host:port`` the simulator listens on."""
        return f"{self.host}:{self.port}"

    def patched_config(self) -> DeviceConfig:
        """The device's config pointed at this simulator."""
        return self.config.model_copy(update={"host": self.host, "port": self.port, "device": None})

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        buffer = bytearray()
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                buffer += data
                reply = self.feed(buffer)
                if reply:
                    writer.write(reply)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass  # the driver went away; nothing to answer
        finally:
            self._writers.discard(writer)
            writer.close()

    def feed(self, buffer: bytearray) -> bytes:
        """Consume what can be consumed from ``buffer``; return the reply bytes.

        The TCP server calls it per connection; a test can drive it over a pty to play a
        printer on a serial port.
        """
        raise NotImplementedError

    def _set_state(self, mode: str) -> None:
        self.mode = mode

    async def control(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        """Act on the simulated printer (see the module docstring)."""
        if action == "set":
            mode = args.get("state")
            if mode not in self.states:
                raise ValueError(f"state must be one of {', '.join(self.states)}, not {mode!r}")
            silent = args.get("silent", True)
            if not isinstance(silent, bool):
                raise ValueError("silent must be true or false")
            self.silent = silent
            after = args.get("after_formats")
            if after is not None and isinstance(self, ZplSimulator):
                if not isinstance(after, int):
                    raise ValueError("after_formats must be an integer")
                self.arm(str(mode), after)
            else:
                self._set_state(str(mode))
        elif action == "clear":
            self._clear()
        elif action == "unplug":
            await self.stop()
        elif action == "replug":
            await self.start()
        else:
            raise ValueError(f"unknown action {action!r}: set, clear, unplug or replug")
        return self.state()

    def _clear(self) -> None:
        raise NotImplementedError


class ZplSimulator(_TcpPrinterSim):
    """A Zebra ZPL printer on raw TCP.

    Attributes:
        jobs: printed formats, ``^XA`` to ``^XZ`` inclusive, as received.
        pending: formats held while the printer cannot print.
    """

    states = ("ready", "paper_out", "head_open", "ribbon_out", "paused", "offline")
    _silent_states = frozenset({"paper_out", "head_open", "ribbon_out", "offline"})

    def __init__(
        self,
        config: DeviceConfig,
        context: DeviceContext | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(config, context, host=host, port=port)
        self.jobs: list[str] = []
        self.pending: list[str] = []
        self.received_bytes = 0
        self.status_requests = 0
        self._armed: tuple[str, int] | None = None

    def arm(self, mode: str, after_formats: int) -> None:
        """Switch to ``mode`` when the ``after_formats``-th next format arrives.

        The media runs out while printing that format, so it is held as pending.
        """
        if mode not in self.states or after_formats < 1:
            raise ValueError(f"cannot arm {mode!r} after {after_formats} formats")
        self._armed = (mode, after_formats)

    def host_status(self) -> bytes:
        """The three ``~HS`` strings for the current state."""
        paper_out = int(self.mode == "paper_out")
        paused = int(self.mode == "paused")
        head_up = int(self.mode == "head_open")
        ribbon_out = int(self.mode == "ribbon_out")
        formats = min(len(self.pending), 999)
        return (
            STX + f"030,{paper_out},{paused},1218,{formats:03d},0,0,0,000,0,0,0".encode()
            + ETX + b"\r\n"
            + STX + f"001,0,{head_up},{ribbon_out},0,2,6,0,{formats:08d},1,000".encode()
            + ETX + b"\r\n"
            + STX + b"1234,0" + ETX + b"\r\n"
        )  # fmt: skip

    def feed(self, buffer: bytearray) -> bytes:
        """Take whole ``^XA``…``^XZ`` formats and ``~HS`` requests; return the replies."""
        reply = b""
        while True:
            status_at = buffer.find(b"~HS")
            start = buffer.find(b"^XA")
            # Tilde commands act at once, even between the ^XA and ^XZ of a format.
            if status_at >= 0 and (start < 0 or status_at < start or b"^XZ" not in buffer):
                del buffer[status_at : status_at + 3]
                self.status_requests += 1
                silent = self.mode == "offline" or (
                    self.silent and self.mode in self._silent_states
                )
                if not silent:
                    reply += self.host_status()
                continue
            if start < 0:
                # Whitespace or stray bytes between formats; keep a possible "^X" or "~H".
                del buffer[: max(len(buffer) - 2, 0)]
                return reply
            end = buffer.find(b"^XZ", start)
            if end < 0:
                del buffer[:start]
                return reply
            end += 3
            label = bytes(buffer[start:end]).decode("utf-8", "replace")
            del buffer[:end]
            self.received_bytes += len(label.encode())
            if self._armed is not None:
                mode, left = self._armed
                self._armed = (mode, left - 1) if left > 1 else None
                if left == 1:
                    self.mode = mode
            if self.mode == "ready":
                self.jobs.append(label)
            else:
                self.pending.append(label)

    def _set_state(self, mode: str) -> None:
        self.mode = mode
        if mode == "ready" and self.pending:
            self.jobs.extend(self.pending)
            self.pending.clear()

    def _clear(self) -> None:
        self.jobs.clear()
        self.pending.clear()
        self.received_bytes = 0

    def state(self) -> dict[str, Any]:
        """``{"state", "jobs": [ZPL text, ...], "pending", "received_bytes", "listening"}``."""
        return {
            "state": self.mode,
            "jobs": list(self.jobs),
            "pending": len(self.pending),
            "received_bytes": self.received_bytes,
            "listening": self._server is not None,
        }


class EscposSimulator(_TcpPrinterSim):
    """An ESC/POS receipt printer on raw TCP.

    Attributes:
        received: every byte received except status requests, in order (held bytes are
            added when the state returns to ready).
    """

    states = ("ready", "paper_near_end", "paper_out", "head_open", "paused", "offline")
    _printing_states = frozenset({"ready", "paper_near_end"})

    def __init__(
        self,
        config: DeviceConfig,
        context: DeviceContext | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(config, context, host=host, port=port)
        self.received = bytearray()
        self.held = bytearray()
        self.status_requests = 0

    def status_byte(self, n: int) -> int:
        """The reply to ``DLE EOT n`` in the current state."""
        if n == 1:
            return 0x12 if self.mode in self._printing_states else 0x1A
        if n == 2:  # offline cause: bit 2 cover open, bit 5 stopped by paper end
            return (
                0x12
                | (0x04 if self.mode == "head_open" else 0)
                | (0x20 if self.mode == "paper_out" else 0)
            )
        if n == 4:
            return {"paper_out": 0x72, "paper_near_end": 0x1E}.get(self.mode, 0x12)
        return 0x12

    def feed(self, buffer: bytearray) -> bytes:
        """Answer ``DLE EOT n`` requests and keep every other byte; return the replies."""
        reply = bytearray()
        while True:
            at = buffer.find(DLE_EOT)
            if at < 0:
                # Keep a trailing DLE: it may start a status request cut in two.
                keep = 1 if buffer.endswith(b"\x10") else 0
                self._take(buffer[: len(buffer) - keep])
                del buffer[: len(buffer) - keep]
                return bytes(reply)
            if at + 2 >= len(buffer):
                self._take(buffer[:at])
                del buffer[:at]
                return bytes(reply)
            self._take(buffer[:at])
            n = buffer[at + 2]
            del buffer[: at + 3]
            self.status_requests += 1
            reply.append(self.status_byte(n))

    def _take(self, data: bytes | bytearray) -> None:
        if not data:
            return
        if self.mode in self._printing_states:
            self.received += data
        else:
            self.held += data

    def _set_state(self, mode: str) -> None:
        self.mode = mode
        if mode in self._printing_states and self.held:
            self.received += self.held
            self.held.clear()

    def _clear(self) -> None:
        self.received.clear()
        self.held.clear()

    def state(self) -> dict[str, Any]:
        """``{"state", "received_bytes", "pending" (held bytes), "listening"}``."""
        return {
            "state": self.mode,
            "received_bytes": len(self.received),
            "pending": len(self.held),
            "listening": self._server is not None,
        }
