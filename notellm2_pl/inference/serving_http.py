"""The HTTP side of ``serve``, in the API-server process: the request guard, the metrics, and the extra routes.

* :class:`GuardMiddleware` (pure ASGI, outermost): refuses a body over the payload limit with 413 before it reaches
  a route (counting the bytes, chunked bodies too; at most the limit is kept in memory), and counts every request in
  :class:`Metrics`.
* ``GET /metrics``: the counters as JSON: per route, requests by status, mean and max latency, a latency histogram.
* ``DELETE /notes/{note_id}``: LitServe routes a LitAPI by POST only, so this route hands a
  :class:`~notellm2_pl.inference.note_requests.NotesRequest` (``delete=[note_id]``, ``missing_ok=False``) to the
  ``/notes`` API's queue with LitServe's own request handler: deletes and upserts share the single index writer.

The metrics live in the API-server process (``serve`` runs one); LitServe's ``/health`` and ``/info`` stay as they are.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from litserve.server import RegularRequestHandler

from notellm2_pl.inference.note_requests import NotesRequest

if TYPE_CHECKING:
    import litserve as ls

    from notellm2_pl.inference.serving import NotesAPI, ServeConfig

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ROUTES = ("/embed", "/neighbours", "/notes", "/health", "/info", "/metrics", "/")
BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def route_of(path: str) -> str:
    """The route a path counts under (bounded set: unknown paths count as ``other``)."""
    if path in ROUTES:
        return path
    return "/notes/{note_id}" if path.startswith("/notes/") else "other"


class Metrics:
    """Request counters of the API-server process."""

    def __init__(self) -> None:
        self.started = time.time()
        self.routes: dict[str, dict[str, Any]] = {}

    def record(self, method: str, path: str, status: int, seconds: float) -> None:
        """Count one finished request."""
        empty = {"count": 0, "by_status": {}, "total_s": 0.0, "max_s": 0.0, "buckets": [0] * (len(BUCKETS_MS) + 1)}
        r = self.routes.setdefault(f"{method} {route_of(path)}", empty)
        r["count"] += 1
        r["by_status"][str(status)] = r["by_status"].get(str(status), 0) + 1
        r["total_s"] += seconds
        r["max_s"] = max(r["max_s"], seconds)
        ms = seconds * 1e3
        r["buckets"][next((i for i, b in enumerate(BUCKETS_MS) if ms <= b), len(BUCKETS_MS))] += 1

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready counters: per ``"METHOD route"``: count, by_status, mean_ms, max_ms, latency buckets; and
        ``server_errors``, the 5xx answers of every route but ``/health``."""
        routes = {}
        for key, r in sorted(self.routes.items()):
            buckets = {f"le_{b}ms": n for b, n in zip(BUCKETS_MS, r["buckets"])} | {"gt_5000ms": r["buckets"][-1]}
            routes[key] = {"count": r["count"], "by_status": dict(r["by_status"]),
                           "mean_ms": round(r["total_s"] / r["count"] * 1e3, 3), "max_ms": round(r["max_s"] * 1e3, 3),
                           "latency_buckets": buckets}
        errors = sum(n for key, r in self.routes.items() if not key.endswith(" /health")  # 503 while starting
                     for s, n in r["by_status"].items() if int(s) >= 500)
        return {"uptime_s": round(time.time() - self.started, 1), "requests": sum(r["count"] for r in
                self.routes.values()), "server_errors": errors, "routes": routes}


async def _reply(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


class GuardMiddleware:
    """Refuse bodies over ``max_bytes`` with 413 (the server keeps serving) and count every request.

    Args:
        app: The ASGI app.
        max_bytes: Largest request body.
        metrics: Where requests are counted.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: Metrics) -> None:
        self.app, self.max_bytes, self.metrics = app, max_bytes, metrics

    def _too_large(self, size: int) -> dict[str, Any]:
        return {"detail": f"body: payload of {size} bytes exceeds the limit of {self.max_bytes} bytes "
                          f"(--max-payload-mb)", "field": "body"}

    async def _read_body(self, receive: Receive) -> tuple[bytes | None, int]:
        """``(body, size)``: the whole body, or None when it passes the limit.

        An oversized body is still read to its end (and dropped): a client that sends before it reads gets the 413
        instead of a reset connection.
        """
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                break
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size <= self.max_bytes:
                chunks.append(chunk)
            if not msg.get("more_body"):
                break
        return (b"".join(chunks) if size <= self.max_bytes else None), size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]

        async def counted_send(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            if scope["method"] not in BODY_METHODS:
                await self.app(scope, receive, counted_send)
                return
            body, size = await self._read_body(receive)
            if body is None:
                await _reply(counted_send, 413, self._too_large(size))
                return
            replayed = [False]

            async def replay() -> Message:
                if not replayed[0]:
                    replayed[0] = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, counted_send)
        finally:
            self.metrics.record(scope["method"], scope["path"], status[0], time.perf_counter() - start)


def add_routes(server: ls.LitServer, notes_api: NotesAPI, cfg: ServeConfig) -> Metrics:
    """Add the guard middleware, ``GET /metrics`` and ``DELETE /notes/{note_id}`` to a built LitServer.

    Returns:
        The metrics the middleware fills.
    """
    metrics = Metrics()
    handler = RegularRequestHandler(notes_api, server)

    async def delete_note(note_id: str = PathParam(min_length=1, max_length=256)) -> Response:
        return await handler.handle_request(NotesRequest(delete=[note_id], missing_ok=False), NotesRequest)

    async def get_metrics() -> Response:
        return JSONResponse(metrics.snapshot())

    server.app.add_api_route("/notes/{note_id}", delete_note, methods=["DELETE"])
    server.app.add_api_route("/metrics", get_metrics, methods=["GET"])
    server.app.add_middleware(GuardMiddleware, max_bytes=int(cfg.max_payload_mb * 2**20), metrics=metrics)
    return metrics
