"""The site service's HTTP API (FastAPI): what any OMS, in any language, uses.

FastAPI was chosen because the wire's models are pydantic already: the same models the
service validates with generate the OpenAPI 3.1 document (docs/openapi.yaml, checked in CI
against ``build_app().openapi()``), including the ``webhooks`` the service calls; it is
well kept, runs on uvicorn (TLS is two settings), and its request validation answers 422
with the field and reason before our code runs.

Endpoints (all under ``/v1``; docs/api.md tells the story):

* ``GET /events?after=N&wait=S`` the log from a cursor, long-polled; ``GET /events/stream``
  the same as server-sent events (``id:`` is the position; ``Last-Event-ID`` resumes);
* ``POST /waves`` orders routed by the fulfilment router; ``GET /orders``, ``/orders/{id}``
  each order's status and its events;
* ``POST /nodes/{node}/commands/{command}`` a raw node command; ``GET /commands/{id}``;
* ``GET /nodes`` every node's birth and where its stream stands;
* ``/webhooks`` register (URLs checked against SSRF: urlguard.py), list, delete, ``replay``
  (from any position), ``attempts``;
* ``GET /health`` this instance's role (``active`` or ``standby``) and the log's head.

Every POST takes an ``Idempotency-Key``: the same key and body give the same answer
(``Idempotent-Replayed: true``), the same key with another body is a 409. Access needs a
bearer token (``ZONE_AGENT_SITE_TOKENS``); only loopback clients may go without one.
"""

import asyncio
import hashlib
import hmac
import ipaddress
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.oms.fulfilment import CatalogueItem, Order, OrderFile, ReturnEntry
from agent.oms.site.log import Webhook, now_ms
from agent.oms.site.service import LeadershipLost, SiteService, WaveExists
from agent.oms.site.urlguard import Refused, UrlGuard
from agent.oms.site.webhooks import new_secret
from agent.wire.messages import COMMANDS, Id, Reply

MAX_PAGE = 1000
MAX_POSITION = 2**53  # log positions, cursors and times fit a JSON number exactly
MAX_WAIT_S = 30.0
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="A key unique to this request: sending it again returns the same answer.",
    ),
]


# --- shapes ------------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(_Out):
    """An error: ``error`` is a stable code, ``detail`` says what and where."""

    error: str
    detail: str


class Event(_Out):
    """One event of the log.

    ``id`` is its position (the cursor) and its identity: deduplicate by it. ``seq`` is
    null for the service's own entries (``online``, ``offline``, ``gap``,
    ``acknowledged``).
    """

    id: int
    node: str
    store: str | None
    seq: int | None
    name: str
    ts: int = Field(description="when the node made it, ms since the epoch")
    logged: int = Field(description="when the log took it, ms since the epoch")
    order: str | None
    corr: str | None = Field(description="the command a reply answers")
    body: dict[str, Any]


class EventPage(_Out):
    """A page of the log: pass ``next`` as ``after`` to read on."""

    events: list[Event]
    next: int
    head: int


class WaveIn(BaseModel):
    """Orders to route now as one wave (the order file's shape, docs/orders.md)."""

    model_config = ConfigDict(extra="forbid")

    wave: Id
    orders: list[Order] = Field(min_length=1, max_length=5000)
    catalogue: dict[Id, CatalogueItem] = Field(default_factory=dict)
    returns: list[ReturnEntry] = Field(default_factory=list, max_length=5000)
    dock_carriers: list[str] | None = Field(default=None, max_length=50)
    cutoffs: (
        dict[Annotated[str, Field(max_length=64)], Annotated[int, Field(ge=0, le=MAX_POSITION)]]
        | None
    ) = Field(default=None, max_length=50, description="each carrier's cut-off, ms since the epoch")


class OrderState(_Out):
    """Where an order is."""

    order: str
    status: str
    detail: str


class WaveOut(_Out):
    """The wave as routed: each order's first status."""

    wave: str
    orders: list[OrderState]


class OrderSummary(_Out):
    """An order's status, and the carrier its parcel goes with."""

    order: str
    wave: str
    status: str
    detail: str
    updated: int
    carrier: str | None = Field(
        description="the carrier of its parcel (the order's, or Standard for the pack "
        "station's own label); null when the order names none"
    )
    cutoff: int | None = Field(
        description="that carrier's cut-off from the wave's cutoffs, ms since the epoch; "
        "null when the wave gave none"
    )


class OrderPage(_Out):
    """A page of orders by id: pass ``next`` as ``after`` (null: the last page)."""

    orders: list[OrderSummary]
    next: str | None


class OrderDetail(OrderSummary):
    """An order: its status, what was submitted, and its events in the log."""

    submitted: dict[str, Any]
    events: list[Event]


class CommandOut(_Out):
    """A command and, once the node answered, its reply."""

    id: str
    node: str
    command: str
    status: Literal["sent", "accepted", "rejected"]
    reply: dict[str, Any] | None = None


class NodeOut(_Out):
    """A node as the service knows it."""

    node: str
    online: bool
    boot: int | None
    store: str | None
    role: str | None
    sw: str | None
    devices: dict[str, Any]
    locations: int
    logged_seq: int
    node_last_seq: int | None


class WebhookIn(BaseModel):
    """A webhook endpoint to register."""

    model_config = ConfigDict(extra="forbid")

    url: HttpUrl = Field(
        description=(
            "http or https, no user:password@. Every address of its host must be public, or "
            "in the site file's [webhooks] allow_networks (the LAN); plain http only there. "
            "Checked now (422 url_refused) and again at each connection a delivery opens."
        )
    )
    names: list[str] = Field(
        default_factory=list, max_length=100, description="event names to send (empty: all)"
    )
    batch: int = Field(default=1, ge=1, le=500, strict=True, description="events per message")
    after: int | None = Field(
        default=None,
        ge=0,
        strict=True,
        le=MAX_POSITION,
        description="start after this position (default: the head: new only)",
    )


class WebhookOut(_Out):
    """A webhook endpoint and how far its deliveries got."""

    id: str
    url: str
    names: list[str]
    batch: int
    enabled: bool
    cursor: int
    failures: int
    disabled_reason: str
    created: int


class WebhookCreated(WebhookOut):
    """A new endpoint with its signing secret (shown this once)."""

    secret: str


class Replay(BaseModel):
    """Deliver again from a position (and enable a disabled endpoint)."""

    model_config = ConfigDict(extra="forbid")

    after: int = Field(ge=0, le=MAX_POSITION, strict=True)


class Attempt(_Out):
    """One failed (or late successful) delivery attempt."""

    message: str
    first_event: int
    last_event: int
    attempt: int
    status: int
    error: str
    at: int


class Health(_Out):
    """This instance: ``active`` acknowledges and routes, ``standby`` serves reads."""

    site: str
    role: str
    head: int


class WebhookMessage(BaseModel):
    """What the service POSTs to an endpoint of ``batch`` 1.

    Headers ``webhook-id`` (``evt_<id>``), ``webhook-timestamp``, ``webhook-signature`` per
    Standard Webhooks.
    """

    type: str = Field(description="event.<name>, or events for a batch")
    timestamp: str
    data: Event


class WebhookBatch(BaseModel):
    """A message of several events (``batch`` > 1; ``webhook-id`` ``evts_<first>_<last>``)."""

    type: Literal["events"]
    timestamp: str
    data: dict[Literal["events"], list[Event]]


# --- plumbing ----------------------------------------------------------------------------


class ApiError(Exception):
    """An answer other than success, as a ``Problem``."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


class BodyLimit:
    """Answers 413 to a request body larger than ``limit`` bytes, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, counting its body."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        if declared is not None:
            await self.app(scope, receive, send)  # the server stops at the declared length
            return
        # No length declared (chunked): read it whole, up to the limit, before the app does.
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # the client left
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def again() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, again, send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {"error": "too_large", "detail": f"the body is over {self.limit} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})


PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "no valid token"},
    413: {"model": Problem, "description": "the body is too large"},
    422: {"model": Problem, "description": "a parameter or the body is invalid: which and why"},
}
WRITE_PROBLEMS: dict[int | str, dict[str, Any]] = {
    **PROBLEMS,
    400: {"model": Problem, "description": "the body is not JSON"},
    409: {"model": Problem, "description": "the key was used with another body, or is in use"},
    503: {"model": Problem, "description": "this instance is the standby"},
}


def _loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def build_app(service: SiteService) -> FastAPI:
    """The API of ``service`` as an ASGI app."""
    config = service.config
    store = service.log
    app = FastAPI(
        title="zone-agent site service",
        version="1",
        description=(
            "The site's durable event log, orders and commands for any OMS. Guide: docs/api.md."
        ),
        openapi_tags=[
            {"name": "events", "description": "the log: cursor, long-poll, SSE"},
            {"name": "orders", "description": "waves routed by the fulfilment router"},
            {"name": "nodes", "description": "nodes and raw commands"},
            {"name": "webhooks", "description": "signed push of the log (Standard Webhooks)"},
        ],
    )
    app.add_middleware(BodyLimit, limit=config.api.max_body_bytes)
    bearer = HTTPBearer(auto_error=False, description="a token of ZONE_AGENT_SITE_TOKENS")
    tokens = [t.encode() for t in config.tokens]
    guard = UrlGuard.from_settings(config.webhooks)
    in_flight: set[str] = set()

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if exc.status == 503:
            headers = {"Retry-After": "1"}
        return JSONResponse(
            {"error": exc.error, "detail": exc.detail}, status_code=exc.status, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid"}
        where = ".".join(str(p) for p in first.get("loc", ())) or "(request)"
        return JSONResponse(
            {"error": "invalid_request", "detail": f"{where}: {first.get('msg', 'invalid')}"},
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the first matching route's methods; a path with GET and
            # DELETE routes answers with both.
            allowed = sorted(
                method
                for route in app.router.routes
                if route.matches(request.scope)[0] != Match.NONE
                for method in (getattr(route, "methods", None) or ())
            )
            headers["Allow"] = ", ".join(allowed)
        error = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        return JSONResponse(
            {"error": error, "detail": str(exc.detail)},
            status_code=exc.status_code,
            headers=headers or None,
        )

    @app.exception_handler(LeadershipLost)
    async def _standby(request: Request, exc: LeadershipLost) -> JSONResponse:
        return JSONResponse(
            {"error": "standby", "detail": "this instance is the standby: write to the active one"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    async def authorised(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if credentials is not None:
            given = credentials.credentials.encode()
            if any(hmac.compare_digest(given, t) for t in tokens):
                return
            raise ApiError(401, "unauthorized", "the token is not one of this service's")
        host = request.client.host if request.client else None
        if config.api.anonymous_localhost and _loopback(host):
            return
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")

    auth = [Depends(authorised)]

    async def idempotent(
        request: Request,
        key: str,
        produce: Callable[[], Awaitable[tuple[int, dict[str, Any]]]],
    ) -> JSONResponse:
        raw = await request.body()
        try:
            canonical = json.dumps(json.loads(raw or b"null"), sort_keys=True)
        except ValueError:
            canonical = raw.decode("latin-1")
        fingerprint = hashlib.sha256(
            f"{request.method} {request.url.path}\n{canonical}".encode()
        ).hexdigest()
        kept = await asyncio.to_thread(store.answer, key)
        if kept is not None:
            if kept[0] != fingerprint:
                raise ApiError(409, "key_reused", f"Idempotency-Key {key!r} came with another body")
            return JSONResponse(
                json.loads(kept[2]), status_code=kept[1], headers={"Idempotent-Replayed": "true"}
            )
        if key in in_flight:
            raise ApiError(409, "key_in_use", f"a request with Idempotency-Key {key!r} is running")
        in_flight.add(key)
        try:
            status, body = await produce()
            if status < 500 and not await asyncio.to_thread(
                store.keep_answer, key, fingerprint, status, json.dumps(body)
            ):
                kept = await asyncio.to_thread(store.answer, key)
                assert kept is not None
                return JSONResponse(json.loads(kept[2]), status_code=kept[1])
            return JSONResponse(body, status_code=status)
        finally:
            in_flight.discard(key)

    # --- events ------------------------------------------------------------------------

    async def page(
        after: int, limit: int, node: str | None, names: list[str], order: str | None
    ) -> dict[str, Any]:
        head = await asyncio.to_thread(store.head)
        if after > head:
            raise ApiError(
                409,
                "cursor_ahead",
                f"after={after} is beyond the log's head {head}: a cursor of another log?",
            )
        rows = await asyncio.to_thread(
            store.read, after, limit, node=node, names=names, order=order
        )
        last = rows[-1].id if rows else after
        following = head if len(rows) < limit else last
        return {
            "events": [r.record() for r in rows],
            "next": max(last, following),
            "head": head,
        }

    @app.get(
        "/v1/events",
        tags=["events"],
        dependencies=auth,
        responses={**PROBLEMS, 409: {"model": Problem, "description": "cursor beyond the log"}},
    )
    async def events(
        after: Annotated[
            int, Query(ge=0, le=MAX_POSITION, description="the last position you have (0: all)")
        ] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 500,
        wait: Annotated[
            float, Query(ge=0, le=MAX_WAIT_S, description="long-poll: seconds to wait for news")
        ] = 0,
        node: Annotated[str | None, Query(max_length=64)] = None,
        name: Annotated[list[str] | None, Query(max_length=50)] = None,
        order: Annotated[str | None, Query(max_length=64)] = None,
    ) -> EventPage:
        """Events after ``after``, oldest first; with ``wait``, waits for one to come."""
        result = await page(after, limit, node, name or [], order)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not result["events"] and (remaining := deadline - loop.time()) > 0:
            # A standby's head moves without telling it: look at least twice a second.
            await service.head.wait(result["next"], min(remaining, 0.5))
            result = await page(result["next"], limit, node, name or [], order)
        return EventPage.model_validate(result)

    @app.get(
        "/v1/events/stream",
        tags=["events"],
        dependencies=auth,
        response_class=StreamingResponse,
        responses={
            **PROBLEMS,
            200: {"content": {"text/event-stream": {}}, "description": "one SSE per event"},
            409: {"model": Problem, "description": "cursor beyond the log"},
        },
    )
    async def stream(
        after: Annotated[int, Query(ge=0, le=MAX_POSITION)] = 0,
        node: Annotated[str | None, Query(max_length=64)] = None,
        name: Annotated[list[str] | None, Query(max_length=50)] = None,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
    ) -> StreamingResponse:
        """The log as server-sent events from ``after`` (or ``Last-Event-ID``), live."""
        if last_event_id is not None and last_event_id.isdigit():
            after = int(last_event_id)
        first = await page(after, MAX_PAGE, node, name or [], None)

        async def lines() -> AsyncIterator[bytes]:
            result = first
            while True:
                for event in result["events"]:
                    data = json.dumps(event, separators=(",", ":"))
                    yield f"id: {event['id']}\nevent: {event['name']}\ndata: {data}\n\n".encode()
                if not result["events"] and not await service.head.wait(result["next"], 15.0):
                    yield b": keep-alive\n\n"
                result = await page(result["next"], MAX_PAGE, node, name or [], None)

        return StreamingResponse(lines(), media_type="text/event-stream")

    # --- orders ------------------------------------------------------------------------

    @app.post(
        "/v1/waves",
        tags=["orders"],
        dependencies=auth,
        status_code=202,
        responses={
            **WRITE_PROBLEMS,
            202: {"model": WaveOut},
            409: {
                "model": Problem,
                "description": "the key was used with another body or is in use, or the wave "
                "or an order was submitted before (wave_exists, order_exists)",
            },
        },
    )
    async def submit_wave(wave: WaveIn, request: Request, key: IdempotencyKey) -> JSONResponse:
        """Route orders now (each wave id and order id once).

        Pick waves go to the nodes owning the lines' locations, then wall, pack, dock and
        returns as their events come in (docs/orders.md has the order fields).
        """
        # FastAPI validates in pydantic's lax mode, where "qty": true is a 1-unit line and
        # "on_shelf": false is 0 (the order file's models must take CSV's text). A JSON body
        # is checked again as JSON, strictly, as the wire's messages are.
        try:
            WaveIn.model_validate_json(await request.body(), strict=True)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in ("body", *first["loc"]))
            raise ApiError(422, "invalid_request", f"{where}: {first['msg']}") from None

        async def produce() -> tuple[int, dict[str, Any]]:
            try:
                orders = OrderFile(
                    catalogue=wave.catalogue, orders=wave.orders, returns=wave.returns
                )
            except ValidationError as exc:
                raise ApiError(422, "invalid_wave", str(exc.errors()[0]["msg"])) from None
            if await asyncio.to_thread(store.wave_exists, wave.wave):
                raise ApiError(409, "wave_exists", f"wave {wave.wave!r} was submitted before")
            for order in orders.orders:
                if await asyncio.to_thread(store.order, order.order) is not None:
                    raise ApiError(
                        409, "order_exists", f"order {order.order!r} was submitted before"
                    )
            try:
                states = await service.submit_wave(
                    wave.wave, orders, dock_carriers=wave.dock_carriers, cutoffs=wave.cutoffs
                )
            except WaveExists as exc:
                raise ApiError(409, "wave_exists", str(exc)) from None
            return 202, {"wave": wave.wave, "orders": states}

        return await idempotent(request, key, produce)

    @app.get("/v1/orders", tags=["orders"], dependencies=auth, responses=PROBLEMS)
    async def list_orders(
        after: Annotated[str, Query(max_length=64)] = "",
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        status: Annotated[str | None, Query(max_length=32)] = None,
    ) -> OrderPage:
        """Orders by id, a page at a time."""
        rows = await asyncio.to_thread(store.orders, after, limit, status)
        return OrderPage.model_validate(
            {"orders": rows, "next": rows[-1]["order"] if len(rows) == limit else None}
        )

    @app.get(
        "/v1/orders/{order_id}",
        tags=["orders"],
        dependencies=auth,
        responses={**PROBLEMS, 404: {"model": Problem, "description": "no such order"}},
    )
    async def get_order(order_id: Annotated[str, Path(max_length=64)]) -> OrderDetail:
        """An order's status, what was submitted, and its events."""
        found = await asyncio.to_thread(store.order, order_id)
        if found is None:
            raise ApiError(404, "not_found", f"no order {order_id!r}")
        rows = await asyncio.to_thread(store.read, 0, MAX_PAGE, order=order_id)
        return OrderDetail.model_validate({**found, "events": [r.record() for r in rows]})

    # --- nodes and commands ------------------------------------------------------------

    @app.get("/v1/nodes", tags=["nodes"], dependencies=auth, responses=PROBLEMS)
    async def nodes() -> list[NodeOut]:
        """Every node the active instance has heard of (empty on a standby)."""
        return [NodeOut.model_validate(n) for n in service.nodes()]

    def command_out(row: dict[str, Any]) -> dict[str, Any]:
        reply = row["reply"]
        return {
            "id": row["id"],
            "node": row["node"],
            "command": row["command"],
            "status": "sent" if reply is None else reply["status"],
            "reply": reply,
        }

    @app.post(
        "/v1/nodes/{node}/commands/{command}",
        tags=["nodes"],
        dependencies=auth,
        status_code=202,
        responses={
            **WRITE_PROBLEMS,
            200: {"model": CommandOut, "description": "the node answered within wait"},
            202: {"model": CommandOut, "description": "sent; resent until the node answers"},
            404: {"model": Problem, "description": "no such command"},
            422: {"model": Problem, "description": "the body does not fit the command"},
        },
    )
    async def send_command(
        node: Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")],
        command: Annotated[str, Path(max_length=32)],
        body: dict[str, Any],
        request: Request,
        key: IdempotencyKey,
        wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 0,
    ) -> JSONResponse:
        """Send one command to a node, kept and resent until it answers.

        ``pick``, ``pack``, ``put``, ``load``, ``rma``, ...: docs/protocol.md has the bodies.
        """
        model = COMMANDS.get(command)
        if model is None:
            raise ApiError(404, "unknown_command", f"no command {command!r}: {sorted(COMMANDS)}")
        try:
            checked = model.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(body)"
            raise ApiError(422, "invalid_body", f"{where}: {first['msg']}") from None

        async def produce() -> tuple[int, dict[str, Any]]:
            command_id, future = await service.command(node, command, checked)
            out: dict[str, Any] = {
                "id": command_id,
                "node": node,
                "command": command,
                "status": "sent",
                "reply": None,
            }
            if wait > 0:
                try:
                    async with asyncio.timeout(wait):
                        reply: Reply = await asyncio.shield(future)
                    out.update(status=reply.status, reply=reply.model_dump(mode="json"))
                    return 200, out
                except TimeoutError:
                    pass
            return 202, out

        return await idempotent(request, key, produce)

    @app.get(
        "/v1/commands/{command_id}",
        tags=["nodes"],
        dependencies=auth,
        responses={**PROBLEMS, 404: {"model": Problem, "description": "no such command"}},
    )
    async def get_command(command_id: Annotated[str, Path(max_length=64)]) -> CommandOut:
        """A command and its reply once the node answered."""
        row = await asyncio.to_thread(store.command, command_id)
        if row is None:
            raise ApiError(404, "not_found", f"no command {command_id!r}")
        return CommandOut.model_validate(command_out(row))

    # --- webhooks ----------------------------------------------------------------------

    def hook_out(hook: Webhook) -> dict[str, Any]:
        return {
            "id": hook.id,
            "url": hook.url,
            "names": list(hook.names),
            "batch": hook.batch,
            "enabled": hook.enabled,
            "cursor": hook.cursor,
            "failures": hook.failures,
            "disabled_reason": hook.disabled_reason,
            "created": hook.created,
        }

    async def hook_or_404(hook_id: str) -> Webhook:
        hook = await asyncio.to_thread(store.webhook, hook_id)
        if hook is None:
            raise ApiError(404, "not_found", f"no webhook {hook_id!r}")
        return hook

    def writable() -> None:
        if not service.active.is_set():
            raise LeadershipLost("standby")

    @app.post(
        "/v1/webhooks",
        tags=["webhooks"],
        dependencies=auth,
        status_code=201,
        responses={
            **WRITE_PROBLEMS,
            201: {"model": WebhookCreated},
            422: {
                "model": Problem,
                "description": "the body is invalid, or the url is refused (url_refused: "
                "which rule: scheme, credentials, an address neither public nor allowed)",
            },
        },
    )
    async def add_webhook(hook: WebhookIn, request: Request, key: IdempotencyKey) -> JSONResponse:
        """Register an endpoint; the answer holds its signing secret (only this once)."""

        async def produce() -> tuple[int, dict[str, Any]]:
            writable()
            try:
                await guard.check(str(hook.url))
            except Refused as exc:
                raise ApiError(422, "url_refused", f"body.url: {exc}") from None
            start = hook.after
            if start is None:
                start = await asyncio.to_thread(store.head)
            made = Webhook(
                id="wh_" + hashlib.sha256(key.encode()).hexdigest()[:16],
                url=str(hook.url),
                secret=new_secret(),
                names=tuple(hook.names),
                batch=hook.batch,
                enabled=True,
                cursor=start,
                failures=0,
                disabled_reason="",
                created=now_ms(),
            )
            await asyncio.to_thread(store.add_webhook, made)
            service.dispatcher.follow(made.id)
            return 201, {**hook_out(made), "secret": made.secret}

        return await idempotent(request, key, produce)

    @app.get("/v1/webhooks", tags=["webhooks"], dependencies=auth, responses=PROBLEMS)
    async def list_webhooks() -> list[WebhookOut]:
        """Every endpoint, enabled or not, with its cursor."""
        hooks = await asyncio.to_thread(store.webhooks)
        return [WebhookOut.model_validate(hook_out(h)) for h in hooks]

    @app.get(
        "/v1/webhooks/{hook_id}",
        tags=["webhooks"],
        dependencies=auth,
        responses={**PROBLEMS, 404: {"model": Problem, "description": "no such webhook"}},
    )
    async def get_webhook(hook_id: Annotated[str, Path(max_length=64)]) -> WebhookOut:
        """One endpoint."""
        return WebhookOut.model_validate(hook_out(await hook_or_404(hook_id)))

    @app.delete(
        "/v1/webhooks/{hook_id}",
        tags=["webhooks"],
        dependencies=auth,
        status_code=204,
        responses={
            **WRITE_PROBLEMS,
            404: {"model": Problem, "description": "no such webhook"},
        },
    )
    async def delete_webhook(hook_id: Annotated[str, Path(max_length=64)]) -> Response:
        """Stop and remove an endpoint."""
        writable()
        await hook_or_404(hook_id)
        service.dispatcher.forget(hook_id)
        await asyncio.to_thread(store.delete_webhook, hook_id)
        return Response(status_code=204)

    @app.post(
        "/v1/webhooks/{hook_id}/replay",
        tags=["webhooks"],
        dependencies=auth,
        responses={
            **WRITE_PROBLEMS,
            200: {"model": WebhookOut},
            404: {"model": Problem, "description": "no such webhook"},
            409: {"model": Problem, "description": "position beyond the log, or key reused"},
        },
    )
    async def replay(
        hook_id: Annotated[str, Path(max_length=64)],
        body: Replay,
        request: Request,
        key: IdempotencyKey,
    ) -> JSONResponse:
        """Deliver again every event after ``after``; enables a disabled endpoint."""

        async def produce() -> tuple[int, dict[str, Any]]:
            writable()
            await hook_or_404(hook_id)
            head = await asyncio.to_thread(store.head)
            if body.after > head:
                raise ApiError(409, "cursor_ahead", f"after={body.after} is beyond the head {head}")
            await asyncio.to_thread(
                store.update_webhook,
                hook_id,
                cursor=body.after,
                failures=0,
                enabled=True,
                disabled_reason="",
            )
            service.dispatcher.follow(hook_id)
            return 200, hook_out(await hook_or_404(hook_id))

        return await idempotent(request, key, produce)

    @app.get(
        "/v1/webhooks/{hook_id}/attempts",
        tags=["webhooks"],
        dependencies=auth,
        responses={**PROBLEMS, 404: {"model": Problem, "description": "no such webhook"}},
    )
    async def attempts(
        hook_id: Annotated[str, Path(max_length=64)],
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> list[Attempt]:
        """The endpoint's failed attempts (and retries that then succeeded), newest first."""
        await hook_or_404(hook_id)
        rows = await asyncio.to_thread(store.attempts, hook_id, limit)
        return [Attempt.model_validate(r) for r in rows]

    @app.get("/v1/health", tags=["nodes"], dependencies=auth, responses=PROBLEMS)
    async def health() -> Health:
        """This instance's role and the log's head."""
        head = await asyncio.to_thread(store.head)
        return Health(site=config.site, role=service.role, head=head)

    @app.webhooks.post("event")
    def event_webhook(message: WebhookMessage) -> None:
        """One event of the log, to each endpoint registered with ``batch`` 1; answer 2xx.

        Verify ``webhook-signature`` (``v1,`` base64 HMAC-SHA256 of
        ``{webhook-id}.{webhook-timestamp}.{body}`` with the secret after ``whsec_``) and
        deduplicate by ``data.id``.
        """

    @app.webhooks.post("events")
    def events_webhook(message: WebhookBatch) -> None:
        """Up to ``batch`` events in one message (endpoints registered with ``batch`` > 1)."""

    return app
