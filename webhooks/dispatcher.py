"""Webhooks to the hospital system: what happened in the rooms, POSTed as signed JSON.

The dispatcher reads the room event log (the same rows ``GET /api/rooms/{id}/events`` shows),
so it needs no hook in the rooms and sees what any process wrote — the recording worker's
``recording_ready`` included. New events become deliveries in the outbox (webhooks/db.py);
each is POSTed with a timeout, and retried with doubling waits while the receiver fails. It
runs beside the rooms and never in their way: a receiver that hangs costs one of a few
senders its timeout, nothing more.

Every POST carries ``Huizhen-Signature: t=<unix time>,v1=<hex>``: HMAC-SHA256 with the
endpoint's API key's secret over ``"<t>." + body``. ``Huizhen-Event`` names the type and
``Huizhen-Delivery`` the delivery (the same on every retry: a receiver drops repeats by it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from huizhen import __version__
from huizhen.config import ConfigError, Settings, WebhookEndpoint
from rooms.db import Database
from rooms.models import EventRecord, utcnow
from webhooks.db import Delivery, WebhookDb

log = logging.getLogger("huizhen.webhooks")

#: room event type → webhook type (``room.started`` is a room's first ``participant_joined``)
TYPES = {"room_ended": "room.ended", "participant_joined": "participant.joined",
         "participant_left": "participant.left", "recording_started": "recording.started",
         "recording_ready": "recording.ready", "document_signed": "document.signed"}
ALL_TYPES = ("room.started", *TYPES.values())
#: what of each event's data goes out (never names: the hospital system has its identities)
FIELDS = {"room.ended": ("reason",), "participant.joined": ("identity", "role"),
          "participant.left": ("identity", "role", "reason"),
          "recording.started": ("recording_id", "by", "consent_id", "override_reason"),
          "recording.ready": ("recording_id", "duration_s"),
          "document.signed": ("document_id", "version", "signed_by", "patient_ref")}
BATCH = 200
SENDERS = 4


def sign(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body,
                    hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, now: float | None = None) -> str:
    timestamp = int(time.time() if now is None else now)
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


def check(settings: Settings) -> None:
    """At start: each endpoint's key exists and its event types are known."""
    for endpoint in settings.webhooks.endpoints:
        if settings.secret_for(endpoint.api_key) is None:
            raise ConfigError(f"webhooks.endpoints: {endpoint.url} names the API key "
                              f"{endpoint.api_key!r}, which is not in auth.api_keys")
        unknown = sorted(set(endpoint.events) - set(ALL_TYPES))
        if unknown:
            raise ConfigError(f"webhooks.endpoints: {endpoint.url} asks for unknown events "
                              f"{', '.join(unknown)}; known: {', '.join(ALL_TYPES)}")


class Dispatcher:
    def __init__(self, db: Database, settings: Settings) -> None:
        check(settings)
        self.outbox = WebhookDb(db)
        self.settings = settings
        self.config = settings.webhooks
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sending: set[str] = set()
        self._senders = asyncio.Semaphore(SENDERS)
        self._http: aiohttp.ClientSession | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.config.endpoints)

    async def start(self) -> None:
        if not self.enabled:
            return
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
            headers={"User-Agent": f"Huizhen-Webhooks/{__version__}"})
        self._task = asyncio.create_task(self._run(), name="webhooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._http is not None:
            await self._http.close()

    def wake(self) -> None:
        """Look now (a retry was asked for), not at the next poll."""
        self._wake.set()

    async def _run(self) -> None:
        tasks: set[asyncio.Task[None]] = set()
        while True:
            try:
                await self.collect()
                for delivery in await self.outbox.due(utcnow(), BATCH):
                    if delivery.id in self._sending:
                        continue
                    self._sending.add(delivery.id)
                    task = asyncio.create_task(self._send(delivery))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            except Exception:  # a database hiccup: try again at the next poll
                log.exception("webhook dispatch failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.poll_s)
            self._wake.clear()

    # ---- events → deliveries -----------------------------------------------------------------
    async def collect(self) -> int:
        """Queue deliveries for the events since the cursor; how many were queued."""
        queued = 0
        while True:
            cursor = await self.outbox.cursor()
            events = await self.outbox.events_after(cursor, BATCH)
            if not events:
                return queued
            deliveries = [d for e in events for d in await self._deliveries(e)]
            if await self.outbox.advance(cursor, events[-1].id or cursor, deliveries):
                queued += len(deliveries)

    async def _deliveries(self, event: EventRecord) -> list[Delivery]:
        types = []
        if event.type == "participant_joined" and not await self.outbox.earlier_joins(
                event.room_id, event.id or 0):
            types.append("room.started")
        if event.type in TYPES:
            types.append(TYPES[event.type])
        if not types:
            return []
        room = await self.outbox.db.get_room(event.room_id)
        kind = room.kind if room else None
        out = []
        for type_ in types:
            for endpoint in self.config.endpoints:
                if endpoint.events and type_ not in endpoint.events:
                    continue
                delivery_id = "wh_" + secrets.token_hex(12)
                body = {"id": delivery_id, "type": type_, "at": event.at.isoformat(),
                        "room": {"id": event.room_id, "kind": kind},
                        "data": _data(type_, event)}
                now = utcnow()
                out.append(Delivery(delivery_id, event.id or 0, endpoint.url, type_, body,
                                    "pending", 0, now, now, None, None))
        return out

    # ---- sending -------------------------------------------------------------------------------
    async def _send(self, delivery: Delivery) -> None:
        try:
            async with self._senders:
                lease = utcnow() + timedelta(seconds=self.config.timeout_s + 30)
                if await self.outbox.lease(delivery, lease):
                    await self.deliver(delivery, delivery.attempts + 1)
        except Exception:
            log.exception("webhook delivery failed", extra={"delivery": delivery.id})
        finally:
            self._sending.discard(delivery.id)

    async def deliver(self, delivery: Delivery, attempt: int) -> bool:
        """One try; the outbox learns how it went. True when the receiver took it."""
        endpoint = self._endpoint(delivery.endpoint)
        error = None
        if endpoint is None:
            error = "the endpoint is no longer configured"
        else:
            error = await self._post(endpoint, delivery)
        if error is None:
            await self.outbox.delivered(delivery.id)
            log.info("webhook delivered", extra={"delivery": delivery.id, "type": delivery.type,
                                                 "attempt": attempt})
            return True
        retry_at = self._retry_at(attempt) if endpoint is not None else None
        await self.outbox.failed(delivery.id, error, retry_at)
        log.warning("webhook not delivered", extra={
            "delivery": delivery.id, "type": delivery.type, "attempt": attempt, "error": error,
            "retry_at": retry_at.isoformat() if retry_at else None})
        return False

    async def _post(self, endpoint: WebhookEndpoint, delivery: Delivery) -> str | None:
        """None when the receiver answered 2xx, else what went wrong."""
        assert self._http is not None
        body = json.dumps(delivery.body, ensure_ascii=False, separators=(",", ":")).encode()
        secret = self.settings.secret_for(endpoint.api_key) or ""
        headers = {"Content-Type": "application/json", "Huizhen-Event": delivery.type,
                   "Huizhen-Delivery": delivery.id,
                   "Huizhen-Signature": signature_header(secret, body)}
        try:
            async with self._http.post(endpoint.url, data=body, headers=headers) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except TimeoutError:
            return f"no answer within {self.config.timeout_s:g} s"
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {exc}"

    def _retry_at(self, attempt: int) -> datetime | None:
        if attempt >= self.config.max_attempts:
            return None
        wait = min(self.config.max_backoff_s, self.config.backoff_s * 2 ** (attempt - 1))
        return utcnow() + timedelta(seconds=wait)

    def _endpoint(self, url: str) -> WebhookEndpoint | None:
        return next((e for e in self.config.endpoints if e.url == url), None)


def _data(kind: str, event: EventRecord) -> dict[str, Any]:
    data = {k: event.data[k] for k in FIELDS.get(kind, ()) if k in event.data}
    if event.participant_id and kind.startswith(("participant.", "room.started")):
        data["participant_id"] = event.participant_id
    return data
