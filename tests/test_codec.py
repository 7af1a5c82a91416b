"""The codec: round trips, limits and every kind of hostile input."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import MessageRejected
from agent.wire import codec
from agent.wire.messages import COMMANDS, MAX_PAYLOAD_BYTES, PickCommand, PickTask, Reply


def _pick(**task: object) -> bytes:
    body = {
        "tasks": [{"task": "t1", "order": "o1", "location": "A-01", "sku": "S1", "qty": 2, **task}]
    }
    return codec.encode(body, msg_id="m1", ts=1)


def test_round_trip_pick() -> None:
    env, body = codec.decode(_pick(express=True), "pick", COMMANDS)
    assert env.id == "m1" and env.v == 1
    assert isinstance(body, PickCommand)
    assert body.tasks[0] == PickTask(
        task="t1", order="o1", location="A-01", sku="S1", qty=2, express=True
    )


def test_models_are_frozen() -> None:
    task = PickTask(task="t1", order="o1", location="A", sku="S", qty=1)
    with pytest.raises(ValueError):
        task.qty = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("payload", "name", "reason"),
    [
        (b"\xc1", "pick", "bad_msgpack"),
        (msgpack.packb([1, 2]), "pick", "not_a_map"),
        (b"\x00" * (MAX_PAYLOAD_BYTES + 1), "pick", "too_large"),
        (msgpack.packb({"v": 2, "id": "m", "ts": 1, "body": {}}), "ping", "unsupported_version"),
        (msgpack.packb({"v": 1, "id": "m", "ts": "x", "body": {}}), "ping", "invalid_envelope"),
        (
            msgpack.packb({"v": 1, "id": "m", "ts": 1, "body": {}, "extra": 1}),
            "ping",
            "invalid_envelope",
        ),
        (msgpack.packb({"v": 1, "id": "m", "ts": 1, "body": {}}), "self_destruct", "unknown_type"),
        (
            msgpack.packb({"v": 1, "id": "m", "ts": 1, "body": {"tasks": []}}),
            "pick",
            "invalid_body",
        ),
    ],
)
def test_hostile_input_is_rejected_with_a_reason(payload: bytes, name: str, reason: str) -> None:
    with pytest.raises(MessageRejected) as info:
        codec.decode(payload, name, COMMANDS)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("task", "field"),
    [
        ({"qty": 0}, "tasks.0.qty"),
        ({"qty": "many"}, "tasks.0.qty"),
        ({"barcodes": ["x"] * 17}, "tasks.0.barcodes"),
        ({"location": "A" * 65}, "tasks.0.location"),
        ({"colour": "red"}, "tasks.0.colour"),
    ],
)
def test_invalid_body_names_the_field(task: dict[str, object], field: str) -> None:
    with pytest.raises(MessageRejected) as info:
        codec.decode(_pick(**task), "pick", COMMANDS)
    assert info.value.reason == "invalid_body"
    assert info.value.detail.startswith(field)
    assert info.value.message_id == "m1"


def test_too_many_tasks_rejected() -> None:
    tasks = [
        {"task": f"t{i}", "order": "o", "location": "A", "sku": "S", "qty": 1} for i in range(501)
    ]
    with pytest.raises(MessageRejected, match="tasks"):
        codec.decode(codec.encode({"tasks": tasks}, msg_id="m", ts=1), "pick", COMMANDS)


def test_duplicate_task_ids_in_one_command_rejected() -> None:
    t = {"task": "t1", "order": "o", "location": "A", "sku": "S", "qty": 1}
    with pytest.raises(MessageRejected, match="twice"):
        codec.decode(codec.encode({"tasks": [t, t]}, msg_id="m", ts=1), "pick", COMMANDS)


def test_batch_wraps_encoded_events_without_reencoding() -> None:
    first = codec.encode(
        Reply(cmd="pick", status="accepted"), msg_id="a", ts=1, boot=3, seq=7, corr="c1"
    )
    second = codec.encode(
        Reply(cmd="ping", status="accepted"), msg_id="b", ts=2, boot=3, seq=8, corr="c2"
    )
    batch = codec.encode_batch(
        [("reply", first), ("reply", second)], msg_id="x", ts=3, boot=3, store="s1"
    )
    decoded = msgpack.unpackb(batch)
    assert decoded["boot"] == 3 and decoded["id"] == "x" and decoded["store"] == "s1"
    assert codec.envelope_from(decoded).store == "s1"
    assert [name for name, _ in decoded["body"]["events"]] == ["reply", "reply"]
    assert [ev["seq"] for _, ev in decoded["body"]["events"]] == [7, 8]
    assert decoded["body"]["events"][0][1] == msgpack.unpackb(first)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes_only_ever_rejected(payload: bytes) -> None:
    try:
        codec.decode(payload, "pick", COMMANDS)
    except MessageRejected:
        pass


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=80)
    | st.floats(allow_nan=False),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(COMMANDS)),
    st.fixed_dictionaries(
        {"v": st.just(1), "id": st.text(min_size=1, max_size=8), "ts": st.integers(0, 2**40)}
    ),
    st.dictionaries(st.sampled_from(["tasks", "wave", "task", "qty", "x"]), _values, max_size=4),
)
def test_fuzz_structured_maps_only_ever_rejected(
    name: str, env: dict[str, object], body: dict[str, object]
) -> None:
    try:
        codec.decode(msgpack.packb({**env, "body": body}), name, COMMANDS)
    except MessageRejected:
        pass
