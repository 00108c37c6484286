"""One benchmark client per process, driven by bench/fanout.py and bench/recording.py.

Targets (``--target``):
  huizhen  the Huizhen SFU: signalling over its WebSocket, ``sdk.participant.Participant``
           with ``decode=False``
  relay    bench/relay_baseline.py: one HTTP POST of the SDP offer, aiortc ``MediaRelay``

Roles (``--role``):
  subscribe  receive the publisher's video and count frames (RTP marker bit) and RTP payload
             bytes per frame without decoding anything: the receiver's jitter buffer is
             replaced by a counter, so the client's own CPU stays small and the benchmark
             measures the server
  publish    send the 640x480 VP8 test pattern (video only, 30 fps at most: late frames are
             skipped like a camera's; the encoder follows the server's REMB). ``--audio`` also
             publishes a tone (Opus; huizhen only). ``--replay`` (huizhen): encode
             ``--replay-seconds`` of the pattern once at start (VP8 at ``--max-kbps``, aiortc's
             encoder settings, a keyframe every second) and one second of the tone, and send
             those encoded frames in a loop (aiortc's sender only packetises an ``av.Packet``),
             so a publisher costs ~0.05 core instead of ~0.2
  receive    (huizhen) receive the room's audio and video and count frames without decoding:
             the plain subscriber that bench/recording.py compares a recorder with
  record     (huizhen) receive, decode (aiortc's receivers) and record what arrives with
             aiortc's ``MediaRecorder`` into ``--record-to`` (.webm: VP8 and Opus re-encoded):
             how an aiortc-based service records (bench/recording.py's baseline)

Protocol with the parent: stdout carries one JSON object per line (``{"event": "ready", …}``
when the first frame arrived / the publisher is connected, ``{"event": "stats", …}``,
``{"event": "error", …}``); logs go to stderr. On stdin, ``window T0 T1`` (two
``time.monotonic()`` values; CLOCK_MONOTONIC is shared by all processes on Linux) prints the
frames received (subscriber) or sent (publisher) in [T0, T1); ``stop T0 T1`` does the same and
then leaves and exits; ``stop`` alone or the end of input makes the worker leave and exit, so
a worker never outlives its parent. ``packets T0 T1`` (publisher) prints the RTP packets it
sent in [T0, T1) (``{"event": "packets", …}``).

Added latency: the publisher notes, for every RTP packet it sends, the send time (taken when
aiortc's ``RTCDtlsTransport._send_rtp`` is entered, before SRTP) under a key made of a hash of
the packet's payload, and the packet's RTP timestamp; subscribers note the arrival time of every
packet under the same key, and the arrival of the first packet of each frame (RTP timestamp).
The arrival time is the kernel's receive timestamp of the datagram (``SO_TIMESTAMPNS``: when
the server's packet reached this subscriber's socket, however late this busy process reads
it), and also, as ``t_app``, the time ``RTCDtlsTransport._handle_rtp_data`` is entered (after
this process has read the datagram and decrypted it). Huizhen forwards payloads unchanged, so
keys match packet for packet; the MediaRelay baseline re-encodes, so there only frames can be
matched (by RTP timestamp: see ``fanout_measure.match_frames``). The subscriber's ``stats``
carry these lists (``arrivals``, ``frame_arrivals``).

Every peer connection gathers ICE candidates on 127.0.0.1 only and uses no STUN/TURN server.

The parts: subscriber_timing.py (packet times, frame counting), subscriber_media.py (the
publisher's pattern and replayed media), subscriber_baselines.py (the MediaRelay and Janus
clients).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import _paths  # noqa: F401  (first: the project's packages before bench/'s scripts)
import aiortc.codecs.vpx
from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaRecorder
from subscriber_baselines import janus_client, relay_client, wait_connected
from subscriber_media import (
    CameraPatternTrack,
    ReplayAudioTrack,
    ReplayVideoTrack,
    encode_pattern,
    encode_tone,
    replay_summary,
    stamp_audio_level,
)
from subscriber_timing import (
    FrameLog,
    PacketTimes,
    count_sent_frames,
    install_tap,
    record_sent_packets,
    stamp_rtp_arrivals,
)

from media.ice import IcePolicy
from sdk.participant import Participant
from sdk.testmedia import AUDIO_PTIME, ToneAudioTrack

log = logging.getLogger("bench.subscriber")


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


# ---- Huizhen ---------------------------------------------------------------------------------
class BenchParticipant(Participant):
    """A viewer that also logs frame times and sizes of every video track it receives."""

    #: its sockets are read by ``_read_with_timestamps`` (the latency figures' clock)
    stamp_arrivals = False

    def __init__(self, *args: Any, frames: FrameLog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frame_log = frames

    def _count_rtp(self, mid: str, receiver: Any) -> None:
        super()._count_rtp(mid, receiver)
        info = self._mid_tracks.get(mid)
        if info is not None and info.get("kind") == "video":
            install_tap(receiver, self.frame_log, chain=True)


async def huizhen_client(args: argparse.Namespace, frames: FrameLog
                         ) -> Callable[[], Awaitable[None]]:
    video: MediaStreamTrack = CameraPatternTrack(args.tag)
    tone = 440.0 + 110 * args.tag  # ToneAudioTrack's pitch for this tag, as sdk publishes
    audio: MediaStreamTrack = ToneAudioTrack(tone)
    level: int | None = None
    if args.role == "publish" and args.replay:
        # before joining: this blocks the event loop for seconds, and a participant that
        # does not answer the server's heartbeat is dropped
        encoded = encode_pattern(args.tag, args.replay_seconds, args.max_kbps)
        frames.replay = replay_summary(encoded, 30)
        video = ReplayVideoTrack(encoded, tag=args.tag)
        if args.audio:
            packets, level = encode_tone(tone)
            audio = ReplayAudioTrack(packets)
            frames.replay["audio_kbps"] = round(sum(len(p) for p in packets) * 8 / 1000 /
                                                (len(packets) * AUDIO_PTIME), 1)
    participant = BenchParticipant(args.server, args.room, args.token, ice=ice_policy(args),
                                   decode=False, frames=frames)
    await participant.join(timeout=args.ready_timeout)
    if args.role == "publish":
        await participant.publish(audio=args.audio, video=True, tag=args.tag, video_track=video,
                                  audio_track=audio if args.audio else None)
        pc = participant._publish_pcs[0]
        count_sent_frames(next(s for s in pc.getSenders() if s.track is video), frames)
        if level is not None:
            stamp_audio_level(next(s for s in pc.getSenders() if s.track is audio), level)
        await wait_connected(pc, args.ready_timeout)
    return participant.leave


# ---- the recording baseline: a participant that records what it receives ---------------------
class CountedTrack(MediaStreamTrack):
    """Hands on a received track's decoded frames, noting each one (what MediaRecorder got).
    ``after``: hand out nothing until that event is set."""

    def __init__(self, inner: MediaStreamTrack, frames: FrameLog,
                 after: asyncio.Event | None = None) -> None:
        super().__init__()
        self.kind = inner.kind
        self.inner = inner
        self.frames = frames
        self.after = after

    async def recv(self) -> Any:
        frame = await self.inner.recv()
        if self.after is not None:
            await self.after.wait()
        self.frames.on_frame(0)
        return frame


class ReceiveParticipant(Participant):
    """Receives the room's tracks. Without ``record_to``: counts frames from RTP and decodes
    nothing (role ``receive``). With it (role ``record``): aiortc's receivers decode, and
    ``MediaRecorder`` re-encodes what arrives into that file (.webm: VP8 + Opus), as an
    aiortc-based service records. Video frames go to ``frames``, audio frames to ``audio``
    (counted as they reach the recorder when recording)."""

    #: a second kind of track is waited for this long before the recorder starts without it
    OTHER_KIND_WAIT_S = 2.0

    def __init__(self, server_url: str, room_id: str, token: str, ice: IcePolicy, *,
                 frames: FrameLog, audio: FrameLog, record_to: str | None) -> None:
        super().__init__(server_url, room_id, token, ice=ice, decode=record_to is not None)
        self.video_log = frames
        self.audio_log = audio
        self.recorder = MediaRecorder(record_to) if record_to else None
        self._to_record: dict[str, MediaStreamTrack] = {}
        self._recording = False

    def _count_frame(self, stats: Any) -> float:
        now = super()._count_frame(stats)
        if self.recorder is None:
            (self.video_log if stats.kind == "video" else self.audio_log).on_frame(0)
        return now

    async def _drain(self, mid: str, track: MediaStreamTrack) -> None:
        if self.recorder is None or self._recording or track.kind in self._to_record:
            await super()._drain(mid, track)  # (a track that came late is drained, unrecorded)
            return
        # MediaRecorder opens every stream's encoder when the file gets its first packet, and
        # sets the video size from the first video frame: a first audio packet before it
        # kills the video ("Cannot change width after codec is open"). So audio waits for
        # the first video frame.
        video = track.kind == "video"
        self._to_record[track.kind] = CountedTrack(
            track, self.video_log if video else self.audio_log,
            None if video else self.video_log.first_frame)
        if len(self._to_record) < 2:
            await asyncio.sleep(self.OTHER_KIND_WAIT_S)
        if not self._recording:
            self._recording = True
            for counted in self._to_record.values():
                self.recorder.addTrack(counted)
            await self.recorder.start()

    async def leave(self) -> None:
        if self.recorder is not None:
            with contextlib.suppress(Exception):
                await self.recorder.stop()  # writes the file's end
        await super().leave()


async def receive_client(args: argparse.Namespace, frames: FrameLog, audio: FrameLog
                         ) -> Callable[[], Awaitable[None]]:
    participant = ReceiveParticipant(
        args.server, args.room, args.token, ice=ice_policy(args), frames=frames, audio=audio,
        record_to=args.record_to if args.role == "record" else None)
    await participant.join(timeout=args.ready_timeout)
    return participant.leave


# ---- main ------------------------------------------------------------------------------------
def ice_policy(args: argparse.Namespace) -> IcePolicy:
    """Candidates on ``--ice-address`` only (127.0.0.1 unless the benchmark says otherwise)."""
    return IcePolicy(gather_addresses=[args.ice_address])


async def stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def serve_commands(reader: asyncio.StreamReader, frames: FrameLog,
                         sent: PacketTimes, audio: FrameLog | None = None) -> None:
    """``window T0 T1``: print the frames of that window. ``packets T0 T1``: print the RTP
    packets sent in that window (publisher). ``stop [T0 T1]`` (printing that window first) or
    the end of input: return, and the worker leaves."""
    while True:
        line = await reader.readline()
        if not line:
            return
        words = line.decode().split()
        if not words or words[0] not in ("window", "stop", "packets"):
            continue
        if words[0] == "packets" and len(words) == 3:
            emit("packets", **sent.window(float(words[1]), float(words[2])))
            continue
        if len(words) == 3:
            t0, t1 = float(words[1]), float(words[2])
            extra = {} if audio is None else {"audio_fps": audio.window(t0, t1)["fps"]}
            emit("stats", **frames.window(t0, t1), **extra)
        if words[0] == "stop":
            return


async def run(args: argparse.Namespace) -> int:
    ice_policy(args).install()
    frames = FrameLog()
    audio = FrameLog()  # roles receive and record: audio frames
    sent = PacketTimes()
    if args.role == "publish":
        record_sent_packets(sent)
    elif args.role == "subscribe":
        stamp_rtp_arrivals()
    reader = await stdin_reader()
    baseline = args.role in ("receive", "record")
    stop = asyncio.ensure_future(serve_commands(reader, frames, sent,
                                                audio if baseline else None))
    connect = {"huizhen": huizhen_client, "relay": relay_client,
               "janus": janus_client}[args.target]
    close: Callable[[], Awaitable[None]] | None = None
    try:
        async def start() -> None:
            nonlocal close
            if baseline:
                close = await receive_client(args, frames, audio)
            else:
                close = await connect(args, frames)
            if args.role != "publish":
                await frames.first_frame.wait()

        starting = asyncio.ensure_future(asyncio.wait_for(start(), args.ready_timeout))
        await asyncio.wait([starting, stop], return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # told to stop (or orphaned) before being ready
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
            return 1
        try:
            starting.result()
        except TimeoutError:
            emit("error", message=f"not ready after {args.ready_timeout} s")
            return 1
        emit("ready", role=args.role, target=args.target,
             first_frame_delay_s=frames.first_frame_delay, replay=frames.replay)
        await stop
        return 0
    except Exception as exc:
        log.exception("worker failed")
        emit("error", message=f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        stop.cancel()
        if close is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(close(), 5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=["huizhen", "relay", "janus"], required=True)
    parser.add_argument("--role", choices=["subscribe", "publish", "receive", "record"],
                        default="subscribe")
    parser.add_argument("--server", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--room", help="room id (huizhen)")
    parser.add_argument("--token", help="participant token (huizhen)")
    parser.add_argument("--tag", type=int, default=0, help="test pattern colour")
    parser.add_argument("--ice-address", default="127.0.0.1",
                        help="the one address to gather ICE candidates on (a 127.0.0.0/8 one)")
    parser.add_argument("--ready-timeout", type=float, default=60)
    parser.add_argument("--max-kbps", type=int, default=1000,
                        help="publisher: the VP8 encoder's bitrate ceiling (aiortc's is 1500)")
    parser.add_argument("--replay", action="store_true",
                        help="publisher: send a pre-encoded loop of the pattern (VP8 at "
                             "--max-kbps, a keyframe every second) instead of encoding live")
    parser.add_argument("--replay-seconds", type=float, default=4.0,
                        help="publisher with --replay: length of the loop (default 4 s)")
    parser.add_argument("--audio", action="store_true",
                        help="publisher (huizhen): also publish an Opus tone")
    parser.add_argument("--record-to", help="role record: the .webm file MediaRecorder writes")
    args = parser.parse_args(argv)
    # the encoder follows REMB up to this ceiling: ~1 Mbit/s is the benchmark's stream
    aiortc.codecs.vpx.MAX_BITRATE = args.max_kbps * 1000
    if args.target == "huizhen" and not (args.room and args.token):
        parser.error("--target huizhen needs --room and --token")
    if args.role in ("receive", "record") and args.target != "huizhen":
        parser.error(f"--role {args.role} is for --target huizhen")
    if args.role == "record" and not args.record_to:
        parser.error("--role record needs --record-to FILE.webm")
    if (args.replay or args.audio) and (args.role != "publish" or args.target != "huizhen"):
        parser.error("--replay and --audio are for --role publish --target huizhen")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
