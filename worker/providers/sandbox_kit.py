"""What every provider sandbox shares: a request log, fault injection, an
outcome mix for statuses that advance over time, and a runner.

Admin routes (under ``/__sandbox/``), identical for every sandbox:

- ``GET /__sandbox/requests``: the request log as JSON (``?since=N`` skips the first N);
  ``DELETE`` clears it.
- ``GET /__sandbox/faults``: the fault settings; ``PUT`` replaces them with a JSON body
  ``{"<endpoint or *>": {"latency": s, "error_rate": p, "timeout_rate": p,
  "drop_rate": p, "malformed_rate": p, "partial_rate": p, "hang_after_rate": p}}``.
  ``timeout`` holds the request before acting on it and never answers; ``hang_after`` acts
  on it and then never answers (not a byte); ``partial`` acts on it and sends the status
  line, the headers and half the body, then stalls.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

ADMIN_PREFIX = "/__sandbox/"


@dataclass
class LoggedRequest:
    at: float  # epoch seconds, arrival
    method: str
    path: str
    params: dict[str, str]  # query and form merged (form wins)
    status: int = 0
    body: str = ""  # the response body (truncated)
    fault: str | None = None


class RequestLog:
    """Every request a sandbox received, in arrival order (admin routes excluded)."""

    def __init__(self) -> None:
        self.entries: list[LoggedRequest] = []

    def add(self, entry: LoggedRequest) -> None:
        self.entries.append(entry)

    def clear(self) -> None:
        self.entries.clear()

    def for_path(self, suffix: str) -> list[LoggedRequest]:
        return [e for e in self.entries if e.path.endswith(suffix)]


@dataclass
class Fault:
    latency: float = 0.0  # seconds added before answering
    error_rate: float = 0.0  # answer HTTP 500
    timeout_rate: float = 0.0  # hold the request far longer than any client waits
    drop_rate: float = 0.0  # close the connection without an answer
    malformed_rate: float = 0.0  # answer 200 with a body no parser accepts
    partial_rate: float = 0.0  # act, then send half the answer and stall
    hang_after_rate: float = 0.0  # act, then never answer (not a byte)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Fault:
        known = {k: float(v) for k, v in data.items() if k in cls.__dataclass_fields__}
        unknown = set(data) - set(known)
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        return cls(**known)


@dataclass
class OutcomeMix:
    """How sandbox messages end, and when."""

    delivered: float = 0.9
    undeliverable: float = 0.07
    expired: float = 0.03
    final_after: float = 2.0  # seconds from acceptance to the final status
    seed: int | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def draw(self) -> str:
        """'delivered', 'undeliverable' or 'expired'."""
        x = self._rng.random() * (self.delivered + self.undeliverable + self.expired)
        if x < self.delivered:
            return "delivered"
        if x < self.delivered + self.undeliverable:
            return "undeliverable"
        return "expired"


@dataclass(slots=True)
class SandboxMessage:
    message_id: str
    phone: str
    text: str
    sender: str
    parts: int
    cost: str
    accepted_at: float
    outcome: str  # what it will become: delivered / undeliverable / expired
    final_at: float
    extra: dict[str, Any] = field(default_factory=dict)

    def state(self, now: float | None = None) -> str:
        """'pending' until final_at, then the outcome."""
        return self.outcome if (now or time.time()) >= self.final_at else "pending"


class SandboxState:
    """Mutable state shared by a sandbox's handlers."""

    def __init__(
        self, mix: OutcomeMix | None = None, faults: Mapping[str, Fault] | None = None
    ) -> None:
        self.log = RequestLog()
        self.mix = mix or OutcomeMix()
        self.faults: dict[str, Fault] = dict(faults or {})
        self.messages: dict[str, SandboxMessage] = {}
        self._rng = random.Random(self.mix.seed)

    def fault_for(self, endpoint: str) -> Fault | None:
        return self.faults.get(endpoint) or self.faults.get("*")

    def roll(self, p: float) -> bool:
        return p > 0 and self._rng.random() < p

    def new_message(
        self,
        message_id: str,
        phone: str,
        text: str,
        sender: str,
        parts: int,
        cost: str,
        now: float | None = None,
    ) -> SandboxMessage:
        """Record an accepted message (``now``: its acceptance time, the clock by default;
        a handler accepting many recipients passes one reading for all of them)."""
        if now is None:
            now = time.time()
        mix = self.mix
        msg = SandboxMessage(
            message_id, phone, text, sender, parts, cost, now, mix.draw(), now + mix.final_after
        )
        self.messages[message_id] = msg
        return msg


STATE_KEY = web.AppKey("sandbox_state", SandboxState)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def endpoint_name(path: str) -> str:
    """The fault/log key of a path: its last segment ('/external/get/send.php' -> 'send.php')."""
    return path.rstrip("/").rsplit("/", 1)[-1] or "/"


_PARAMS_KEY = web.RequestKey("sandbox_kit.params", dict[str, str])


async def request_params(request: web.Request) -> dict[str, str]:
    """Query and form parameters merged (form wins), as the gateways read them.

    Parsed once per request (the middleware's reading is reused by the handler); the
    same dict is returned each time, so callers must not change it.
    """
    if _PARAMS_KEY in request:
        return request[_PARAMS_KEY]
    params = {k: v for k, v in request.query.items()}  # a repeated name: its last value
    if request.method == "POST" and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        form = await request.post()
        for k, v in form.items():
            if isinstance(v, str):
                params[k] = v
    request[_PARAMS_KEY] = params
    return params


@web.middleware
async def sandbox_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Logs the request, then applies the configured fault (if any) or calls the handler."""
    if request.path.startswith(ADMIN_PREFIX):
        return await handler(request)
    state = request.app[STATE_KEY]
    entry = LoggedRequest(
        at=time.time(),
        method=request.method,
        path=request.path,
        params=await request_params(request),
    )
    state.log.add(entry)
    fault = state.fault_for(endpoint_name(request.path))
    if fault is not None:
        if fault.latency:
            await asyncio.sleep(fault.latency)
        if state.roll(fault.drop_rate):
            entry.fault = "drop"
            if request.transport is not None:
                request.transport.close()
            raise asyncio.CancelledError()
        if state.roll(fault.timeout_rate):
            entry.fault = "timeout"
            await asyncio.sleep(3600)
        if state.roll(fault.error_rate):
            entry.fault = "error"
            entry.status = 500
            return web.Response(status=500, text="Internal Server Error")
        if state.roll(fault.malformed_rate):
            entry.fault = "malformed"
            entry.status = 200
            return web.Response(status=200, text="<html>\x00garbage{")
        if state.roll(fault.hang_after_rate):
            entry.fault = "hang_after"
            await handler(request)  # the provider acts on it ...
            await asyncio.sleep(3600)  # ... and its answer never leaves
        if state.roll(fault.partial_rate):
            response = await handler(request)
            entry.fault = "partial"
            entry.status = response.status
            body = response.body if isinstance(response, web.Response) else None
            data = body if isinstance(body, bytes) else b"{}"
            stalled = web.StreamResponse(status=response.status)
            stalled.content_type = response.content_type
            stalled.content_length = len(data) + 1
            await stalled.prepare(request)
            await stalled.write(data[: max(1, len(data) // 2)])
            await asyncio.sleep(3600)
    response = await handler(request)
    entry.status = response.status
    if isinstance(response, web.Response) and response.text is not None:
        entry.body = response.text[:2000]
    return response


async def _get_requests(request: web.Request) -> web.Response:
    since = int(request.query.get("since", "0"))
    entries = request.app[STATE_KEY].log.entries[since:]
    return web.json_response([asdict(e) for e in entries])


async def _clear_requests(request: web.Request) -> web.Response:
    request.app[STATE_KEY].log.clear()
    return web.json_response({"cleared": True})


async def _get_faults(request: web.Request) -> web.Response:
    return web.json_response({k: asdict(v) for k, v in request.app[STATE_KEY].faults.items()})


async def _put_faults(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        faults = {str(k): Fault.from_mapping(v) for k, v in body.items()}
    except (ValueError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    request.app[STATE_KEY].faults = faults
    return web.json_response({k: asdict(v) for k, v in faults.items()})


def make_app(state: SandboxState) -> web.Application:
    """An application with the sandbox middleware and admin routes; add provider routes to it."""
    app = web.Application(middlewares=[sandbox_middleware])
    app[STATE_KEY] = state
    app.router.add_get(ADMIN_PREFIX + "requests", _get_requests)
    app.router.add_delete(ADMIN_PREFIX + "requests", _clear_requests)
    app.router.add_get(ADMIN_PREFIX + "faults", _get_faults)
    app.router.add_put(ADMIN_PREFIX + "faults", _put_faults)
    return app


class RunningSandbox:
    """A sandbox application served on a local port."""

    def __init__(self, app: web.Application, runner: web.AppRunner, url: str) -> None:
        self.app = app
        self.runner = runner
        self.url = url

    @property
    def state(self) -> SandboxState:
        return self.app[STATE_KEY]

    async def stop(self) -> None:
        await self.runner.cleanup()


async def serve(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> RunningSandbox:
    """Serve ``app`` on host:port (0 picks a free port) and return where it listens."""
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    bound_port = sockets[0].getsockname()[1] if sockets else port
    return RunningSandbox(app, runner, f"http://{host}:{bound_port}")
