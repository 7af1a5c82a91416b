"""House rules as checks: imports point down, vendor libraries stay behind their seams.

The layer table below is docs/architecture.md's, top to bottom; a module may import only
modules of its own layer or of a layer below, and no import circle exists anywhere (imports
under ``TYPE_CHECKING`` and inside functions count: they are knowledge all the same).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = {"serial", "gpiozero", "escpos", "evdev", "spidev", "lgpio", "usb", "ippx", "httpx"}


# docs/architecture.md, "Layers": (layer, module prefixes), top to bottom. A module belongs
# to the layer of the longest prefix it starts with. Change both together.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("process", ("agent.cli", "agent.commands")),
    ("app", ("agent.app",)),
    ("status", ("agent.status",)),
    ("node and OMS side", ("agent.node", "agent.floor", "agent.oms")),
    ("node services", ("agent.web", "agent.systemd", "agent.metrics")),
    ("workflows", ("agent.workflows",)),
    ("config", ("agent.config", "agent.tomllines", "agent.roles", "agent.i18n")),
    ("link", ("agent.link",)),
    ("store", ("agent.store",)),
    ("wire", ("agent.wire",)),
    ("errors", ("agent.errors", "agent")),
    ("drivers", ("devices",)),
    ("backends", ("devices.backends",)),
    ("device core", ("devices.errors",)),
]


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    """Every import between agent/ and devices/ modules, as the import statements say."""
    paths = {module_name(p): p for p in py_files("agent") + py_files("devices")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            found: list[str] = []
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*parts, base] if base else parts)
                found = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            targets.update(t for t in found if t in paths and t != name)
        graph[name] = targets
    return graph


def layer_of(module: str) -> int:
    best, rank = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            # The bare package "agent" holds only __version__: it covers no submodule, so a
            # new module outside the table fails below instead of landing at the bottom.
            inside = module.startswith(prefix + ".") and prefix != "agent"
            if (module == prefix or inside) and len(prefix) > best:
                best, rank = len(prefix), index
    assert rank >= 0, f"{module} is in no layer of LAYERS (docs/architecture.md)"
    return rank


def test_imports_point_down_the_layer_table() -> None:
    upward = sorted(
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module, targets in import_graph().items()
        for target in targets
        if layer_of(target) < layer_of(module)
    )
    assert upward == []


def test_no_import_circle() -> None:
    graph = import_graph()
    circles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, path)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert circles == []


def test_the_layer_table_is_the_documented_one() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    for name, prefixes in LAYERS:
        row = next((line for line in text.splitlines() if line.startswith(f"| {name} |")), "")
        assert row, f"docs/architecture.md has no row for the layer {name!r}"
        for prefix in prefixes:
            assert f"`{prefix}`" in row, f"docs/architecture.md's {name!r} row lacks {prefix}"


def test_test_fixtures_are_not_installed() -> None:
    # testing/ (cluster brokers) is shared by tests and bench, never shipped to a Pi.
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'include = ["agent*", "devices*"]' in pyproject
    assert (ROOT / "testing" / "localcluster.py").exists()
    assert not (ROOT / "agent" / "localcluster.py").exists()


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
    # The site service (agent/oms/site/, never on a node) delivers webhooks with httpx: there
    # it is the OMS side's HTTP client, not a device's.
    agent_bad = {
        str(p.relative_to(ROOT)): sorted(
            m
            for m in imports(p)
            if top(m) in VENDOR and not (top(m) == "httpx" and "site" in p.parts)
        )
        for p in py_files("agent")
    }
    assert {k: v for k, v in agent_bad.items() if v} == {}


def test_only_the_codec_imports_msgpack_and_only_the_transport_aiomqtt() -> None:
    msgpack_users = {
        str(p.relative_to(ROOT))
        for p in py_files("agent") + py_files("devices")
        if "msgpack" in {top(m) for m in imports(p)}
    }
    assert msgpack_users == {"agent/wire/codec.py"}
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


def test_picking_is_one_role_among_five_not_the_others_library() -> None:
    # The shared kit (scans, settings, notices) lives beside the roles, in agent/workflows/;
    # a role may use another's *messages* (the put wall sends picking's misscan event) but
    # never its machine.
    bad = {
        str(p.relative_to(ROOT)): sorted(
            m
            for m in imports(p)
            if m.startswith("agent.workflows.picking") and m != "agent.workflows.picking.messages"
        )
        for p in py_files("agent/workflows")
        if "picking" not in p.parts
    }
    assert {k: v for k, v in bad.items() if v} == {}


def test_every_role_is_declared_by_its_package() -> None:
    from agent.config import NodeConfig
    from agent.roles import ROLES, manifest

    roles = NodeConfig.model_fields["role"].annotation.__args__  # type: ignore[union-attr]
    assert set(ROLES) == set(roles)
    for name in ROLES:
        declared = manifest(name)
        assert declared.name == name
        assert (ROOT / "agent" / "static" / declared.page).exists()
        assert hasattr(declared.workflow, "from_config")


def test_no_workflow_module_over_900_lines() -> None:
    # house-review.md §3: a workflow module past 900 lines does several jobs; cut it into
    # collaborators over a model (packing/model.py, screen.py) instead of growing it.
    long = {
        str(p.relative_to(ROOT)): n
        for p in py_files("agent/workflows")
        if (n := len(p.read_text().splitlines())) > 900
    }
    assert long == {}
