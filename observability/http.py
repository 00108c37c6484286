"""``GET /metrics`` behind a bearer token, and the request id of every HTTP request.

The scrape needs ``Authorization: Bearer <metrics.token>`` (compared in constant time).
Without a token configured the service starts only in dev mode, where ``/metrics`` is then
open (huizhen/config.py refuses the rest). docs/operations.md.

Every request (a WebSocket connection too) gets an id: the caller's ``X-Request-Id`` if it is a
plain short token, else a new one; it is in the response's ``X-Request-Id`` and on every log
line written while handling it (huizhen/logs.py).
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from huizhen.logs import REQUEST_ID
from observability.metrics import Metrics

METRICS = web.AppKey("metrics", Metrics)
_TOKEN = web.AppKey("metrics_token", bytes)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_routes(app: web.Application, metrics: Metrics, token: str, enabled: bool = True
               ) -> None:
    app[METRICS] = metrics
    app[_TOKEN] = token.encode()
    if enabled:
        app.router.add_get("/metrics", scrape)


async def scrape(request: web.Request) -> web.Response:
    token = request.app[_TOKEN]
    if token:
        header = request.headers.get("Authorization", "")
        given = header[7:].strip().encode() if header.startswith("Bearer ") else b""
        if not hmac.compare_digest(given, token):
            return web.json_response(
                {"error": {"code": "unauthorized",
                           "message": "send Authorization: Bearer <metrics.token>"}},
                status=401, headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    body = await request.app[METRICS].scrape()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def request_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("X-Request-Id", "")
    request_id = given if _REQUEST_ID.fullmatch(given) else secrets.token_hex(8)
    REQUEST_ID.set(request_id)  # this request's task (and the tasks it starts)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers["X-Request-Id"] = request_id
        raise
    if not response.prepared:  # a WebSocket's handshake has gone out already
        response.headers["X-Request-Id"] = request_id
    return response
