"""One WebSocket per participant: authenticate, join, then serve the v1 protocol.

The reader loop only reads, validates and answers pings; messages that take time (SDP
negotiation) run one after another in a worker task, so a slow negotiation never stalls the
heartbeat. A bad message gets an ``error`` and changes nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from typing import Any

from aiohttp import WSMsgType, web

from huizhen.config import Settings
from huizhen.logs import bind
from observability.http import METRICS
from observability.metrics import Metrics
from recording.service import RecordingService
from records.documents import Documents
from rooms.members import JoinRequest, Member, RoomError
from rooms.policy import PolicyError
from rooms.service import RoomService
from signaling.api import join_url
from signaling.auth import (
    AuthError,
    ParticipantClaims,
    check_role_for_room,
    mint_participant_token,
    verify_participant_token,
)
from signaling.keys import DOCUMENTS, IMAGES, RECORDING, ROOMS, SETTINGS
from signaling.protocol import PROTOCOL_VERSION, ProtocolError, parse_client_message

log = logging.getLogger("huizhen.signaling")

DRAIN_TIMEOUT_S = 3.0  # keeps "gone from the room within 10 s" true
CLOSE_TOKEN = 4001
CLOSE_ROOM = 4004
#: the node is restarting (a drain refused the join): join again shortly, here or elsewhere
CLOSE_RESTARTING = 1012
HARD_CAP_FACTOR = 16
#: replies to the client's own messages go out at once; room events wait for ``joined``
_NOT_HELD = frozenset({"joined", "error", "pong"})
BROADCAST_MESSAGES = frozenset({"raise_hand", "promote", "demote", "ask", "approve_question",
                                "dismiss_question"})


class WsSink:
    """Sends to one socket; holds events back until the ``joined`` reply has gone out."""

    def __init__(self, ws: web.WebSocketResponse, metrics: Metrics) -> None:
        self.ws = ws
        self._sent = metrics.messages
        self._lock = asyncio.Lock()
        self._held: list[dict[str, Any]] | None = []

    async def send(self, message: dict[str, Any]) -> None:
        if self._held is not None and message.get("type") not in _NOT_HELD:
            self._held.append(message)
            return
        await self._write(message)

    async def release(self) -> None:
        held, self._held = self._held or [], None
        for message in held:
            await self._write(message)

    async def _write(self, message: dict[str, Any]) -> None:
        if self.ws.closed:
            return
        async with self._lock:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_str(json.dumps(message, separators=(",", ":")))
                self._sent.labels("out", message.get("type", "")).inc()

    async def close(self, code: int, reason: str) -> None:
        if not self.ws.closed:
            await self.ws.close(code=code, message=reason.encode()[:120])


class Connection:
    def __init__(self, request: web.Request, settings: Settings, service: RoomService,
                 recording: RecordingService, documents: Documents) -> None:
        self.request = request
        self.settings = settings
        self.service = service
        self.recording = recording
        self.documents = documents
        self.room_id = request.match_info["room_id"]
        self.metrics = request.app[METRICS]
        self.ws = web.WebSocketResponse(
            heartbeat=settings.signaling.heartbeat_s,
            max_msg_size=settings.signaling.max_message_bytes * HARD_CAP_FACTOR,
        )
        self.sink = WsSink(self.ws, self.metrics)
        self.member: Member | None = None
        self.claims: ParticipantClaims | None = None
        self.leave_reason = "disconnected"
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def run(self) -> web.WebSocketResponse:
        bind(room=self.room_id)  # this task's log lines, and its worker's
        await self.ws.prepare(self.request)
        worker = asyncio.ensure_future(self._work())
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    await self._receive(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self._error(ProtocolError("bad_json", "binary frames are not used"))
                elif msg.type == WSMsgType.ERROR:
                    break
            if isinstance(self.ws.exception(), (asyncio.TimeoutError, TimeoutError)):
                self.leave_reason = "timeout"
        finally:
            # what the client sent before it hung up (say, end_room) is still carried out
            self.queue.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(worker), DRAIN_TIMEOUT_S)
            except (TimeoutError, asyncio.CancelledError):
                worker.cancel()
            except Exception:
                log.exception("message worker failed")
            if self.member is not None:
                bind(participant=self.member.id)
                await self.service.leave(self.member, self.leave_reason)
        return self.ws

    async def _receive(self, raw: str) -> None:
        try:
            message = parse_client_message(raw, self.settings.signaling.max_message_bytes)
        except ProtocolError as exc:
            await self._error(exc)
            return
        self.metrics.messages.labels("in", message["type"]).inc()
        if message["type"] == "ping":
            pong: dict[str, Any] = {"type": "pong", "t": message.get("t")}
            if "id" in message:
                pong["ref"] = message["id"]
            await self.sink.send(pong)
            return
        await self.queue.put(message)

    async def _work(self) -> None:
        while True:
            message = await self.queue.get()
            if message is None:
                return
            ref = message.get("id")
            try:
                await self._dispatch(message)
            except (ProtocolError, RoomError, AuthError) as exc:
                await self._error(exc, ref)
            except Exception:
                log.exception("message failed", extra={"type": message["type"], "ref": ref})
                await self._error(ProtocolError("internal", "the server failed on this "
                                                "message; it has been logged"), ref)

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        ref = message.get("id")
        if kind == "join":
            await self._join(message)
            return
        member = self.member
        if member is None:
            raise ProtocolError("not_joined", "send join first")
        if kind == "publish":
            answer = await self.service.publish(member, message["sdp"], message["tracks"])
            await self.sink.send({"type": "publish_answer", "ref": ref, **answer})
        elif kind == "subscriber_answer":
            await self.service.subscriber_answer(member, message["sdp"], message["seq"])
        elif kind == "mute":
            await self.service.mute(member, message["track_id"], message["muted"])
        elif kind == "video_size":
            self.service.set_video_size(member, message["track_id"], message["max_height"])
        elif kind == "unpublish":
            await self.service.unpublish(member, message["track_id"])
        elif kind == "chat":
            await self.service.chat(member, message["text"])
        elif kind == "admit":
            await self.service.moderation.admit(member, message["participant_id"])
        elif kind == "deny":
            await self.service.moderation.deny(member, message["participant_id"])
        elif kind == "hold":
            await self.service.moderation.hold(member, message["participant_id"], message["held"])
        elif kind == "mute_participant":
            await self.service.moderation.mute_participant(member, message["participant_id"],
                                                message["kind"])
        elif kind == "remove":
            await self.service.moderation.remove(member, message["participant_id"])
        elif kind == "hand_off":
            await self.service.hosts.hand_off(member, message["participant_id"])
        elif kind in BROADCAST_MESSAGES:
            await self._broadcast(member, message)
        elif kind == "create_invite":
            invite = await self._invite(member, message)
            await self.sink.send({"type": "invite", "ref": ref, **invite})
        elif kind == "recording":
            await self.recording.control(member, message["action"],
                                         message.get("override_reason"))
        elif kind == "set_subject":
            await self.service.subjects.set_by(member, message.get("patient_ref"),
                                               message.get("label"))
        elif kind == "agenda_set":
            await self.service.agenda.set_by(member, message["items"])
        elif kind == "agenda_go":
            await self.service.agenda.go(member, message.get("item_id"))
        elif kind == "document_save":
            document = await self.documents.save(
                member, message["kind"], message["text"], message.get("title"),
                message.get("series_id"), message.get("base_version"))
            await self.sink.send({"type": "document_saved", "ref": ref,
                                  "document": document.as_dict()})
        elif kind == "document_sign":
            document = await self.documents.sign(member, message["document_id"])
            await self.sink.send({"type": "document_saved", "ref": ref,
                                  "document": document.as_dict()})
        elif kind == "document_list":
            await self.sink.send({"type": "documents", "ref": ref,
                                  "documents": await self.documents.listing(member)})
        elif kind == "show_image":
            await self.request.app[IMAGES].show(member, message["image_id"],
                                                message.get("window"))
        elif kind == "image_view":
            self.request.app[IMAGES].update(member, message)
        elif kind == "request_consent":
            await self.recording.request_consent(member)
        elif kind == "recording_consent":
            await self.recording.answer_consent(member, message["granted"])
        elif kind == "end_room":
            await self.service.moderation.end_by(member, message.get("reason")
                                                 or "ended by the host")
        elif kind == "leave":
            self.leave_reason = "left"
            await self.service.leave(member, "left")
            self.member = None
            await self.sink.close(1000, "left")

    async def _broadcast(self, member: Member, message: dict[str, Any]) -> None:
        """The audience of a broadcast (rooms/broadcast.py)."""
        kind, audience = message["type"], self.service.audience
        if kind == "raise_hand":
            await audience.raise_hand(member, message["raised"])
        elif kind == "promote":
            await audience.promote(member, message["participant_id"], message["video"])
        elif kind == "demote":
            await audience.demote(member, message["participant_id"])
        elif kind == "ask":
            question = await audience.ask(member, message["text"])
            if "id" in message:
                await self.sink.send({"type": "asked", "ref": message["id"],
                                      "question_id": question.id})
        else:
            await audience.answer(member, message["question_id"],
                                  kind == "approve_question")

    async def _invite(self, member: Member, message: dict[str, Any]) -> dict[str, Any]:
        """A join link for someone new (specialist, interpreter, relative), signed with the
        key that signed the moderator's own token."""
        if not member.grants.moderate or self.claims is None:
            raise RoomError("not_permitted", f"your role ({member.info.role}) may not invite")
        auth = self.settings.auth
        ttl = min(int(message.get("ttl_s") or auth.default_token_ttl_s), auth.max_token_ttl_s)
        room = await self.service.get_room(self.room_id)
        role = message["role"]
        identity = f"guest-{secrets.token_hex(4)}"
        try:
            token, claims = mint_participant_token(
                api_key=self.claims.api_key, secret=self.settings.secret_for(
                    self.claims.api_key) or "", audience=auth.audience, room_id=room.id,
                room_kind=room.kind, identity=identity,
                name=message.get("name") or role.capitalize(), role=role, ttl_s=ttl,
                single_use=True)
        except PolicyError as exc:
            raise RoomError(exc.code, str(exc)) from exc
        await self.service.moderation.invited(member, identity, role)
        return {"join_url": join_url(self.settings, room.id, token), "role": role,
                "identity": identity, "expires_at": claims.expires_at}

    async def _join(self, message: dict[str, Any]) -> None:
        started = time.monotonic()
        ref = message.get("id")
        if self.member is not None:
            raise ProtocolError("already_joined", "this socket has joined already")
        if message["v"] != PROTOCOL_VERSION:
            await self._refuse(ProtocolError("unsupported_version",
                                             f"protocol version {message['v']} is not "
                                             f"supported; use {PROTOCOL_VERSION}"), ref,
                               CLOSE_TOKEN)
            return
        try:
            claims = verify_participant_token(message["token"], self.settings.secret_for,
                                              self.settings.auth.audience)
            if claims.room != self.room_id:
                raise AuthError("token_wrong_room", "this link is for another consultation")
            room = await self.service.get_room(self.room_id)
            grants = check_role_for_room(claims, room.kind)
            if claims.single_use:
                await self._own_invite(claims, message.get("device"))
            member, joined = await self.service.join(
                self.room_id,
                JoinRequest(identity=claims.identity, name=claims.name, role=claims.role,
                            grants=grants, token_id=claims.token_id,
                            department=claims.department),
                self.sink)
        except AuthError as exc:
            await self._refuse(exc, ref, CLOSE_TOKEN)
            return
        except RoomError as exc:
            await self._refuse(exc, ref,
                               CLOSE_RESTARTING if exc.code == "draining" else CLOSE_ROOM)
            return
        self.member = member
        self.claims = claims
        joined["room"].update(self.request.app[IMAGES].joined_view(member))
        # TURN credentials of this participant's own, valid as long as its token (media/turn.py)
        joined["ice_servers"] = self.service.sfu.policy.client_ice_servers(
            member.info.id, claims.expires_at)
        await self.sink.send({"type": "joined", "ref": ref, **joined,
                              "heartbeat_s": self.settings.signaling.heartbeat_s})
        self.metrics.join_latency.observe(time.monotonic() - started)
        await self.sink.release()

    async def _own_invite(self, claims: ParticipantClaims, device: str | None) -> None:
        """A single-use invite belongs to the first device that joins with it; that device
        may come back (a reconnect, a reload), any other is refused."""
        if not device:
            raise AuthError("device_required", "this invite link needs the Huizhen web client "
                            "(or an SDK that sends its device id): open the link in a browser")
        owner = await self.service.db.claim_invite(claims.token_id, self.room_id, device)
        if owner != device:
            raise AuthError("invite_used", "this invite link has already been used by "
                            "someone else; ask the person who invited you for a new link")

    async def _refuse(self, exc: ProtocolError | AuthError | RoomError, ref: str | None,
                      close_code: int) -> None:
        log.info("join refused", extra={"room": self.room_id, "code": exc.code})
        await self.sink.release()
        await self._error(exc, ref)
        await self.sink.close(close_code, exc.code)

    async def _error(self, exc: ProtocolError | AuthError | RoomError,
                     ref: str | None = None) -> None:
        ref = ref if ref is not None else getattr(exc, "ref", None)
        self.metrics.errors.labels(exc.code).inc()
        message: dict[str, Any] = {"type": "error", "code": exc.code, "message": exc.message,
                                   **getattr(exc, "details", {})}
        if ref is not None:
            message["ref"] = ref
        await self.sink.send(message)


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    connection = Connection(request, request.app[SETTINGS], request.app[ROOMS],
                            request.app[RECORDING], request.app[DOCUMENTS])
    return await connection.run()
