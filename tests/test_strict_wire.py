"""Wire bodies are strict: no value is converted to the type a field wants.

For every command the code registers, a full valid body is taken, and each of its leaf
fields in turn is given values that lax validation would convert (``True`` or ``"2"`` or
``2.0`` for an int, ``1`` or ``"true"`` for a bool, ``5`` for a string, ``"2.5"`` for a
float, a string for bytes). Each must be ``invalid_body`` with the field's path in the
detail, through the same decode the node runs.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from typing import Any

import pytest

import agent.workflows
from agent.errors import MessageRejected
from agent.wire import codec
from agent.wire.messages import COMMANDS, Ack

for _module in pkgutil.iter_modules(agent.workflows.__path__):
    importlib.import_module(f"agent.workflows.{_module.name}")

_LINE = {
    "sku": "SKU-1",
    "qty": 2,
    "barcodes": ["4006381333931"],
    "unit_weight_g": 120.5,
    "dims_mm": [100, 80, 20],
    "fragile": True,
    "description": "mug",
}

FULL_BODIES: dict[str, dict[str, Any]] = {
    "pick": {
        "tasks": [
            {
                "task": "t1",
                "order": "o1",
                "location": "A-01",
                "sku": "SKU-1",
                "qty": 2,
                "barcodes": ["4006381333931"],
                "wave": "w1",
                "container": "tote-1",
                "priority": 3,
                "express": True,
                "deadline": 1_700_000_000_000,
                "description": "mug",
            }
        ]
    },
    "cancel": {"tasks": ["t1"], "wave": "w1"},
    "wave_begin": {"wave": "w1"},
    "wave_release": {"wave": "w1"},
    "wave_cancel": {"wave": "w1"},
    "ping": {},
    "rebirth": {},
    "pack": {
        "order": "o1",
        "tote": "tote-1",
        "lines": [_LINE],
        "express": True,
        "gift_note": "happy birthday",
        "bonus_item": "sticker",
        "label": {
            "ship_to": {
                "name": "A. Buyer",
                "address": ["1 Main St"],
                "postcode": "12345",
                "city": "Town",
                "country": "DE",
            },
            "carrier": "DHL",
            "service": "express",
            "extension": 1,
            "company_prefix": "4012345",
            "serial_reference": "42",
        },
        "packing_slip": True,
    },
    "pack_cancel": {"orders": ["o1"]},
    "load": {
        "parcels": [
            {
                "sscc": "340123450000000427",
                "tracking": "JD0001",
                "carrier": "DHL",
                "service": "express",
                "order": "o1",
                "express": True,
                "cutoff": 1_700_000_000_000,
            }
        ]
    },
    "manifest_close": {"carrier": "DHL"},
    "rma": {
        "rmas": [
            {
                "rma": "RMA-1",
                "order": "o1",
                "tracking": "JD0002",
                "lines": [
                    {
                        "sku": "SKU-1",
                        "qty": 2,
                        "barcodes": ["4006381333931"],
                        "reason": "defective",
                        "hazardous": True,
                        "description": "mug",
                    }
                ],
            }
        ]
    },
    "put": {
        "orders": [
            {
                "order": "o1",
                "slot": "C1",
                "items": [{"sku": "SKU-1", "qty": 2, "barcodes": ["4006381333931"]}],
            }
        ]
    },
}
"""A valid body for every command, with every optional field set so that each is mutated.
A new command type must add its own here (the first test says which are missing)."""

OTHER_BODIES: list[tuple[str, dict[str, Any]]] = [
    (
        "pack",
        {
            **{k: v for k, v in FULL_BODIES["pack"].items() if k != "label"},
            "carrier_label": {"format": "pdf", "data": b"%PDF-1.4\n%%EOF\n"},
        },
    ),
]
"""Bodies of the same commands with the fields their full body cannot have at once (a
``pack`` has one label source: the carrier's label instead of the station's own)."""


def _wrong_values(value: Any) -> list[Any]:
    """Values of another type that lax validation would have converted to ``value``'s."""
    if isinstance(value, bool):
        return [1, 0, "true", "1"]
    if isinstance(value, int):
        return [True, str(value), float(value)]
    if isinstance(value, float):
        return [str(value), True]
    if isinstance(value, str):
        return [5, b"bytes", True] if not value.isdigit() else [int(value), value.encode()]
    return []


def _leaves(body: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(body, dict):
        for key, value in body.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(body, list):
        for i, value in enumerate(body):
            yield from _leaves(value, (*path, i))
    else:
        yield path, body


def _replace(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(body, dict):
        return {k: (_replace(v, rest, value) if k == head else v) for k, v in body.items()}
    return [_replace(v, rest, value) if i == head else v for i, v in enumerate(body)]


def _decode(name: str, body: dict[str, Any]) -> None:
    payload = codec.encode(body, msg_id="m1", ts=1)
    codec.decode(payload, name, COMMANDS)


def test_every_registered_command_has_a_full_body_here() -> None:
    assert sorted(COMMANDS) == sorted(FULL_BODIES)


@pytest.mark.parametrize("name", sorted(FULL_BODIES))
def test_the_full_body_is_valid(name: str) -> None:
    _decode(name, FULL_BODIES[name])


@pytest.mark.parametrize(("name", "body"), OTHER_BODIES, ids=repr)
def test_the_other_bodies_are_valid(name: str, body: dict[str, Any]) -> None:
    _decode(name, body)


BODIES = [*sorted(FULL_BODIES.items()), *OTHER_BODIES]
CASES = [
    (i, name, path, wrong)
    for i, (name, body) in enumerate(BODIES)
    for path, value in _leaves(body)
    for wrong in _wrong_values(value)
]


@pytest.mark.parametrize(("i", "name", "path", "wrong"), CASES, ids=repr)
def test_a_value_of_another_type_is_invalid_body_naming_the_field(
    i: int, name: str, path: tuple[Any, ...], wrong: Any
) -> None:
    body = _replace(BODIES[i][1], path, wrong)
    with pytest.raises(MessageRejected) as caught:
        _decode(name, body)
    assert caught.value.reason == "invalid_body"
    assert ".".join(str(p) for p in path) in caught.value.detail


def test_the_cases_cover_every_kind_of_leaf() -> None:
    kinds = {type(value) for _, body in FULL_BODIES.items() for _, value in _leaves(body)}
    assert kinds == {str, int, float, bool}
    assert len(CASES) > 100


def test_carrier_zpl_must_be_msgpack_bin_not_a_string() -> None:
    body = {**FULL_BODIES["pack"], "carrier_zpl": "^XA^XZ"}
    body.pop("label")
    with pytest.raises(MessageRejected) as caught:
        _decode("pack", body)
    assert "carrier_zpl" in caught.value.detail
    _decode("pack", {**body, "carrier_zpl": b"^XA^XZ"})


def test_carrier_label_data_must_be_msgpack_bin_not_a_string() -> None:
    body = dict(OTHER_BODIES[0][1])
    body["carrier_label"] = {"format": "pdf", "data": "%PDF-1.4"}
    with pytest.raises(MessageRejected) as caught:
        _decode("pack", body)
    assert caught.value.reason == "invalid_body"
    assert "carrier_label.data" in caught.value.detail


@pytest.mark.parametrize("field", ["v", "ts", "boot", "seq"])
def test_envelope_numbers_are_strict_too(field: str) -> None:
    env = {"v": 1, "id": "m1", "ts": 1, "boot": 1, "seq": 1, "body": {}}
    for wrong in (True, "1", 1.0):
        with pytest.raises(MessageRejected) as caught:
            codec.envelope_from({**env, field: wrong})
        assert caught.value.reason in ("invalid_envelope", "unsupported_version")


def test_an_ack_with_a_string_seq_is_invalid() -> None:
    payload = codec.encode({"seq": "5"}, msg_id="a1", ts=1)
    with pytest.raises(MessageRejected) as caught:
        codec.decode(payload, "ack", {"ack": Ack})
    assert caught.value.reason == "invalid_body"
    assert "seq" in caught.value.detail
