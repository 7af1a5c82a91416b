"""The systemd unit: it verifies without a word, its exposure does not grow, its device
names are the kernel's, and what a GPIO node reads from /proc is there under its /proc."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "zone-agent@.service"
USB_DROP_IN = ROOT / "systemd" / "usb-printer.conf"
ANALYZE = shutil.which("systemd-analyze")
UNSHARE = shutil.which("unshare")

needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")

EXPOSURE_BEFORE = 1.6
"""``systemd-analyze security`` of the unit before issue 19 (systemd 252): no higher."""


def _install(tmp_path: Path, *drop_ins: Path, text: str | None = None) -> Path:
    """The unit as installed for instance ``test`` (binary of this checkout), with drop-ins.

    Returns the unit's path; its directory is a unit search path with the drop-in folder.
    """
    binary = Path(sys.executable).with_name("zone-agent")
    text = (UNIT.read_text() if text is None else text).replace(
        "/opt/zone-agent/venv/bin/zone-agent", str(binary)
    )
    unit = tmp_path / "units" / "zone-agent@test.service"
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text(text)
    for drop_in in drop_ins:
        folder = unit.parent / "zone-agent@test.service.d"
        folder.mkdir(exist_ok=True)
        shutil.copy(drop_in, folder / drop_in.name)
    return unit


def _analyze(unit: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{unit.parent}:"}
    return subprocess.run(
        [ANALYZE, *args, unit.name],
        capture_output=True,
        text=True,
        check=False,
        cwd=unit.parent,
        env=env,
    )


def verify_output(unit: Path) -> list[str]:
    """Every line ``systemd-analyze verify`` prints about ``unit``: CI fails on any.

    Its exit code is 0 for unknown keys and for paths it ignores ("Unknown key ...,
    ignoring"), so the output is what tells.
    """
    result = _analyze(unit, "verify")
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    if result.returncode != 0:
        lines.append(f"exit status {result.returncode}")
    return lines


def exposure(unit: Path) -> float:
    """The overall exposure level ``systemd-analyze security`` gives ``unit``."""
    result = _analyze(unit, "security", "--offline=yes")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match is not None, result.stdout[-2000:] + result.stderr
    return float(match.group(1))


def unit_settings(text: str) -> dict[str, list[str]]:
    """Each key of a unit file with every value it is given, in order."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@needs_analyze
def test_unit_and_usb_drop_in_verify_without_output(tmp_path: Path) -> None:
    assert verify_output(_install(tmp_path)) == []
    assert verify_output(_install(tmp_path / "usb", USB_DROP_IN)) == []


@needs_analyze
def test_verify_check_fails_on_what_systemd_only_warns_about(tmp_path: Path) -> None:
    text = UNIT.read_text().replace("NoNewPrivileges=yes", "NoNewPrivileges=yes\nDynamicUsr=yes")
    unit = _install(tmp_path, text=text)
    assert _analyze(unit, "verify").returncode == 0  # why the exit status is not enough
    assert any("Unknown key" in line and "DynamicUsr" in line for line in verify_output(unit))


@needs_analyze
def test_security_exposure_does_not_grow(tmp_path: Path) -> None:
    base = exposure(_install(tmp_path))
    with_usb = exposure(_install(tmp_path / "usb", USB_DROP_IN))
    print(f"systemd-analyze security exposure: {base}; with usb-printer.conf: {with_usb}")
    assert base <= EXPOSURE_BEFORE
    # Netlink and /dev/bus/usb cost 0.1, on the pack station that has the printer only.
    assert with_usb <= EXPOSURE_BEFORE + 0.1


def test_unit_is_notify_with_watchdog_and_clean_stop() -> None:
    settings = {key: values[-1] for key, values in unit_settings(UNIT.read_text()).items()}
    assert settings["Type"] == "notify"
    assert int(settings["WatchdogSec"]) > 0
    assert settings["Restart"] == "on-failure"
    assert settings["RestartPreventExitStatus"] == "2"
    assert settings["ProtectSystem"] == "strict" and settings["NoNewPrivileges"] == "yes"
    assert settings["DevicePolicy"] == "closed"


# The names character-device majors are registered under (/proc/devices), which is what
# DeviceAllow=char-NAME matches; from the Linux sources (v6.6) that register them:
KERNEL_CHAR_MAJORS = {
    "gpiochip": "drivers/gpio/gpiolib.c: GPIOCHIP_NAME",
    "ttyUSB": "drivers/usb/serial/usb-serial.c: tty driver name",
    "ttyACM": "drivers/usb/class/cdc-acm.c: tty driver name",
    "ttyAMA": "drivers/tty/serial/amba-pl011.c: dev_name of the UART driver",
    "ttyS": "drivers/tty/serial/8250/8250_core.c: dev_name",
    "spi": 'drivers/spi/spidev.c: register_chrdev(0, "spi", ...)',
    "usb": 'drivers/usb/core/file.c: register_chrdev(USB_MAJOR, "usb", ...) (usblp lp*)',
    "usb_device": 'drivers/usb/core/devio.c: "usb_device" (/dev/bus/usb, libusb)',
    "input": 'drivers/input/input.c: register_chrdev_region(..., "input")',
    "hidraw": 'drivers/hid/hidraw.c: alloc_chrdev_region(..., "hidraw") (USB HID scales)',
}


def test_device_allow_names_are_the_kernels() -> None:
    """``char-spidev`` matched nothing (spidev registers "spi"): LED strips got EPERM."""
    for path in (UNIT, USB_DROP_IN):
        for value in unit_settings(path.read_text()).get("DeviceAllow", []):
            device = value.split()[0]
            assert device.startswith("char-"), value
            assert device.removeprefix("char-") in KERNEL_CHAR_MAJORS, f"{path.name}: {value}"
    allowed = " ".join(unit_settings(UNIT.read_text())["DeviceAllow"])
    assert "char-spi rw" in allowed and "char-gpiochip rw" in allowed
    usb = unit_settings(USB_DROP_IN.read_text())
    assert usb["DeviceAllow"] == ["char-usb_device rw"]
    assert usb["RestrictAddressFamilies"] == ["AF_NETLINK"]


# ---------------------------------------------------------------------------------------
# /proc as the unit mounts it

PI_CPUINFO = {
    "pi4": "Raspberry Pi 4 Model B Rev 1.4",
    "pi5": "Raspberry Pi 5 Model B Rev 1.0",
}
REVISIONS = {"pi4": "c03114", "pi5": "d04170"}


def _cpuinfo(board: str) -> str:
    core = (
        "BogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
        "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n"
        f"CPU part\t: {'0xd08' if board == 'pi4' else '0xd0b'}\nCPU revision\t: 3\n\n"
    )
    cores = "".join(f"processor\t: {n}\n{core}" for n in range(4))
    return (
        f"{cores}Revision\t: {REVISIONS[board]}\nSerial\t\t: 10000000a1b2c3d4\n"
        f"Model\t\t: {PI_CPUINFO[board]}\n"
    )


def proc_mount_options(unit_text: str) -> str:
    """The procfs mount options systemd derives from the unit's ProtectProc=/ProcSubset=."""
    settings = {key: values[-1] for key, values in unit_settings(unit_text).items()}
    options = []
    protect = settings.get("ProtectProc", "default")
    if protect != "default":
        options.append(f"hidepid={protect}")
    if settings.get("ProcSubset", "all") == "pid":
        options.append("subset=pid")
    return ",".join(options)


def _node_file(folder: Path) -> Path:
    state = folder / "state"
    node = folder / "zone-a1.toml"
    node.write_text(
        f'site = "dc1"\nnode = "zone-a1"\nrole = "pick"\nstate_dir = "{state}"\n\n'
        '[broker]\nurls = ["mqtt://127.0.0.1:1"]\n\n'
        '[[devices]]\nname = "shelf"\nkind = "gpio_slots"\n\n'
        '[[devices.slots]]\nid = "A-01-01"\nrgb = [2, 3, 4]\nconfirm = 17\n'
    )
    return node


def run_probe(
    folder: Path, options: str, board: str, *, chip_group: str | None = None
) -> tuple[dict[str, object], str]:
    """Run tests/proc_probe.py in a mount namespace of its own: (its result, its log)."""
    if os.geteuid() != 0 or UNSHARE is None:
        pytest.skip("needs root and unshare(1) to mount a procfs in a mount namespace")
    cpuinfo = folder / f"cpuinfo-{board}"
    cpuinfo.write_text(_cpuinfo(board))
    command = [UNSHARE, "-m", "--propagation", "private", sys.executable]
    command += [str(ROOT / "tests" / "proc_probe.py"), "--proc-options", options]
    command += ["--cpuinfo", str(cpuinfo)]
    if chip_group is not None:
        command += ["--chip-group", chip_group]
    env = {k: v for k, v in os.environ.items() if k not in ("GPIOZERO_PIN_FACTORY", "LG_WD")}
    env.update(PYTHONPATH=str(ROOT), LG_WD=str(folder), JOURNAL_STREAM="")
    result = subprocess.run(
        [*command, str(_node_file(folder))],
        capture_output=True,
        text=True,
        check=False,
        cwd=folder,
        env=env,
        timeout=120,
    )
    if result.returncode != 0 and "unshare failed" in result.stderr:
        pytest.skip(f"no mount namespaces here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


PROCESS_METRICS = {
    "process_cpu_seconds_total",
    "process_max_fds",
    "process_open_fds",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
}


@pytest.mark.parametrize("board", ["pi4", "pi5"])
def test_gpio_board_detection_and_process_metrics_under_the_units_proc(
    tmp_path: Path, board: str
) -> None:
    """gpiozero identifies the Pi and lgpio gets as far as the chip; process_* are there."""
    pytest.importorskip("lgpio")
    options = proc_mount_options(UNIT.read_text())
    assert "hidepid=invisible" in options  # other users' processes stay hidden
    result, log = run_probe(tmp_path, options, board)
    assert set(result["process_metrics"]) >= PROCESS_METRICS  # type: ignore[arg-type]
    # The board was identified: what stops the node is the chip this machine does not have.
    assert "lgpio can not open the GPIO chip: /dev/gpiochip0 does not exist" in log, log
    assert "cannot identify the board" not in log and "Traceback" not in log, log
    assert result["run_exit"] == 1


def test_the_probe_sees_what_ProcSubset_pid_broke(tmp_path: Path) -> None:
    """The previous unit (``ProcSubset=pid``): no board, no process metrics, exit 1."""
    pytest.importorskip("lgpio")
    old = UNIT.read_text().replace("ProtectProc=invisible", "ProtectProc=invisible\nProcSubset=pid")
    options = proc_mount_options(old)
    assert options == "hidepid=invisible,subset=pid"
    result, log = run_probe(tmp_path, options, "pi4")
    assert result["process_metrics"] == []
    assert "cannot identify the board: /proc/cpuinfo cannot be read" in log, log
    assert "ProcSubset=pid" in log and "Traceback" not in log
    assert result["run_exit"] == 1


def test_gpiochip_the_user_may_not_open_names_the_chip_and_the_group(
    tmp_path: Path,
) -> None:
    """lgpio's own ``lgpio.error("can not open gpiochip")`` ends as the driver's diagnosis."""
    pytest.importorskip("lgpio")
    result, log = run_probe(
        tmp_path, proc_mount_options(UNIT.read_text()), "pi4", chip_group="dialout"
    )
    expected = (
        "/dev/gpiochip0 is not readable and writable by user root: add it to the 'dialout' group"
    )
    assert expected in log, log
    assert "ERROR" in log and "Traceback" not in log
    assert result["run_exit"] == 1
