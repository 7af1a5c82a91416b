"""docs/asyncapi.yaml says exactly what the code puts on the wire."""

from __future__ import annotations

from pathlib import Path

import yaml

from agent.link.asyncapi import render
from agent.link.messages import COMMANDS, EVENTS
from agent.workflows import register_all

DOC = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.yaml"


def test_document_is_what_the_models_generate() -> None:
    assert DOC.read_text() == render(), (
        "docs/asyncapi.yaml is stale: run `python -m agent.link.asyncapi > docs/asyncapi.yaml`"
    )


def test_every_message_type_is_documented_and_nothing_else() -> None:
    register_all()
    doc = yaml.safe_load(DOC.read_text())
    documented = set(doc["components"]["messages"])
    in_code = (
        {f"cmd.{n}" for n in COMMANDS} | {f"evt.{n}" for n in EVENTS} | {"batch", "ack", "state"}
    )
    assert not in_code - documented, (
        f"in the code, missing from the document: {in_code - documented}"
    )
    assert not documented - in_code, f"in the document, not in the code: {documented - in_code}"


def test_every_reference_resolves() -> None:
    doc = yaml.safe_load(DOC.read_text())

    def walk(node: object) -> list[str]:
        if isinstance(node, dict):
            refs = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return refs + [r for v in node.values() for r in walk(v)]
        if isinstance(node, list):
            return [r for v in node for r in walk(v)]
        return []

    for ref in walk(doc):
        target: object = doc
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(target, dict) and part in target, f"unresolved {ref}"
            target = target[part]
