"""A load-test worker process: runs the participants the orchestrator sends it, reports on stdout.

Started by the orchestrator as ``python -m loadtest.worker --server URL --room ID …``. Talking
to the orchestrator: JSON lines. Orchestrator → worker on stdin: ``{"cmd": "join", …}``,
``{"cmd": "snapshot", "ref": …}``, ``{"cmd": "stop"}`` (or the end of input: the worker's
participants leave and it exits). Worker → orchestrator on stdout: ``ready``, ``joined``,
``published``, ``first_frame``, ``no_frame``, ``error``, ``disconnected`` (per participant),
``totals`` (every second, for the progress lines), ``snapshot`` (every participant's counters)
and ``stopped``; logs go to stderr.

Publishers, and subscribers with ``--viewer full``, are ``sdk.participant.Participant``s with
``decode=False`` whose receivers count RTP per m-line (``RtpCounter``, loadtest/rtpcount.py:
packets, bytes, frames, loss); subscribers with ``--viewer light`` (the default) are
``LightViewer``s (loadtest/lightviewer.py: ICE, DTLS, SRTP, receiver reports and NACKs, no
``RTCPeerConnection``) counting into the same ``RtpCounter``. aiortc is imported only when the
worker starts. The worker also measures itself (``totals`` and ``snapshot``): its CPU time
(all threads) and its event loop's lag (how late a 50 ms sleep wakes up): a starved load
tester shows there first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from loadtest.rtpcount import RtpCounter

LINE_LIMIT = 16 * 1024 * 1024  # the longest JSON line either side reads


def emit(event: str, **fields: Any) -> None:
    """A worker's event, one JSON line on stdout."""
    print(json.dumps({"event": event, **fields}), flush=True)


JITTER_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"  # aiortc 1.16, name-mangled


class _Tap:
    """Stands in for the receiver's jitter buffer after ``Participant(decode=False)``'s
    counter: counts into an ``RtpCounter`` and calls that counter too."""

    def __init__(self, counter: RtpCounter, inner: Any) -> None:
        self.counter = counter
        self.inner = inner

    def add(self, packet: Any) -> tuple[bool, None]:
        self.counter.add(packet)
        if self.inner is not None:
            self.inner.add(packet)
        return False, None


def _participant_class() -> type[Any]:
    """``Participant`` with per-m-line RTP counters (imported late: aiortc is heavy, and the
    orchestrator does not need it)."""
    from sdk.participant import Participant

    class LoadParticipant(Participant):
        def __init__(self, server_url: str, room_id: str, token: str, ice: Any) -> None:
            super().__init__(server_url, room_id, token, ice=ice, decode=False)
            self.rtp: dict[str, RtpCounter] = {}

        def _count_rtp(self, mid: str, receiver: Any) -> None:
            super()._count_rtp(mid, receiver)
            if not hasattr(receiver, JITTER_BUFFER_ATTR):
                raise RuntimeError("aiortc's RTCRtpReceiver has no jitter buffer attribute")
            kind = str(self._mid_tracks.get(mid, {}).get("kind", "video"))
            counter = self.rtp.setdefault(mid, RtpCounter(kind))
            setattr(receiver, JITTER_BUFFER_ATTR,
                    _Tap(counter, getattr(receiver, JITTER_BUFFER_ATTR)))

    return LoadParticipant


def _camera_track(tag: int) -> Any:
    """The test pattern paced like a camera: frames already late are skipped rather than sent
    in a burst (a CPU-starved worker would otherwise send above 30 fps to catch up)."""
    from sdk.testmedia import PatternVideoTrack

    class CameraPattern(PatternVideoTrack):
        produced = 0  # frames handed to the encoder

        async def recv(self) -> Any:
            if self._start is not None:
                late = int((time.monotonic() - self._start) * self.fps) - self._count
                if late > 0:
                    self._count += late
            frame = await super().recv()
            self.produced += 1
            return frame

    return CameraPattern(tag)


@dataclass
class Slot:
    """One participant in a worker."""

    id: str
    role: str
    token: str
    tag: int
    expect_video: bool
    participant: Any = None
    video_track: Any = None
    started_at: float = 0.0
    task: asyncio.Task[None] | None = None
    stopping: bool = False

    def counters(self, kind: str | None = None) -> list[RtpCounter]:
        rtp: dict[str, RtpCounter] = getattr(self.participant, "rtp", {})
        return [c for c in rtp.values() if kind is None or c.kind == kind]

    def first_frame_at(self) -> float | None:
        times = [c.first_frame_at for c in self.counters("video") if c.first_frame_at]
        return min(times) if times else None

    async def sent(self) -> tuple[int, int]:
        """(bytes, packets) this participant's publish connections sent (aiortc stats)."""
        total_bytes = total_packets = 0
        for pc in getattr(self.participant, "_publish_pcs", []):
            with contextlib.suppress(Exception):
                report = await pc.getStats()
                for stats in report.values():
                    if getattr(stats, "type", "") == "outbound-rtp":
                        total_bytes += int(stats.bytesSent)
                        total_packets += int(stats.packetsSent)
        return total_bytes, total_packets

    def media_state(self) -> str:
        """The media connection's state: a light viewer's, or the participant's peer
        connections' (the worst of them)."""
        p = self.participant
        state = getattr(p, "media_state", None)
        if state is not None:
            return str(state)
        pcs = [pc for pc in [*getattr(p, "_publish_pcs", []), getattr(p, "_subscribe_pc", None)]
               if pc is not None]
        states = [str(pc.connectionState) for pc in pcs]
        for bad in ("failed", "closed", "new", "connecting"):
            if bad in states:
                return bad
        return "connected" if states else "new"

    async def snapshot(self) -> dict[str, Any]:
        video = self.counters("video")
        counters = self.counters()
        first = self.first_frame_at()
        sent_bytes, sent_packets = await self.sent() if self.role == "publish" else (0, 0)
        return {
            "video_tracks": len([c for c in video if c.packets]),
            "frames": sum(c.frames for c in video),
            "packets": sum(c.packets for c in counters),
            "expected": sum(c.expected for c in counters),
            "bytes": sum(c.bytes for c in counters),
            "video_bytes": sum(c.bytes for c in video),
            "first_frame_s": None if first is None else round(first - self.started_at, 4),
            "sent_bytes": sent_bytes,
            "sent_packets": sent_packets,
            "sent_frames": int(getattr(self.video_track, "produced", 0)),
            "signal_bytes": int(getattr(self.participant, "signal_bytes", 0)),
            "signal_messages": dict(getattr(self.participant, "signal_messages", {})),
            "media_state": self.media_state(),
        }


class LoopLag:
    """How late this process's event loop wakes up from a ``PERIOD_S`` sleep: a busy or
    descheduled worker answers STUN, DTLS and RTCP that late too."""

    PERIOD_S = 0.05

    def __init__(self) -> None:
        #: samples since the last ``take`` of each window (progress lines, snapshots)
        self.windows: dict[str, list[float]] = {"totals": [], "snapshot": []}

    async def run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.PERIOD_S)
            lag = time.monotonic() - before - self.PERIOD_S
            for samples in self.windows.values():
                samples.append(lag)

    def take(self, window: str) -> dict[str, float]:
        """Lag since the window's last call, ms: mean, p95 and max; and this process's CPU
        seconds so far."""
        lags = sorted(self.windows[window])
        self.windows[window] = []
        out = {"cpu_s": round(time.process_time(), 3)}
        if lags:
            out.update({"lag_ms_mean": round(1000 * sum(lags) / len(lags), 2),
                        "lag_ms_p95": round(1000 * lags[int(0.95 * (len(lags) - 1))], 2),
                        "lag_ms_max": round(1000 * lags[-1], 2)})
        return out


class WorkerRun:
    """A worker process: runs the participants it is told to, reports on stdout."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.slots: dict[str, Slot] = {}
        self.ice: Any = None
        self.participant_class: type[Any] = object
        self.hub: Any = None  # the light viewers' LightHub
        self.lag = LoopLag()

    async def run_slot(self, slot: Slot) -> None:
        from sdk.participant import JoinRefused, RequestFailed

        slot.started_at = time.monotonic()
        if slot.role != "publish" and self.args.viewer == "light":
            from loadtest.lightviewer import LightHub, LightViewer

            if self.hub is None:
                self.hub = LightHub(self.ice)
            slot.participant = LightViewer(self.hub, self.args.server, self.args.room,
                                           slot.token)
        else:
            slot.participant = self.participant_class(self.args.server, self.args.room,
                                                      slot.token, ice=self.ice)
        try:
            await slot.participant.join(timeout=self.args.ready_timeout)
            emit("joined", id=slot.id, join_s=round(time.monotonic() - slot.started_at, 4))
            if slot.role == "publish":
                slot.video_track = _camera_track(slot.tag)
                await slot.participant.publish(audio=True, video=True, tag=slot.tag,
                                               video_track=slot.video_track)
                emit("published", id=slot.id,
                     publish_s=round(time.monotonic() - slot.started_at, 4))
            elif slot.expect_video:
                deadline = slot.started_at + self.args.ready_timeout
                while slot.first_frame_at() is None and time.monotonic() < deadline:
                    if slot.participant.closed.is_set():
                        break
                    await asyncio.sleep(0.02)
                first = slot.first_frame_at()
                if first is not None:
                    emit("first_frame", id=slot.id, delay_s=round(first - slot.started_at, 4))
                elif not slot.participant.closed.is_set():
                    emit("no_frame", id=slot.id, message=f"no video frame within "
                         f"{self.args.ready_timeout:g} s of joining")
            await slot.participant.closed.wait()
            if not slot.stopping:
                emit("disconnected", id=slot.id, message="the server closed the connection")
        except (JoinRefused, RequestFailed) as exc:
            emit("error", id=slot.id, message=f"{exc.code}: {exc.message}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            emit("error", id=slot.id, message=f"{type(exc).__name__}: {exc}")

    async def report_totals(self) -> None:
        """Every ``--stats-interval`` s, for the progress lines: video frames and bytes received
        so far by this worker's subscribers, and bytes sent so far by its publishers."""
        while True:
            await asyncio.sleep(self.args.stats_interval)
            frames = rx_bytes = tx_bytes = 0
            for slot in list(self.slots.values()):
                if slot.participant is None:
                    continue
                if slot.role == "publish":
                    tx_bytes += (await slot.sent())[0]
                else:
                    counters = slot.counters()
                    frames += sum(c.frames for c in counters)
                    rx_bytes += sum(c.bytes for c in counters)
            emit("totals", t=time.monotonic(), rx_frames=frames, rx_bytes=rx_bytes,
                 tx_bytes=tx_bytes, **self.lag.take("totals"))

    async def serve(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            try:
                cmd = json.loads(line)
            except ValueError:
                continue
            if not isinstance(cmd, dict):
                continue
            if cmd.get("cmd") == "join":
                slot = Slot(str(cmd["id"]), str(cmd["role"]), str(cmd["token"]),
                            int(cmd.get("tag", 0)), bool(cmd.get("expect_video", True)))
                self.slots[slot.id] = slot
                slot.task = asyncio.ensure_future(self.run_slot(slot))
            elif cmd.get("cmd") == "snapshot":
                now = time.monotonic()
                parts = {}
                for slot in list(self.slots.values()):
                    if slot.participant is not None:
                        parts[slot.id] = await slot.snapshot()
                emit("snapshot", ref=cmd.get("ref"), t=now, participants=parts,
                     worker=self.lag.take("snapshot"))
            elif cmd.get("cmd") == "stop":
                return

    async def leave_all(self) -> None:
        for slot in self.slots.values():
            slot.stopping = True

        async def leave(slot: Slot) -> None:
            if slot.participant is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(slot.participant.leave(), 8)
            if slot.task is not None:
                slot.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await slot.task

        await asyncio.gather(*(leave(s) for s in self.slots.values()))
        if self.hub is not None:
            await self.hub.close()

    async def main(self) -> int:
        import aiortc.codecs.h264
        import aiortc.codecs.vpx

        from media.ice import IcePolicy

        # the publishers' encoders follow the server's REMB up to this ceiling
        cap = self.args.video_kbps * 1000
        aiortc.codecs.vpx.MAX_BITRATE = aiortc.codecs.h264.MAX_BITRATE = cap
        aiortc.codecs.vpx.DEFAULT_BITRATE = min(aiortc.codecs.vpx.DEFAULT_BITRATE, cap)
        aiortc.codecs.h264.DEFAULT_BITRATE = min(aiortc.codecs.h264.DEFAULT_BITRATE, cap)
        self.ice = IcePolicy(gather_addresses=self.args.ice_address or None)
        self.ice.install()
        self.participant_class = _participant_class()
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=LINE_LIMIT)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        totals = asyncio.ensure_future(self.report_totals())
        lag = asyncio.ensure_future(self.lag.run())
        emit("ready", pid=os.getpid())
        try:
            await self.serve(reader)
        finally:
            totals.cancel()
            lag.cancel()
            await self.leave_all()
        emit("stopped")
        return 0


def worker_main(argv: list[str]) -> int:
    import logging

    parser = argparse.ArgumentParser(prog="python -m loadtest.worker")
    parser.add_argument("--server", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--ice-address", action="append")
    parser.add_argument("--video-kbps", type=int, default=1000)
    parser.add_argument("--ready-timeout", type=float, default=30)
    parser.add_argument("--stats-interval", type=float, default=1.0)
    parser.add_argument("--viewer", choices=("light", "full"), default="light",
                        help="what runs a subscriber (loadtest/lightviewer.py or the SDK)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return asyncio.run(WorkerRun(args).main())
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
