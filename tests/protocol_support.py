"""The catalogue of bad signalling messages and the helpers tests/test_protocol.py drives a
real WebSocket with (docs/protocol.md: every bad message gets its error and costs nothing)."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpSender

from sdk.participant import Participant
from sdk.testmedia import PatternVideoTrack, ToneAudioTrack
from tests.harness import LOOPBACK, Server

LIMIT = 256 * 1024  # signaling.max_message_bytes by default
_pings = itertools.count(1000)


# ---- helpers -----------------------------------------------------------------------------------

def ws_url(server: Server, room: str) -> str:
    return server.url.replace("http", "ws", 1) + f"/ws/{room}"


def frame_of_size(size: int) -> str:
    """A ``ping`` JSON object of exactly ``size`` bytes (with one property too many)."""
    head, tail = '{"type":"ping","t":1,"pad":"', '"}'
    frame = head + "x" * (size - len(head) - len(tail)) + tail
    assert len(frame.encode()) == size
    return frame


async def next_error(p: Participant, before: int, timeout: float = 10) -> dict[str, Any]:
    """The first error that arrived after the first ``before`` ones."""
    if not await p.wait_until(lambda: len(p.errors) > before, timeout=timeout):
        raise AssertionError(f"no error arrived within {timeout} s "
                             f"(socket closed: {p.closed.is_set()})")
    return p.errors[before]


async def send_and_get_error(p: Participant, frame: str | bytes) -> dict[str, Any]:
    before = len(p.errors)
    if isinstance(frame, bytes):
        assert p._ws is not None
        await p._ws.send_bytes(frame)
    else:
        await p.send_raw(frame)
    return await next_error(p, before)


async def answers_ping(p: Participant, timeout: float = 5) -> bool:
    """Send a ping and wait for its pong (matched on ``t``: pongs are events to the client)."""
    if p.closed.is_set():
        return False
    t = next(_pings)
    with contextlib.suppress(Exception):
        await p.send({"type": "ping", "t": t})
    return await p.wait_until(
        lambda: any(e.get("type") == "pong" and e.get("t") == t for e in p.events), timeout)


async def participant_ids(server: Server, room: str) -> set[str]:
    status, body = await server.api("GET", f"/api/rooms/{room}")
    assert status == 200, body
    return {p["id"] for p in body["participants"]}


async def joined(server: Server, room: str, identity: str, role: str = "specialist",
                 decode: bool = True) -> Participant:
    token = await server.token(room, identity, role)
    p = Participant(server.url, room, token, ice=LOOPBACK, decode=decode)
    await p.join()
    return p


async def offer_sdp(audio: bool = True, video: bool = False,
                    video_codec: str | None = None) -> str:
    """A real aiortc offer (ICE gathered), for publishing by hand."""
    pc = RTCPeerConnection(LOOPBACK.configuration())
    try:
        if audio:
            pc.addTransceiver(ToneAudioTrack(), direction="sendonly")
        if video:
            transceiver = pc.addTransceiver(PatternVideoTrack(), direction="sendonly")
            if video_codec is not None:
                transceiver.setCodecPreferences([
                    c for c in RTCRtpSender.getCapabilities("video").codecs
                    if c.mimeType.lower() == f"video/{video_codec.lower()}"])
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


def publish_frame(sdp: str, tracks: list[dict[str, Any]], msg_id: str = "pub") -> str:
    return json.dumps({"type": "publish", "id": msg_id, "sdp": sdp, "tracks": tracks})


AUDIO_TRACK = {"mid": "0", "kind": "audio", "source": "microphone"}
EMPTY_SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"


# ---- the catalogue of garbage -----------------------------------------------------------------

@dataclass
class Garbage:
    label: str
    frame: Callable[[Participant, dict[str, str]], str | bytes]
    codes: tuple[str, ...]
    needle: str | None = None  # must appear in the error message (the field it names)
    ref: str | None = None  # the ``id`` the frame carries, echoed as ``ref``


def _const(frame: str | bytes) -> Callable[[Participant, dict[str, str]], str | bytes]:
    return lambda p, ctx: frame


GARBAGE: list[Garbage] = [
    Garbage("not JSON", _const("this is not json {"), ("bad_json",)),
    Garbage("JSON array", _const('[{"type": "ping"}]'), ("bad_json",)),
    Garbage("JSON string", _const('"ping"'), ("bad_json",)),
    Garbage("JSON number", _const("42"), ("bad_json",)),
    Garbage("JSON null", _const("null"), ("bad_json",)),
    Garbage("empty frame", _const(""), ("bad_json",)),
    Garbage("binary frame", _const(b'{"type": "ping"}'), ("bad_json",)),
    Garbage("unknown type", _const('{"type": "dance", "id": "g1"}'), ("unknown_type",),
            "dance", "g1"),
    Garbage("no type", _const('{"id": "g2"}'), ("unknown_type",), None, "g2"),
    Garbage("type not a string", _const('{"type": ["ping"], "id": "g3"}'), ("unknown_type",),
            None, "g3"),
    Garbage("publish without tracks",
            _const('{"type": "publish", "id": "g4", "sdp": "v=0\\r\\n"}'),
            ("bad_message",), "tracks", "g4"),
    Garbage("publish with no track",
            _const('{"type": "publish", "id": "g5", "sdp": "v=0\\r\\n", "tracks": []}'),
            ("bad_message",), "tracks", "g5"),
    Garbage("publish track of unknown kind",
            _const(publish_frame("v=0\r\n", [{"mid": "0", "kind": "data",
                                              "source": "camera"}], "g6")),
            ("bad_message",), "kind", "g6"),
    Garbage("mute with muted: yes",
            _const('{"type": "mute", "id": "g7", "track_id": "t_x", "muted": "yes"}'),
            ("bad_message",), "muted", "g7"),
    Garbage("mute without track_id", _const('{"type": "mute", "id": "g8", "muted": true}'),
            ("bad_message",), "track_id", "g8"),
    Garbage("ping with t a string", _const('{"type": "ping", "id": "g9", "t": "noon"}'),
            ("bad_message",), "t", "g9"),
    Garbage("unexpected property", _const('{"type": "leave", "id": "g10", "now": true}'),
            ("bad_message",), "now", "g10"),
    Garbage("seq zero",
            _const('{"type": "subscriber_answer", "id": "g11", "sdp": "v=0", "seq": 0}'),
            ("bad_message",), "seq", "g11"),
    Garbage("id too long", _const(json.dumps({"type": "ping", "id": "i" * 65})),
            ("bad_message",), "id"),
    Garbage("frame just over the limit", _const(frame_of_size(LIMIT + 1)),
            ("message_too_large",), str(LIMIT)),
    Garbage("SDP that is not SDP",
            _const(publish_frame("hello, server", [AUDIO_TRACK], "g12")), ("bad_sdp",),
            None, "g12"),
    Garbage("SDP that does not parse",
            _const(publish_frame("v=0\r\nm=video garbage\r\n", [AUDIO_TRACK], "g13")),
            ("bad_sdp",), None, "g13"),
    Garbage("m-line listed as the wrong kind",
            lambda p, ctx: publish_frame(ctx["audio_offer"], [
                {"mid": "0", "kind": "video", "source": "camera"}], "g14"),
            ("bad_sdp",), None, "g14"),
    Garbage("m-line not listed",
            lambda p, ctx: publish_frame(ctx["audio_offer"], [
                {"mid": "7", "kind": "audio", "source": "microphone"}], "g15"),
            ("bad_sdp",), None, "g15"),
    Garbage("video in a codec the room does not use",
            lambda p, ctx: publish_frame(ctx["h264_offer"], [
                {"mid": "0", "kind": "video", "source": "camera"}], "g16"),
            ("bad_sdp",), "vp8", "g16"),
    Garbage("audio from a camera",
            lambda p, ctx: publish_frame(ctx["audio_offer"], [
                {"mid": "0", "kind": "audio", "source": "camera"}], "g17"),
            ("bad_message",), "camera", "g17"),
    Garbage("two tracks, one mid",
            lambda p, ctx: publish_frame(ctx["audio_offer"], [AUDIO_TRACK, AUDIO_TRACK],
                                         "g18"),
            ("bad_message",), "mid", "g18"),
    Garbage("subscriber_answer for an offer never made",
            _const('{"type": "subscriber_answer", "id": "g19", "seq": 10000, '
                   '"sdp": "v=0\\r\\no=- 1 1 IN IP4 0.0.0.0\\r\\ns=-\\r\\nt=0 0\\r\\n"}'),
            ("bad_sdp",), "10000", "g19"),
    Garbage("mute a track that is not mine",
            _const('{"type": "mute", "id": "g20", "track_id": "t_nope", "muted": true}'),
            ("unknown_track",), "t_nope", "g20"),
    Garbage("unpublish a track that is not mine",
            _const('{"type": "unpublish", "id": "g21", "track_id": "t_nope"}'),
            ("unknown_track",), "t_nope", "g21"),
    Garbage("video_size for a track not received",
            _const('{"type": "video_size", "id": "g25", "track_id": "t_nope", '
                   '"max_height": 240}'),
            ("unknown_track",), "t_nope", "g25"),
    Garbage("video_size with a negative height",
            _const('{"type": "video_size", "id": "g26", "track_id": "t_x", '
                   '"max_height": -1}'),
            ("bad_message",), "max_height", "g26"),
    Garbage("simulcast with a single layer",
            lambda p, ctx: publish_frame(
                ctx["vp8_offer"].replace("a=mid:0\r\n", "a=mid:0\r\na=rid:l send\r\n"
                                         "a=simulcast:send l\r\n"),
                [{"mid": "0", "kind": "video", "source": "camera"}], "g27"),
            ("bad_sdp",), "simulcast", "g27"),
    Garbage("chat with a lone surrogate",
            _const('{"type": "chat", "id": "g28", "text": "hi \\ud800 there"}'),
            ("bad_json",), "text", "g28"),
    Garbage("a lone low surrogate in a key",
            _const('{"type": "chat", "id": "g29", "text": "hi", "\\udc00": 1}'),
            ("bad_json",), "surrogate", "g29"),
    Garbage("chat with NUL",
            _const('{"type": "chat", "id": "g30", "text": "a\\u0000b"}'),
            ("bad_message",), "text", "g30"),
    Garbage("NUL in a track id",
            _const('{"type": "mute", "id": "g31", "track_id": "t_\\u0000", "muted": true}'),
            ("bad_message",), "track_id", "g31"),
    Garbage("second join",
            lambda p, ctx: json.dumps({"type": "join", "id": "g22", "v": 1, "token": p.token}),
            ("already_joined",), None, "g22"),
]

#: garbage the server currently mishandles (see the dedicated tests below); kept in the
#: all-garbage run, last, because a correct server must survive it too
GARBAGE_LAST: list[Garbage] = [
    Garbage("listed track missing from the SDP",
            lambda p, ctx: publish_frame(ctx["audio_offer"], [
                AUDIO_TRACK, {"mid": "1", "kind": "video", "source": "camera"}], "g23"),
            ("bad_sdp", "bad_message"), None, "g23"),
    Garbage("publish with no m-line at all",
            _const(publish_frame(EMPTY_SDP, [AUDIO_TRACK], "g24")),
            ("bad_sdp", "bad_message"), None, "g24"),
    Garbage("deeply nested JSON", _const("[" * 100_000), ("bad_json",)),
]


def check(item: Garbage, error: dict[str, Any]) -> list[str]:
    problems = []
    if error.get("type") != "error" or error.get("code") not in item.codes:
        problems.append(f"{item.label}: expected {item.codes}, got {error}")
    if item.needle is not None and item.needle not in str(error.get("message", "")).lower() \
            and item.needle not in str(error.get("message", "")):
        problems.append(f"{item.label}: the message does not name {item.needle!r}: {error}")
    if item.ref is not None and error.get("ref") != item.ref:
        problems.append(f"{item.label}: ref {item.ref!r} not echoed: {error}")
    return problems
