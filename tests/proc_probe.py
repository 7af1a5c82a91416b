"""Run the node's /proc readers under /proc mounted as systemd mounts it for the unit.

Started by tests/test_systemd.py as ``unshare -m --propagation private python
tests/proc_probe.py ...`` (root, in a mount namespace of its own, so nothing it mounts is
seen outside). It mounts a fresh procfs on /proc with the options the unit's
``ProtectProc=``/``ProcSubset=`` give, puts a Raspberry Pi's /proc/cpuinfo over the host's
(where /proc has one to cover: the host is not a Pi), optionally a /dev holding a
/dev/gpiochip0 node of another owner and group ``--chip-group``, and then, as root without
the capabilities that bypass file permissions (a service user is not root: this keeps the
interpreter, wherever it is installed, readable), runs:

* prometheus_client's process collector (the node's ``process_*`` metrics);
* ``zone-agent run NODE_FILE``, whose GPIO device resolves gpiozero's pin factory (board
  identification from /proc, then lgpio opening the chip).

It prints one JSON line: the process metric names and the run's exit code; the run's log
goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import io
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--proc-options", required=True, help="mount -o for /proc ('' = none)")
    parser.add_argument("--cpuinfo", type=Path, help="a Pi's /proc/cpuinfo to show")
    parser.add_argument("--chip-group", help="give /dev a gpiochip0 owned by this group")
    parser.add_argument("--measure", action="store_true", help="(after the mounts)")
    parser.add_argument("node_file", type=Path)
    args = parser.parse_args()

    if args.measure:
        return measure(args.node_file)
    options = ["-o", args.proc_options] if args.proc_options else []
    _mount("-t", "proc", *options, "proc", "/proc")
    if args.cpuinfo is not None and os.path.exists("/proc/cpuinfo"):
        # The host's own cpuinfo is an x86 one; a Pi's is what gpiozero reads on the floor.
        # Under ProcSubset=pid there is no /proc/cpuinfo to cover, as on a Pi.
        _mount("--bind", str(args.cpuinfo), "/proc/cpuinfo")
    if args.chip_group is not None:
        # A private /dev whose gpiochip0 is a character node of an unregistered major:
        # opening it fails like a chip the user may not open, without touching real hardware.
        _mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/dev")
        for name, major, minor in (("null", 1, 3), ("zero", 1, 5), ("urandom", 1, 9)):
            os.mknod(f"/dev/{name}", 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.mknod("/dev/gpiochip0", 0o660 | stat.S_IFCHR, os.makedev(511, 0))
        os.chown("/dev/gpiochip0", 1, grp.getgrnam(args.chip_group).gr_gid)
    setpriv = shutil.which("setpriv") or sys.exit("setpriv (util-linux) is not installed")
    drop = "--bounding-set=-dac_override,-dac_read_search"
    here = str(Path(__file__).resolve())
    os.execv(setpriv, [setpriv, drop, sys.executable, here, *sys.argv[1:], "--measure"])


def measure(node_file: Path) -> int:
    """The process metrics and the exit code of ``zone-agent run node_file``."""
    from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    exposition = generate_latest(registry).decode()
    metrics = sorted({line.split()[2] for line in exposition.splitlines() if "# TYPE" in line})

    from agent.cli import main as zone_agent

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = zone_agent(["run", str(node_file)])
    print(json.dumps({"process_metrics": metrics, "run_exit": code}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
