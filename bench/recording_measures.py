"""bench/recording.py's other measurements: the MediaRecorder baseline (a recording participant
beside a plain one), what the SFU wrote, the recorder alone (in this process), the composite
speed and the A/V sync of a composed live session.
"""

from __future__ import annotations

import asyncio
import fractions
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import _paths  # noqa: F401  (first: ``recording`` is the project's package, not bench/'s)
import av
from fanout_procs import BenchError, cpu_seconds
from recording_windows import VIEWER_ROLE, RecordingTarget, Settings, progress, spawn_client


# ---- the baseline: aiortc's MediaRecorder in a participant -------------------------------------
async def baseline(target: RecordingTarget, room: str, tmp: Path, s: Settings
                   ) -> dict[str, Any]:
    """CPU of a plain (non-decoding) subscriber and of a MediaRecorder participant in the same
    room, one after the other, each over ``s.baseline_window`` s after a warm-up. Both run on
    the server's core (where a recording service would run), one at a time."""
    rows: dict[str, dict[str, Any]] = {}
    webm = tmp / "mediarecorder.webm"
    for role in ("receive", "record"):
        extra = ["--record-to", str(webm)] if role == "record" else []
        progress(f"baseline: a {'MediaRecorder' if extra else 'plain subscriber'} process "
                 "joins room 0…")
        worker = await spawn_client(target, f"baseline-{role}", room, VIEWER_ROLE,
                                    ["--role", role, *extra], server_core=True)
        try:
            await worker.event("ready", 90)
            await asyncio.sleep(s.warmup)
            progress(f"baseline ({role}): measuring {s.baseline_window:g} s…")
            t0, c0 = time.monotonic(), cpu_seconds(worker.pid)
            await asyncio.sleep(s.baseline_window)
            t1, c1 = time.monotonic(), cpu_seconds(worker.pid)
            await worker.send(f"stop {t0!r} {t1!r}")
            stats = await worker.event("stats", 30)
        finally:
            await target.procs.stop([worker])
        rows[role] = {"cores": round((c1 - c0) / (t1 - t0), 4),
                      "video_fps": round(float(stats["fps"]), 2),
                      "audio_fps": round(float(stats.get("audio_fps", 0.0)), 2),
                      "window_s": round(t1 - t0, 3)}
        progress(f"baseline ({role}): {rows[role]['cores']:.4f} cores, "
                 f"{rows[role]['video_fps']:.1f} video fps, "
                 f"{rows[role]['audio_fps']:.1f} audio frames/s")
    # a recorder that fell behind (its frames queue up) spends less than recording costs
    kept_up = rows["record"]["video_fps"] >= 0.9 * rows["receive"]["video_fps"]
    if not kept_up:
        progress("baseline: warning: the MediaRecorder process recorded "
                 f"{rows['record']['video_fps']:.1f} fps of "
                 f"{rows['receive']['video_fps']:.1f}: it fell behind, and its CPU figure "
                 "understates what recording costs it")
    return {
        "core_per_pair": round(rows["record"]["cores"] - rows["receive"]["cores"], 5),
        "recorder": rows["record"], "plain_subscriber": rows["receive"],
        "recorder_kept_up": kept_up, "recorder_file": webm_summary(webm),
    }


def webm_summary(path: Path) -> dict[str, Any] | None:
    """Frames per stream and length of a recorded file (demuxed, not decoded)."""
    if not path.exists():
        return None
    out: dict[str, Any] = {"bytes": path.stat().st_size}
    times: dict[str, list[float]] = {}
    try:
        with av.open(str(path)) as container:
            for packet in container.demux():
                if packet.pts is not None and packet.time_base is not None:
                    kind = f"{packet.stream.type}:{packet.stream.codec_context.name}"
                    times.setdefault(kind, []).append(float(packet.pts * packet.time_base))
    except av.FFmpegError as exc:
        out["error"] = str(exc)
    for kind, ts in times.items():
        out[kind] = {"frames": len(ts), "seconds": round(max(ts) - min(ts), 2)}
    return out


def recorded_files(folder: Path) -> dict[str, Any]:
    """What the SFU wrote while recording was on: per video file, frames per second and
    Mbit/s over its own span; the count of audio and video files."""
    video: list[tuple[float, float]] = []
    audio_files = 0
    for path in sorted(folder.glob("*/tracks/*")):
        with av.open(str(path)) as container:
            stream = container.streams[0]
            if stream.type == "audio":
                audio_files += 1
                continue
            packets = [(float(p.pts * p.time_base), p.size) for p in container.demux(stream)
                       if p.pts is not None and p.time_base is not None]
        if len(packets) < 2:
            continue
        span = packets[-1][0] - packets[0][0]
        if span > 0:
            video.append(((len(packets) - 1) / span,
                          sum(size for _, size in packets) * 8 / span / 1e6))
    return {
        "video_files": len(video), "audio_files": audio_files,
        "video_fps_min": round(min((f for f, _ in video), default=0.0), 2),
        "video_mbps_mean": round(statistics.fmean([m for _, m in video]), 3) if video else 0.0,
    }


# ---- composite speed and A/V sync (in this process) -------------------------------------------
def recorder_alone(seconds: float, kbps: int) -> dict[str, Any]:
    """The recorder's own CPU, without the noise of a whole server: ``seconds`` of the same
    ~1 Mbit/s VP8 + Opus pair the publishers replay, packetised as aiortc sends it, fed (as
    fast as it goes, in this process) through a SourceTrack with and without a TrackRecorder
    tapping it; the difference in process CPU time, per second of media, is what recording one
    pair costs (frames made whole, placed, muxed and written)."""
    from aiortc.codecs.vpx import Vp8Encoder
    from subscriber_media import encode_pattern, encode_tone

    from media.source import MediaTrack, SourceTrack
    from recording.capture import TrackMeta, TrackRecorder
    from recording.timeline import ClockOffset, SessionClock

    frames = encode_pattern(1, 4.0, kbps)
    tones, _ = encode_tone(440.0)
    packer = Vp8Encoder()
    packets: list[tuple[float, str, int, int, int, bytes]] = []  # (t, kind, seq, ts, m, data)
    seq = 0
    for i in range(int(seconds * 30)):
        frame = av.Packet(frames[i % len(frames)])
        frame.pts, frame.time_base = i, fractions.Fraction(1, 30)
        payloads, _ = packer.pack(frame)
        for j, payload in enumerate(payloads):
            packets.append((i / 30, "video", seq, i * 3000, int(j == len(payloads) - 1),
                            payload))
            seq += 1
    for i in range(int(seconds * 50)):
        packets.append((i / 50, "audio", i, i * 960, 0, tones[i % len(tones)]))
    packets.sort(key=lambda p: p[0])
    video_kbps = sum(len(p[5]) for p in packets if p[1] == "video") * 8 / seconds / 1000

    def run(record: bool, folder: Path) -> float:
        sources = {kind: SourceTrack(kind, kind, mime, rate, lambda ssrc: None,
                                     lambda ssrc, seqs: None)
                   for kind, mime, rate in (("video", "video/VP8", 90000),
                                            ("audio", "audio/opus", 48000))}
        now = time.time()
        recorders = []
        if record:
            session, offset = SessionClock(now - 1.0), ClockOffset()
            for kind, source in sources.items():
                meta = TrackMeta(kind, "p", "bench", "doctor", kind,
                                 "camera" if kind == "video" else "microphone",
                                 "vp8" if kind == "video" else "opus")
                recorders.append(TrackRecorder(MediaTrack(kind, kind, [source]), meta,
                                               folder / f"{kind}.webm", session, offset))
        ntp = (int(now) + 2208988800) << 32
        for source in sources.values():
            source.on_sender_report(ntp, 0)
        started = time.process_time()
        for n, (_, kind, sq, ts, marker, data) in enumerate(packets):
            sources[kind].on_packet(1 if kind == "video" else 2, sq & 0xFFFF,
                                    ts & 0xFFFFFFFF, marker, data, 0,
                                    (False, 40) if kind == "audio" else None, None)
            if n % 40 == 0:  # the service ticks its recorders every 0.1 s
                for recorder in recorders:
                    recorder.tick()
        for recorder in recorders:
            recorder.close()
        return time.process_time() - started

    rounds = []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            plain = run(False, Path(a))
            recorded = run(True, Path(b))
            rounds.append((recorded - plain) / seconds)
    return {"core_per_pair": round(statistics.median(rounds), 5),
            "rounds": [round(r, 5) for r in rounds], "media_s": seconds,
            "video_kbps": round(video_kbps), "packets": len(packets)}


def composite_speed(seconds: int) -> dict[str, Any]:
    from composite_speed import measure_speed

    progress(f"composite speed: composing a {seconds} s two-person 640x480 session…")
    result: dict[str, Any] = measure_speed(seconds)
    progress(f"composite speed: {result['realtime_factor']}x real time "
             f"({result['cpu_s']} s CPU for {result['session_s']} s)")
    return result


async def av_sync(folder: Path, seconds: float) -> dict[str, Any]:
    """A live session through an in-process server: dr-li flashes and beeps (1 kHz) on the
    second; dr-wu flashes and the patient beeps (2.5 kHz) on the half second. Recorded,
    composed by the recording worker (in this process), and every flash/beep pair measured
    (tests/recording_support.py: the same session as the 60 s A/V test, shorter)."""
    from tests.harness import LOOPBACK, running_server
    from tests.recording_support import flash_beep_session

    LOOPBACK.install()
    progress(f"A/V sync: recording a {seconds:g} s session (3 publishers) in this process, "
             "then storing and composing it…")
    async with running_server(folder) as server:
        try:
            found = await flash_beep_session(server, seconds)
        except AssertionError as exc:
            raise BenchError(f"the A/V sync session failed: {exc}") from exc
    same, split = found.same, found.split

    def worst(offsets: list[float]) -> float | None:
        return round(max(abs(o) for o in offsets) * 1000, 2) if offsets else None

    every = same + split
    return {
        "max_ms": worst(every), "pairs": len(every),
        "mean_ms": round(statistics.fmean(every) * 1000, 2) if every else None,
        "same_publisher_pairs": len(same), "same_publisher_max_ms": worst(same),
        "split_publishers_pairs": len(split), "split_publishers_max_ms": worst(split),
        # beep − flash (ms; positive: sound late), in the order of the flashes
        "same_publisher_offsets": [round(o * 1000, 2) for o in same],
        "split_publishers_offsets": [round(o * 1000, 2) for o in split],
        "session_s": found.recording.get("duration_s"),
        "recording_status": found.recording.get("status"),
    }
