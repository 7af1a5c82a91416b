"""The one msgpack codec: envelopes in and out, with limits checked before anything else.

Decoding never raises anything but ``MessageRejected``: its ``reason`` is a short code
(``too_large``, ``bad_msgpack``, ``not_a_map``, ``unsupported_version``, ``invalid_envelope``,
``unknown_type``, ``invalid_body``) and ``detail`` says which field and why.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import msgpack
from pydantic import ValidationError

from agent.errors import MessageRejected
from agent.wire.messages import (
    MAX_PAYLOAD_BYTES,
    PROTOCOL_MAJOR,
    Envelope,
    Wire,
)

_UNPACK_LIMITS: dict[str, int] = {
    "max_str_len": 64 * 1024,
    # A carrier's PDF or PNG label is one bin of up to 400,000 bytes (the pack command's
    # carrier_label.data; carrier PDFs run past 64 KiB): bins are bounded by the payload.
    "max_bin_len": MAX_PAYLOAD_BYTES,
    "max_array_len": 10_000,
    "max_map_len": 256,
    "max_ext_len": 0,
}


def new_id() -> str:
    """A fresh message id: 16 hex digits from the OS's random source."""
    return os.urandom(8).hex()


def encode(
    body: Wire | Mapping[str, Any],
    *,
    msg_id: str,
    ts: int,
    boot: int | None = None,
    store: str | None = None,
    seq: int | None = None,
    corr: str | None = None,
) -> bytes:
    """Encode one message (envelope and body) as msgpack."""
    env: dict[str, Any] = {"v": PROTOCOL_MAJOR, "id": msg_id, "ts": ts}
    if boot is not None:
        env["boot"] = boot
    if store is not None:
        env["store"] = store
    if seq is not None:
        env["seq"] = seq
    if corr is not None:
        env["corr"] = corr
    env["body"] = body.model_dump(exclude_defaults=True) if isinstance(body, Wire) else body
    return msgpack.packb(env, use_bin_type=True)  # type: ignore[no-any-return]


def encode_batch(
    items: Iterable[tuple[str, bytes]], *, msg_id: str, ts: int, boot: int, store: str
) -> bytes:
    """Wrap already-encoded events in one ``batch`` message without decoding them again.

    The body is ``{"events": [[name, envelope], ...]}``; each inner envelope keeps its seq.
    """
    items = list(items)
    pack = msgpack.Packer(use_bin_type=True).pack
    parts = [
        b"\x86",  # map of 6 entries: v, id, ts, boot, store, body
        pack("v"),
        pack(PROTOCOL_MAJOR),
        pack("id"),
        pack(msg_id),
        pack("ts"),
        pack(ts),
        pack("boot"),
        pack(boot),
        pack("store"),
        pack(store),
        pack("body"),
        b"\x81",  # map of 1 entry: events
        pack("events"),
        msgpack.Packer().pack_array_header(len(items)),
    ]
    for name, raw in items:
        parts.append(b"\x92")  # array of 2: name, envelope
        parts.append(pack(name))
        parts.append(raw)
    return b"".join(parts)


def _describe(exc: ValidationError, limit: int = 3) -> str:
    out = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "(message)"
        out.append(f"{where}: {err['msg']}")
    more = exc.error_count() - limit
    if more > 0:
        out.append(f"and {more} more")
    return "; ".join(out)[:250]


def unpack(payload: bytes) -> dict[str, Any]:
    """Bytes to a map, within the size and nesting limits."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MessageRejected("too_large", f"{len(payload)} bytes, limit {MAX_PAYLOAD_BYTES}")
    try:
        data = msgpack.unpackb(payload, raw=False, strict_map_key=True, **_UNPACK_LIMITS)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise MessageRejected("bad_msgpack", str(exc)[:200] or type(exc).__name__) from None
    if not isinstance(data, dict):
        raise MessageRejected("not_a_map", f"got {type(data).__name__}")
    return data


def envelope_from(data: Mapping[str, Any]) -> Envelope:
    """Validate the envelope fields of a decoded map."""
    raw_id = data.get("id")
    msg_id = raw_id if isinstance(raw_id, str) and 0 < len(raw_id) <= 64 else None
    version = data.get("v")
    if isinstance(version, int) and version != PROTOCOL_MAJOR:
        raise MessageRejected(
            "unsupported_version", f"v={version}, this node speaks {PROTOCOL_MAJOR}", msg_id
        )
    try:
        return Envelope.model_validate(data)
    except ValidationError as exc:
        raise MessageRejected("invalid_envelope", _describe(exc), msg_id) from None


def body_from(envelope: Envelope, name: str, table: Mapping[str, type[Wire]]) -> Wire:
    """Validate ``envelope.body`` with the model ``table[name]``."""
    model = table.get(name)
    if model is None:
        raise MessageRejected("unknown_type", f"no message type {name!r}", envelope.id)
    try:
        return model.model_validate(envelope.body)
    except ValidationError as exc:
        raise MessageRejected("invalid_body", _describe(exc), envelope.id) from None


def decode(payload: bytes, name: str, table: Mapping[str, type[Wire]]) -> tuple[Envelope, Wire]:
    """Bytes to a validated envelope and body; raises ``MessageRejected``."""
    envelope = envelope_from(unpack(payload))
    return envelope, body_from(envelope, name, table)


def pack_local(value: Any) -> bytes:
    """Encode a value for the node's own store (task state), not for the wire."""
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def unpack_local(data: bytes) -> Any:
    """Decode a value written by ``pack_local``."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)
