"""The Debian package installed, upgraded, refused as a downgrade, removed and purged.

In a clean Debian bookworm root (packaging/debian-root.sh: debootstrap once, kept outside
the repository; each run works in an overlay over it), the amd64 package is built twice
(``make deb``'s script, as versions 1.0.0 and 1.1.0) and handled with dpkg as an
installer would. The packaged node runs in the root as the package's user and talks to a
Mosquitto on this machine's loopback (the root shares the network). What this cannot show:
systemd restarting running instances on upgrade (there is no systemd as PID 1 here; the
postinst's ``systemctl try-restart 'zone-agent@*.service'`` runs only under one).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.oms.demo.broker import LocalBroker
from agent.store import SCHEMA_VERSION
from tests.harness import oms_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.broker,
    pytest.mark.timeout(900),
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot and mounts need root"),
    pytest.mark.skipif(shutil.which("debootstrap") is None, reason="debootstrap is missing"),
]

REPO = Path(__file__).resolve().parent.parent
OLD, NEW = "1.0.0", "1.1.0"
STATE = "/var/lib/zone-agent/zone-a1"
NODE = "/etc/zone-agent/zone-a1.toml"
TIMES: dict[str, float] = {}


def _timed(what: str, args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    TIMES[what] = time.monotonic() - started
    return done  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("debs")
    made = {}
    for version in (OLD, NEW):
        env = {**os.environ, "OUT": str(out), "SETUPTOOLS_SCM_PRETEND_VERSION": version}
        build = _timed(f"build {version}", [str(REPO / "packaging/build-deb.sh"), "amd64"], env=env)
        assert build.returncode == 0, build.stderr[-3000:]
        made[version] = Path(build.stdout.strip().splitlines()[-1])
    return made


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """A fresh Debian root: an overlay over the cached one, with /proc and /dev."""
    made = subprocess.run(
        [str(REPO / "packaging/debian-root.sh"), "amd64"], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr[-3000:]
    lower = made.stdout.strip().splitlines()[-1]
    for d in ("upper", "work", "root"):
        (tmp_path / d).mkdir()
    merged = tmp_path / "root"
    options = f"lowerdir={lower},upperdir={tmp_path / 'upper'},workdir={tmp_path / 'work'}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, merged], check=True)
    subprocess.run(["mount", "-t", "proc", "proc", merged / "proc"], check=True)
    subprocess.run(["mount", "--bind", "/dev", merged / "dev"], check=True)
    try:
        yield merged
    finally:
        for mount in (merged / "dev", merged / "proc", merged):
            subprocess.run(["umount", "-l", mount], check=False)


def sh(root: Path, command: str) -> subprocess.CompletedProcess[str]:
    """Run a shell command in the root as root."""
    return subprocess.run(
        ["/usr/sbin/chroot", str(root), "sh", "-c", command],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        timeout=300,
    )


def ok(root: Path, command: str) -> str:
    done = sh(root, command)
    assert done.returncode == 0, f"{command}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


def dpkg(root: Path, what: str, *args: str) -> subprocess.CompletedProcess[str]:
    return _timed(
        what, ["/usr/sbin/chroot", str(root), "dpkg", *args], env={"PATH": "/usr/sbin:/usr/bin"}
    )


def node_file() -> str:
    lines = ['site = "dc1"', 'node = "zone-a1"', 'role = "pick"', "[broker]"]
    lines += ["keepalive_s = 5", "backoff_initial_s = 0.05", "backoff_max_s = 0.5"]
    lines += ["[[devices]]", 'name = "shelf"', 'kind = "gpio_slots"']
    for i in range(8):
        lines += ["[[devices.slots]]", f'id = "A{i + 1}"', f"led = {2 + i * 2}"]
        lines += [f"confirm = {3 + i * 2}"]
    return "\n".join(lines) + "\n"


def run_node(root: Path, broker: LocalBroker) -> tuple[str | None, str | None, int | None, str]:
    """The packaged node, as the package's user, until its birth: (sw, store, boot, log).

    As the unit runs it: the env file's variables, ZONE_AGENT_STATE_DIR, its state directory
    made as StateDirectory= makes it; --simulate, as the root has no GPIO.
    """
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "ZONE_AGENT_STATE_DIR": STATE}
    for line in (root / "etc/zone-agent/zone-a1.env").read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    ok(root, f"install -d -o zone-agent -g zone-agent -m 0700 {STATE}")
    agent = "/opt/zone-agent/venv/bin/zone-agent"
    proc = subprocess.Popen(
        [
            "/usr/sbin/chroot",
            "--userspec=zone-agent:zone-agent",
            str(root),
            agent,
            "run",
            NODE,
            "--simulate",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    async def birth() -> tuple[str | None, str | None, int | None]:
        async with oms_for(broker) as oms:
            async with asyncio.timeout(60):
                while not (oms.nodes.get("zone-a1") and oms.nodes["zone-a1"].online):
                    if proc.poll() is not None:
                        return None, None, None
                    await asyncio.sleep(0.05)
            view = oms.nodes["zone-a1"]
            assert view.state is not None
            return view.state.sw, view.state.store, view.boot

    try:
        found = asyncio.run(birth())
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out[-3000:]
    return (*found, out)


def test_install_first_boot_upgrade_downgrade_remove_purge(
    debs: dict[str, Path], root: Path, broker: LocalBroker
) -> None:
    for version, deb in debs.items():
        shutil.copy(deb, root / f"tmp/{version}.deb")
    sizes = {v: d.stat().st_size for v, d in debs.items()}

    # Install: the venv, the user in the device groups, directories, unit, udev rules.
    done = dpkg(root, "install", "-i", f"/tmp/{OLD}.deb")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert ok(root, "/opt/zone-agent/venv/bin/zone-agent --version").strip() == f"zone-agent {OLD}"
    groups = set(ok(root, "id -nG zone-agent").split())
    assert groups >= {"zone-agent", "gpio", "dialout", "spi", "lp", "input"}
    assert ok(root, "stat -c '%U:%G %a' /etc/zone-agent").split() == ["root:zone-agent", "750"]
    assert ok(root, "getent passwd zone-agent").split(":")[6].strip() == "/usr/sbin/nologin"
    assert (root / "usr/lib/systemd/system/zone-agent@.service").is_file()
    assert ok(root, "cat /var/lib/dpkg/info/zone-agent.conffiles").split() == [
        "/etc/udev/rules.d/60-zone-agent-hid-scales.rules",
        "/etc/udev/rules.d/99-zone-agent.rules",
    ]
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert (wants / "zone-agent-firstboot.service").is_symlink()
    # The installed units as systemd reads them: it exits 0 on unknown keys, so no output.
    units = "zone-agent-firstboot.service zone-agent@zone-a1.service"
    verify = sh(root, f"cd /usr/lib/systemd/system && systemd-analyze verify {units}")
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")

    # First boot: a node file and its env file on the boot partition, and one bad file.
    boot = root / "boot/firmware/zone-agent"
    boot.mkdir(parents=True)
    (boot / "zone-a1.toml").write_text(node_file())
    (boot / "zone-a1.env").write_text(f"ZONE_AGENT_BROKER_URLS={broker.url}\n")
    (boot / "zone-b1.toml").write_text(node_file().replace("kind =", "knd ="))
    first = sh(root, "/usr/lib/zone-agent/first-boot /boot/firmware/zone-agent")
    assert first.returncode == 1, first.stdout + first.stderr  # one file was bad
    assert "zone-agent@zone-a1: installed from" in first.stdout, first.stderr
    assert ok(root, "stat -c '%U:%G %a' /etc/zone-agent/zone-a1.toml").split() == [
        "root:zone-agent",
        "640",
    ]
    assert ok(root, "stat -c '%U:%G %a' /etc/zone-agent/zone-a1.env").split() == [
        "root:root",
        "600",
    ]
    assert sorted(p.name for p in boot.iterdir()) == ["installed", "zone-b1.error", "zone-b1.toml"]
    assert "zone-b1.toml" in (boot / "zone-b1.error").read_text()
    assert (wants / "zone-agent@zone-a1.service").is_symlink()
    assert not (wants / "zone-agent@zone-b1.service").exists()
    (boot / "zone-b1.toml").unlink()

    sw, store, boot_count, log = run_node(root, broker)
    assert (sw, boot_count) == (OLD, 1), log[-3000:]

    # Upgrade: new code, the same node file, state and store; a site's edit of the udev
    # rules (a conffile) is kept.
    rules = root / "etc/udev/rules.d/99-zone-agent.rules"
    rules.write_text(rules.read_text() + "# this site's scanner\n")
    done = dpkg(root, "upgrade", "-i", f"/tmp/{NEW}.deb")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert rules.read_text().endswith("# this site's scanner\n")
    assert (root / "etc/zone-agent/zone-a1.env").is_file()
    sw, store_after, boot_count, log = run_node(root, broker)
    assert (sw, store_after, boot_count) == (NEW, store, 2), log[-3000:]

    # Downgrade over a store of a newer schema: the older package refuses to install, the
    # newer one stays; and its code too refuses to open it, naming the file.
    db = f"{STATE}/state.sqlite3"
    ok(root, f"sqlite3 {db} 'PRAGMA user_version = {SCHEMA_VERSION + 1}'")
    done = dpkg(root, "downgrade (refused)", "-i", f"/tmp/{OLD}.deb")
    assert done.returncode != 0
    assert f"{db} has store schema {SCHEMA_VERSION + 1}, written by a newer" in done.stderr
    assert (
        ok(root, "dpkg-query -W -f '${Version} ${Status}' zone-agent")
        == f"{NEW} install ok installed"
    )
    refused = sh(
        root, f"/opt/zone-agent/venv/bin/zone-agent run {NODE} --simulate --state-dir {STATE}"
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"{db}: store schema {SCHEMA_VERSION + 1} was written by a newer" in refused.stderr
    ok(root, f"sqlite3 {db} 'PRAGMA user_version = {SCHEMA_VERSION}'")

    # Remove keeps node files, secrets, state and the user; purge takes them all.
    done = dpkg(root, "remove", "-r", "zone-agent")
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (root / "opt/zone-agent/venv").exists()
    for kept in ("etc/zone-agent/zone-a1.toml", "etc/zone-agent/zone-a1.env", db[1:]):
        assert (root / kept).is_file(), kept
    assert sh(root, "getent passwd zone-agent").returncode == 0
    done = dpkg(root, "purge", "-P", "zone-agent")
    assert done.returncode == 0, done.stderr[-2000:]
    for gone in ("etc/zone-agent", "var/lib/zone-agent", "opt/zone-agent/venv"):
        assert not (root / gone).exists(), gone
    assert not rules.exists()
    assert not (wants / "zone-agent@zone-a1.service").is_symlink()
    assert sh(root, "getent passwd zone-agent").returncode == 2

    print(  # the figures the issue asks for, with -s
        "package sizes: "
        + ", ".join(f"{v} {s / 1e6:.1f} MB" for v, s in sizes.items())
        + "; "
        + ", ".join(f"{what} {s:.1f} s" for what, s in TIMES.items())
    )
