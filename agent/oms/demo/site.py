"""The demo warehouse's nodes: their node files and their processes.

Seven nodes, each ``zone-agent run FILE --simulate`` in its own process, on one private
broker:

* ``zone-a``: a pick zone on GPIO slots A1-A4 (LED, confirm and minus buttons, a TM1637
  quantity display each) with a serial scanner; a line is confirmed by scanning the item.
* ``zone-b``: a pick zone on a WS2812 strip, slots B1-B6 (confirm and minus buttons), with a
  serial scanner; a line is confirmed by its button.
* ``zone-c``: a pick zone of 300 slots C-001..C-300 on two simulated ATOP AblePick
  controllers (``atop-1`` tags 1-200, ``atop-2`` tags 1-100), each a TCP server speaking
  the controller's bytes; a line is confirmed by the tag's confirm key, a short by its
  up/down keys and shortage key. A scanner logs the picker in.
* ``wall-1``: a put wall of six cubbies P1-P6 (LED, confirm button, display) and a scanner.
* ``pack-1``: a pack station: scanner, MT-SICS scale, ZPL label printer, ESC/POS slip
  printer.
* ``dock-1``: a dispatch station with two carrier lanes, D1 (DPD) and D2 (Royal Mail), each
  a light and a button, and a scanner.
* ``returns-1``: a returns station with five disposition bins R1-R5 (light and button
  each), a scanner and a small ZPL printer for unit labels.

The files are written from the templates below (``$broker`` and ``$state`` filled in) into
the demo's working directory, where a curious user can read them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from string import Template
from typing import Any

from agent.oms.demo.broker import die_with_parent

SITE = "demo"

_COMMON = """\
site = "demo"
node = "$node"
role = "$role"
state_dir = "$state"

[broker]
urls = ["$broker"]
backoff_initial_s = 0.1
backoff_max_s = 2
"""

_SCANNER = """
[[devices]]
name = "scanner"
kind = "serial_scanner"
port = "/dev/zone-scanner"
dedupe_window_s = 0      # the simulated people scan faster than a real double read
"""


def _gpio_slots(ids: list[str], *, minus: bool, lamp: bool) -> str:
    lines = [
        "",
        "[[devices]]",
        'name = "shelf"',
        'kind = "gpio_slots"',
        "double_press_s = 0.05",
    ]
    pin = 2
    if lamp:
        lines.append(f"zone_lamp = {{ led = {pin} }}")
        pin += 1
    for slot in ids:
        lines += ["[[devices.slots]]", f'id = "{slot}"', f"led = {pin}", f"confirm = {pin + 1}"]
        pin += 2
        if minus:
            lines.append(f"minus = {pin}")
            pin += 1
        lines.append(f"display = {{ clk = {pin}, dio = {pin + 1} }}")
        pin += 2
    return "\n".join(lines) + "\n"


def _strip(ids: list[str]) -> str:
    buttons = [(17, 27), (22, 5), (6, 13), (19, 26), (20, 21), (23, 24)]
    lines = [
        "",
        "[[devices]]",
        'name = "strip"',
        'kind = "led_strip"',
        f"led_count = {len(ids) * 6 + 2}",
        "double_press_s = 0.05",
        f"zone_lamp = {{ first = {len(ids) * 6}, count = 2 }}",
    ]
    for n, (slot, (confirm, minus)) in enumerate(zip(ids, buttons, strict=False)):
        lines += [
            "[[devices.slots]]",
            f'id = "{slot}"',
            f"first = {n * 6}",
            "count = 6",
            f"confirm = {confirm}",
            f"minus = {minus}",
        ]
    return "\n".join(lines) + "\n"


def _atop(name: str, first: int, count: int) -> str:
    return (
        f'\n[[devices]]\nname = "{name}"\nkind = "atop"\n'
        f'host = "10.0.50.{100 + first // 200 + 1}"\n'
        "double_press_s = 0.05\npoll_s = 1.0\n"
        f'\n[[devices.slots]]\ntags = "1-{count}"\nfirst_id = "C-{first + 1:03}"\n'
    )


ZONE_C = [f"C-{n:03}" for n in range(1, 301)]
ZONE_C_DEVICES = {"atop-1": ZONE_C[:200], "atop-2": ZONE_C[200:]}
"""The demo's ATOP zone: 300 slots on two controllers, by device."""
ZONE_A = ["A1", "A2", "A3", "A4"]
ZONE_B = ["B1", "B2", "B3", "B4", "B5", "B6"]
CUBBIES = ["P1", "P2", "P3", "P4", "P5", "P6"]
LANES = {"D1": "DPD", "D2": "Royal Mail"}
BINS = {
    "restock": "R1",
    "refurbish": "R2",
    "quarantine": "R3",
    "return_to_vendor": "R4",
    "dispose": "R5",
}
DOCK_CARRIERS = frozenset(LANES.values())
"""The carriers collected at the demo's dock; the others (Evri, the carriers' own labels)
collect from the pack station, so their orders end ``packed``."""


def _lanes_and_bins(name: str, ids: list[str]) -> str:
    lines = ["", "[[devices]]", f'name = "{name}"', 'kind = "gpio_slots"', "double_press_s = 0.05"]
    for n, slot in enumerate(ids):
        lines += ["[[devices.slots]]", f'id = "{slot}"', f"led = {2 + 2 * n}"]
        lines.append(f"confirm = {3 + 2 * n}")
    return "\n".join(lines) + "\n"


TEMPLATES: dict[str, str] = {
    "zone-a": _COMMON
    + '\n[settings]\nconfirm = "scan"\ncounters_every_s = 1\n'
    + _SCANNER
    + _gpio_slots(ZONE_A, minus=True, lamp=True),
    "zone-b": _COMMON
    + '\n[settings]\nconfirm = "button"\ncounters_every_s = 1\n'
    + _SCANNER
    + _strip(ZONE_B),
    "zone-c": _COMMON
    + '\n[settings]\nconfirm = "button"\ncounters_every_s = 1\n'
    + 'picker_colours = ["orange", "sky_blue", "blue", "reddish_purple"]\n'
    + _SCANNER
    + _atop("atop-1", 0, 200)
    + _atop("atop-2", 200, 100),
    "wall-1": _COMMON + _SCANNER + _gpio_slots(CUBBIES, minus=False, lamp=False),
    "pack-1": _COMMON
    + """
[settings]
confirm_barcode = "CONFIRM"
gs1_company_prefix = "7612345"
ship_from = ["Demo Fulfilment", "Unit 4, Dock Road", "Leeds LS1 1AA"]
slip_title = "Demo Shop"
label_timeout_s = 3

[settings.supervisors]
"SUP-1" = "maria"
"""
    + _SCANNER
    + """
[[devices]]
name = "scale"
kind = "mt_sics"
port = "/dev/zone-scale"
poll_interval = 0.1

[[devices]]
name = "label"
kind = "zpl_printer"
host = "127.0.0.1"

[[devices]]
name = "slip"
kind = "escpos_printer"
host = "127.0.0.1"
port = 9101
""",
}
TEMPLATES["dock-1"] = (
    _COMMON
    + "\n[settings]\nnear_cutoff_min = 30\n"
    + "".join(
        f'[[settings.lanes]]\nid = "{lane}"\ncarrier = "{carrier}"\n'
        for lane, carrier in LANES.items()
    )
    + _SCANNER
    + _lanes_and_bins("lanes", list(LANES))
)
TEMPLATES["returns-1"] = (
    _COMMON
    + "\n[settings.bins]\n"
    + "".join(f'{disposition} = "{slot}"\n' for disposition, slot in BINS.items())
    + _SCANNER
    + _lanes_and_bins("bins", list(BINS.values()))
    + """
[[devices]]
name = "label"
kind = "zpl_printer"
host = "127.0.0.1"
"""
)
ROLES = {
    "zone-a": "pick",
    "zone-b": "pick",
    "zone-c": "pick",
    "wall-1": "put_wall",
    "pack-1": "pack",
    "dock-1": "dispatch",
    "returns-1": "returns",
}


def write_node_files(workdir: Path, broker_url: str) -> dict[str, Path]:
    """Write the node files into ``workdir``; their paths by node name."""
    paths: dict[str, Path] = {}
    for node, template in TEMPLATES.items():
        path = workdir / f"{node}.toml"
        path.write_text(
            Template(template).substitute(
                node=node, role=ROLES[node], state=workdir / node, broker=broker_url
            )
        )
        paths[node] = path
    return paths


class NodeProcess:
    """One ``zone-agent run FILE --simulate`` child process, its log in ``log``."""

    def __init__(self, name: str, path: Path, log: Path) -> None:
        self.name = name
        self.path = path
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the node (it stops on SIGTERM or SIGINT with its lights off)."""
        with self.log.open("wb") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "agent.cli",
                "run",
                str(self.path),
                "--simulate",
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
                # Its own process group: a Ctrl-C in the terminal reaches the demo alone,
                # which stops the nodes and then the broker in that order.
                process_group=0,
            )

    @property
    def pid(self) -> int | None:
        """The process id, once started."""
        return None if self.process is None else self.process.pid

    async def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; the exit code."""
        process = self.process
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        return process.returncode


class SiteServiceProcess:
    """The site service (``zone-agent site serve``) of the demo.

    Its log is in the work directory (SQLite), its API on a free 127.0.0.1 port, no token
    needed from this machine; webhooks may go to receivers on loopback.

    It is the demo's one OMS that acknowledges: every node event is in its log before the
    node lets it go, and its API and webhooks serve it (docs/api.md).
    """

    def __init__(self, workdir: Path, broker_url: str) -> None:
        self.file = workdir / "site.toml"
        self.file.write_text(
            f'site = "{SITE}"\n[broker]\nurls = ["{broker_url}"]\n'
            f'backoff_initial_s = 0.1\nbackoff_max_s = 2\n[log]\npath = "{workdir / "site.db"}"\n'
            # Webhooks to a receiver on this machine, to try them; a site allows its LAN.
            '[webhooks]\nallow_networks = ["127.0.0.0/8", "::1"]\n'
        )
        self.ready = workdir / "site.ready"
        self.log = workdir / "site.log"
        self.process: asyncio.subprocess.Process | None = None
        self.url: str | None = None

    async def start(self, timeout: float = 30.0) -> str | None:
        """Start it; its API's URL once it listens (``None``: it did not start)."""
        with self.log.open("wb") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "agent.cli",
                "site",
                "serve",
                str(self.file),
                "--port",
                "0",
                "--ready-file",
                str(self.ready),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
                process_group=0,
            )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.process.returncode is None:
                    with contextlib.suppress(OSError, ValueError, KeyError):
                        data = json.loads(self.ready.read_text())
                        if data["pid"] == self.process.pid:
                            self.url = str(data["url"])
                            return self.url
                    await asyncio.sleep(0.05)
        return None

    async def head(self) -> int | None:
        """How many events its log holds (the newest position)."""
        if self.url is None:
            return None

        def get() -> int:
            with urllib.request.urlopen(f"{self.url}/v1/health", timeout=5) as answer:
                return int(json.loads(answer.read())["head"])

        try:
            return await asyncio.to_thread(get)
        except (OSError, ValueError, KeyError):
            return None

    async def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; the exit code."""
        process = self.process
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        return process.returncode


class Control:
    """A node's local API (``/api/state``, ``/sim/...``), found through ``control.json``."""

    def __init__(self, url: str) -> None:
        self.url = url

    @classmethod
    async def find(cls, state_dir: Path, timeout: float = 20.0) -> Control:
        """Wait until the node has written its URL, then return its control client."""
        path = state_dir / "control.json"
        async with asyncio.timeout(timeout):
            while True:
                with contextlib.suppress(OSError, ValueError, KeyError):
                    return cls(str(json.loads(path.read_text())["url"]))
                await asyncio.sleep(0.05)

    def _request(self, path: str, body: dict[str, Any] | None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method="GET" if body is None else "POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    async def get(self, path: str) -> Any:
        """GET JSON (off the event loop)."""
        return await asyncio.to_thread(self._request, path, None)

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST JSON (off the event loop)."""
        return await asyncio.to_thread(self._request, path, body)

    async def scan(self, code: str) -> None:
        """Scan ``code`` on the node's scanner."""
        await self.post("/sim/scanner/scan", {"code": code})

    async def press(
        self, device: str, slot: str, button: str = "confirm", qty: int | None = None
    ) -> None:
        """Press a button of a slot (an ATOP tag's ``short`` key takes the ``qty`` set)."""
        body: dict[str, Any] = {"slot": slot, "button": button}
        if qty is not None:
            body["qty"] = qty
        await self.post(f"/sim/{device}/press", body)

    async def workflow(self) -> dict[str, Any]:
        """The workflow part of the node's state (what its screen shows)."""
        state: dict[str, Any] = await self.get("/api/state")
        workflow: dict[str, Any] = state.get("workflow") or {}
        return workflow

    async def lights(self) -> dict[str, Any]:
        """What each light shows now, by location (``None``: dark)."""
        state: dict[str, Any] = await self.get("/api/state")
        lights: dict[str, Any] = state.get("lights") or {}
        return lights


__all__ = [
    "BINS",
    "CUBBIES",
    "DOCK_CARRIERS",
    "LANES",
    "SITE",
    "ZONE_A",
    "ZONE_B",
    "ZONE_C",
    "ZONE_C_DEVICES",
    "Control",
    "NodeProcess",
    "write_node_files",
]
