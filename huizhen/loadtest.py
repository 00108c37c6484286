"""``huizhen loadtest``: many headless participants against a running service, from one command.

The orchestrator (this process) creates a room through the REST API (unless ``--room`` names
one), mints one participant token per participant, and starts worker processes
(``python -m huizhen.loadtest worker``), each running up to ``--per-process`` participants
(``huizhen.client.Participant`` with ``decode=False``: frames are counted from RTP, nothing is
decoded) in one asyncio loop. Publishers join first, then subscribers, at ``--join-rate`` per
second; every publisher sends the test pattern (640x480 VP8, 30 fps at most, the encoder capped
at ``--video-kbps``) and a tone. Progress goes to stderr every ``--report`` seconds; once
everyone has joined (or failed), the figures are measured over ``--duration`` seconds and
reported on stdout (a table, or one JSON object with ``--json``).

Talking to workers: JSON lines. Orchestrator → worker on stdin: ``{"cmd": "join", …}``,
``{"cmd": "snapshot", "ref": …}``, ``{"cmd": "stop"}`` (or the end of input: the worker's
participants leave and it exits). Worker → orchestrator on stdout: ``ready``, ``joined``,
``published``, ``first_frame``, ``no_frame``, ``error``, ``disconnected`` (per participant),
``totals`` (every second, for the progress lines), ``snapshot`` (every participant's counters)
and ``stopped``; logs go to stderr.

Every worker runs in its own process group and gets SIGTERM from the kernel if the
orchestrator dies (``PR_SET_PDEATHSIG``); on exit, Ctrl-C or SIGTERM the orchestrator makes the
participants leave, stops every worker (SIGTERM, then SIGKILL) and ends the room it created.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ctypes
import json
import math
import os
import secrets
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlparse

from huizhen.cli import EXIT_FAILED, Api, CliError

# when the command runs as ``python -m huizhen.cli``, this is a second copy of that module: its
# CliError is not the one ``main()`` catches, so ``cmd_loadtest`` reports its own errors
from huizhen.procgroup import signal_group, stop_group

#: default (publisher role, subscriber role) per room kind; ``--publisher-role`` /
#: ``--subscriber-role`` override them (roles that wait in a lobby would never get media)
DEFAULT_ROLES: dict[str, tuple[str, str]] = {
    "broadcast": ("presenter", "viewer"),
    "mdt": ("presenter", "viewer"),
    "clinic": ("doctor", "nurse"),
    "joint_clinic": ("specialist", "nurse"),
    "ward_round": ("doctor", "nurse"),
}
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
PR_SET_PDEATHSIG = 1  # linux/prctl.h
LINE_LIMIT = 16 * 1024 * 1024
STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"[loadtest {time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr,
          flush=True)


def emit(event: str, **fields: Any) -> None:
    """A worker's event, one JSON line on stdout."""
    print(json.dumps({"event": event, **fields}), flush=True)


def percentile(values: list[float], q: int) -> float | None:
    """The q-th percentile (inclusive method); None for no values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# ==== worker side ==============================================================================
JITTER_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"  # aiortc 1.16, name-mangled


class RtpCounter:
    """What one received m-line got: unique packets, payload bytes, frames (video: marker
    bit) and the packets expected from the RTP sequence numbers (RFC 3550: highest extended
    sequence number - first + 1), so loss = expected - received. Retransmissions that fill
    a gap count as received, like a receiver's ``packetsLost``; duplicates are ignored."""

    SEEN = 2048

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.packets = 0
        self.bytes = 0
        self.frames = 0
        self.first_frame_at: float | None = None
        self._base: int | None = None
        self._max = 0
        self._seen: set[int] = set()
        self._order: collections.deque[int] = collections.deque()

    @property
    def expected(self) -> int:
        return 0 if self._base is None else self._max - self._base + 1

    def _extend(self, seq: int) -> int:
        ext = (self._max & ~0xFFFF) | seq
        if ext - self._max > 0x8000:
            ext -= 0x10000
        elif self._max - ext > 0x8000:
            ext += 0x10000
        return ext

    def add(self, packet: Any) -> None:
        seq = int(packet.sequence_number)
        if self._base is None:
            ext = self._base = self._max = seq + 0x10000  # room below for reordered packets
        else:
            ext = self._extend(seq)
        if ext in self._seen:
            return
        self._seen.add(ext)
        self._order.append(ext)
        if len(self._order) > self.SEEN:
            self._seen.discard(self._order.popleft())
        self._max = max(self._max, ext)
        self._base = min(self._base, ext)
        self.packets += 1
        self.bytes += len(packet.payload)
        if self.kind == "video" and packet.marker:
            self.frames += 1
            if self.first_frame_at is None:
                self.first_frame_at = time.monotonic()


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
    from huizhen.client import Participant

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
    from huizhen.testmedia import PatternVideoTrack

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
        }


class WorkerRun:
    """A worker process: runs the participants it is told to, reports on stdout."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.slots: dict[str, Slot] = {}
        self.ice: Any = None
        self.participant_class: type[Any] = object

    async def run_slot(self, slot: Slot) -> None:
        from huizhen.client import JoinRefused, RequestFailed

        slot.started_at = time.monotonic()
        slot.participant = self.participant_class(self.args.server, self.args.room, slot.token,
                                                  ice=self.ice)
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
                 tx_bytes=tx_bytes)

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
                emit("snapshot", ref=cmd.get("ref"), t=now, participants=parts)
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
        emit("ready", pid=os.getpid())
        try:
            await self.serve(reader)
        finally:
            totals.cancel()
            await self.leave_all()
        emit("stopped")
        return 0


def worker_main(argv: list[str]) -> int:
    import logging

    parser = argparse.ArgumentParser(prog="python -m huizhen.loadtest worker")
    parser.add_argument("--server", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--ice-address", action="append")
    parser.add_argument("--video-kbps", type=int, default=1000)
    parser.add_argument("--ready-timeout", type=float, default=30)
    parser.add_argument("--stats-interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return asyncio.run(WorkerRun(args).main())
    except KeyboardInterrupt:
        return 130


# ==== orchestrator side ========================================================================
def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the orchestrator dies (even by SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class PState:
    """What the orchestrator knows of one participant."""

    id: str
    role: str
    index: int
    worker: int
    identity: str
    expect_video: bool = True
    sent_join_at: float | None = None
    joined: bool = False
    join_s: float | None = None
    published: bool = False
    first_frame_s: float | None = None
    error: str | None = None
    no_frame: bool = False
    disconnected: bool = False

    @property
    def settled(self) -> bool:
        """Nothing more to wait for before measuring."""
        if self.error is not None or self.disconnected:
            return True
        if self.role == "publish":
            return self.published
        return (self.first_frame_s is not None or self.no_frame
                or (self.joined and not self.expect_video))


@dataclass
class WorkerProc:
    index: int
    proc: asyncio.subprocess.Process
    on_event: Callable[[int, dict[str, Any]], None]
    reader: asyncio.Task[None] | None = None
    #: the latest ``totals`` event (cumulative counters, for the progress lines)
    totals: dict[str, Any] = field(default_factory=dict)
    exited: bool = False

    async def read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict) and "event" in message:
                    self.on_event(self.index, message)
        self.exited = True
        self.on_event(self.index, {"event": "exit"})

    async def send(self, message: dict[str, Any]) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            with contextlib.suppress(OSError):
                self.proc.stdin.write(json.dumps(message).encode() + b"\n")
                await self.proc.stdin.drain()

    def signal_group(self, sig: signal.Signals) -> None:
        signal_group(self.proc, sig)

    async def stop(self, grace: float = 15) -> None:
        """Ask it to stop (its participants leave), then SIGTERM, then SIGKILL its group."""
        await self.send({"cmd": "stop"})
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        await stop_group(self.proc, grace)
        if self.reader is not None:
            self.reader.cancel()


class ServerCpu:
    """CPU of a server process on this machine (and its children), in cores between calls."""

    def __init__(self, host: str, port: int) -> None:
        self.proc: Any = None
        if host in LOOPBACK_HOSTS:
            self.proc = find_listener(port)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else int(self.proc.pid)

    def seconds(self) -> float | None:
        import psutil

        if self.proc is None:
            return None
        total = 0.0
        try:
            for p in [self.proc, *self.proc.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = p.cpu_times()
                    total += times.user + times.system
        except psutil.Error:
            return None
        return total


def find_listener(port: int) -> Any:
    """The local process listening on TCP ``port`` (psutil.Process), or None."""
    import psutil

    candidates: list[Any] = []
    try:
        candidates = [c for c in psutil.net_connections(kind="tcp")
                      if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port]
    except psutil.Error:  # not allowed to see every socket: look at our user's processes
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                       for c in proc.net_connections(kind="tcp")):
                    return proc
    for conn in candidates:
        if conn.pid:
            with contextlib.suppress(psutil.Error):
                return psutil.Process(conn.pid)
    return None


class LoadTest:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.api = Api(args)
        self.url = self.api.url
        parsed = urlparse(self.url)
        self.host = parsed.hostname or ""
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.ice: list[str] | None = args.ice_address or (
            ["127.0.0.1"] if self.host in LOOPBACK_HOSTS else None)
        self.room_id = ""
        self.kind = ""
        self.room_created = False
        self.parts: dict[str, PState] = {}
        self.workers: list[WorkerProc] = []
        self.snapshots: dict[str, dict[int, dict[str, Any]]] = {}
        self.changed = asyncio.Event()
        self.errors: list[dict[str, Any]] = []
        self.server = ServerCpu(self.host, self.port)
        self.tokens: dict[str, str] = {}
        self.ready_workers: set[int] = set()
        self.pub_role = self.sub_role = ""

    # ---- events -------------------------------------------------------------------------------
    def on_event(self, worker: int, msg: dict[str, Any]) -> None:
        event = msg["event"]
        part = self.parts.get(str(msg.get("id", "")))
        if event == "ready":
            self.ready_workers.add(worker)
        elif event == "totals":
            self.workers[worker].totals = msg
        elif event == "snapshot":
            self.snapshots.setdefault(str(msg.get("ref")), {})[worker] = msg
        elif event == "exit":
            for p in self.parts.values():
                if p.worker == worker and p.error is None and not p.settled:
                    p.error = "its worker process exited"
        elif part is not None:
            if event == "joined":
                part.joined, part.join_s = True, float(msg["join_s"])
            elif event == "published":
                part.published = True
            elif event == "first_frame":
                part.first_frame_s = float(msg["delay_s"])
            elif event == "no_frame":
                part.no_frame = True
                self.errors.append({"participant": part.id, "message": msg.get("message")})
                progress(f"{part.id}: {msg.get('message')}")
            elif event == "error":
                part.error = str(msg.get("message"))
                self.errors.append({"participant": part.id, "message": part.error})
                progress(f"{part.id}: {part.error}")
            elif event == "disconnected":
                part.disconnected = True
                self.errors.append({"participant": part.id, "message": msg.get("message")})
                progress(f"{part.id}: {msg.get('message')}")
        self.changed.set()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0 or all(w.exited for w in self.workers):
                return predicate()
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 1.0))
        return True

    # ---- setup --------------------------------------------------------------------------------
    async def setup_room(self) -> None:
        a = self.args
        if a.room:
            room = await self.api.call("GET", f"/api/rooms/{quote(a.room, safe='')}")
        else:
            room = await self.api.call("POST", "/api/rooms", {
                "kind": a.kind, "title": f"load test: {a.publishers} publishers, "
                                         f"{a.subscribers} subscribers"})
            self.room_created = True
        self.room_id, self.kind = str(room["id"]), str(room["kind"])
        defaults = DEFAULT_ROLES.get(self.kind, ("presenter", "viewer"))
        self.pub_role = a.publisher_role or defaults[0]
        self.sub_role = a.subscriber_role or defaults[1]
        progress(f"room {self.room_id} ({self.kind}, "
                 f"{'created' if self.room_created else 'existing'}); publishers join as "
                 f"{self.pub_role}, subscribers as {self.sub_role}")

    async def mint_tokens(self) -> None:
        a = self.args
        run = secrets.token_hex(3)
        workers = self.worker_count()
        order = [("publish", i) for i in range(a.publishers)]
        order += [("subscribe", i) for i in range(a.subscribers)]
        for n, (role, i) in enumerate(order):
            pid = f"{'pub' if role == 'publish' else 'sub'}-{i:03d}"
            self.parts[pid] = PState(pid, role, i, n % workers, f"loadtest-{run}-{pid}",
                                     expect_video=a.publishers > 0)
        gate = asyncio.Semaphore(8)

        async def mint(p: PState) -> None:
            async with gate:
                data = await self.api.call("POST", f"/api/rooms/{self.room_id}/tokens", {
                    "identity": p.identity, "name": f"load test {p.id}",
                    "role": self.pub_role if p.role == "publish" else self.sub_role})
                self.tokens[p.id] = str(data["token"])

        await asyncio.gather(*(mint(p) for p in self.parts.values()))

    def worker_count(self) -> int:
        total = self.args.publishers + self.args.subscribers
        return max(1, math.ceil(total / self.args.per_process))

    async def spawn_workers(self) -> None:
        a = self.args
        count = self.worker_count()
        progress(f"starting {count} worker process(es), up to {a.per_process} participants "
                 "each…")
        base = [sys.executable, "-m", "huizhen.loadtest", "worker", "--server", self.url,
                "--room", self.room_id, "--video-kbps", str(a.video_kbps),
                "--ready-timeout", str(a.ready_timeout)]
        for address in self.ice or []:
            base += ["--ice-address", address]
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        for k in range(count):
            proc = await asyncio.create_subprocess_exec(
                *base, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                env=env, start_new_session=True, preexec_fn=_die_with_parent,
                limit=LINE_LIMIT)
            worker = WorkerProc(k, proc, self.on_event)
            worker.reader = asyncio.ensure_future(worker.read())
            self.workers.append(worker)
        if not await self.wait_until(lambda: len(self.ready_workers) == count, 60):
            raise CliError(f"only {len(self.ready_workers)} of {count} worker processes "
                           "started")

    # ---- running ------------------------------------------------------------------------------
    async def join(self, parts: list[PState]) -> None:
        interval = 1 / self.args.join_rate if self.args.join_rate > 0 else 0.0
        for n, p in enumerate(parts):
            if n and interval:
                await asyncio.sleep(interval)
            p.sent_join_at = time.monotonic()
            await self.workers[p.worker].send({
                "cmd": "join", "id": p.id, "role": p.role, "token": self.tokens[p.id],
                "tag": p.index if p.role == "publish" else 0,
                "expect_video": p.expect_video})

    def counts(self) -> dict[str, int]:
        pubs = [p for p in self.parts.values() if p.role == "publish"]
        subs = [p for p in self.parts.values() if p.role == "subscribe"]
        return {"publishers_joined": sum(p.joined for p in pubs),
                "publishers_publishing": sum(p.published for p in pubs),
                "subscribers_joined": sum(p.joined for p in subs),
                "subscribers_with_video": sum(p.first_frame_s is not None for p in subs),
                "failed": sum(p.error is not None or p.disconnected for p in self.parts.values())}

    async def report_progress(self) -> None:
        """Every ``--report`` s on stderr: who joined, and the rates since the last line (from
        the workers' cumulative totals)."""
        a = self.args
        last_cpu = (time.monotonic(), self.server.seconds())
        last: dict[int, dict[str, Any]] = {w.index: w.totals for w in self.workers if w.totals}
        while True:
            await asyncio.sleep(a.report)
            now, cpu = time.monotonic(), self.server.seconds()
            c = self.counts()
            fps = rx = tx = 0.0
            rated = False
            for w in self.workers:
                cur, prev = w.totals, last.get(w.index)
                if cur and prev and float(cur["t"]) > float(prev["t"]):
                    dt = float(cur["t"]) - float(prev["t"])
                    fps += (cur["rx_frames"] - prev["rx_frames"]) / dt
                    rx += (cur["rx_bytes"] - prev["rx_bytes"]) * 8 / dt / 1e6
                    tx += (cur["tx_bytes"] - prev["tx_bytes"]) * 8 / dt / 1e6
                    rated = True
                if cur:
                    last[w.index] = cur
            with_video = c["subscribers_with_video"]
            line = (f"publishers {c['publishers_publishing']}/{a.publishers} publishing, "
                    f"subscribers {c['subscribers_joined']}/{a.subscribers} joined "
                    f"({with_video} with video)")
            if rated:
                line += (f"; sent {tx:.2f} Mbit/s; received {fps:.1f} video fps in all"
                         + (f" ({fps / with_video:.1f} per subscriber)" if with_video else "")
                         + f", {rx:.2f} Mbit/s")
            if c["failed"]:
                line += f"; {c['failed']} failed"
            if cpu is not None and last_cpu[1] is not None:
                line += f"; server {(cpu - last_cpu[1]) / (now - last_cpu[0]):.2f} cores"
            progress(line)
            last_cpu = (now, cpu)

    async def snapshot(self, ref: str) -> dict[str, tuple[float, dict[str, Any]]]:
        """Every worker's counters now: participant id -> (worker's time, counters)."""
        live = [w for w in self.workers if not w.exited]
        for w in live:
            await w.send({"cmd": "snapshot", "ref": ref})
        await self.wait_until(lambda: all(w.index in self.snapshots.get(ref, {}) or w.exited
                                          for w in live), 30)
        out: dict[str, tuple[float, dict[str, Any]]] = {}
        for msg in self.snapshots.get(ref, {}).values():
            for pid, counters in msg["participants"].items():
                out[pid] = (float(msg["t"]), counters)
        return out

    async def run(self) -> dict[str, Any]:
        a = self.args
        await self.setup_room()
        await self.mint_tokens()
        await self.spawn_workers()
        reporter = asyncio.ensure_future(self.report_progress())
        try:
            pubs = [p for p in self.parts.values() if p.role == "publish"]
            subs = [p for p in self.parts.values() if p.role == "subscribe"]
            joining_started = time.monotonic()
            if pubs:
                progress(f"joining {len(pubs)} publisher(s) at {a.join_rate:g}/s…")
                await self.join(pubs)
                await self.wait_until(lambda: all(p.settled for p in pubs),
                                      a.ready_timeout + 10)
            if subs:
                progress(f"joining {len(subs)} subscriber(s) at {a.join_rate:g}/s…")
                await self.join(subs)
            await self.wait_until(lambda: all(p.settled for p in self.parts.values()),
                                  a.ready_timeout + 10)
            join_phase = time.monotonic() - joining_started
            c = self.counts()
            progress(f"joined: {c['publishers_publishing']}/{len(pubs)} publishers publishing, "
                     f"{c['subscribers_with_video']}/{len(subs)} subscribers with video "
                     f"({join_phase:.1f} s); warming up {a.warmup:g} s, then measuring "
                     f"{a.duration:g} s…")
            await asyncio.sleep(a.warmup)
            cpu0 = self.server.seconds()
            t0 = time.monotonic()
            before = await self.snapshot("t0")
            await asyncio.sleep(a.duration)
            after = await self.snapshot("t1")
            t1 = time.monotonic()
            cpu1 = self.server.seconds()
        finally:
            reporter.cancel()
        server_cores = (None if cpu0 is None or cpu1 is None
                        else round((cpu1 - cpu0) / (t1 - t0), 4))
        return self.result(before, after, join_phase, server_cores)

    # ---- results ------------------------------------------------------------------------------
    def result(self, before: dict[str, tuple[float, dict[str, Any]]],
               after: dict[str, tuple[float, dict[str, Any]]], join_phase: float,
               server_cores: float | None) -> dict[str, Any]:
        a = self.args
        subs_out: list[dict[str, Any]] = []
        pubs_out: list[dict[str, Any]] = []
        for p in self.parts.values():
            row: dict[str, Any] = {"id": p.id, "identity": p.identity, "joined": p.joined,
                                   "join_s": _round(p.join_s), "error": p.error}
            if p.id in before and p.id in after:
                (ta, ca), (tb, cb) = before[p.id], after[p.id]
                dt = max(tb - ta, 1e-6)
                if p.role == "subscribe":
                    frames = cb["frames"] - ca["frames"]
                    tracks = int(cb["video_tracks"])
                    expected = cb["expected"] - ca["expected"]
                    lost = max(0, expected - (cb["packets"] - ca["packets"]))
                    row.update({
                        "video_tracks": tracks,
                        "fps": round(frames / dt / max(tracks, 1), 2),
                        "total_fps": round(frames / dt, 2),
                        "bitrate_kbps": round((cb["bytes"] - ca["bytes"]) * 8 / dt / 1000, 1),
                        "video_kbps": round((cb["video_bytes"] - ca["video_bytes"]) * 8 / dt
                                            / 1000, 1),
                        "packets_expected": expected, "packets_lost": lost,
                        "loss_pct": round(100 * lost / expected, 3) if expected else 0.0,
                        "join_to_first_frame_s": p.first_frame_s,
                        "window_s": round(dt, 3),
                    })
                else:
                    row.update({
                        "published": p.published,
                        "sent_fps": round((cb["sent_frames"] - ca["sent_frames"]) / dt, 2),
                        "sent_kbps": round((cb["sent_bytes"] - ca["sent_bytes"]) * 8 / dt
                                           / 1000, 1),
                        "sent_packets_per_s": round((cb["sent_packets"] - ca["sent_packets"])
                                                    / dt, 1),
                    })
            (subs_out if p.role == "subscribe" else pubs_out).append(row)
        measured = [s for s in subs_out if "fps" in s]
        fps = [float(s["fps"]) for s in measured]
        ttff = [float(s["join_to_first_frame_s"]) for s in measured
                if s.get("join_to_first_frame_s") is not None]
        expected = sum(int(s["packets_expected"]) for s in measured)
        lost = sum(int(s["packets_lost"]) for s in measured)
        c = self.counts()
        out: dict[str, Any] = {
            "server": self.url,
            "room": self.room_id,
            "room_kind": self.kind,
            "room_created": self.room_created,
            "publishers": a.publishers,
            "subscribers": a.subscribers,
            **c,
            "join_phase_s": round(join_phase, 2),
            "duration_s": a.duration,
            "warmup_s": a.warmup,
            "aggregate_fps": round(sum(float(s["total_fps"]) for s in measured), 2),
            "mean_subscriber_fps": round(statistics.fmean(fps), 2) if fps else 0.0,
            "min_subscriber_fps": round(min(fps), 2) if fps else 0.0,
            "mean_subscriber_kbps": (round(statistics.fmean(float(s["bitrate_kbps"])
                                                            for s in measured), 1)
                                     if measured else 0.0),
            "total_received_mbps": round(sum(float(s["bitrate_kbps"]) for s in measured)
                                         / 1000, 3),
            "loss_pct": round(100 * lost / expected, 3) if expected else 0.0,
            "join_to_first_frame_s_p50": _round(percentile(ttff, 50)),
            "join_to_first_frame_s_p95": _round(percentile(ttff, 95)),
            "per_subscriber": subs_out,
            "per_publisher": pubs_out,
            "errors": self.errors,
            "settings": {"join_rate": a.join_rate, "per_process": a.per_process,
                         "workers": len(self.workers), "video_kbps": a.video_kbps,
                         "publisher_role": self.pub_role, "subscriber_role": self.sub_role,
                         "ice_addresses": self.ice},
        }
        if self.server.pid is not None:  # a server on this machine: its CPU
            out["server_pid"] = self.server.pid
            out["server_cpu_cores"] = server_cores
        return out

    # ---- cleanup ------------------------------------------------------------------------------
    async def cleanup(self) -> None:
        if self.workers:
            progress(f"stopping {len(self.workers)} worker process(es)…")
            await asyncio.gather(*(w.stop() for w in self.workers), return_exceptions=True)
        if self.room_created and not self.args.keep_room:
            with contextlib.suppress(Exception):
                await self.api.call("POST", f"/api/rooms/{self.room_id}/end",
                                    {"reason": "load test finished"})
                progress(f"room {self.room_id} ended")

    def kill_all_now(self) -> None:
        """Last resort, synchronous: SIGKILL every worker's process group."""
        for w in self.workers:
            w.signal_group(signal.SIGKILL)


def render(result: dict[str, Any]) -> str:
    r = result
    lines = [
        f"Load test on {r['server']}: room {r['room']} ({r['room_kind']}"
        f"{', created' if r['room_created'] else ''}), {r['publishers']} publisher(s), "
        f"{r['subscribers']} subscriber(s); measured {r['duration_s']:g} s after the join "
        f"phase ({r['join_phase_s']:g} s)",
        f"publishers publishing: {r['publishers_publishing']}/{r['publishers']}; subscribers "
        f"joined: {r['subscribers_joined']}/{r['subscribers']}, with video: "
        f"{r['subscribers_with_video']}; failed: {r['failed']}",
        f"received video: {r['mean_subscriber_fps']:.1f} fps per track per subscriber (min "
        f"{r['min_subscriber_fps']:.1f}), {r['aggregate_fps']:.1f} fps in all; "
        f"{r['mean_subscriber_kbps'] / 1000:.2f} Mbit/s per subscriber, "
        f"{r['total_received_mbps']:.2f} Mbit/s in all; loss {r['loss_pct']:.2f}%",
    ]
    p50, p95 = r["join_to_first_frame_s_p50"], r["join_to_first_frame_s_p95"]
    lines.append("join → first video frame: " + (
        f"p50 {p50:.2f} s, p95 {p95:.2f} s" if p50 is not None and p95 is not None else "n/a"))
    if "server_cpu_cores" in r:
        cores = r["server_cpu_cores"]
        lines.append(f"server (pid {r['server_pid']}, this machine): "
                     + (f"{cores:.3f} cores" if cores is not None else "CPU n/a"))
    lines += ["", f"  {'subscriber':<10}  {'tracks':>6}  {'fps':>6}  {'kbit/s':>8}  "
                  f"{'loss %':>6}  {'first frame s':>13}  error"]
    for s in r["per_subscriber"]:
        first = s.get("join_to_first_frame_s")
        lines.append(f"  {s['id']:<10}  {s.get('video_tracks', 0):>6}  {s.get('fps', 0):>6.1f}  "
                     f"{s.get('bitrate_kbps', 0):>8.0f}  {s.get('loss_pct', 0):>6.2f}  "
                     f"{'-' if first is None else f'{first:.2f}':>13}  {s.get('error') or ''}")
    lines += ["", f"  {'publisher':<10}  {'sent fps':>8}  {'sent kbit/s':>11}  error"]
    for p in r["per_publisher"]:
        lines.append(f"  {p['id']:<10}  {p.get('sent_fps', 0):>8.1f}  "
                     f"{p.get('sent_kbps', 0):>11.0f}  {p.get('error') or ''}")
    return "\n".join(line.rstrip() for line in lines)


async def run_loadtest(args: argparse.Namespace) -> dict[str, Any]:
    test = LoadTest(args)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await test.run()
    finally:
        try:
            await asyncio.shield(test.cleanup())
        finally:
            test.kill_all_now()
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGTERM)


def cmd_loadtest(args: argparse.Namespace) -> None:
    try:
        _loadtest(args)
    except CliError as exc:
        print(f"huizhen: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_FAILED) from None


def _loadtest(args: argparse.Namespace) -> None:
    if args.publishers < 0 or args.subscribers < 0 or args.publishers + args.subscribers == 0:
        raise CliError("give at least one publisher or subscriber")
    if (args.duration <= 0 or args.per_process < 1 or args.join_rate < 0 or args.report <= 0
            or args.warmup < 0):
        raise CliError("--duration and --report must be positive, --per-process at least 1, "
                       "--join-rate and --warmup not negative")
    # Ctrl-C ends up in the same clean-up, also when started with SIGINT ignored (as
    # background jobs are); SIGTERM too (run_loadtest)
    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = asyncio.run(run_loadtest(args))
    except asyncio.CancelledError:  # SIGTERM
        raise KeyboardInterrupt from None
    print(json.dumps(result, indent=2) if args.json else render(result), flush=True)
    problems = result["failed"] + sum(
        1 for s in result["per_subscriber"]
        if args.publishers and not s.get("fps") and s.get("error") is None)
    if problems:
        raise CliError(f"{problems} participant(s) failed or received no video (see above)")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``loadtest`` subcommand, added to ``huizhen``'s subparsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "loadtest", help="load-test a running service with many headless participants",
        description="Create a room (or use --room), start publishers (test pattern + tone) "
                    "and subscribers (no decoding) in worker processes, and report received "
                    "fps, bitrate, loss, join-to-first-frame and (local server) server CPU.")
    p.add_argument("--server", help="service URL (default: from the configuration)")
    p.add_argument("--api-key", help="API key id (default: the configured one)")
    p.add_argument("--api-secret", help="its secret (or HUIZHEN_API_SECRET; write "
                   "--api-secret=VALUE if it starts with '-')")
    p.add_argument("--publishers", type=int, default=1, help="publishers (default 1)")
    p.add_argument("--subscribers", type=int, default=10, help="subscribers (default 10)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--room", help="use this existing room (default: create one)")
    where.add_argument("--kind", default="broadcast", choices=sorted(DEFAULT_ROLES),
                       help="kind of the room to create (default broadcast)")
    p.add_argument("--publisher-role", help="role of publishers' tokens (default per kind: "
                   "presenter in broadcast/mdt)")
    p.add_argument("--subscriber-role", help="role of subscribers' tokens (default per kind: "
                   "viewer in broadcast/mdt)")
    p.add_argument("--duration", type=float, default=30,
                   help="seconds measured after everyone joined (default 30)")
    p.add_argument("--warmup", type=float, default=3,
                   help="seconds between the end of the join phase and the measurement "
                        "(default 3)")
    p.add_argument("--join-rate", type=float, default=5,
                   help="participants joining per second (default 5; 0 = all at once)")
    p.add_argument("--video-kbps", type=int, default=1000,
                   help="publishers' video bitrate ceiling, kbit/s (default 1000)")
    p.add_argument("--per-process", type=int, default=8,
                   help="participants per worker process (default 8)")
    p.add_argument("--ice-address", action="append",
                   help="local address to gather ICE candidates on (repeatable; default "
                        "127.0.0.1 for a server on 127.0.0.1/localhost, else every interface "
                        "but loopback)")
    p.add_argument("--ready-timeout", type=float, default=30,
                   help="seconds a participant may take to join and get its first frame "
                        "(default 30)")
    p.add_argument("--report", type=float, default=5, help="progress every N seconds "
                   "(default 5)")
    p.add_argument("--keep-room", action="store_true",
                   help="do not end the room created for the test")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_loadtest, insecure=False)
    return p


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        sys.exit(worker_main(sys.argv[2:]))
    sys.exit("usage: huizhen loadtest … (this module's own entry is for its worker processes)")
