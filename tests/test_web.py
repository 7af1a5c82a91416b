"""The node's web server under malformed and awkward requests (agent/web.py, on h11).

A real server on a loopback port, spoken to byte by byte: what a browser, curl or a broken
client sends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from unittest import mock

from agent import web
from agent.web import WebServer


@asynccontextmanager
async def server() -> AsyncIterator[WebServer]:
    async def control(device: str, action: str, args: dict[str, object]) -> dict[str, object]:
        return {"device": device, "action": action, "args": args}

    srv = WebServer(
        lambda: {"node": "zone-a1", "lights": {}},
        control=control,
        sim_state=lambda device: {},
    )
    await srv.start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.close()


async def exchange(srv: WebServer, raw: bytes, *, until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(raw)
    await writer.drain()
    try:
        async with asyncio.timeout(10):
            if until_close:
                return await reader.read(-1)
            return await reader.read(64 * 1024)
    finally:
        writer.close()


def status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def test_get_and_head_and_keep_alive() -> None:
    async def scenario() -> None:
        async with server() as srv:
            reply = await exchange(
                srv,
                b"GET /api/state HTTP/1.1\r\nHost: x\r\n\r\n"
                b"HEAD /api/state HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            first, _, second = reply.partition(b"HTTP/1.1 200 OK\r\n")[2].partition(b"HTTP/1.1")
            assert b'{"node":"zone-a1","lights":{}}' in first
            head_headers, _, head_body = second.partition(b"\r\n\r\n")
            assert b"content-length: 30" in head_headers.lower()
            assert head_body == b""  # HEAD: the length of GET's body, and no body

            page = await exchange(srv, b"HEAD / HTTP/1.0\r\n\r\n")
            assert status(page) == 200 and page.endswith(b"\r\n\r\n")

    asyncio.run(scenario())


def test_a_bad_content_length_is_a_400_not_a_traceback() -> None:
    async def scenario() -> None:
        async with server() as srv:
            reply = await exchange(
                srv, b"POST /sim/scanner/scan HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"
            )
            assert status(reply) == 400
            garbage = await exchange(srv, b"\x16\x03\x01\x02\x00 hello\r\n\r\n")
            assert status(garbage) == 400

    asyncio.run(scenario())


def test_a_body_too_large_is_a_413_and_its_bytes_are_never_parsed() -> None:
    async def scenario() -> None:
        async with server() as srv:
            big = b"x" * (web.MAX_BODY + 1)
            reply = await exchange(
                srv,
                b"POST /sim/scanner/scan HTTP/1.1\r\nHost: x\r\n"
                + f"Content-Length: {len(big)}\r\n\r\n".encode()
                + big,
            )
            assert status(reply) == 413
            assert reply.count(b"HTTP/1.1") == 1  # the body was not read as a next request

            chunked = b"".join(
                f"{len(part):x}\r\n".encode() + part + b"\r\n"
                for part in [b"y" * 40_000, b"y" * 40_000]
            )
            reply = await exchange(
                srv,
                b"POST /sim/scanner/scan HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                + chunked
                + b"0\r\n\r\n",
            )
            assert status(reply) == 413

    asyncio.run(scenario())


def test_a_post_with_a_json_body_reaches_the_control_api() -> None:
    async def scenario() -> None:
        async with server() as srv:
            body = json.dumps({"code": "4006381333931"}).encode()
            reply = await exchange(
                srv,
                b"POST /sim/scanner/scan HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body,
            )
            assert status(reply) == 200
            assert json.loads(reply.partition(b"\r\n\r\n")[2]) == {
                "device": "scanner",
                "action": "scan",
                "args": {"code": "4006381333931"},
            }

    asyncio.run(scenario())


def test_a_request_that_stops_half_way_is_timed_out() -> None:
    async def scenario() -> None:
        with mock.patch.object(web, "REQUEST_TIMEOUT_S", 0.3):
            async with server() as srv:
                reply = await exchange(srv, b"GET /api/state HTTP/1.1\r\nHost: x\r\n")
                assert status(reply) == 408
                body_cut = await exchange(
                    srv, b"POST /sim/a/b HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{}"
                )
                assert status(body_cut) == 408
                # An idle keep-alive connection is closed without a word.
                assert await exchange(srv, b"") == b""

    asyncio.run(scenario())
