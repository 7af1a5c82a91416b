"""The node's small local web server: screens, state API and simulation control API.

When the node is simulated, the control API drives the simulated devices from outside
the process. It is a small HTTP/1.1 server on asyncio streams (GET/HEAD/POST, JSON,
server-sent events, static files) rather than a framework: a pick node must stay under
45 MB, and aiohttp alone costs more than 10 MB, uvicorn with starlette 8 MB. The parsing is
h11's (the sans-I/O HTTP/1.1 machine under httpx and uvicorn, +0.5 MB): a malformed request
is a 400, a request that stops half-way is dropped after ``REQUEST_TIMEOUT_S``, a body over
``MAX_BODY`` is a 413 without reading it, and ``HEAD`` answers like ``GET`` without the body.
It binds to 127.0.0.1 unless the node file says otherwise.

Routes (see docs/simulation.md):

* ``GET /api/state``: the node's state as JSON (the screen's data).
* ``GET /api/stream``: the same as server-sent events, one per change.
* ``GET /sim``: every simulator's state; ``GET /sim/{device}``: one.
* ``POST /sim/{device}/{action}`` with a JSON object: act on a simulated device.
* ``GET /metrics``: Prometheus metrics, text exposition format (docs/metrics.md).
* ``GET /api/{path}?query`` (``lookup``) and ``POST /api/{path}`` (``action``): a page's
  own reads and actions (the dashboard's order search, its acknowledgements).
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
from urllib.parse import parse_qsl, unquote, urlsplit

import h11

from agent.i18n import catalogue

log = logging.getLogger("agent.web")

MAX_BODY = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
REQUEST_TIMEOUT_S = 10.0
"""How long a request may take to arrive whole (its headers, then its body)."""


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
ActionFn = Callable[[str, dict[str, Any]], Awaitable[Response]]
LookupFn = Callable[[str, dict[str, str]], Awaitable[Response]]

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    500: b"Internal Server Error",
}


class _Request:
    """One request as read: method, path, query, body; ``refused``: not to be routed."""

    __slots__ = ("body", "method", "path", "query", "refused")

    def __init__(
        self, method: str, path: str, body: bytes, refused: Response | None, query: str = ""
    ) -> None:
        self.method = method
        self.path = path
        self.body = body
        self.refused = refused
        self.query = query


class WebServer:
    """Serves one node's screen and APIs.

    Args:
        state: returns the node's state as a JSON-able map.
        page: the screen's file name under ``agent/static`` (``zone.html``, ``pack.html``).
        control: acts on a simulator (``device, action, args``); ``None`` unless simulated.
        sim_state: a simulator's state (``None`` for all); ``None`` unless simulated.
        stream_interval_s: how often the event stream looks for changes.
        metrics: renders ``GET /metrics`` (Prometheus text format); ``None``: no such route.
        action: answers ``POST /api/{path}`` with a JSON object body (the dashboard's
            acknowledgements); ``None``: no such routes.
        lookup: answers ``GET /api/{path}`` (other than ``state`` and ``stream``) with the
            query's parameters (the dashboard's order search); ``None``: no such routes.
        language: the screen's language (the page's ``lang``).
        words: the screen's words (:func:`agent.i18n.catalogue`), embedded in the page;
            ``None``: the shipped catalogue of ``language``.
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
        action: ActionFn | None = None,
        lookup: LookupFn | None = None,
        language: str = "en",
        words: dict[str, str] | None = None,
    ) -> None:
        self.state = state
        self.language = language
        self.words = words if words is not None else catalogue(language)
        self.page = page
        self.control = control
        self.sim_state = sim_state
        self.stream_interval_s = stream_interval_s
        self.metrics = metrics
        self.action = action
        self.lookup = lookup
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
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        try:
            while True:
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT_S):
                        request = await self._read_request(conn, reader)
                except TimeoutError:
                    # Half a request (headers or body cut short) is told why; an idle
                    # keep-alive connection is simply closed.
                    started = conn.their_state is h11.SEND_BODY or bool(conn.trailing_data[0])
                    if started and conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                        self._respond(conn, writer, Response.error(408, "request incomplete"))
                    break
                except h11.RemoteProtocolError as exc:
                    if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                        status = exc.error_status_hint
                        self._respond(conn, writer, Response.error(status, f"bad request: {exc}"))
                    break
                if request is None:
                    break
                if request.refused is not None:
                    self._respond(conn, writer, request.refused)
                    break  # its body is still on the wire: this connection is done
                head = request.method == "HEAD"
                method = "GET" if head else request.method
                if metrics_only:
                    response = await self._metrics_route(method, request.path, request.body)
                elif method == "GET" and request.path == "/api/stream" and not head:
                    await self._stream(conn, writer)
                    break
                else:
                    response = await self._route(method, request.path, request.body, request.query)
                self._respond(conn, writer, response, head=head)
                await writer.drain()
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the browser went away
        except h11.LocalProtocolError:
            log.exception("HTTP response not sent")
        finally:
            self._clients.pop(writer, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await reader.read(16 * 1024)
            conn.receive_data(data)  # b"" is the end of the stream, which h11 handles

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> _Request | None:
        event = await self._next_event(conn, reader)
        if not isinstance(event, h11.Request):
            return None  # the peer closed between requests
        method = event.method.decode("ascii", "replace")
        target = urlsplit(event.target.decode("latin-1"))
        path = unquote(target.path)
        length = next((v for k, v in event.headers if k == b"content-length"), None)
        if length is not None and int(length) > MAX_BODY:
            return _Request(method, path, b"", Response.error(413, "body too large"))
        body = bytearray()
        while True:
            event = await self._next_event(conn, reader)
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:  # chunked: no length up front
                    return _Request(method, path, b"", Response.error(413, "body too large"))
            elif isinstance(event, h11.EndOfMessage):
                return _Request(method, path, bytes(body), None, target.query)
            else:
                return None

    @staticmethod
    def _respond(
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        response: Response,
        *,
        head: bool = False,
    ) -> None:
        headers = [
            (b"Content-Type", response.content_type.encode()),
            (b"Content-Length", str(len(response.body)).encode()),
            (b"Cache-Control", b"no-store"),
        ]
        reason = _REASONS.get(response.status, b"OK")
        out = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
        if not head and response.body:
            out += conn.send(h11.Data(data=response.body))
        out += conn.send(h11.EndOfMessage())
        writer.write(out)

    async def _route(self, method: str, path: str, body: bytes, query: str = "") -> Response:
        try:
            if len(body) > MAX_BODY:
                return Response.error(413, "body too large")
            if method == "GET" and path == "/api/state":
                return Response.json(self.state())
            if method == "GET" and path.startswith("/api/") and self.lookup is not None:
                return await self.lookup(path.removeprefix("/api/"), dict(parse_qsl(query)))
            if method == "GET" and path == "/metrics" and self.metrics is not None:
                return Response(200, self.metrics(), METRICS_CONTENT_TYPE)
            if path.startswith("/sim"):
                return await self._sim(method, path, body)
            if method == "POST" and path.startswith("/api/") and self.action is not None:
                try:
                    args = json.loads(body or b"{}")
                except ValueError as exc:
                    return Response.error(400, f"body is not JSON: {exc}")
                if not isinstance(args, dict):
                    return Response.error(400, "body must be a JSON object")
                return await self.action(path.removeprefix("/api/"), args)
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
        tag = f'<script id="state" type="application/json">{state}</script>'
        words = json.dumps(self.words, ensure_ascii=False).replace("</", "<\\/")
        tag += f'<script id="words" type="application/json">{words}</script>'
        body = page.body.replace(b"<!--STATE-->", tag.encode())
        body = body.replace(b'<html lang="en">', f'<html lang="{self.language}">'.encode(), 1)
        return Response(200, body, page.content_type)

    def _static(self, name: str) -> Response:
        if "/" in name or name.startswith("."):
            return Response.error(404, "no such file")
        try:
            data = resources.files("agent").joinpath("static", name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return Response.error(404, f"no file {name}")
        kind = {"html": "text/html; charset=utf-8", "js": "text/javascript", "css": "text/css"}
        return Response(200, data, kind.get(name.rsplit(".", 1)[-1], "application/octet-stream"))

    async def _stream(self, conn: h11.Connection, writer: asyncio.StreamWriter) -> None:
        headers = [(b"Content-Type", b"text/event-stream"), (b"Cache-Control", b"no-store")]
        writer.write(conn.send(h11.Response(status_code=200, headers=headers)))
        last = b""
        while True:
            data = json.dumps(self.state(), separators=(",", ":"), default=str).encode()
            if data != last:
                writer.write(conn.send(h11.Data(data=b"data: " + data + b"\n\n")))
                await writer.drain()
                last = data
            await asyncio.sleep(self.stream_interval_s)
