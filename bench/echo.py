"""The Python floor: a bare aiomqtt echo (subscribe, decode, re-encode, publish).

Run as its own process: ``python -m bench.echo PORT IN_TOPIC OUT_TOPIC``. Each message on
``IN_TOPIC`` is decoded with ``agent.wire.codec`` (limits, envelope validation), encoded
again with the same id and published at QoS 1 on ``OUT_TOPIC``. TCP_NODELAY is set, and
publishes awaiting PUBACK are bounded (100), as ``agent.link.transport`` does: aiomqtt
scans every pending publish on each call. It prints ``ready`` once subscribed.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import aiomqtt

from agent.wire import codec


async def echo(port: int, inbound: str, outbound: str) -> None:
    """Echo until killed."""
    slots = asyncio.Semaphore(100)
    tasks: set[asyncio.Task[None]] = set()
    async with aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier="bench-echo",
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        max_inflight_messages=100,
    ) as client:

        async def send(payload: bytes) -> None:
            try:
                await client.publish(outbound, payload, qos=1)
            finally:
                slots.release()

        await client.subscribe(inbound, qos=1)
        print("ready", flush=True)
        async for message in client.messages:
            payload = message.payload
            assert isinstance(payload, bytes | bytearray)
            env = codec.envelope_from(codec.unpack(bytes(payload)))
            out = codec.encode(env.body, msg_id=env.id, ts=env.ts, corr=env.corr)
            await slots.acquire()
            task = asyncio.create_task(send(out))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


if __name__ == "__main__":
    asyncio.run(echo(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
