"""The node's small local web server: screens, state API and simulation control API.

When the node is simulated, the control API drives the simulated devices from outside
the process. It is a minimal HTTP/1.1 server on asyncio streams (GET/POST, JSON, server-sent events,
static files) rather than a framework: a pick node must stay under 45 MB, and aiohttp
alone costs more than 10 MB. It binds to 127.0.0.1 unless the node file says otherwise.

Routes (see docs/simulation.md):

* ``GET /api/state``: the node's state as JSON (the screen's data).
* ``GET /api/stream``: the same as server-sent events, one per change.
* ``GET /sim``: every simulator's state; ``GET /sim/{device}``: one.
* ``POST /sim/{device}/{action}`` with a JSON object: act on a simulated device.
* ``GET /metrics``: Prometheus metrics, text exposition format (docs/metrics.md).
* ``GET /`` and ``/static/...``: the screen.

``start_metrics`` opens a second listener that answers ``GET /metrics`` and nothing else,
so Prometheus on the LAN can scrape a node whose screen and API stay on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

log = logging.getLogger("agent.web")

MAX_BODY = 64 * 1024
MAX_HEADER_LINES = 64


@dataclass(frozen=True, slots=True)
class Response:
    """An HTTP response."""

    status: int
    body: bytes
    content_type: str = "application/json"

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Response:
        """A JSON response."""
        return cls(status, json.dumps(value, separators=(",", ":"), default=str).encode())

    @classmethod
    def error(cls, status: int, message: str) -> Response:
        """A JSON error ``{"error": message}``."""
        return cls.json({"error": message}, status)


StateFn = Callable[[], dict[str, Any]]
ControlFn = Callable[[str, str, dict[str, Any]], Awaitable[dict[str, Any]]]
SimStateFn = Callable[[str | None], dict[str, Any]]
MetricsFn = Callable[[], bytes]

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    500: "Internal Server Error",
}


class WebServer:
    """Serves one node's screen and APIs.

    Args:
        state: returns the node's state as a JSON-able map.
        page: the screen's file name under ``agent/static`` (``zone.html``, ``pack.html``).
        control: acts on a simulator (``device, action, args``); ``None`` unless simulated.
        sim_state: a simulator's state (``None`` for all); ``None`` unless simulated.
        stream_interval_s: how often the event stream looks for changes.
        metrics: renders ``GET /metrics`` (Prometheus text format); ``None``: no such route.
    """

    def __init__(
        self,
        state: StateFn,
        *,
        page: str = "zone.html",
        control: ControlFn | None = None,
        sim_state: SimStateFn | None = None,
        stream_interval_s: float = 0.2,
        metrics: MetricsFn | None = None,
    ) -> None:
        self.state = state
        self.page = page
        self.control = control
        self.sim_state = sim_state
        self.stream_interval_s = stream_interval_s
        self.metrics = metrics
        self._server: asyncio.Server | None = None
        self._metrics_server: asyncio.Server | None = None
        self.metrics_port = 0
        self._clients: dict[asyncio.StreamWriter, asyncio.Task[Any]] = {}
        self.port = 0

    async def start(self, bind: str, port: int) -> int:
        """Listen; returns the port (useful when ``port`` is 0)."""
        self._server = await asyncio.start_server(self._client, bind, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def start_metrics(self, bind: str, port: int) -> int:
        """Listen for ``GET /metrics`` only, on another address; returns the port."""
        self._metrics_server = await asyncio.start_server(self._metrics_client, bind, port)
        self.metrics_port = self._metrics_server.sockets[0].getsockname()[1]
        return self.metrics_port

    async def close(self) -> None:
        """Stop listening, close open connections (event streams too) and wait for them."""
        for server in (self._server, self._metrics_server):
            if server is not None:
                server.close()
        self._server = self._metrics_server = None
        clients = list(self._clients.items())
        for writer, _ in clients:
            writer.close()
        if clients:
            await asyncio.wait([task for _, task in clients], timeout=2)

    async def _metrics_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await self._client(reader, writer, metrics_only=True)

    async def _client(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        metrics_only: bool = False,
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients[writer] = task
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    break
                method, path, body = request
                if metrics_only:
                    response = await self._metrics_route(method, path, body)
                elif method == "GET" and path == "/api/stream":
                    await self._stream(writer)
                    break
                else:
                    response = await self._route(method, path, body)
                self._write(writer, response)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the browser went away
        finally:
            self._clients.pop(writer, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[str, str, bytes] | None:
        line = await reader.readline()
        if not line:
            return None
        parts = line.decode("latin-1").split()
        if len(parts) != 3:
            return None
        method, target = parts[0], parts[1]
        length = 0
        for _ in range(MAX_HEADER_LINES):
            header = await reader.readline()
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip() or 0)
        if length > MAX_BODY:
            return method, target, b"\x00" * (MAX_BODY + 1)
        body = await reader.readexactly(length) if length else b""
        return method, unquote(urlsplit(target).path), body

    @staticmethod
    def _write(writer: asyncio.StreamWriter, response: Response) -> None:
        head = (
            f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'OK')}\r\n"
            f"Content-Type: {response.content_type}\r\n"
            f"Content-Length: {len(response.body)}\r\n"
            "Cache-Control: no-store\r\n\r\n"
        )
        writer.write(head.encode() + response.body)

    async def _route(self, method: str, path: str, body: bytes) -> Response:
        try:
            if len(body) > MAX_BODY:
                return Response.error(413, "body too large")
            if method == "GET" and path == "/api/state":
                return Response.json(self.state())
            if method == "GET" and path == "/metrics" and self.metrics is not None:
                return Response(200, self.metrics(), METRICS_CONTENT_TYPE)
            if path.startswith("/sim"):
                return await self._sim(method, path, body)
            if method == "GET" and path == "/":
                return self._page()
            if method == "GET" and path.startswith("/static/"):
                return self._static(path.removeprefix("/static/"))
            return Response.error(404, f"no route {method} {path}")
        except Exception as exc:  # one bad request must not stop the server
            log.exception("request %s %s failed", method, path)
            return Response.error(500, str(exc))

    async def _metrics_route(self, method: str, path: str, body: bytes) -> Response:
        if method == "GET" and path == "/metrics":
            return await self._route(method, path, body)
        return Response.error(404, "this listener serves GET /metrics only")

    async def _sim(self, method: str, path: str, body: bytes) -> Response:
        if self.control is None or self.sim_state is None:
            return Response.error(404, "this node is not simulated")
        parts = [p for p in path.split("/") if p][1:]
        if method == "GET" and len(parts) <= 1:
            try:
                return Response.json(self.sim_state(parts[0] if parts else None))
            except KeyError as exc:
                return Response.error(404, f"no simulated device {exc}")
        if method != "POST" or len(parts) != 2:
            return Response.error(405, "use POST /sim/{device}/{action}")
        try:
            args = json.loads(body or b"{}")
        except ValueError as exc:
            return Response.error(400, f"body is not JSON: {exc}")
        if not isinstance(args, dict):
            return Response.error(400, "body must be a JSON object")
        try:
            return Response.json(await self.control(parts[0], parts[1], args))
        except KeyError as exc:
            return Response.error(404, f"no simulated device {exc}")
        except (ValueError, TypeError) as exc:
            return Response.error(400, str(exc))

    def _page(self) -> Response:
        """The screen, with the current state embedded so the first paint needs no request."""
        page = self._static(self.page)
        if page.status != 200:
            return page
        state = json.dumps(self.state(), separators=(",", ":"), default=str).replace("</", "<\\/")
        tag = f'<script id="state" type="application/json">{state}</script>'.encode()
        return Response(200, page.body.replace(b"<!--STATE-->", tag), page.content_type)

    def _static(self, name: str) -> Response:
        if "/" in name or name.startswith("."):
            return Response.error(404, "no such file")
        try:
            data = resources.files("agent").joinpath("static", name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return Response.error(404, f"no file {name}")
        kind = {"html": "text/html; charset=utf-8", "js": "text/javascript", "css": "text/css"}
        return Response(200, data, kind.get(name.rsplit(".", 1)[-1], "application/octet-stream"))

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\r\n"
        )
        last = b""
        while True:
            data = json.dumps(self.state(), separators=(",", ":"), default=str).encode()
            if data != last:
                writer.write(b"data: " + data + b"\n\n")
                await writer.drain()
                last = data
            await asyncio.sleep(self.stream_interval_s)
