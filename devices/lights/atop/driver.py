"""The ATOP AblePick controller driver (kind ``atop``): one TCP connection, up to 200 tags.

The Pi is the TCP client of the controller (AT500, AT400). A background task keeps the
connection: it connects (doubling the wait between attempts up to ``reconnect_max_s``),
clears every tag with broadcasts, shows again everything that should be lit, then reads
the controller's messages and polls the tag status bitmap (09h) every ``poll_s``. Lights
are kept as wanted state, so a show while the controller is away is not lost: it goes out
when the connection is back, and a tag that comes back after a power loss (FCh, or back
in the bitmap) is shown again.

Health: the device is ``ok`` while connected (its detail counts the tags that are down),
``unavailable`` while not (refused, unreachable, or silent: no status reply for
``silent_after_s``). Each tag that is down (missing from the bitmap, or a 0Ah time-out) or
broken (0Bh malfunction) is listed by its slot id in ``parts()``. Buttons locked (0Dh)
and tag busy (64h/01h: the tag dropped a message) make the tag's state go out again; a
tag that refuses ``refused_warn`` messages in a row is listed as a fault until it has
refused none for two polls. A 0Ch (illegal sub-command) shows in the controller's health
detail until the next connection. Every event and every bad frame is counted in
``counts`` (the node's /metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from devices.base import CONTROLLER_ALARM, HealthStatus
from devices.context import DeviceContext
from devices.errors import DeviceUnavailable
from devices.events import Button
from devices.lights.atop import codec
from devices.lights.atop.codec import BROADCAST, Digits, Event, Message, Rejected, Special, Sub
from devices.lights.atop.config import AtopConfig
from devices.lights.atop.sim import AtopSimulator
from devices.lights.base import LightBar
from devices.lights.palette import Indication, Pattern

log = logging.getLogger("devices")

TagCache = dict[str, int | bool | None]


@dataclass(frozen=True, slots=True)
class PartHealth:
    """One tag's health when it is not ok: ``unavailable`` (gone) or ``fault`` (broken)."""

    status: HealthStatus
    detail: str


class ControllerSilent(Exception):
    """No status reply within ``silent_after_s``: the connection is made again."""


class AtopController(LightBar):
    """Pick-to-light tags behind one ATOP AblePick controller, over TCP.

    Wiring: the controller's Ethernet port to the zone's switch (or straight to the Pi's
    port), a fixed address on the controller (its default is 10.0.50.100 per the C#
    client; set yours with ATOP's tool), the tags on the controller's bus with addresses
    1..200 (``zone-agent light address`` gives a replaced tag its address). See
    docs/wiring.md.

    Node file example (a controller with 120 tags as slots A-001..A-120)::

        [[devices]]
        name = "atop-1"
        kind = "atop"
        host = "10.0.50.101"
        [[devices.slots]]
        tags = "1-120"
        first_id = "A-001"

    Args:
        config: the validated config.
        clock: monotonic time source of the double-press guard.
    """

    def __init__(self, config: AtopConfig, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(config.name, config.locations(), config, None, clock)
        self.config = config
        self._tags = config.tag_map()
        self._slot_of = {tag: slot for slot, tag in self._tags.items()}
        self._max_tag = max(self._tags.values())
        self._writer: asyncio.StreamWriter | None = None
        self._runner: asyncio.Task[None] | None = None
        self._resender: asyncio.Task[None] | None = None
        self._buzzers: dict[int, asyncio.TimerHandle] = {}
        self._resend: set[int] = set()
        self._cache: dict[int, TagCache] = {}
        self._down: dict[int, PartHealth] = {}
        self._seen_status = 0.0
        self._refusals: dict[int, tuple[int, float]] = {}  # tag -> (in a row, last seen)
        self._refusing: set[int] = set()  # tags listed as a fault for refusing messages
        self._illegal = False
        self._texts: dict[int, str] = {}  # tag -> what its display was last told to show
        self._before: dict[int, str] = {}  # tag -> what it was told before that
        self._logged: Counter[str] = Counter()
        self.connected = asyncio.Event()
        self.counts: Counter[str] = Counter()
        """Frames out and in, events by kind, bad input by kind (``bad_*``)."""
        self.models: dict[int, str] = {}
        """Firmware model strings tags answered (FAh), by tag."""
        self.seen: frozenset[int] | None = None
        """Tags the latest status bitmap showed connected (``None``: none read yet)."""
        self.status_read = asyncio.Event()
        """Set once a status bitmap has been read."""
        self.adopted: asyncio.Queue[int] = asyncio.Queue()
        """Addresses tags took in address setup (64h 00h 16h after FBh)."""
        self.confirmed: asyncio.Queue[int] = asyncio.Queue()
        """Tags whose confirm key was pressed, also where no slot is lit (commissioning)."""

    @classmethod
    def from_config(cls, config: AtopConfig, context: DeviceContext) -> AtopController:
        """Build the driver (a simulated node's config already points at the simulator)."""
        return cls(config)

    def describe(self) -> str:
        """One line naming the controller and its tags."""
        c = self.config
        return (
            f"AtopController {self.name}: {len(self._tags)} {c.model} tags on tcp {c.host}:{c.port}"
        )

    def tag_of(self, slot: str) -> int:
        """The tag address of ``slot``."""
        return self._tags[slot]

    def parts(self) -> dict[str, PartHealth]:
        """Tags that are down or broken, by slot id (the others are ok)."""
        return {self._slot_of[tag]: part for tag, part in sorted(self._down.items())}

    # -- lifecycle --------------------------------------------------------------------------

    async def _open(self) -> None:
        self._events.bind(asyncio.get_running_loop())
        self._lit.clear()
        self._down.clear()
        self._set_health(HealthStatus.STARTING, f"connecting to {self._where}")
        self._runner = asyncio.create_task(self._run(), name=f"atop {self.name}")
        self._resender = asyncio.create_task(self._resend_loop(), name=f"atop {self.name} resend")
        # Wait briefly, so a node that starts with its controllers up is lit at once; a
        # controller that is not there yet is retried in the background.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.connect_timeout_s):
                await self.connected.wait()

    async def _close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(OSError, DeviceUnavailable):
                await self._send(
                    [codec.clear(), *self._keys_off(BROADCAST), self._led_off(BROADCAST)]
                )
        for task in (self._runner, self._resender):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._runner = self._resender = None
        for handle in self._buzzers.values():
            handle.cancel()
        self._buzzers.clear()
        await self._drop_connection()
        self._lit.clear()

    @property
    def _where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def _check_open(self) -> None:
        # Wanted state is kept while the controller is away: it is shown on reconnect.
        if self._closed:
            raise DeviceUnavailable(f"device {self.name}: not open")

    async def clear(self) -> None:
        """Turn every tag off with broadcasts (one CCB each, not one per tag)."""
        self._check_open()
        self._lit.clear()
        for tag in list(self._buzzers):
            self._buzzers.pop(tag).cancel()
        self._cache.clear()
        if self._writer is not None:
            await self._send(self._all_off_frames())
            self._all_dark()

    def _all_dark(self) -> None:
        """Every tag is dark with its keys off (after the broadcasts of ``_all_off_frames``)."""
        self._cache = {tag: {"keys": False, "dark": True} for tag in self._slot_of}

    def _all_off_frames(self) -> list[bytes]:
        return [
            codec.clear(),
            self._led_off(BROADCAST),
            codec.simple(Sub.BUZZER_OFF, BROADCAST),
            *self._keys_off(BROADCAST),
        ]

    # -- rendering --------------------------------------------------------------------------

    async def _render(self, slot: str, indication: Indication | None) -> None:
        await self._render_many([(slot, indication)])

    async def _render_many(self, changes: Sequence[tuple[str, Indication | None]]) -> None:
        if self._writer is None:
            return  # shown from the wanted state once connected
        frames: list[bytes] = []
        for slot, indication in changes:
            frames += self._frames(self._tags[slot], indication)
        await self._send(frames)

    def _led_off(self, node: int) -> bytes:
        return codec.simple(Sub.LED_OFF, node)

    def _keys_off(self, node: int) -> list[bytes]:
        return [codec.simple(Sub.CONFIRM_KEY_OFF, node), codec.simple(Sub.SHORTAGE_KEY_OFF, node)]

    def _frames(self, tag: int, indication: Indication | None) -> list[bytes]:
        """The CCBs that make ``tag`` show ``indication``, skipping settings it has."""
        cache = self._cache.setdefault(tag, {})
        buzzer = self._buzzers.pop(tag, None)
        if buzzer is not None:
            buzzer.cancel()
        if indication is None:
            if cache.get("dark") and buzzer is None:
                return []  # dark since the broadcast clear: a node start turns every slot off
            frames = [codec.clear(tag), self._led_off(tag)]
            if cache.get("keys") is not False:
                frames += self._keys_off(tag)
            if buzzer is not None:
                frames.append(codec.simple(Sub.BUZZER_OFF, tag))
            self._cache[tag] = {"keys": False, "dark": True}
            self._showing(tag, "")
            return frames
        c = self.config
        frames = []
        cache.pop("dark", None)
        colour = int(c.tag_colour(indication.colour))
        if cache.get("colour") != colour:
            frames.append(codec.colour(tag, colour))
            cache["colour"] = colour
        blinking = indication.pattern is not Pattern.STEADY
        if blinking:
            code = c.fast_interval if indication.pattern is Pattern.FAST_BLINK else c.slow_interval
            if cache.get("interval") != code:
                frames.append(codec.flash_interval(tag, code))
                cache["interval"] = code
        text = self._text(indication)
        self._showing(tag, text)
        if text:
            frames.append(codec.display(tag, Digits.of(text, c.blank), flash=blinking))
        else:
            frames.append(codec.clear(tag))
        frames.append(codec.simple(Sub.LED_FLASH if blinking else Sub.LED_ON, tag))
        keys = indication.qty is not None  # a task is shown: its keys answer
        if cache.get("keys") != keys:
            if keys:
                frames.append(codec.simple(Sub.CONFIRM_KEY_ON, tag))
                if c.shortage_key:
                    frames.append(codec.simple(Sub.SHORTAGE_KEY_ON, tag))
            else:
                frames += self._keys_off(tag)
            cache["keys"] = keys
        if indication.pattern in c.buzz and c.buzz_s > 0:
            frames.append(codec.simple(Sub.BUZZER_ON, tag))
            loop = asyncio.get_running_loop()
            self._buzzers[tag] = loop.call_later(c.buzz_s, self._buzz_off, tag)
        elif buzzer is not None:
            frames.append(codec.simple(Sub.BUZZER_OFF, tag))
        return frames

    def _showing(self, tag: int, text: str) -> None:
        """Remember what ``tag`` shows now and what it showed before (for stale presses)."""
        now = self._texts.get(tag)
        if now != text:
            if now is not None:
                self._before[tag] = now
            self._texts[tag] = text

    def _buzz_off(self, tag: int) -> None:
        self._buzzers.pop(tag, None)
        if self._writer is not None:
            asyncio.get_running_loop().create_task(
                self._send_quietly([codec.simple(Sub.BUZZER_OFF, tag)])
            )

    @staticmethod
    def _text(indication: Indication) -> str:
        """What the six digits show: the text (dots kept) or the quantity, right-aligned."""
        if indication.text is not None:
            return indication.text.strip()
        if indication.qty is not None:
            return str(indication.qty)
        return ""

    async def _send(self, frames: list[bytes]) -> None:
        writer = self._writer
        if writer is None or not frames:
            return
        self.counts["frames_out"] += len(frames)
        try:
            writer.write(b"".join(frames))
            await writer.drain()
        except (OSError, RuntimeError) as exc:
            # The reader sees the closed socket and reconnects; the wanted state stays.
            log.debug("device %s: write failed: %s", self.name, exc)

    async def _send_quietly(self, frames: list[bytes]) -> None:
        with contextlib.suppress(Exception):
            await self._send(frames)

    # -- the connection ---------------------------------------------------------------------

    async def _run(self) -> None:
        wait = 0.2
        c = self.config
        while True:
            try:
                async with asyncio.timeout(c.connect_timeout_s):
                    reader, writer = await asyncio.open_connection(c.host, c.port)
            except (OSError, TimeoutError) as exc:
                reason = (
                    "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
                )
                self._set_health(HealthStatus.UNAVAILABLE, f"{self._where}: {reason}")
                await asyncio.sleep(wait)
                wait = min(wait * 2, c.reconnect_max_s)
                continue
            wait = 0.2
            why = "connection closed by the controller"
            try:
                await self._session(reader, writer)
            except ControllerSilent:
                why = f"controller silent: no status reply for {c.silent_after_s:g} s"
            except (OSError, ConnectionError) as exc:
                why = (
                    f"connection lost: {exc.strerror or exc}"
                    if isinstance(exc, OSError)
                    else str(exc)
                )
            finally:
                await self._drop_connection(writer)
            self.counts["disconnects"] += 1
            self._set_health(HealthStatus.UNAVAILABLE, f"{self._where}: {why}")
            await asyncio.sleep(wait)

    async def _drop_connection(self, writer: asyncio.StreamWriter | None = None) -> None:
        writer = writer or self._writer
        self._writer = None
        self.connected.clear()
        self._cache.clear()
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        c = self.config
        self._writer = writer
        self._logged.clear()
        self._cache.clear()
        self._illegal = False
        self._refusals.clear()
        for tag in self._refusing:
            self._down.pop(tag, None)
        self._refusing.clear()
        decoder = codec.StreamDecoder()
        loop = asyncio.get_running_loop()
        # Every tag dark and deaf, then what should be lit shown again (tags fall back to
        # pick mode and lose their display on power loss; a reconnect may follow one).
        start = self._all_off_frames()
        if c.polling_range:
            start.append(codec.polling_range(self._max_tag, with_data=c.polling_range_data))
        start.append(codec.adjustable_digits(BROADCAST, c.adjustable_digits))
        start.append(codec.read_status())
        self._all_dark()
        lit = list(self._lit.items())
        for slot, indication in lit:
            start += self._frames(self._tags[slot], indication)
        await self._send(start)
        if lit:
            self.counts["restored"] += len(lit)
        self._seen_status = loop.time()
        self.connected.set()
        self._set_health(HealthStatus.OK, self._summary())
        poller = asyncio.create_task(self._poll(writer), name=f"atop {self.name} poll")
        try:
            while True:
                try:
                    async with asyncio.timeout(c.frame_gap_s if decoder.pending else None):
                        data = await reader.read(4096)
                except TimeoutError:
                    cut = decoder.expire()
                    if cut is not None:
                        self._reject(cut)
                    continue
                if not data:
                    if poller.done() and poller.exception() is not None:
                        raise poller.exception()  # type: ignore[misc]
                    return
                for item in decoder.feed(data):
                    if isinstance(item, Rejected):
                        self._reject(item)
                    else:
                        self.counts["frames_in"] += 1
                        self._handle(item)
        finally:
            poller.cancel()
            result = await asyncio.gather(poller, return_exceptions=True)
            if isinstance(result[0], ControllerSilent):
                raise result[0]

    async def _poll(self, writer: asyncio.StreamWriter) -> None:
        c = self.config
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(c.poll_s)
            if loop.time() - self._seen_status > c.silent_after_s:
                writer.transport.abort()  # the reader ends; _session raises this
                raise ControllerSilent()
            await self._send([codec.read_status()])

    # -- what the controller says -----------------------------------------------------------

    def _reject(self, item: Rejected, reason: str | None = None) -> None:
        kind = f"bad_{item.kind}"
        self.counts[kind] += 1
        self._logged[kind] += 1
        n = self._logged[kind]
        limit = self.config.log_limit
        if n <= limit:
            log.warning(
                "device %s: ignored %s from the controller (%s): %s",
                self.name,
                item.kind.replace("_", " "),
                reason or item.reason,
                codec.hexdump(item.raw),
            )
            if n == limit:
                log.warning(
                    "device %s: further %s are counted, not logged, until the next connection",
                    self.name,
                    item.kind.replace("_", " "),
                )

    def _orphan(self, message: Message) -> None:
        self._reject(
            Rejected("unknown_tag", message.raw, ""),
            f"{message.event.name.lower()} from tag {message.node}, which no slot owns",
        )

    def _handle(self, message: Message) -> None:
        event = message.event
        self.counts[f"event_{event.name.lower()}"] += 1
        if event is Event.STATUS:
            self._status(message.missing)
            return
        if event is Event.ILLEGAL:
            log.warning("device %s: the controller refused a message as illegal (0Ch)", self.name)
            if not self._illegal:
                self._illegal = True  # in the controller's health until the next connection
                self._parts_changed()
            return
        if event is Event.ALARM:
            self._alarm(message.info)
            return
        tag = message.node
        slot = self._slot_of.get(tag)
        if slot is None:
            if event is Event.SPECIAL and message.special is Special.KEY_CODE:
                self.adopted.put_nowait(tag)  # a tag that took an address not in the file
                return
            self._orphan(message)
            return
        if event in (Event.CONFIRM, Event.CYCLE_CONFIRM, Event.SHORTAGE):
            self._key(slot, tag, message)
        elif event is Event.TIMEOUT:
            self._tag_down(tag, HealthStatus.UNAVAILABLE, "no answer from the tag (time-out)")
        elif event is Event.MALFUNCTION:
            self._tag_down(tag, HealthStatus.FAULT, "tag malfunction")
        elif event is Event.BUTTONS_LOCKED:
            self._refused(tag, "buttons locked (a key held down)")
        elif event in (Event.DETAIL, Event.RESET_OK_OLD):
            self._tag_back(tag, "reset or powered on")
        elif event is Event.MODEL:
            self.models[tag] = message.model or ""
        elif event is Event.SPECIAL:
            if message.special is Special.BUSY_DROPPED:
                self._refused(tag, "tag busy, message dropped")
            elif message.special is Special.KEY_CODE:
                self.adopted.put_nowait(tag)
        else:  # STOCK_QTY: stock mode is never switched on
            self._reject(Rejected("unexpected", message.raw, ""), f"{event.name} in pick mode")

    def _key(self, slot: str, tag: int, message: Message) -> None:
        assert message.digits is not None
        self.confirmed.put_nowait(tag)
        qty = message.digits.number()
        shown = self._lit.get(slot)
        if shown is None or shown.qty is None:
            # Keys are disabled where no task is shown; a press that crossed the disable
            # on the wire must not confirm the next line.
            self.counts["presses_unlit"] += 1
            return
        reported = message.digits.text().strip()
        current = self._texts.get(tag)
        if (
            message.event is not Event.SHORTAGE
            and current is not None
            and reported != current
            and reported == self._before.get(tag)
        ):
            # The key was pressed while the tag still showed the line before (the new
            # display was on its way): it confirms nothing of the line shown now.
            self.counts["presses_stale"] += 1
            log.info(
                "device %s: confirm of tag %d (%s) showing %r, no longer shown: ignored",
                self.name,
                tag,
                slot,
                reported,
            )
            return
        if qty is None:
            # A key is enabled only with a quantity shown: a tag that powered on by itself
            # (keys on, display dark) reports a blank, which confirms nothing.
            self.counts["presses_blank"] += 1
            log.info(
                "device %s: key of tag %d (%s) with no quantity shown: ignored",
                self.name,
                tag,
                slot,
            )
            return
        if qty > shown.qty and message.event is not Event.SHORTAGE:
            qty = shown.qty  # not an adjusted quantity: what the node showed
        self._pressed(slot, Button.CONFIRM, qty)

    def _status(self, missing: frozenset[int]) -> None:
        self._seen_status = asyncio.get_running_loop().time()
        self.seen = frozenset(range(1, codec.MAX_TAG + 1)) - missing
        self.status_read.set()
        changed = False
        for tag in self._slot_of:
            part = self._down.get(tag)
            if tag in missing:
                if part is None or part.status is not HealthStatus.UNAVAILABLE:
                    self._down[tag] = PartHealth(
                        HealthStatus.UNAVAILABLE, "not connected (status poll)"
                    )
                    changed = True
            elif part is not None and part.status is HealthStatus.UNAVAILABLE:
                del self._down[tag]
                self._resend.add(tag)  # it lost its display while away
                changed = True
        if self._refusals and self._refusals_over(self._seen_status):
            changed = True
        if changed:
            self._parts_changed()

    def _refused(self, tag: int, what: str) -> None:
        """A tag did not take a message (64h 01h, 0Dh): send its state again.

        After ``refused_warn`` in a row it is listed as a fault until it takes messages again.
        """
        now = asyncio.get_running_loop().time()
        count = self._refusals.get(tag, (0, 0.0))[0] + 1
        self._refusals[tag] = (count, now)
        self._resend.add(tag)
        log.info("device %s: tag %d (%s): %s: sent again", self.name, tag, self._slot_of[tag], what)
        if count == self.config.refused_warn and tag not in self._down:
            self._down[tag] = PartHealth(
                HealthStatus.FAULT, f"{what}: {count} messages in a row, sent again each time"
            )
            self._refusing.add(tag)
            self._parts_changed()

    def _refusals_over(self, now: float) -> bool:
        """Forget refusals older than a resend and two polls; whether a part cleared."""
        quiet = 2 * max(self.config.poll_s, self.config.resend_after_s) + self.config.resend_after_s
        changed = False
        for tag, (_, last) in list(self._refusals.items()):
            if now - last > quiet:
                del self._refusals[tag]
                if tag in self._refusing:
                    self._refusing.discard(tag)
                    self._down.pop(tag, None)
                    changed = True
        return changed

    def _tag_down(self, tag: int, status: HealthStatus, why: str) -> None:
        part = PartHealth(status, why)
        if self._down.get(tag) != part:
            self._down[tag] = part
            self._refusing.discard(tag)
            log.warning("device %s: tag %d (%s): %s", self.name, tag, self._slot_of[tag], why)
            self._parts_changed()

    def _tag_back(self, tag: int, why: str) -> None:
        self._cache.pop(tag, None)
        self._resend.add(tag)
        self._refusals.pop(tag, None)
        self._refusing.discard(tag)
        if self._down.pop(tag, None) is not None:
            log.info("device %s: tag %d (%s) back: %s", self.name, tag, self._slot_of[tag], why)
            self._parts_changed()

    def _alarm(self, info: bytes) -> None:
        status = info[0] if info else 0
        if status:
            why = (
                ", ".join(
                    text
                    for bit, text in (
                        (0, "input voltage too low"),
                        (1, "input voltage too high"),
                        (7, "system abnormal"),
                    )
                    if status >> bit & 1
                )
                or f"alarm {status:02X}h"
            )
            self._set_health(HealthStatus.FAULT, f"{CONTROLLER_ALARM}: {why}")
        elif self.connected.is_set():
            self._set_health(HealthStatus.OK, self._summary())

    def _summary(self) -> str:
        illegal = ["refused a sub-command as illegal (0Ch)"] if self._illegal else []
        if not self._down:
            return ", ".join(illegal)
        down = sum(1 for p in self._down.values() if p.status is HealthStatus.UNAVAILABLE)
        broken = len(self._down) - down
        parts = []
        if down:
            parts.append(f"{down} of {len(self._tags)} tags down")
        if broken:
            parts.append(f"{broken} broken")
        return ", ".join(parts + illegal)

    def _parts_changed(self) -> None:
        if self.health.status is HealthStatus.OK:
            before = self.health
            self._set_health(HealthStatus.OK, self._summary())
            if self.health != before:
                return  # listeners were told
        for listener in self._listeners:
            listener(self.name, self.health)

    async def _resend_loop(self) -> None:
        """Send the wanted state of tags that dropped a message or came back, in batches."""
        while True:
            await asyncio.sleep(max(self.config.resend_after_s, 0.01))
            if not self._resend or self._writer is None:
                continue
            tags, self._resend = self._resend, set()
            frames: list[bytes] = []
            for tag in sorted(tags):
                if tag in self._down and self._down[tag].status is HealthStatus.UNAVAILABLE:
                    continue  # shown again when the bitmap says it is back
                self._cache.pop(tag, None)
                frames += self._frames(tag, self._lit.get(self._slot_of[tag]))
            self.counts["resent"] += len(tags)
            await self._send(frames)

    # -- commissioning ----------------------------------------------------------------------

    async def show_address(self, tag: int) -> None:
        """13h: make ``tag`` show its own address (and enable its confirm key)."""
        self._cache.pop(tag, None)  # no longer dark: the next off must go out
        await self._send(
            [codec.simple(Sub.SHOW_ADDRESS, tag), codec.simple(Sub.CONFIRM_KEY_ON, tag)]
        )

    async def offer_address(self, new: int) -> None:
        """FBh: every tag offers to take ``new``; the one whose key is pressed takes it."""
        await self._send([codec.address_setup(new)])

    async def request(self, frames: list[bytes]) -> None:
        """Send raw CCBs (commissioning commands build them with ``codec``)."""
        self._cache.clear()  # what the tags show is no longer known
        await self._send(frames)


CONFIG = AtopConfig
DRIVER = AtopController
SIMULATOR = AtopSimulator
