"""USB HID devices read through Linux hidraw (``/dev/hidrawN``), without blocking.

hidraw is a plain character device: each ``read()`` returns one input report, whose first
byte is the report id when the device numbers its reports (kernel
Documentation/hid/hidraw.rst). The node is opened read-only and non-blocking, watched with
``loop.add_reader``, and its reports are queued until ``read`` takes them. No library is
needed, and none detaches the kernel driver (libusb's route would steal the device from
hidraw). An unplugged device ends here as ``DeviceUnavailable``.

Devices are named by path (``/dev/hidraw0``, a udev symlink), by ``VID:PID`` (found in
sysfs, so a replug that renumbers the node is followed), or ``auto`` (the first HID
interface whose report descriptor declares the HID point-of-sale "Scales" usage page 8Dh).

``FakeHidraw`` is the fake: a device named ``fake:<name>`` opens the fake registered under
that name, which tests and the simulator feed with report bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from devices.errors import DeviceUnavailable

FAKE_SCHEME = "fake:"

#: Where the kernel lists hidraw nodes; tests point it at a tree of their own.
SYSFS_HIDRAW = Path("/sys/class/hidraw")
#: Where the device nodes are.
DEV_DIR = Path("/dev")

#: The HID usage page of point-of-sale scales (HID POS Usage Tables 1.02).
SCALE_USAGE_PAGE = 0x8D
#: Longest report read at once (scale data reports are 6 bytes).
MAX_REPORT = 64
#: Reports kept while nobody reads (a scale sends a few per second): the oldest go first.
QUEUE_REPORTS = 64

_VID_PID = re.compile(r"^([0-9a-fA-F]{4}):([0-9a-fA-F]{4})$")


def parse_vid_pid(text: str) -> tuple[int, int] | None:
    """``(vid, pid)`` from ``"0922:8009"``; ``None`` if ``text`` is not of that form."""
    match = _VID_PID.match(text)
    if match is None:
        return None
    return int(match[1], 16), int(match[2], 16)


def usage_pages(descriptor: bytes) -> set[int]:
    """The usage pages a HID report descriptor declares (its global Usage Page items).

    Short items only are walked (a long item, prefix FEh, is skipped by its length): the
    prefix's low two bits give the data size (0, 1, 2 or 4 bytes), bits 2-3 the type and
    bits 4-7 the tag; Usage Page is global item tag 0 (prefix 04h-07h).
    """
    pages: set[int] = set()
    i = 0
    while i < len(descriptor):
        prefix = descriptor[i]
        if prefix == 0xFE:  # long item: FE, size, tag, data
            if i + 1 >= len(descriptor):
                break
            i += 3 + descriptor[i + 1]
            continue
        size = (0, 1, 2, 4)[prefix & 0x03]
        data = descriptor[i + 1 : i + 1 + size]
        if prefix & 0xFC == 0x04 and len(data) == size and size:
            pages.add(int.from_bytes(data, "little"))
        i += 1 + size
    return pages


@dataclass(frozen=True, slots=True)
class HidrawInfo:
    """One hidraw node as sysfs describes it.

    Attributes:
        node: the device node (``/dev/hidraw0``).
        vid, pid: the USB vendor and product ids (0 when sysfs does not say).
        name: the product name the device reports (``HID_NAME``).
        scale_page: its report descriptor declares the HID POS scale usage page.
    """

    node: Path
    vid: int
    pid: int
    name: str
    scale_page: bool

    @property
    def vid_pid(self) -> str:
        """``"0922:8009"``."""
        return f"{self.vid:04x}:{self.pid:04x}"


def _read_info(entry: Path, dev_dir: Path) -> HidrawInfo:
    vid = pid = 0
    name = ""
    with contextlib.suppress(OSError):
        for line in (entry / "device" / "uevent").read_text().splitlines():
            key, _, value = line.partition("=")
            if key == "HID_ID":  # bus:vendor:product, e.g. 0003:00000922:00008009
                parts = value.split(":")
                if len(parts) == 3:
                    vid, pid = int(parts[1], 16) & 0xFFFF, int(parts[2], 16) & 0xFFFF
            elif key == "HID_NAME":
                name = value
    descriptor = b""
    with contextlib.suppress(OSError):
        descriptor = (entry / "device" / "report_descriptor").read_bytes()
    return HidrawInfo(
        dev_dir / entry.name, vid, pid, name, SCALE_USAGE_PAGE in usage_pages(descriptor)
    )


def list_hidraw(sysfs: Path | None = None, dev_dir: Path | None = None) -> list[HidrawInfo]:
    """Every hidraw node the kernel lists, in name order (empty without hidraw)."""
    root = sysfs if sysfs is not None else SYSFS_HIDRAW
    devs = dev_dir if dev_dir is not None else DEV_DIR
    try:
        entries = sorted(root.iterdir(), key=lambda p: (len(p.name), p.name))
    except OSError:
        return []
    return [_read_info(entry, devs) for entry in entries if entry.name.startswith("hidraw")]


def _translate(device: str, exc: OSError) -> DeviceUnavailable:
    if exc.errno == errno.ENOENT:
        why = "no such device (unplugged, or a wrong path: see `zone-agent scale probe`)"
    elif exc.errno == errno.EACCES:
        why = (
            "permission denied (install firmware_config/rpi/60-zone-agent-hid-scales.rules "
            "and replug the scale)"
        )
    elif exc.errno in (errno.ENODEV, errno.EIO, errno.ENXIO):
        why = "device removed (unplugged, or the scale powered itself off)"
    else:
        why = exc.strerror or str(exc)
    return DeviceUnavailable(f"{device}: {why}")


class HidBackend(Protocol):
    """What a HID driver needs from a device: open, one report at a time, close."""

    device: str

    @property
    def is_open(self) -> bool:
        """Whether the device is open and has not failed."""
        ...

    @property
    def node(self) -> str:
        """The node last opened (for logs), else the configured name."""
        ...

    async def open(self) -> None:
        """Find and open the device; raises ``DeviceUnavailable`` with the reason."""
        ...

    async def read(self) -> bytes:
        """Wait for the next report; raises ``DeviceUnavailable`` when the device vanishes."""
        ...

    async def close(self) -> None:
        """Release the device; safe to call twice."""
        ...


class HidrawDevice:
    """A hidraw node read through the event loop.

    Args:
        device: ``/dev/hidrawN`` or a symlink to it, ``VID:PID`` in hex, or ``auto``.
        vid_pids: with ``auto``, ids that count as a match besides the scale usage page
            (devices whose descriptor does not declare it).
        sysfs, dev_dir: where to look (tests pass their own tree).
    """

    def __init__(
        self,
        device: str,
        *,
        vid_pids: frozenset[tuple[int, int]] = frozenset(),
        sysfs: Path | None = None,
        dev_dir: Path | None = None,
    ) -> None:
        self.device = device
        self.vid_pids = vid_pids
        self._sysfs = sysfs
        self._dev_dir = dev_dir
        self._fd = -1
        self._node = ""
        self._reports: deque[bytes] = deque(maxlen=QUEUE_REPORTS)
        self._arrived = asyncio.Event()
        self._error: DeviceUnavailable | None = None

    @property
    def is_open(self) -> bool:
        """Whether the node is open and has not failed."""
        return self._fd >= 0 and self._error is None

    @property
    def node(self) -> str:
        """The node last opened, else the configured name."""
        return self._node or self.device

    def find(self) -> Path:
        """The node to open now; raises ``DeviceUnavailable`` when none matches."""
        if self.device.startswith("/"):
            return Path(self.device)
        found = list_hidraw(self._sysfs, self._dev_dir)
        ids = parse_vid_pid(self.device)
        if ids is not None:
            for info in found:
                if (info.vid, info.pid) == ids:
                    return info.node
            raise DeviceUnavailable(
                f"no HID device {self.device} plugged in (unplugged or powered off; "
                "`zone-agent scale probe` lists what is there)"
            )
        if self.device == "auto":
            for info in found:
                if info.scale_page or (info.vid, info.pid) in self.vid_pids:
                    return info.node
            raise DeviceUnavailable(
                "no USB HID scale plugged in (no hidraw device declares the scale usage page "
                "8Dh or has a known scale's vendor:product id)"
            )
        raise DeviceUnavailable(
            f"{self.device!r}: name a HID device by path (/dev/hidraw0), VID:PID or 'auto'"
        )

    def _open_blocking(self) -> tuple[int, str]:
        node = self.find()
        try:
            fd = os.open(node, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise _translate(str(node), exc) from exc
        return fd, str(node)

    async def open(self) -> None:
        """Find and open the node; raises ``DeviceUnavailable`` with the reason."""
        await self.close()
        self._fd, self._node = await asyncio.to_thread(self._open_blocking)
        self._reports.clear()
        self._error = None
        asyncio.get_running_loop().add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        try:
            report = os.read(self._fd, MAX_REPORT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(exc)
            return
        if not report:
            # hidraw never returns an empty report; end of file means the node is gone.
            self._fail(OSError(errno.ENODEV, "device removed"))
            return
        self._reports.append(report)
        self._arrived.set()

    def _fail(self, exc: OSError) -> None:
        self._error = _translate(self._node, exc)
        asyncio.get_running_loop().remove_reader(self._fd)
        self._arrived.set()

    async def read(self) -> bytes:
        """Wait for the next report; ``DeviceUnavailable`` once the device is gone."""
        while not self._reports:
            if self._error is not None:
                raise self._error
            if self._fd < 0:
                raise DeviceUnavailable(f"{self.node}: not open")
            self._arrived.clear()
            await self._arrived.wait()
        return self._reports.popleft()

    async def close(self) -> None:
        """Close the node; safe to call twice."""
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        if self._error is None:
            asyncio.get_running_loop().remove_reader(fd)
        with contextlib.suppress(OSError):  # gone with the cable: best effort
            os.close(fd)


_FAKES: dict[str, FakeHidraw] = {}


class FakeHidraw:
    """An in-memory HID device, registered under ``fake:<name>`` so configs can name it.

    Tests and the simulator call ``feed`` with report bytes, ``unplug`` and ``replug``; the
    driver sees the same ``HidBackend`` behaviour as with a hidraw node (one report per
    read, ``DeviceUnavailable`` once unplugged, a fresh open needed after a replug).

    Args:
        device: the name it answers to; must start with ``fake:``.
    """

    def __init__(self, device: str) -> None:
        if not device.startswith(FAKE_SCHEME):
            raise ValueError(f"a fake HID device name starts with {FAKE_SCHEME!r}: {device!r}")
        self.device = device
        self.plugged = True
        self.opens = 0
        self._open = False
        self._reports: deque[bytes] = deque(maxlen=QUEUE_REPORTS)
        self._arrived = asyncio.Event()

    @classmethod
    def register(cls, device: str) -> FakeHidraw:
        """Create the fake answering to ``device`` (replacing an older one)."""
        fake = cls(device)
        _FAKES[device] = fake
        return fake

    @classmethod
    def unregister(cls, device: str) -> None:
        """Forget the fake at ``device``."""
        _FAKES.pop(device, None)

    @property
    def is_open(self) -> bool:
        """Whether a driver has it open and it is still plugged in."""
        return self._open and self.plugged

    @property
    def node(self) -> str:
        """Its name."""
        return self.device

    async def open(self) -> None:
        """Open it; ``DeviceUnavailable`` while unplugged, as a hidraw node would."""
        if not self.plugged:
            raise DeviceUnavailable(f"{self.device}: no such device (unplugged)")
        self._open = True
        self.opens += 1
        self._reports.clear()

    def feed(self, *reports: bytes) -> None:
        """Deliver reports to the driver, one read each (dropped while unplugged or closed)."""
        if not self.is_open:
            return
        self._reports.extend(reports)
        self._arrived.set()

    async def read(self) -> bytes:
        """Wait for the next report; ``DeviceUnavailable`` once unplugged."""
        while not self._reports:
            if not self.is_open:
                raise DeviceUnavailable(f"{self.device}: device removed (unplugged)")
            self._arrived.clear()
            await self._arrived.wait()
        return self._reports.popleft()

    def unplug(self) -> None:
        """Pull the cable: pending reports are lost and ``read`` fails."""
        self.plugged = False
        self._reports.clear()
        self._arrived.set()

    def replug(self) -> None:
        """Plug the cable back in; the driver must open it again."""
        self.plugged = True
        self._open = False

    async def close(self) -> None:
        """Release it; safe to call twice."""
        self._open = False
        self._arrived.set()


class _RegisteredFake:
    """The fake registered at ``device``, looked up on each open (it may be replaced)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._fake: FakeHidraw | None = None

    @property
    def is_open(self) -> bool:
        return self._fake is not None and self._fake.is_open

    @property
    def node(self) -> str:
        return self.device

    async def open(self) -> None:
        self._fake = _FAKES.get(self.device)
        if self._fake is None:
            raise DeviceUnavailable(f"{self.device}: no fake HID device registered there")
        await self._fake.open()

    async def read(self) -> bytes:
        if self._fake is None:
            raise DeviceUnavailable(f"{self.device}: not open")
        return await self._fake.read()

    async def close(self) -> None:
        if self._fake is not None:
            await self._fake.close()


def open_hidraw(device: str, vid_pids: frozenset[tuple[int, int]] = frozenset()) -> HidBackend:
    """The backend for ``device`` (not opened): the fake for ``fake:...``, else hidraw."""
    if device.startswith(FAKE_SCHEME):
        return _RegisteredFake(device)
    return HidrawDevice(device, vid_pids=vid_pids)
