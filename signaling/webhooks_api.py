"""What was sent to the hospital system, for its operators (docs/api.md, "Webhooks")."""

from __future__ import annotations

from aiohttp import web

from rooms.members import RoomError
from signaling.api import BadRequest
from signaling.api_models import DELIVERY, listing
from signaling.keys import WEBHOOKS
from signaling.openapi import Param, operation, reply
from webhooks.db import STATUSES


@operation("Webhook deliveries, newest first", tag="webhooks",
           params=(Param("status", "query", {"enum": list(STATUSES)}),
                   Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000},
                         "at most this many (default 100)")),
           responses={200: reply("The deliveries", listing("deliveries", DELIVERY))})
async def list_deliveries(request: web.Request) -> web.Response:
    """``?status=pending|delivered|failed&limit=N`` (newest first, at most 1000)."""
    status = request.query.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
    text = request.query.get("limit", "100")
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise BadRequest("limit must be a whole number from 1 to 1000")
    found = await request.app[WEBHOOKS].outbox.list(status, int(text))
    return web.json_response({"deliveries": [d.as_dict() for d in found]})


@operation("Send a delivery again now", tag="webhooks",
           responses={202: reply("The delivery, queued", DELIVERY)})
async def retry(request: web.Request) -> web.Response:
    """Send a delivery again now (a failed one, once the receiver is mended)."""
    dispatcher = request.app[WEBHOOKS]
    delivery = await dispatcher.outbox.retry(request.match_info["delivery_id"])
    if delivery is None:
        raise RoomError("delivery_not_found", "no such webhook delivery")
    dispatcher.wake()
    return web.json_response(delivery.as_dict(), status=202)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/webhooks/deliveries", list_deliveries)
    app.router.add_post("/api/webhooks/deliveries/{delivery_id}/retry", retry)
