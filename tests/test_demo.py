"""The warehouse demo in its short mode, its KPI table checked against the events sent.

The demo runs as ``make demo`` would (its own process, seven node processes, a private
Mosquitto), with a handful of orders at high speed. The KPIs it printed are recomputed here
from the recorded events, independently of ``agent.oms.kpi``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
DEMO = [sys.executable, "-m", "agent.oms.demo"]


def _processes_mentioning(text: str) -> list[str]:
    """Live processes (not the demo itself) that mention ``text``: nodes, the broker."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().split(") ", 1)[1][:1]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z" and "-m agent.oms.demo" not in cmdline:
            found.append(cmdline)
    return found


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f} %"


def _nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))]


def _why_it_failed(run: subprocess.CompletedProcess[str], workdir: Path) -> str:
    """The demo's own verdict first, then what its processes warned of, then the rest.

    The demo prints what went wrong (its "!" lines, "not finished after", the orders table,
    "waited in vain") before the "stopped ..." line, and each node's log tail after it; the
    tail of stdout alone showed only the logs, and a node's warning (a press that confirmed
    nothing) could be cut from its tail.
    """
    found = re.search(r"^stopped ", run.stdout, re.MULTILINE)
    end = found.start() if found else len(run.stdout)
    head, logs = run.stdout[:end], run.stdout[end:]
    warned = [
        f"{log.stem}: {line[:300]}"
        for log in sorted(workdir.glob("*.log"))
        for line in log.read_text(errors="replace").splitlines()
        if " WARNING " in line or " ERROR " in line
    ]
    return (
        f"exit {run.returncode}; the demo said:\n{head[-6000:]}\n--- warnings in the logs:\n"
        + "\n".join(warned[-40:])
        + f"\n--- then:\n{logs[-3000:]}\n--- stderr:\n{run.stderr[-2000:]}"
    )


def test_short_demo_kpis_match_the_events(tmp_path: Path) -> None:
    workdir, record, kpi_file = tmp_path / "site", tmp_path / "events.jsonl", tmp_path / "k.json"
    run = subprocess.run(
        [
            *DEMO,
            "--orders",
            "4",
            "--speed",
            "25",
            "--seed",
            "3",
            "--workdir",
            str(workdir),
            "--record",
            str(record),
            "--kpi-json",
            str(kpi_file),
            "--timeout",
            "150",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert run.returncode == 0, _why_it_failed(run, workdir)
    assert (
        "stopped zone-a exit 0, zone-b exit 0, zone-c exit 0, wall-1 exit 0, pack-1 exit 0, "
        "dock-1 exit 0, "
        "returns-1 exit 0" in " ".join(run.stdout.split())
    )
    assert _processes_mentioning(str(workdir)) == []
    # The 300-slot zone on two simulated ATOP controllers, as the dashboard showed it.
    report = json.loads(kpi_file.read_text())
    assert report["locations"]["zone-c"] == 300
    assert report["dashboard"]["zone-c"]["online"] is True
    assert report["dashboard"]["zone-c"]["devices"] == {
        "atop-1": ["atop", "ok"],
        "atop-2": ["atop", "ok"],
        "scanner": ["serial_scanner", "ok"],
    }
    at_c = {
        (e["name"], e["body"]["sku"], e["body"]["picked"])
        for e in (json.loads(line) for line in record.read_text().splitlines())
        if e["node"] == "zone-c" and e["name"] in ("picked", "short")
    }
    # Headphones confirmed by the tag's key; one pair of socks found of two: the tag's
    # up/down keys set 1 and its shortage key sent it.
    assert at_c == {("picked", "HEADPHONES", 1), ("short", "SOCKS-3P", 1)}

    events = [json.loads(line) for line in record.read_text().splitlines()]
    by_name = Counter(e["name"] for e in events)
    report = json.loads(kpi_file.read_text())
    kpis, incidents = report["kpis"], report["incidents"]

    # Every order of the short mode is packed, exactly once, each with one label; the two
    # of the dock's carriers (DPD, Royal Mail) are shipped, the others collect at packing.
    assert report["statuses"] == {
        "WEB-1001": "shipped",
        "AMZ-2001": "packed",
        "SHP-3001": "shipped",
        "EBY-4001": "packed",
    }
    assert report["returns"] == {"RMA-7001": "received", "RMA-7002": "received"}
    packed = [e["body"]["order"] for e in events if e["name"] == "packed"]
    assert sorted(packed) == sorted(report["statuses"])
    labels = [e["body"]["order"] for e in events if e["name"] == "label_printed"]
    assert sorted(labels) == sorted(packed)
    # Each node's events arrived once and in order.
    for node in {e["node"] for e in events}:
        seqs = [e["seq"] for e in events if e["node"] == node]
        assert seqs == sorted(set(seqs))

    # What the simulated people did shows up in the events.
    assert incidents["stuck"] == []
    assert by_name["misscan"] == incidents["misscans"] >= 2
    assert by_name["short"] == incidents["shorts"] >= 1
    assert by_name["print_delayed"] >= 1 and incidents["paper_outs"] == 1
    refusals = [e["body"]["reason"] for e in events if e["name"] == "pack_refused"]
    assert refusals.count("wrong_item") == incidents["wrong_pack_scans"] == 1

    # The KPI table, recomputed from the events.
    confirmations = [e["body"] for e in events if e["name"] in ("picked", "short")]
    lines = len(confirmations)
    assert lines == 8  # 3 + 1 + 3 + 1 lines in the first four sample orders
    assert kpis["lines picked"] == str(lines)
    assert kpis["short-pick rate"] == _pct(by_name["short"], lines)
    hours = (
        max(c["confirmed_at"] for c in confirmations) - min(c["lit_at"] for c in confirmations)
    ) / 3_600_000
    assert kpis["picks per hour"] == f"{lines / hours:.0f}"
    misscanned = {e["body"].get("task") for e in events if e["name"] == "misscan"}
    right = [c for c in confirmations if c["task"] not in misscanned and c["picked"] == c["qty"]]
    assert kpis["line pick accuracy"] == _pct(len(right), lines)
    orders: dict[str, list[bool]] = {}
    for c in confirmations:
        orders.setdefault(c["order"], []).append(c in right)
    assert kpis["order pick accuracy"] == _pct(sum(all(v) for v in orders.values()), len(orders))
    last_counters: dict[str, int] = {}
    for e in events:
        if e["name"] == "counters":
            last_counters[e["node"]] = e["body"]["counts"].get("scans", 0)
    assert set(last_counters) == {"zone-a", "zone-b", "zone-c"}
    assert kpis["mis-scan rate"] == _pct(by_name["misscan"], sum(last_counters.values()))
    weighed = [e["body"] for e in events if e["name"] == "weighed"]
    failed = {w["order"] for w in weighed if w["verdict"] in ("over", "under")}
    assert len(failed) == incidents["weigh_failures"] == 1
    assert kpis["check-weigh failure rate"] == _pct(1, len({w["order"] for w in weighed}))
    assert kpis["orders packed"] == "4"
    starts: dict[str, int] = {}
    for c in confirmations:
        starts[c["order"]] = min(starts.get(c["order"], c["lit_at"]), c["lit_at"])
    ends = {e["body"]["order"]: e["body"]["labelled_at"] for e in events if e["name"] == "packed"}
    lead = [(ends[o] - s) / 1000 for o, s in starts.items()]
    assert kpis["order lead time median"] == f"{statistics.median(lead):.1f} s"
    assert kpis["order lead time p95"] == f"{_nearest_rank(lead, 0.95):.1f} s"

    # The dock: each shipped order loaded once, shipped once, on a closed manifest.
    loaded = [e["body"] for e in events if e["name"] == "loaded"]
    shipped = {e["body"]["order"]: e["body"] for e in events if e["name"] == "shipped"}
    assert sorted(p["order"] for p in loaded) == sorted(shipped) == ["SHP-3001", "WEB-1001"]
    manifests = [e["body"] for e in events if e["name"] == "manifest_closed"]
    assert sorted(p for m in manifests for p in m["loaded"]) == sorted(p["parcel"] for p in loaded)
    assert len(manifests) == incidents["manifests"] == 2
    dock_refusals = [e["body"]["reason"] for e in events if e["name"] == "load_refused"]
    assert dock_refusals == ["wrong_lane"] * incidents["wrong_lanes"] == ["wrong_lane"]
    late = [p for p in loaded if p["late"]]
    assert [p["order"] for p in late] == ["SHP-3001"]  # Royal Mail's cut-off had passed
    assert kpis["parcels loaded after cut-off"] == f"{len(late)} of {len(loaded)}"
    assert kpis["orders shipped"] == "2"
    to_shipped = [(shipped[o]["at"] - s) / 1000 for o, s in starts.items() if o in shipped]
    assert kpis["order lead time to shipped median"] == f"{statistics.median(to_shipped):.1f} s"
    assert kpis["order lead time to shipped p95"] == f"{_nearest_rank(to_shipped, 0.95):.1f} s"

    # Returns: every unit received once, the wrong item sent flagged, the KPIs of the guide.
    received = [e["body"] for e in events if e["name"] == "return_received"]
    assert len(received) == incidents["units_returned"] == 3
    assert len({(u["rma"], u["unit"]) for u in received}) == 3
    wrong = [u for u in received if u["reason"] == "wrong_item_sent"]
    # The bottle is in no RMA: the station knows its barcode, not its SKU.
    assert [(u["order"], u["code"], u["sku"], u["flag"]) for u in wrong] == [
        ("SHP-3001", "4012345000801", None, "not_in_rma")
    ]
    closed = {e["body"]["rma"]: e["body"] for e in events if e["name"] == "return_closed"}
    assert sorted(closed) == ["RMA-7001", "RMA-7002"]
    assert closed["RMA-7002"]["extra"][0]["code"] == "4012345000801"
    return_refusals = [e["body"]["reason"] for e in events if e["name"] == "return_refused"]
    assert return_refusals == ["wrong_bin"] * incidents["wrong_bins"] == ["wrong_bin"]
    sold = sum(e["body"]["units"] for e in events if e["name"] == "packed")
    assert kpis["rate of return"] == _pct(len(received), sold)
    reasons = Counter(u["reason"] for u in received)
    assert set(reasons) == {"size_or_fit", "defective", "wrong_item_sent"}
    for reason, count in reasons.items():
        assert kpis[f"rate of return: {reason}"] == _pct(count, sold)
    assert kpis["picking accuracy (guide)"] == _pct(len(packed) - 1, len(packed))  # 75 %


def _read_until(demo: subprocess.Popen[str], text: str, seconds: float) -> list[str]:
    """The demo's output lines up to the first one containing ``text`` (or its end)."""
    assert demo.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = demo.stdout.readline()
        seen.append(line)
        if text in line or not line:
            break
    assert any(text in line for line in seen), "".join(seen)
    return seen


def _assert_stopped_in_order(workdir: Path, output: str) -> None:
    """Every node exited cleanly (lights off) while the broker was still up; nothing left."""
    stopped = "stopped zone-a exit 0, zone-b exit 0, zone-c exit 0, wall-1 exit 0, pack-1 exit 0"
    assert stopped in " ".join(output.split())
    assert "interrupted: every process stopped" in output
    assert "cannot connect" not in output
    broker_log = (workdir / "broker" / "mosquitto.log").read_text()
    end = broker_log.index("terminating")
    for node in ("zone-a", "zone-b", "zone-c", "wall-1", "pack-1"):
        # A clean DISCONNECT from the node, before the broker stopped.
        assert 0 <= broker_log.find(f"Client demo-{node} disconnected.") < end, broker_log
    for name in ("zone-a", "zone-b", "zone-c", "wall-1", "pack-1"):
        assert "cannot connect" not in (workdir / f"{name}.log").read_text()
    assert _processes_mentioning(str(workdir)) == []


def test_ctrl_c_in_a_terminal_stops_every_process(tmp_path: Path) -> None:
    """Ctrl-C in a terminal: SIGINT to the whole foreground process group, mid-run."""
    workdir = tmp_path / "site"
    demo = subprocess.Popen(
        [*DEMO, "--orders", "6", "--speed", "2", "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        start_new_session=True,  # a process group of its own, as a shell's job would be
    )
    try:
        _read_until(demo, "zone-b screen:", 60)
        started: Any = _processes_mentioning(str(workdir))
        assert len(started) == 9  # seven nodes, the site service and the broker, mid-run
        os.killpg(demo.pid, signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    assert demo.returncode == 130, rest
    _assert_stopped_in_order(workdir, rest)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_sigint_stops_a_demo_kept_running_in_the_background(tmp_path: Path) -> None:
    """``kill -INT`` after the KPI table, to a demo that a script started with ``&``.

    A shell without job control starts background jobs with SIGINT ignored, so Python never
    raises KeyboardInterrupt: the demo must stop on SIGINT by its own handler.
    """
    workdir = tmp_path / "site"
    demo = subprocess.Popen(
        [*DEMO, "--orders", "1", "--speed", "25", "--keep-running", "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        preexec_fn=_ignore_sigint,
    )
    try:
        seen = "".join(_read_until(demo, "still running", 90))
        # seven nodes, the site service and the broker
        assert len(_processes_mentioning(str(workdir))) == 9
        # The dashboard, served by the demo's OMS, is up and shows the site.
        found = re.search(r"dashboard: (http://127\.0\.0\.1:\d+/)", seen)
        assert found is not None, seen
        with urllib.request.urlopen(found.group(1) + "api/state", timeout=10) as response:
            site = json.loads(response.read())
        assert len(site["nodes"]) == 7 and all(n["online"] for n in site["nodes"])
        assert site["orders_total"] == 1 and site["orders_done"] == 1, site["orders"]
        assert any(row[0] == "lines picked" and row[1] != "-" for row in site["kpis"])
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 130, rest
    _assert_stopped_in_order(workdir, rest)


def test_nodes_not_online_within_the_timeout_is_one_line_not_a_traceback() -> None:
    """The nodes-online wait takes --timeout (an emulated Pi needs 46 s for six births)."""
    run = subprocess.run(
        [*DEMO, "--orders", "1", "--timeout", "0.5"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    out = " ".join(run.stdout.split())
    assert run.returncode == 1, out[-3000:] + run.stderr[-2000:]
    assert "Traceback" not in run.stdout + run.stderr
    found = re.search(r"(\d) of 7 nodes online after (\d+\.\d) s; logs in (\S+) \(not online", out)
    assert found, out[-3000:]
    assert int(found[1]) < 6 and 0.5 <= float(found[2]) < 30
    # The temporary directory is kept, so the logs it names are there to read.
    logs = Path(found[3])
    try:
        assert sorted(p.name for p in logs.glob("*.log")) == sorted(
            f"{n}.log"
            for n in (
                "zone-a",
                "zone-b",
                "zone-c",
                "wall-1",
                "pack-1",
                "dock-1",
                "returns-1",
                "site",
            )
        )
        assert _processes_mentioning(str(logs)) == []
    finally:
        shutil.rmtree(logs, ignore_errors=True)
