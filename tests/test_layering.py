"""House rules as checks: imports point down, vendor libraries stay behind their seams."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = {"serial", "gpiozero", "escpos", "evdev", "spidev", "lgpio", "usb"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def top(name: str) -> str:
    return name.split(".")[0]


def py_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_devices_import_nothing_from_agent() -> None:
    bad = {
        str(p.relative_to(ROOT)): sorted(m for m in imports(p) if top(m) == "agent")
        for p in py_files("devices")
    }
    assert {k: v for k, v in bad.items() if v} == {}


def test_only_backends_import_vendor_libraries() -> None:
    bad = {
        str(p.relative_to(ROOT)): sorted(m for m in imports(p) if top(m) in VENDOR)
        for p in py_files("devices")
        if "backends" not in p.parts
    }
    assert {k: v for k, v in bad.items() if v} == {}
    agent_bad = {
        str(p.relative_to(ROOT)): sorted(m for m in imports(p) if top(m) in VENDOR)
        for p in py_files("agent")
    }
    assert {k: v for k, v in agent_bad.items() if v} == {}


def test_only_the_codec_imports_msgpack_and_only_the_transport_aiomqtt() -> None:
    msgpack_users = {
        str(p.relative_to(ROOT))
        for p in py_files("agent") + py_files("devices")
        if "msgpack" in {top(m) for m in imports(p)}
    }
    assert msgpack_users == {"agent/link/codec.py"}
    mqtt_users = {
        str(p.relative_to(ROOT))
        for p in py_files("agent") + py_files("devices")
        if {"aiomqtt", "paho"} & {top(m) for m in imports(p)}
    }
    assert mqtt_users == {"agent/link/transport.py"}


def test_workflows_do_no_io() -> None:
    forbidden = {
        "asyncio",
        "socket",
        "sqlite3",
        "aiomqtt",
        "agent.node",
        "agent.floor",
        "agent.app",
        "agent.link.transport",
        "agent.web",
    }
    bad = {
        str(p.relative_to(ROOT)): sorted(
            m for m in imports(p) if m in forbidden or top(m) in VENDOR
        )
        for p in py_files("agent/workflows")
    }
    assert {k: v for k, v in bad.items() if v} == {}


def test_only_the_metrics_module_imports_prometheus_client() -> None:
    users = {
        str(p.relative_to(ROOT))
        for p in py_files("agent") + py_files("devices")
        if "prometheus_client" in {top(m) for m in imports(p)}
    }
    assert users <= {"agent/metrics.py"}


def test_the_node_never_imports_the_oms_side() -> None:
    # agent/oms/ (the reference OMS, fulfilment, KPIs, dashboard, demo) talks to nodes only
    # over the broker; what runs on a Pi must not depend on it, so nothing outside the
    # package imports it (tests and bench may).
    bad = {
        str(p.relative_to(ROOT)): sorted(
            m for m in imports(p) if m == "agent.oms" or m.startswith("agent.oms.")
        )
        for p in py_files("agent")
        if "oms" not in p.relative_to(ROOT / "agent").parts[:1]
    }
    assert {k: v for k, v in bad.items() if v} == {}
    assert (ROOT / "agent" / "oms" / "client.py").exists()


def test_the_node_modules_stay_out_of_the_oms_package() -> None:
    # The other direction of "a reader sees at a glance what runs where": the OMS side is
    # the package, and the node's own layers (DESIGN.md §2) are not in it.
    inside = {p.name for p in (ROOT / "agent" / "oms").rglob("*.py")}
    assert not inside & {"node.py", "app.py", "floor.py", "store.py", "transport.py"}
