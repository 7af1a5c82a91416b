"""A simulated ATOP AblePick controller: a TCP server with N tags, speaking the CCBs.

Written from the manual's tables (hardware-next.md §1.2-1.4), not from the driver: it
parses the host's CCBs with its own code and builds its replies byte by byte, so the
driver's codec is checked against a second reading of the manual, not against itself.

``ControllerSim`` is the controller: tags 1..N with a six-digit display, dots, LED and
colour, flashing, buzzer, confirm and shortage keys and up/down-adjusted quantities, the
status bitmap (09h), the 08h polling range, resets (FCh), address setup (FBh) and the
faults the tests and the demo need: a tag pulled or power-cycled, the controller killed
and restarted, slow answers, garbage on the line, a tag that drops a message (64h/01h) or
had a key held down (0Dh), a malfunction (0Bh). ``AtopSimulator`` wraps one for
``--simulate`` and the node's control API (``devices.sim.Simulator``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from devices.context import DeviceContext
from devices.lights.atop.config import AtopConfig
from devices.sim import Simulator

log = logging.getLogger("devices.sim")

COLOUR_NAMES = {0: "red", 1: "green", 2: "orange", 3: "blue", 4: "pink", 5: "cyan"}
BROADCAST = 0xFC


def ccb(sub: int, node: int, data: bytes = b"") -> bytes:
    """A controller -> host CCB: LEN(L) LEN(H) 60h 00h 00h 00h SUB NODE DATA."""
    length = 8 + len(data)
    return bytes([length & 0xFF, length >> 8, 0x60, 0, 0, 0, sub, node]) + data


@dataclass
class Tag:
    """One simulated tag: what it shows and what its keys may do."""

    address: int
    present: bool = True
    chars: bytes = bytes(6)
    dots: int = 0
    flash_display: bool = False
    led: str = "off"  # off | on | flash
    colour: int = 0  # red after power-on
    interval: int = 0
    buzzer: bool = False
    confirm_key: bool = True  # the manual's default: keys on after power-on
    shortage_key: bool = True
    adjustable: int = 6
    stock_mode: bool = False
    shows_address: bool = False
    busy: int = 0  # the next N messages are dropped with 64h/01h
    locked: int = 0  # the next N messages are refused with 0Dh
    messages: int = 0

    def power_on(self) -> None:
        """Back to the state after power-on: dark, pick mode, keys on, red."""
        self.chars, self.dots, self.flash_display = bytes(6), 0, False
        self.led, self.colour, self.interval, self.buzzer = "off", 0, 0, False
        self.confirm_key = self.shortage_key = True
        self.stock_mode = self.shows_address = False

    def display_text(self) -> str:
        """The characters as shown, blanks as spaces, dots put back in."""
        out = []
        for index, byte in enumerate(self.chars):
            out.append(" " if byte in (0, 0x20) else chr(byte))
            if self.dots >> (5 - index) & 1:
                out.append(".")
        return "".join(out)

    def qty(self) -> int | None:
        """The number shown, if the display shows one."""
        digits = self.display_text().replace(".", "").strip()
        return int(digits) if digits.isdigit() else None

    def state(self) -> dict[str, Any]:
        """What a person sees on the tag."""
        lit = self.led != "off"
        shown = self.display_text()
        return {
            "present": self.present,
            "display": shown if shown.strip() else None,
            "qty": self.qty(),
            "on": lit,
            "colour": COLOUR_NAMES.get(self.colour, f"{self.colour:02X}h") if lit else None,
            "flashing": self.led == "flash" or self.flash_display,
            "interval": self.interval,
            "buzzer": self.buzzer,
            "confirm_key": self.confirm_key,
            "shortage_key": self.shortage_key,
        }


@dataclass
class Received:
    """Counts of what the simulated controller got."""

    frames: int = 0
    by_sub: dict[int, int] = field(default_factory=dict)
    bad: int = 0


class ControllerSim:
    """One simulated AT500 on 127.0.0.1: a TCP server and ``tags`` tags.

    Args:
        tags: how many tags answer (addresses 1..tags).
        port: the port to listen on (0: a free one, kept across ``restart``).
        host: where to listen (loopback unless asked).
    """

    def __init__(self, tags: int, port: int = 0, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.tags = {n: Tag(n) for n in range(1, tags + 1)}
        self.spare: Tag | None = None  # a new tag fitted in place of one, not yet addressed
        self.offer: int | None = None  # the address an FBh setup offers
        self.polling = 200
        self.delay_s = 0.0  # "answer slowly": every reply waits this long
        self.received = Received()
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._out: asyncio.Queue[bytes] | None = None
        self._sender: asyncio.Task[None] | None = None
        self.connections = 0

    # -- the TCP side -------------------------------------------------------------------

    async def start(self) -> None:
        """Listen (again, on the same port after a ``kill``)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def running(self) -> bool:
        """Whether the controller is up."""
        return self._server is not None

    async def kill(self) -> None:
        """The controller dies: the connection drops and the port refuses."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self._hang_up()
        if server is not None:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    async def restart(self) -> None:
        """Power the controller back on: every tag reset (dark, pick mode), then listen."""
        await self.kill()
        for tag in self.tags.values():
            tag.power_on()
        await self.start()

    async def stop(self) -> None:
        """Stop for good."""
        await self.kill()

    async def _hang_up(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._hang_up()  # the controller talks to one host: the newest
        self.connections += 1
        self._writer = writer
        self._out = asyncio.Queue()
        self._sender = asyncio.create_task(self._send_loop(writer, self._out))
        buf = bytearray()
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                buf += data
                while len(buf) >= 2:
                    length = buf[0] | buf[1] << 8
                    if length < 7 or length > 64:
                        self.received.bad += 1
                        del buf[0]
                        continue
                    if len(buf) < length:
                        break
                    self._command(bytes(buf[:length]))
                    del buf[:length]
        except (ConnectionError, OSError):
            pass
        finally:
            if self._writer is writer:
                await self._hang_up()

    async def _send_loop(self, writer: asyncio.StreamWriter, out: asyncio.Queue[bytes]) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                data = await out.get()
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                while not out.empty():
                    data += out.get_nowait()
                writer.write(data)
                await writer.drain()

    def send(self, data: bytes) -> None:
        """Queue bytes to the host (nothing when no host is connected)."""
        if self._out is not None and self._writer is not None:
            self._out.put_nowait(data)

    # -- the host's commands ------------------------------------------------------------

    def _command(self, raw: bytes) -> None:
        self.received.frames += 1
        if raw[2] not in (0x60, 0x61) or len(raw) < 7:
            self.received.bad += 1
            return
        sub = raw[6]
        self.received.by_sub[sub] = self.received.by_sub.get(sub, 0) + 1
        if sub == 0x09:  # read status: no SUB-NODE; 200 bits, 1 = not connected
            bitmap = bytearray(32)
            for n in range(1, 201):
                tag = self.tags.get(n)
                if n > self.polling or tag is None or not tag.present:
                    bitmap[(n - 1) // 8] |= 1 << ((n - 1) % 8)
            self.send(ccb(0x09, 0x00, bytes(3) + bytes(bitmap)))
            return
        if len(raw) < 8:
            self.received.bad += 1
            return
        node, data = raw[7], raw[8:]
        if sub == 0x08:  # polling range: SUB-NODE is the highest address
            self.polling = node
            return
        if sub == 0xFB:  # address setup
            if len(data) >= 3 and data[1] == 0x55 and data[2] == 0xAA:
                self.offer = data[0]
            return
        known = {
            0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15,
            0x16, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1E, 0x1F, 0x3A, 0xFA, 0xFC,
        }  # fmt: skip
        if sub not in known:
            self.send(ccb(0x0C, node))  # illegal sub-command
            return
        targets = (
            [t for t in self.tags.values() if t.present]
            if node == BROADCAST
            else [self.tags[node]]
            if node in self.tags
            else []
        )
        if node != BROADCAST and (node not in self.tags or not self.tags[node].present):
            self.send(ccb(0x0A, node))  # no acknowledge from the tag
            return
        for tag in targets:
            if node != BROADCAST:
                tag.messages += 1
                if tag.locked:
                    tag.locked -= 1
                    self.send(ccb(0x0D, tag.address))
                    continue
                if tag.busy:
                    tag.busy -= 1
                    self.send(ccb(0x64, tag.address, bytes([0x01, 0x00])))
                    continue
            self._apply(tag, sub, data)

    def _apply(self, tag: Tag, sub: int, data: bytes) -> None:
        if sub in (0x00, 0x10):
            if len(data) >= 7:
                tag.chars, tag.dots = bytes(data[:6]), data[6] & 0x3F
                tag.flash_display = sub == 0x10
                tag.shows_address = False
        elif sub == 0x01:
            tag.chars, tag.dots, tag.flash_display = bytes(6), 0, False
            tag.shows_address = False
        elif sub == 0x02:
            tag.led = "on"
        elif sub == 0x03:
            tag.led = "off"
        elif sub == 0x04:
            tag.buzzer = True
        elif sub == 0x05:
            tag.buzzer = False
        elif sub == 0x11:
            tag.led = "flash"
        elif sub == 0x12 and len(data) >= 2:
            tag.interval = data[1]
        elif sub == 0x13:
            text = str(tag.address).rjust(6).encode()
            tag.chars, tag.dots, tag.shows_address = text.replace(b" ", b"\x00"), 0, True
        elif sub == 0x14:
            tag.power_on()
            self.send(self._detail(tag))
        elif sub == 0x15:
            tag.shortage_key = False
        elif sub == 0x16:
            tag.shortage_key = True
        elif sub == 0x17:
            self.send(ccb(0x06, tag.address, tag.chars + bytes([tag.dots])))
        elif sub == 0x18:
            self.send(ccb(0x07, tag.address, tag.chars + bytes([tag.dots])))
        elif sub == 0x19:
            tag.stock_mode = True
        elif sub == 0x1A:
            tag.stock_mode = False
        elif sub == 0x1B:
            tag.confirm_key = False
        elif sub == 0x1C:
            tag.confirm_key = True
        elif sub == 0x1E and data:
            tag.adjustable = data[0]
        elif sub == 0x1F and len(data) >= 2 and data[0] == 0x00:
            tag.colour = data[1]
        elif sub == 0xFA:
            self.send(ccb(0xFA, tag.address, b"AT705\x00\x00\x00"))
        elif sub == 0xFC:
            self.send(self._detail(tag))

    @staticmethod
    def _detail(tag: Tag) -> bytes:
        # AT7xx detail: product id, firmware, tag mode 73h, special config, delay, colour, 02h.
        return ccb(0xFC, tag.address, bytes([0x05, 0x12, 0x73, 0x00, 0x00, tag.colour, 0x02]))

    # -- what people and faults do ------------------------------------------------------

    def _tag(self, address: int) -> Tag:
        tag = self.tags.get(address)
        if tag is None:
            raise ValueError(f"no tag {address} (tags 1..{len(self.tags)})")
        return tag

    def press_confirm(self, address: int) -> bool:
        """The confirm key: 06h with what the tag shows (nothing if the key is off)."""
        tag = self._tag(address)
        if self.offer is not None:
            return self._adopt(tag)
        if not tag.present or not tag.confirm_key or self._writer is None:
            return False
        sub = 0x0F if tag.stock_mode else 0x06
        self.send(ccb(sub, tag.address, tag.chars + bytes([tag.dots])))
        return True

    def press_shortage(self, address: int, qty: int) -> bool:
        """Up/down to ``qty``, then the shortage key: 07h with the adjusted quantity."""
        tag = self._tag(address)
        if not tag.present or not tag.shortage_key or self._writer is None:
            return False
        limit = 10**tag.adjustable - 1
        if not 0 <= qty <= limit:
            raise ValueError(f"qty must be 0..{limit} on {tag.adjustable} adjustable digits")
        tag.chars = str(qty).rjust(6).encode().replace(b" ", b"\x00")
        tag.dots = 0
        self.send(ccb(0x07, tag.address, tag.chars + bytes([0])))
        return True

    def pull(self, address: int) -> None:
        """Unplug a tag: it leaves the bitmap and messages to it time out (0Ah)."""
        self._tag(address).present = False

    def plug(self, address: int) -> None:
        """Plug a tag back: it powers on dark and says so (FCh)."""
        tag = self._tag(address)
        tag.present = True
        tag.power_on()
        self.send(self._detail(tag))

    def power_cycle(self, address: int) -> None:
        """A tag loses power for a moment: display gone, pick mode, FCh."""
        self.plug(address)

    def replace(self, address: int) -> None:
        """Swap a tag for a new one that has no address yet (for address setup)."""
        self._tag(address).present = False
        self.spare = Tag(0)

    def _adopt(self, tag: Tag) -> bool:
        """During FBh setup, the pressed tag takes the offered address (64h 00h 16h)."""
        offer, self.offer = self.offer, None
        assert offer is not None
        if not tag.present:
            return False
        del self.tags[tag.address]
        tag.address = offer
        tag.power_on()
        self.tags[offer] = tag
        self.send(ccb(0x64, offer, bytes([0x00, 0x16])))
        return True

    def press_spare(self) -> bool:
        """Press the key of the new, unaddressed tag (during address setup)."""
        if self.spare is None or self.offer is None:
            return False
        offer, self.offer = self.offer, None
        spare, self.spare = self.spare, None
        spare.address = offer
        spare.present = True
        self.tags[offer] = spare
        self.send(ccb(0x64, offer, bytes([0x00, 0x16])))
        return True

    def garbage(self, kind: str, address: int = 199) -> bytes:
        """Send bad bytes of ``kind``: random, bad_length, unknown_sub, truncated, orphan."""
        if kind == "random":
            data = b"\xff\xfe" + os.urandom(13).replace(b"\x60", b"\x61") + b"\x00\xff"
        elif kind == "bad_length":
            data = ccb(0x06, 1, bytes(4))  # a confirm of 12 bytes
        elif kind == "unknown_sub":
            data = ccb(0x77, 1)
        elif kind == "truncated":
            data = ccb(0x06, 1, b"\x00\x00\x00\x00\x31\x32\x00")[:9]
        elif kind == "orphan":
            data = ccb(0x06, address, b"\x00\x00\x00\x00\x00\x31\x00")
        else:
            raise ValueError(
                f"unknown garbage {kind!r} (random, bad_length, unknown_sub, truncated, orphan)"
            )
        self.send(data)
        return data

    def state(self) -> dict[str, Any]:
        """Every tag's state, the connection and counters."""
        return {
            "running": self.running,
            "connected": self._writer is not None,
            "connections": self.connections,
            "frames": self.received.frames,
            "polling": self.polling,
            "tags": {n: tag.state() for n, tag in self.tags.items()},
        }


class AtopSimulator(Simulator):
    """Plays an ATOP controller and its tags for ``--simulate``, the tests and the demo.

    Its tags are the node file's (addresses 1..highest configured). Control actions
    (``args`` name a tag by ``slot`` or by ``tag`` address):

    * ``press`` ``{"slot", "button": "confirm" | "short", "qty"}``: the confirm key, or
      up/down to ``qty`` then the shortage key. Returns ``{"slot", "tag", "sent"}``
      (``sent`` is false when the tag's key is disabled).
    * ``pull`` / ``plug`` / ``power_cycle`` / ``replace`` ``{"slot"}``: a tag unplugged,
      plugged back (FCh), losing power for a moment, swapped for an unaddressed one.
    * ``press_spare``: the new tag's key during address setup.
    * ``kill`` / ``restart``: the controller dies (port refuses) / powers back on.
    * ``slow`` ``{"delay_s"}``: every reply waits this long (0: normal).
    * ``busy`` / ``lock`` ``{"slot", "count"}``: the tag drops the next messages with
      64h/01h, or answers 0Dh (a key held down).
    * ``malfunction`` ``{"slot"}``: the controller reports 0Bh for the tag.
    * ``garbage`` ``{"kind", "tag"}``: bad bytes (random, bad_length, unknown_sub,
      truncated, orphan); returns their hex.
    """

    config: AtopConfig

    def __init__(self, config: AtopConfig, context: DeviceContext) -> None:
        super().__init__(config, context)
        self._tags = config.tag_map()
        self._slots = {tag: slot for slot, tag in self._tags.items()}
        self.controller = ControllerSim(max(self._tags.values()))

    async def start(self) -> None:
        """Listen on a free loopback port."""
        await self.controller.start()

    async def stop(self) -> None:
        """Stop the controller."""
        await self.controller.stop()

    def patched_config(self) -> AtopConfig:
        """The config pointing at this simulator."""
        return self.config.model_copy(update={"host": "127.0.0.1", "port": self.controller.port})

    def _address(self, args: dict[str, Any]) -> int:
        if "slot" in args:
            slot = str(args["slot"])
            if slot not in self._tags:
                raise ValueError(f"unknown slot {slot!r} on {self.config.name}")
            return self._tags[slot]
        if "tag" in args:
            return int(args["tag"])
        raise ValueError("name the tag by slot or by tag address")

    async def control(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run a control action (see the class docstring)."""
        c = self.controller
        if action in ("kill", "restart"):
            await (c.kill() if action == "kill" else c.restart())
            return {"running": c.running}
        if action == "slow":
            c.delay_s = float(args.get("delay_s", 0.0))
            return {"delay_s": c.delay_s}
        if action == "press_spare":
            return {"sent": c.press_spare()}
        if action == "garbage":
            data = c.garbage(str(args.get("kind", "random")), int(args.get("tag", 199)))
            return {"hex": data.hex(" ").upper()}
        address = self._address(args)
        slot = self._slots.get(address)
        out: dict[str, Any] = {"slot": slot, "tag": address}
        if action == "press":
            button = str(args.get("button", "confirm"))
            if button == "confirm":
                out["sent"] = c.press_confirm(address)
            elif button in ("short", "shortage"):
                if "qty" not in args:
                    raise ValueError("a shortage press needs the qty the picker set")
                out["sent"] = c.press_shortage(address, int(args["qty"]))
            else:
                raise ValueError(f"button must be confirm or short, not {button!r}")
        elif action in ("pull", "plug", "power_cycle", "replace"):
            getattr(c, action)(address)
        elif action in ("busy", "lock"):
            tag = c.tags[address]
            setattr(tag, "busy" if action == "busy" else "locked", int(args.get("count", 1)))
        elif action == "malfunction":
            c.send(ccb(0x0B, address))
        else:
            raise ValueError(
                f"unknown action {action!r} (press, pull, plug, power_cycle, replace, "
                "press_spare, kill, restart, slow, busy, lock, malfunction, garbage)"
            )
        return out

    def state(self) -> dict[str, Any]:
        """``{"slots": {id: {on, colour, pattern, qty, display, ...}}, "controller": ...}``.

        ``colour`` is the tag's own colour name (red, green, orange, blue, pink, cyan);
        ``pattern`` is ``steady`` or ``flashing`` with the 12h interval code.
        """
        raw = self.controller.state()
        slots: dict[str, Any] = {}
        for tag, slot in self._slots.items():
            entry = dict(raw["tags"][tag])
            entry["pattern"] = (
                None if not entry["on"] else "flashing" if entry["flashing"] else "steady"
            )
            entry["tag"] = tag
            slots[slot] = entry
        controller = {k: v for k, v in raw.items() if k != "tags"}
        return {"slots": slots, "zone_lamp": None, "controller": controller}
