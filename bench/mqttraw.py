"""A lean MQTT 3.1.1 client on asyncio streams: the benchmarks' load generator.

Why not aiomqtt: the driver must be faster than every edge it measures, including the C
pipeline (~6,000 msg/s), and aiomqtt costs ~0.5 ms of CPU per message (reference/mqtt.md
§9). This client does only what the benchmarks need: CONNECT (clean session), SUBSCRIBE at
QoS 1, QoS 1 PUBLISH with a bound on publishes awaiting PUBACK, PUBACK of what arrives,
TCP_NODELAY. Payloads are built and read with ``agent.wire.codec``, so it speaks the same
envelope as the reference OMS.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

OnMessage = Callable[[str, bytes], None]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _str(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("!H", len(raw)) + raw


class RawClient:
    """One MQTT 3.1.1 connection.

    Args:
        host: broker host (127.0.0.1 in the benchmarks).
        port: broker port.
        client_id: the MQTT client id.
        on_message: called on the loop with (topic, payload) for each PUBLISH received.
        max_inflight: most QoS 1 publishes awaiting PUBACK at once.
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        on_message: OnMessage,
        *,
        max_inflight: int = 100,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.on_message = on_message
        self._slots = asyncio.Semaphore(max_inflight)
        self._next_id = 0
        self._acked: dict[int, asyncio.Future[None]] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._connack: asyncio.Future[None] | None = None
        self._subacks: dict[int, asyncio.Future[None]] = {}

    async def connect(self, timeout: float = 5.0) -> None:
        """Open the connection and wait for CONNACK."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), timeout
        )
        self._reader, self._writer = reader, writer
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._connack = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._read_loop())
        var = _str("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60)
        body = var + _str(self.client_id)
        writer.write(b"\x10" + _varint(len(body)) + body)
        await asyncio.wait_for(self._connack, timeout)

    def _packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    async def subscribe(self, topic: str, timeout: float = 5.0) -> None:
        """Subscribe at QoS 1 and wait for SUBACK."""
        assert self._writer is not None
        pid = self._packet_id()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._subacks[pid] = fut
        body = struct.pack("!H", pid) + _str(topic) + b"\x01"
        self._writer.write(b"\x82" + _varint(len(body)) + body)
        await asyncio.wait_for(fut, timeout)

    async def publish(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        """Send a QoS 1 PUBLISH once an in-flight slot is free; returns the PUBACK future."""
        assert self._writer is not None
        await self._slots.acquire()
        pid = self._packet_id()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acked[pid] = fut
        body = _str(topic) + struct.pack("!H", pid) + payload
        self._writer.write(b"\x32" + _varint(len(body)) + body)
        return fut

    async def _read_loop(self) -> None:
        reader = self._reader
        writer = self._writer
        assert reader is not None and writer is not None
        while True:
            head = await reader.readexactly(1)
            length = 0
            shift = 0
            while True:
                byte = (await reader.readexactly(1))[0]
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            body = await reader.readexactly(length) if length else b""
            kind = head[0] >> 4
            if kind == 3:  # PUBLISH
                qos = (head[0] >> 1) & 3
                tlen = struct.unpack_from("!H", body)[0]
                topic = body[2 : 2 + tlen].decode()
                pos = 2 + tlen
                if qos:
                    pid = body[pos : pos + 2]
                    pos += 2
                    writer.write(b"\x40\x02" + pid)
                self.on_message(topic, body[pos:])
            elif kind == 4:  # PUBACK
                fut = self._acked.pop(struct.unpack("!H", body)[0], None)
                if fut is not None:
                    self._slots.release()
                    if not fut.done():
                        fut.set_result(None)
            elif kind == 2:  # CONNACK
                assert self._connack is not None
                if body[1] != 0:
                    self._connack.set_exception(ConnectionError(f"CONNACK code {body[1]}"))
                else:
                    self._connack.set_result(None)
            elif kind == 9:  # SUBACK
                sub = self._subacks.pop(struct.unpack_from("!H", body)[0], None)
                if sub is not None:
                    sub.set_result(None)

    async def close(self) -> None:
        """DISCONNECT and close."""
        if self._writer is not None:
            self._writer.write(b"\xe0\x00")
            try:
                await self._writer.drain()
                self._writer.close()
                await self._writer.wait_closed()
            except (ConnectionError, OSError):
                pass
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
