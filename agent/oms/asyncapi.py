"""The AsyncAPI 3.0 document of the wire contract, built from the message models.

``python -m agent.oms.asyncapi > docs/asyncapi.yaml`` regenerates the document; a test
checks the committed file is what the code would write, so the contract for integrators
cannot drift from the models. Channels and operations are from the node's point of view.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from agent.wire.messages import COMMANDS, EVENTS, PROTOCOL, Ack, Envelope, State, Wire
from agent.workflows import register_all

ENVELOPE_DOC = (
    "Every message is a msgpack map: v (protocol major), id (unique message id), ts (ms "
    "since the epoch), boot (node boot counter, node messages), seq (node event sequence, "
    "node events), corr (the command id a reply answers), body (the fields below)."
)


def _schema(model: type[Wire]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return schema


def _defs(models: list[type[Wire]]) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        defs.update(schema.get("$defs", {}))
    return dict(sorted(defs.items()))  # the order modules were imported in must not matter


def _message(name: str, model: type[Wire], summary: str) -> dict[str, Any]:
    return {
        "name": name,
        "title": name,
        "summary": summary,
        "contentType": "application/msgpack",
        "payload": {
            "allOf": [
                {"$ref": "#/components/schemas/Envelope"},
                {"type": "object", "properties": {"body": _schema(model)}},
            ]
        },
    }


def document() -> dict[str, Any]:
    """The whole AsyncAPI document as a map."""
    register_all()
    params = {
        "site": {"description": "The site (warehouse) id."},
        "node": {"description": "The node (zone Pi) id."},
    }
    messages: dict[str, Any] = {}
    for name, model in sorted(COMMANDS.items()):
        messages[f"cmd.{name}"] = _message(name, model, (model.__doc__ or "").split("\n")[0])
    for name, model in sorted(EVENTS.items()):
        messages[f"evt.{name}"] = _message(name, model, (model.__doc__ or "").split("\n")[0])
    messages["batch"] = {
        "name": "batch",
        "title": "batch",
        "summary": "Several node events in one message: body {events: [[name, envelope], ...]}.",
        "contentType": "application/msgpack",
        "payload": {"$ref": "#/components/schemas/Envelope"},
    }
    messages["ack"] = _message("ack", Ack, "Cumulative acknowledgement of node events.")
    messages["state"] = _message("state", State, "Retained birth (online) or Will (offline).")
    ref = "#/components/messages/"
    channels = {
        "commands": {
            "address": "wh/v1/{site}/{node}/cmd/{name}",
            "parameters": {**params, "name": {"description": "The command name."}},
            "messages": {k: {"$ref": ref + k} for k in messages if k.startswith("cmd.")},
        },
        "events": {
            "address": "wh/v1/{site}/{node}/evt/{name}",
            "parameters": {**params, "name": {"description": "The event name, or batch."}},
            "messages": {
                k: {"$ref": ref + k} for k in messages if k.startswith("evt.") or k == "batch"
            },
        },
        "ack": {
            "address": "wh/v1/{site}/{node}/ack",
            "parameters": params,
            "messages": {"ack": {"$ref": ref + "ack"}},
        },
        "state": {
            "address": "wh/v1/{site}/{node}/state",
            "parameters": params,
            "messages": {"state": {"$ref": ref + "state"}},
        },
        "siteRebirth": {
            "address": "wh/v1/{site}/_site/cmd/rebirth",
            "description": (
                "Every node of the site publishes its birth again (at most once a second); "
                "not de-duplicated, not answered: the birth is the answer."
            ),
            "parameters": {"site": params["site"]},
            "messages": {"cmd.rebirth": {"$ref": ref + "cmd.rebirth"}},
        },
    }
    operations = {
        "receiveCommand": {"action": "receive", "channel": {"$ref": "#/channels/commands"}},
        "sendEvent": {"action": "send", "channel": {"$ref": "#/channels/events"}},
        "receiveAck": {"action": "receive", "channel": {"$ref": "#/channels/ack"}},
        "sendState": {"action": "send", "channel": {"$ref": "#/channels/state"}},
        "receiveSiteRebirth": {
            "action": "receive",
            "channel": {"$ref": "#/channels/siteRebirth"},
        },
    }
    models: list[type[Wire]] = [*COMMANDS.values(), *EVENTS.values(), Ack, State]
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "zone-agent node protocol",
            "version": PROTOCOL,
            "description": (
                # No build version here: it changes with every commit (setuptools-scm), the
                # protocol's only when the models do (``version`` above).
                "Generated from zone-agent's message models by "
                "`python -m agent.oms.asyncapi`; prose in docs/protocol.md. " + ENVELOPE_DOC
            ),
        },
        "defaultContentType": "application/msgpack",
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": {"Envelope": Envelope.model_json_schema(), **_defs(models)},
        },
    }


def to_yaml(value: Any, indent: int = 0) -> str:
    """A small YAML emitter for JSON-like data (scalars are written as JSON, valid YAML)."""
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        lines = []
        for key, item in value.items():
            text = to_yaml(item, indent + 1)
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{json.dumps(str(key))}:\n{text}")
            else:
                lines.append(f"{pad}{json.dumps(str(key))}: {text}")
        return "\n".join(lines)
    if isinstance(value, list):
        if not value:
            return "[]"
        lines = []
        for item in value:
            text = to_yaml(item, indent + 1)
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}-\n{text}")
            else:
                lines.append(f"{pad}- {text}")
        return "\n".join(lines)
    return json.dumps(value)


def render() -> str:
    """The document as YAML text."""
    return (
        "# Generated: python -m agent.oms.asyncapi > docs/asyncapi.yaml\n"
        + to_yaml(document())
        + "\n"
    )


if __name__ == "__main__":
    sys.stdout.write(render())
