"""``zone-agent light ...``: commissioning of pick-to-light devices.

``zone-agent light test FILE`` lights every slot of the node file's ``gpio_slots`` and
``led_strip`` devices in turn (its number on the display), waits for the confirm button
and reports which slots answered, so an installer can walk the shelf once and know the
wiring is right. ``--simulate`` runs on gpiozero's MockFactory and the fake SPI bus.

For ATOP controllers (kind ``atop``) ``light test`` makes each tag show its own address
(13h) and waits for that tag's confirm key; ``zone-agent light seen FILE`` lists, per
controller, the tags its status bitmap sees against the tags the node file names; and
``zone-agent light address FILE DEVICE TAG`` gives a replaced tag its address (FBh: every
tag offers the address, the installer presses the new tag's key).

``zone-agent sim light FILE`` runs the same devices simulated and cycles the named
indications on every slot, printing what the simulated hardware shows. ``zone-agent sim
atop --tags N`` runs one simulated ATOP controller on its own (a node file pointed at its
port drives it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.errors import EXIT_DEVICE, EXIT_OK, EXIT_USAGE, DeviceError
from devices.backends.gpio import mock_factory
from devices.context import DeviceContext
from devices.events import Button
from devices.lights.atop.codec import MAX_TAG
from devices.lights.atop.driver import AtopController
from devices.lights.atop.sim import ControllerSim
from devices.lights.base import LightBar, LightBarConfig
from devices.lights.palette import DONE, ERROR, Indication, Pattern, express, picker_colour
from devices.registry import module_for
from devices.sim import Simulator

LIGHT_KINDS = ("gpio_slots", "led_strip", "atop", "modbus_io")
ATOP = "atop"


@dataclass
class SimulatedLights:
    """The simulators of a running ``--simulate`` command, for tests and demos.

    Attributes:
        loop: the command's event loop; run ``control`` on it with
            ``asyncio.run_coroutine_threadsafe``.
        simulators: simulator by device name.
    """

    loop: asyncio.AbstractEventLoop
    simulators: dict[str, Simulator] = field(default_factory=dict)


active: SimulatedLights | None = None
"""Set while a simulated light command runs (black-box tests press buttons through it)."""


class UsageError(Exception):
    """The node file cannot be used; the message says where and why."""


def load_light_configs(path: Path) -> list[LightBarConfig]:
    """The ``[[devices]]`` of a light kind in the node file ``path``, validated.

    Other keys and device kinds are ignored.

    Raises:
        UsageError: unreadable TOML, an invalid device table, or no light device.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from exc
    tables = data.get("devices", [])
    if not isinstance(tables, list):
        raise UsageError(f"{path}: 'devices' must be an array of tables ([[devices]])")
    configs: list[LightBarConfig] = []
    for index, table in enumerate(tables):
        if not isinstance(table, dict) or table.get("kind") not in LIGHT_KINDS:
            continue
        model = module_for(table["kind"]).CONFIG
        try:
            configs.append(model.model_validate(table))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "(table)"
            raise UsageError(f"{path}: devices[{index}].{where}: {first['msg']}") from exc
    if not configs:
        raise UsageError(f"{path}: no [[devices]] of kind {' or '.join(LIGHT_KINDS)}")
    return configs


def _say(line: str) -> None:
    """Print one line of command output at once (the installer watches it live)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def wait_for_confirm(bar: LightBar, slot: str, wait_s: float) -> bool:
    """Whether ``slot``'s confirm button is pressed within ``wait_s`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    # A cancelled async generator cannot be resumed, so each wait takes a fresh iterator.
    presses = bar.events()
    try:
        async with asyncio.timeout_at(deadline):
            async for press in presses:
                if press.slot == slot and press.button is Button.CONFIRM:
                    return True
                _say(f"  ignored {press.button.value} on {press.slot}")
    except TimeoutError:
        return False
    return False


@contextlib.asynccontextmanager
async def _simulated(configs: list[LightBarConfig], simulate: bool) -> Any:
    global active
    if not simulate:
        yield configs, DeviceContext()
        return
    context = DeviceContext(pin_factory=mock_factory(), simulate=True)
    session = SimulatedLights(asyncio.get_running_loop())
    patched: list[LightBarConfig] = []
    try:
        for config in configs:
            simulator = module_for(config.kind).SIMULATOR(config, context)
            await simulator.start()
            session.simulators[config.name] = simulator
            patched.append(simulator.patched_config())
        active = session
        yield patched, context
    finally:
        active = None
        for simulator in session.simulators.values():
            await simulator.stop()


async def _open_all(
    stack: contextlib.AsyncExitStack, configs: list[LightBarConfig], context: DeviceContext
) -> list[LightBar]:
    bars = []
    for config in configs:
        driver = module_for(config.kind).DRIVER.from_config(config, context)
        bars.append(await stack.enter_async_context(driver))
    return bars


async def run_test(args: argparse.Namespace) -> int:
    """``light test``: walk every slot and report which answered."""
    try:
        configs = load_light_configs(Path(args.file))
    except UsageError as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    if args.timeout <= 0:
        _say("error: --timeout must be positive")
        return EXIT_USAGE
    answered: list[str] = []
    missing: list[str] = []
    async with (
        _simulated(configs, args.simulate) as (patched, context),
        contextlib.AsyncExitStack() as stack,
    ):
        try:
            bars = await _open_all(stack, patched, context)
        except DeviceError as exc:
            _say(f"error: {exc}")
            return EXIT_DEVICE
        number = 0
        for bar in bars:
            if isinstance(bar, AtopController):
                if not await _connected(bar, args.timeout):
                    missing += [f"{bar.name}/{slot}" for slot in bar.slots()]
                    continue
                for slot in bar.slots():
                    ok = await _walk_tag(bar, slot, args.timeout)
                    (answered if ok else missing).append(f"{bar.name}/{slot}")
                continue
            for slot in bar.slots():
                number += 1
                where = f"{bar.name}/{slot}"
                colour = picker_colour(number - 1)
                await bar.show(slot, Indication(colour, Pattern.SLOW_BLINK, qty=number))
                _say(f"{where}: lit {colour.value} showing {number}: press confirm")
                ok = await wait_for_confirm(bar, slot, args.timeout)
                await bar.off(slot)
                (answered if ok else missing).append(where)
                _say(f"{where}: {'ok' if ok else 'NO ANSWER'}")
    _say(f"answered: {', '.join(answered) or '-'}")
    _say(f"no answer: {', '.join(missing) or '-'}")
    return EXIT_DEVICE if missing else EXIT_OK


async def _connected(bar: AtopController, wait_s: float) -> bool:
    """Whether the controller is connected within ``wait_s`` (says so when not)."""
    try:
        async with asyncio.timeout(wait_s):
            await bar.connected.wait()
    except TimeoutError:
        _say(f"{bar.name}: controller not reachable: {bar.health.detail}")
        return False
    return True


async def _walk_tag(bar: AtopController, slot: str, wait_s: float) -> bool:
    """Show ``slot``'s tag its own address and wait for that tag's confirm key."""
    tag = bar.tag_of(slot)
    while not bar.confirmed.empty():
        bar.confirmed.get_nowait()
    await bar.show_address(tag)
    _say(f"{bar.name}/{slot}: tag {tag} shows its address: press its confirm key")
    ok = False
    try:
        async with asyncio.timeout(wait_s):
            while not ok:
                pressed = await bar.confirmed.get()
                ok = pressed == tag
                if not ok:
                    _say(f"  ignored the confirm key of tag {pressed}")
    except TimeoutError:
        pass
    await bar.off(slot)
    _say(f"{bar.name}/{slot}: {'ok' if ok else 'NO ANSWER'}")
    return ok


def _atop_only(configs: list[LightBarConfig], device: str | None = None) -> list[LightBarConfig]:
    chosen = [c for c in configs if c.kind == ATOP and (device is None or c.name == device)]
    if not chosen:
        what = f"no atop device named {device!r}" if device else "no [[devices]] of kind atop"
        raise UsageError(what)
    return chosen


async def run_seen(args: argparse.Namespace) -> int:
    """``light seen``: the tags each controller's status bitmap sees, against the file."""
    try:
        configs = _atop_only(load_light_configs(Path(args.file)))
    except UsageError as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    problems = False
    async with (
        _simulated(configs, args.simulate) as (patched, context),
        contextlib.AsyncExitStack() as stack,
    ):
        bars = await _open_all(stack, patched, context)
        for bar in bars:
            assert isinstance(bar, AtopController)
            if not await _connected(bar, args.timeout):
                problems = True
                continue
            try:
                async with asyncio.timeout(args.timeout):
                    await bar.status_read.wait()
            except TimeoutError:
                _say(f"{bar.name}: no status reply (09h) within {args.timeout:g} s")
                problems = True
                continue
            wanted = {bar.tag_of(slot): slot for slot in bar.slots()}
            seen = bar.seen or frozenset()
            found = sorted(set(wanted) & seen)
            lost = sorted(set(wanted) - seen)
            extra = sorted(seen - set(wanted))
            _say(f"{bar.name}: {len(found)} of {len(wanted)} tags of the node file answer")
            if lost:
                problems = True
                _say(f"  missing: {', '.join(f'{t} ({wanted[t]})' for t in lost)}")
            if extra:
                _say(f"  not in the node file: {', '.join(str(t) for t in extra)}")
    return EXIT_DEVICE if problems else EXIT_OK


async def run_address(args: argparse.Namespace) -> int:
    """``light address``: a replaced tag takes ``TAG`` when its key is pressed."""
    try:
        configs = _atop_only(load_light_configs(Path(args.file)), args.device)
    except UsageError as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    if not 1 <= args.tag <= MAX_TAG:
        _say(f"error: a tag address is 1..{MAX_TAG}")
        return EXIT_USAGE
    async with (
        _simulated(configs, args.simulate) as (patched, context),
        contextlib.AsyncExitStack() as stack,
    ):
        (bar,) = await _open_all(stack, patched, context)
        assert isinstance(bar, AtopController)
        if not await _connected(bar, args.timeout):
            return EXIT_DEVICE
        while not bar.adopted.empty():
            bar.adopted.get_nowait()
        await bar.offer_address(args.tag)
        _say(
            f"{bar.name}: every tag offers address {args.tag}: press the key of the new tag "
            f"(within {args.timeout:g} s)"
        )
        try:
            async with asyncio.timeout(args.timeout):
                took = await bar.adopted.get()
        except TimeoutError:
            _say(f"{bar.name}: no tag took address {args.tag}")
            await bar.offer_address(0)  # end the setup: tags show their own address again
            return EXIT_DEVICE
        _say(f"{bar.name}: a tag took address {took}")
        return EXIT_OK if took == args.tag else EXIT_DEVICE


async def run_sim_atop(args: argparse.Namespace) -> int:
    """``sim atop``: one simulated controller until Ctrl-C, its port printed."""
    controller = ControllerSim(args.tags, port=args.port, host=args.host)
    await controller.start()
    _say(f"simulated ATOP controller with tags 1..{args.tags} on {args.host}:{controller.port}")
    try:
        await asyncio.Event().wait()
    finally:
        await controller.stop()
    return EXIT_OK


async def run_sim(args: argparse.Namespace) -> int:
    """``sim light``: cycle named indications on simulated devices and print the state."""
    try:
        configs = load_light_configs(Path(args.file))
    except UsageError as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    demo = [express(3), ERROR, DONE]
    async with _simulated(configs, True) as (patched, context):
        assert active is not None
        async with contextlib.AsyncExitStack() as stack:
            bars = await _open_all(stack, patched, context)
            for round_ in range(args.rounds):
                for bar in bars:
                    for index, slot in enumerate(bar.slots()):
                        await bar.show(slot, demo[(index + round_) % len(demo)])
                await asyncio.sleep(args.interval)
                for name, simulator in active.simulators.items():
                    _say(f"{name}: {simulator.state()}")
    return EXIT_OK


def register(commands: Any, sim: Any) -> None:
    """Add ``light test`` and ``sim light``."""
    light = commands.add_parser("light", help="commission pick-to-light devices")
    actions = light.add_subparsers(dest="light_command", required=True, metavar="ACTION")
    test = actions.add_parser("test", help="light every slot and wait for its confirm button")
    test.add_argument("file", help="node file (TOML) with gpio_slots / led_strip devices")
    test.add_argument("--simulate", action="store_true", help="run on simulated hardware")
    test.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait per slot (default 30)"
    )
    test.set_defaults(func=run_test)

    seen = actions.add_parser(
        "seen", help="ATOP: the tags each controller sees against the node file"
    )
    seen.add_argument("file", help="node file (TOML) with atop devices")
    seen.add_argument("--simulate", action="store_true", help="run on simulated controllers")
    seen.add_argument("--timeout", type=float, default=10.0, help="seconds per controller")
    seen.set_defaults(func=run_seen)

    address = actions.add_parser("address", help="ATOP: give a replaced tag its address")
    address.add_argument("file", help="node file (TOML) with atop devices")
    address.add_argument("device", help="the controller's device name")
    address.add_argument("tag", type=int, help="the address the new tag takes (1..200)")
    address.add_argument("--simulate", action="store_true", help="run on a simulated controller")
    address.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a key")
    address.set_defaults(func=run_address)

    atop = sim.add_parser("atop", help="one simulated ATOP AblePick controller")
    atop.add_argument("--tags", type=int, default=200, help="tags 1..N (default 200)")
    atop.add_argument("--port", type=int, default=4660, help="TCP port (default 4660; 0: free)")
    atop.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    atop.set_defaults(func=run_sim_atop)

    demo = sim.add_parser("light", help="simulate the node file's lights and cycle indications")
    demo.add_argument("file", help="node file (TOML)")
    demo.add_argument("--rounds", type=int, default=3, help="indication changes (default 3)")
    demo.add_argument("--interval", type=float, default=1.0, help="seconds per round")
    demo.set_defaults(func=run_sim)
