"""docs/asyncapi.yaml and docs/protocol.md say exactly what the code puts on the wire.

Every message type the code knows (the ``COMMANDS`` and ``EVENTS`` tables once every module
under ``agent/workflows/`` has registered its own, plus ``ack``, ``state`` and ``batch``) has
one entry under ``components.messages`` of docs/asyncapi.yaml, keyed ``cmd.<name>``,
``evt.<name>``, ``ack``, ``state`` or ``batch``, and the document has no other. Adding a
message type: register it in its workflow module, then regenerate the document with
``python -m agent.oms.asyncapi > docs/asyncapi.yaml``.

The examples in docs/protocol.md are the output of the script printed above them; run this
file (``.venv/bin/python tests/test_asyncapi.py``) to paste a fresh output in.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import pkgutil
import re
from pathlib import Path
from typing import Any

import yaml

import agent
import agent.workflows
from agent.oms.asyncapi import render
from agent.wire.messages import COMMANDS, EVENTS, PROTOCOL, Ack, State, Wire
from agent.wire.topics import NodeTopics, site_rebirth

ROOT = Path(__file__).resolve().parent.parent
ASYNCAPI = ROOT / "docs" / "asyncapi.yaml"
PROTOCOL_MD = ROOT / "docs" / "protocol.md"
REGENERATE = "python -m agent.oms.asyncapi > docs/asyncapi.yaml"

SCRIPT = re.compile(r"<!-- examples-script -->\n```python\n(.*?)\n```\n", re.S)
OUTPUT = re.compile(r"(<!-- examples-begin -->\n)(.*?)(<!-- examples-end -->)", re.S)


def _import_workflows() -> None:
    """Import every module under agent/workflows/, so each registers its message types."""
    for module in pkgutil.iter_modules(agent.workflows.__path__):
        importlib.import_module(f"agent.workflows.{module.name}")


def _in_code() -> dict[str, tuple[str, str, type[Wire] | None]]:
    """Document key -> (channel, topic name, body model) of every message type in the code.

    ``batch`` has no body model: its body is ``{events: [[name, envelope], ...]}``.
    """
    _import_workflows()
    found: dict[str, tuple[str, str, type[Wire] | None]] = {}
    for name, model in COMMANDS.items():
        found[f"cmd.{name}"] = ("commands", name, model)
    for name, model in EVENTS.items():
        found[f"evt.{name}"] = ("events", name, model)
    found["batch"] = ("events", "batch", None)
    found["ack"] = ("ack", "ack", Ack)
    found["state"] = ("state", "state", State)
    return found


def _doc() -> dict[str, Any]:
    doc = yaml.safe_load(ASYNCAPI.read_text())
    assert isinstance(doc, dict), f"{ASYNCAPI} is not a YAML map"
    return doc


def _problems(title: str, problems: list[str]) -> str:
    return "\n".join([title, *(f"  - {p}" for p in problems), f"(regenerate: {REGENERATE})"])


def test_every_message_type_is_documented_and_nothing_else() -> None:
    in_code = set(_in_code())
    documented = set(_doc()["components"]["messages"])
    missing = sorted(in_code - documented)
    extra = sorted(documented - in_code)
    assert not missing and not extra, _problems(
        "docs/asyncapi.yaml and the code disagree on the message types:",
        [
            f"in the code, missing from docs/asyncapi.yaml: {', '.join(missing) or '(none)'}",
            f"in docs/asyncapi.yaml, not in the code: {', '.join(extra) or '(none)'}",
        ],
    )


def test_each_message_is_on_its_channel_under_its_topic_name() -> None:
    doc = _doc()
    problems = []
    for key, (channel, name, _) in sorted(_in_code().items()):
        message = doc["components"]["messages"].get(key)
        if message is None:
            continue  # reported by the test above
        on_channel = doc["channels"][channel]["messages"].get(key)
        if on_channel != {"$ref": f"#/components/messages/{key}"}:
            problems.append(f"{key} is not listed in channels.{channel}.messages")
        if message.get("name") != name:
            problems.append(f"{key} has name {message.get('name')!r}, the topic says {name!r}")
    assert not problems, _problems("messages not where the topics put them:", problems)


def test_channels_are_the_topics_of_the_code_and_operations_the_node_view() -> None:
    doc = _doc()
    topics = NodeTopics("{site}", "{node}")
    addresses = {name: channel["address"] for name, channel in doc["channels"].items()}
    assert addresses == {
        "commands": topics.cmd("{name}"),
        "events": topics.evt("{name}"),
        "ack": topics.ack,
        "state": topics.state,
        "siteRebirth": site_rebirth("{site}"),
    }
    actions = {
        op["channel"]["$ref"].removeprefix("#/channels/"): op["action"]
        for op in doc["operations"].values()
    }
    assert actions == {
        "commands": "receive",
        "events": "send",
        "ack": "receive",
        "state": "send",
        "siteRebirth": "receive",
    }
    for name, channel in doc["channels"].items():
        params = set(re.findall(r"\{(\w+)\}", channel["address"]))
        assert set(channel["parameters"]) == params, f"channels.{name}.parameters"


def test_document_version_is_the_protocol_version() -> None:
    doc = _doc()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["version"] == PROTOCOL == "1.3"
    assert doc["defaultContentType"] == "application/msgpack"


def test_every_body_has_the_fields_of_its_model() -> None:
    doc = _doc()
    problems = []
    for key, (_, _, model) in sorted(_in_code().items()):
        message = doc["components"]["messages"].get(key)
        if message is None or model is None:
            continue
        body = message["payload"]["allOf"][1]["properties"]["body"]
        fields = model.model_fields
        documented = set(body.get("properties", {}))
        if documented != set(fields):
            problems.append(
                f"{key}: body fields in the document {sorted(documented)}, "
                f"in {model.__name__} {sorted(fields)}"
            )
        required = {n for n, f in fields.items() if f.is_required()}
        if set(body.get("required", [])) != required:
            problems.append(
                f"{key}: required {sorted(body.get('required', []))}, "
                f"{model.__name__} requires {sorted(required)}"
            )
        if body.get("additionalProperties") is not False:
            problems.append(f"{key}: body must say additionalProperties: false")
    assert not problems, _problems("message bodies differ from the models:", problems)


def test_document_is_what_the_models_generate() -> None:
    assert ASYNCAPI.read_text() == render(), f"docs/asyncapi.yaml is stale: run `{REGENERATE}`"


def test_every_reference_resolves() -> None:
    doc = _doc()

    def walk(node: object) -> list[str]:
        if isinstance(node, dict):
            refs = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return refs + [r for v in node.values() for r in walk(v)]
        if isinstance(node, list):
            return [r for v in node for r in walk(v)]
        return []

    refs = walk(doc)
    assert "#/components/schemas/Envelope" in refs
    for ref in refs:
        target: object = doc
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(target, dict) and part in target, f"unresolved {ref}"
            target = target[part]


def _reply_reasons() -> set[str]:
    """Every reason code a reply can carry, as written in the code under agent/."""
    patterns = [
        r'MessageRejected\(\s*"(\w+)"',
        r'Verdict\.rejected\(\s*"(\w+)"',
        r'status="rejected",\s*reason="(\w+)"',
    ]
    found: set[str] = set()
    for path in Path(agent.__file__).parent.rglob("*.py"):
        text = path.read_text()
        for pattern in patterns:
            found.update(re.findall(pattern, text))
    return found


def test_every_reply_reason_is_in_protocol_md() -> None:
    reasons = _reply_reasons()
    assert {"too_large", "invalid_body", "outbox_full", "unknown_location"} <= reasons
    text = PROTOCOL_MD.read_text()
    missing = sorted(r for r in reasons if f"| `{r}` |" not in text)
    assert not missing, (
        f"reason codes the code can put in a reply, missing from the reason tables of "
        f"docs/protocol.md: {', '.join(missing)}"
    )


def examples_output() -> str:
    """Run the script of docs/protocol.md's examples section; its standard output."""
    found = SCRIPT.search(PROTOCOL_MD.read_text())
    assert found is not None, "docs/protocol.md has no <!-- examples-script --> python block"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(found.group(1), "protocol.md examples", "exec"), {"__name__": "examples"})
    return out.getvalue()


def test_protocol_examples_are_what_the_codec_writes() -> None:
    found = OUTPUT.search(PROTOCOL_MD.read_text())
    assert found is not None, "docs/protocol.md has no examples-begin/examples-end markers"
    assert found.group(2) == examples_output(), (
        "the examples in docs/protocol.md are stale: run `.venv/bin/python tests/test_asyncapi.py`"
    )


if __name__ == "__main__":
    text = PROTOCOL_MD.read_text()
    PROTOCOL_MD.write_text(OUTPUT.sub(lambda m: m.group(1) + examples_output() + m.group(3), text))
    print(f"examples written to {PROTOCOL_MD}")
