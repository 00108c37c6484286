"""Composite speed: seconds of session composed per second of one core.

Builds a two-person session (each a 640×480 30 fps VP8 camera at ~1 Mbit/s and an Opus
microphone, speakers taking turns every few seconds), composes it with the default output
settings (recording/composite.py), and divides the session length by the compositing
process's CPU time (user + system over all its threads, from getrusage: x264 runs its own
threads, so wall time on a multi-core machine would flatter it). Only ``compose`` is measured,
not building the inputs. Target: ``realtime_factor`` ≥ 2.

    .venv/bin/python bench/composite_speed.py [--seconds 20] [--width 1280 --height 720 ...]

prints one JSON object. ``measure_speed`` is what bench/recording.py calls.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import _paths  # noqa: F401  (first: the project's packages before bench/'s scripts)

from recording.composite import CompositeSpec, TrackInput, compose
from tests.support.avsync import Pattern, flash_video, write_audio, write_video


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def build_session(folder: Path, seconds: int) -> tuple[list[TrackInput], list[tuple[float, str]]]:
    """Two people, both on camera and microphone for the whole session; turns of 4 s."""
    end_ms = seconds * 1000
    times = [round(k * 1000 / 30) for k in range(seconds * 30)]
    tracks: list[TrackInput] = []
    for i, (person, name) in enumerate((("doctor", "张医生"), ("patient", "李患者"))):
        frames, onsets = flash_video(Pattern(i, 640, 480), times, phase_s=0.2 + 0.4 * i)
        write_video(folder / f"{person}-camera.webm", frames, bitrate=1_000_000)
        write_audio(folder / f"{person}-mic.webm", 0, end_ms, onsets, 1000 + 500 * i,
                    hum=0.05)
        tracks += [TrackInput(folder / f"{person}-camera.webm", "video", "camera", person, name),
                   TrackInput(folder / f"{person}-mic.webm", "audio", "microphone", person,
                              name)]
    speakers = [(float(t), ("doctor", "patient")[n % 2]) for n, t in enumerate(range(0, seconds,
                                                                                   4))]
    return tracks, speakers


def measure_speed(seconds: int = 20, **spec_options: Any) -> dict[str, Any]:
    """Compose a ``seconds``-long two-person session; {"session_s", "cpu_s",
    "realtime_factor", ...} with the output settings used. ``spec_options`` override
    CompositeSpec fields (width, height, fps, preset, crf)."""
    with tempfile.TemporaryDirectory(prefix="composite-speed-") as tmp:
        folder = Path(tmp)
        tracks, speakers = build_session(folder, seconds)
        spec = CompositeSpec(tracks=tracks, duration_s=float(seconds), speakers=speakers,
                             output=folder / "composite.mp4", **spec_options)
        cpu0, wall0 = _cpu_s(), time.monotonic()
        result = compose(spec)
        cpu, wall = _cpu_s() - cpu0, time.monotonic() - wall0
        size = spec.output.stat().st_size
    return {
        "session_s": result.duration_s,
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "realtime_factor": round(result.duration_s / cpu, 2),
        "output": f"{spec.width}x{spec.height}@{spec.fps} x264 {spec.preset} crf {spec.crf}",
        "output_kbps": round(size * 8 / result.duration_s / 1000),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--fps", type=int)
    parser.add_argument("--preset")
    parser.add_argument("--crf", type=int)
    args = parser.parse_args()
    options = {k: v for k, v in vars(args).items() if k != "seconds" and v is not None}
    print(json.dumps(measure_speed(args.seconds, **options)))


if __name__ == "__main__":
    main()
