"""The compositor: per-track recording files → one MP4, with A/V sync measured.

The inputs are made here the way the recorder writes them: VP8 640×480 in WebM, Opus in WebM
(H.264 in MKV for one test), millisecond timestamps on the session timeline, late joiners,
gaps with no filler. Cameras flash white and microphones beep at the flash's first frame
(tests/support/avsync.py); the composite is then decoded and every flash paired with its beep.

One 12 s session is composed once for most checks:

* a 张医生: camera + mic from 0 s; camera muted 4–7 s; mic muted 8.5–9.1 s; flashes at n+0.2 s
  with his own 1000 Hz beep (flash and beep from one publisher);
* b 李患者: joins at 2.345 s with camera + mic (a quiet hum, no beeps); flashes at n+0.6 s;
  shares a 1280×720 screen from 8.0 to 10.5 s;
* c 王专家: audio only, beeping at 1500 Hz when b flashes (flash and beep from two publishers);
* speakers: b at 3.0 s, a at 6.0 s for 0.6 s only (too short to move the layout), b at 6.6 s,
  a at 9.0 s.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.logging
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from recording.composite import (
    CompositeResult,
    CompositeSpec,
    TrackInput,
    compose,
    speaker_timeline,
)
from recording.layout import (
    CARD_RGB,
    FontNotFoundError,
    Painter,
    Rect,
    arrange,
    find_font,
    fit,
    rgb_to_yuv,
)
from recording.mixer import Mixer, soft_limit
from tests.support.avsync import (
    PALETTE,
    BeepAudioTrack,
    FlashVideoTrack,
    Pattern,
    beep_onsets,
    flash_onsets,
    flash_video,
    frame_seconds,
    in_flash,
    pair_offsets,
    write_audio,
    write_video,
)

DURATION = 12.0
FPS = 25
SYNC_TOLERANCE_S = 0.040
TAG = {"a": 0, "b": 2, "screen": 5, "d": 3, "e": 1}
NAMES = {"a": "张医生", "b": "李患者", "c": "王专家"}


def frame_times(start_ms: int, end_ms: int, fps: float = 30,
                gaps: tuple[tuple[int, int], ...] = ()) -> list[int]:
    """Capture times (ms) of a camera running from start_ms, minus the muted gaps."""
    out, k = [], 0
    while (ms := start_ms + round(k * 1000 / fps)) < end_ms:
        k += 1
        if not any(lo <= ms < hi for lo, hi in gaps):
            out.append(ms)
    return out


@dataclass
class Session:
    folder: Path
    tracks: list[TrackInput]
    result: CompositeResult
    progress: list[float]
    flashes_a: list[int]  # ms of a's first white frames (what is in his video)
    flashes_b: list[int]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    d = tmp_path_factory.mktemp("session")
    frames, flashes_a = flash_video(Pattern(TAG["a"], 640, 480),
                                    frame_times(0, 12000, gaps=((4000, 7000),)), phase_s=0.2)
    write_video(d / "a-camera.webm", frames)
    write_audio(d / "a-mic.webm", 0, 12000, [n * 1000 + 200 for n in range(12)], 1000,
                drop=[(8.5, 9.1)])
    frames, flashes_b = flash_video(Pattern(TAG["b"], 640, 480), frame_times(2345, 12000),
                                    phase_s=0.6)
    write_video(d / "b-camera.webm", frames)
    write_audio(d / "b-mic.webm", 2345, 12000, [], 1000, hum=0.05)
    write_audio(d / "c-mic.webm", 0, 12000, [600, 1600, *flashes_b], 1500)
    frames, _ = flash_video(Pattern(TAG["screen"], 1280, 720), frame_times(8000, 10500, fps=5),
                            flash_s=0)
    write_video(d / "b-screen.webm", frames)
    tracks = [
        TrackInput(d / "a-camera.webm", "video", "camera", "a", NAMES["a"]),
        TrackInput(d / "a-mic.webm", "audio", "microphone", "a", NAMES["a"]),
        TrackInput(d / "b-camera.webm", "video", "camera", "b", NAMES["b"]),
        TrackInput(d / "b-mic.webm", "audio", "microphone", "b", NAMES["b"]),
        TrackInput(d / "c-mic.webm", "audio", "microphone", "c", NAMES["c"]),
        TrackInput(d / "b-screen.webm", "video", "screen", "b", NAMES["b"]),
    ]
    progress: list[float] = []
    spec = CompositeSpec(tracks=tracks, duration_s=DURATION, output=d / "composite.mp4",
                         speakers=[(3.0, "b"), (6.0, "a"), (6.6, "b"), (9.0, "a")], fps=FPS)
    result = compose(spec, progress.append)
    return Session(d, tracks, result, progress, flashes_a, flashes_b)


def stream_seconds(stream: Any) -> float:
    return float(stream.duration * stream.time_base)


def layout_at(result: CompositeResult, t: float) -> dict[str, Rect]:
    current: dict[str, Rect] = {}
    for start, rects in result.layout:
        if start <= t + 1e-9:
            current = rects
    return current


def main_key(rects: dict[str, Rect]) -> str:
    return max(rects, key=lambda k: rects[k][2] * rects[k][3])


def centre(rect: Rect) -> Rect:
    """The middle half of a tile: away from its label and any letterbox."""
    x, y, w, h = rect
    return x + w // 4, y + h // 4, w // 2, h // 2


def tile_rect(result: CompositeResult, key: str) -> Callable[[float], Rect | None]:
    def at(t: float) -> Rect | None:
        rect = layout_at(result, t).get(key)
        return centre(rect) if rect else None
    return at


def frames_at(path: Path, times: list[float]) -> dict[float, tuple[np.ndarray, ...]]:
    """Y, U, V planes (full size each: U and V upsampled) of the output frames nearest to
    ``times``."""
    out: dict[float, tuple[np.ndarray, ...]] = {}
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            k = round(frame_seconds(frame) * FPS)
            for want in times:
                if k == round(want * FPS):
                    yuv = frame.reformat(format="yuv444p").to_ndarray().astype(float)
                    out[want] = (yuv[0], yuv[1], yuv[2])
    assert sorted(out) == sorted(times)
    return out


def mean_yuv(planes: tuple[np.ndarray, ...], rect: Rect) -> np.ndarray:
    x, y, w, h = rect
    return np.array([p[y:y + h, x:x + w].mean() for p in planes])


def tag_uv(tag: int) -> np.ndarray:
    return np.array(rgb_to_yuv(PALETTE[tag])[1:], dtype=float)


def shows_colour(planes: tuple[np.ndarray, ...], rect: Rect, uv: np.ndarray) -> bool:
    """The centre of rect has this chroma (within what VP8 + x264 + scaling leave of it)."""
    return bool(np.abs(mean_yuv(planes, centre(rect))[1:] - uv).max() < 8)


# -- the whole session ------------------------------------------------------------------------

def test_composite_plays_end_to_end_and_lasts_the_session(session: Session) -> None:
    path = session.result.output
    data = path.read_bytes()
    assert 0 <= data.find(b"moov") < data.find(b"mdat"), "moov first (+faststart)"
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        assert (video.width, video.height) == (960, 540)
        assert audio.sample_rate == 48000
        for stream in (video, audio):
            length = stream_seconds(stream)
            assert abs(length - DURATION) <= 1 / FPS, (stream.type, length)
        pts = [frame_seconds(f) for f in container.decode(video=0)]
    assert len(pts) == round(DURATION * FPS) == session.result.video_frames
    assert pts[0] == 0 and abs(pts[-1] + 1 / FPS - DURATION) <= 1 / FPS
    with av.open(str(path)) as container:
        first = next(container.decode(audio=0))
        assert first.pts == 0
    assert session.result.audio_samples == DURATION * 48000
    assert session.result.skipped == [] and session.result.problems == {}


def test_every_flash_and_its_beep_within_40_ms(session: Session) -> None:
    path, result = session.result.output, session.result
    # one publisher: a's camera and a's microphone
    flashes = flash_onsets(path, tile_rect(result, "a"))
    offsets_a = pair_offsets(flashes, beep_onsets(path, 1000))
    # two publishers: b's camera, c's microphone
    flashes = flash_onsets(path, tile_rect(result, "b"))
    offsets_b = pair_offsets(flashes, beep_onsets(path, 1500))
    print(f"\nA/V offsets (beep − flash): same publisher max {max(map(abs, offsets_a)) * 1000:.1f}"
          f" ms over {len(offsets_a)}; split publishers max "
          f"{max(map(abs, offsets_b)) * 1000:.1f} ms over {len(offsets_b)}")
    # every flash that is in the inputs is found and paired (a's flashes in his camera's
    # gap never happened; the one after his microphone's gap is there)
    assert len(offsets_a) == len(session.flashes_a) == 9
    assert len(offsets_b) == len(session.flashes_b) == 10
    assert max(map(abs, offsets_a + offsets_b)) <= SYNC_TOLERANCE_S
    # the designed bound: the nearest frame is at most half an output frame away (the inputs'
    # flashes are exact; ~2 ms for ms timestamps and the beep detector)
    assert max(map(abs, offsets_a + offsets_b)) <= 0.5 / FPS + 0.002


def test_layout_follows_the_speaker_with_a_hold(session: Session) -> None:
    result = session.result
    assert main_key(layout_at(result, 0.5)) == "a"  # before any speaker: the first person
    assert set(layout_at(result, 0.5)) == {"a", "c"}  # b has not joined; c is audio only
    assert set(layout_at(result, 2.5)) == {"a", "b", "c"}
    switch = [start for start, rects in result.layout if main_key(rects) == "b"]
    assert switch and switch[0] == 3.0  # switched when b started speaking, not later
    assert main_key(layout_at(result, 6.3)) == "b"  # a's 0.6 s turn did not flip it
    assert main_key(layout_at(result, 11.5)) == "a"
    planes = frames_at(result.output, [0.52, 4.0, 6.32])
    main = (0, 0, 720, 540)
    assert shows_colour(planes[0.52], main, tag_uv(TAG["a"]))
    assert shows_colour(planes[4.0], main, tag_uv(TAG["b"]))
    assert shows_colour(planes[6.32], main, tag_uv(TAG["b"]))


def test_screen_share_is_large_while_live(session: Session) -> None:
    result = session.result
    during = layout_at(result, 9.0)
    assert main_key(during) == "screen:b"
    assert {"a", "b", "c"} < set(during)
    for t in (7.0, 11.5):
        assert not any(k.startswith("screen:") for k in layout_at(result, t))
    planes = frames_at(result.output, [9.0])[9.0]
    x, y, w, h = during["screen:b"]
    inner = fit(1280, 720, during["screen:b"])
    assert inner[3] < h  # 16:9 in a taller tile: letterboxed, not stretched
    assert shows_colour(planes, inner, tag_uv(TAG["screen"]))
    assert mean_yuv(planes, (x, y, w, inner[1] - y))[0] < 24  # the bar above is black
    assert shows_colour(planes, during["a"], tag_uv(TAG["a"]))  # cameras in the strip


def test_camera_off_shows_a_name_card(session: Session) -> None:
    result = session.result
    planes = frames_at(result.output, [3.6, 5.6, 7.6])
    card_uv = np.array(rgb_to_yuv(CARD_RGB)[1:], dtype=float)
    assert shows_colour(planes[3.6], layout_at(result, 3.6)["a"], tag_uv(TAG["a"]))
    assert shows_colour(planes[5.6], layout_at(result, 5.6)["a"], card_uv)  # muted 4–7 s
    assert shows_colour(planes[7.6], layout_at(result, 7.6)["a"], tag_uv(TAG["a"]))
    for t in (3.6, 5.6):  # audio only: always a card
        assert shows_colour(planes[t], layout_at(result, t)["c"], card_uv)


def test_chinese_names_render_as_glyphs(session: Session) -> None:
    painter = Painter(find_font())
    ours = [painter.text_mask(n, 24, 400) for n in (NAMES["a"], NAMES["b"])]
    assert ours[0].shape == ours[1].shape
    assert (np.abs(ours[0] - ours[1]) > 0.5).sum() > 100  # different glyphs

    latin = ImageFont.load_default(size=24)  # no CJK: the same boxes (tofu) for both

    def tofu(text: str) -> np.ndarray:
        img = Image.new("L", (120, 30))
        ImageDraw.Draw(img).text((0, 0), text, font=latin, fill=255)
        return np.asarray(img)

    assert np.array_equal(tofu(NAMES["a"]), tofu(NAMES["b"]))

    # in the composite, a's label (bottom left of the main tile at 1 s) is his name: its
    # text pixels are bright and the rest of the box dark, which the other name's glyphs
    # are not
    y_plane = frames_at(session.result.output, [1.0])[1.0][0]
    main = layout_at(session.result, 1.0)["a"]

    def contrast(name: str) -> float:
        overlay = painter.label(name, main[2], main[3])
        w, h = overlay.size
        region = y_plane[main[3] - h - 8:main[3] - 8, 8:8 + w]
        text = overlay.alpha > 0.95
        return float(region[text].mean() - region[~text].mean())

    assert contrast(NAMES["a"]) > 100
    assert contrast(NAMES["a"]) > contrast(NAMES["b"]) + 40


def test_progress_is_reported_monotonically(session: Session) -> None:
    progress = session.progress
    assert progress[0] == 0.0 and progress[-1] == 1.0
    assert all(b >= a for a, b in itertools.pairwise(progress))
    assert max(b - a for a, b in itertools.pairwise(progress)) <= 0.02


# -- damaged inputs, other codecs, resolution changes -----------------------------------------

def test_truncated_damaged_missing_and_unreadable_files_still_compose(
        session: Session, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = (session.folder / "a-camera.webm").read_bytes()
    cut = tmp_path / "a-camera-cut.webm"
    cut.write_bytes(data[:int(len(data) * 0.7)])  # a crash: the last cluster cut off
    whole = bytearray((session.folder / "b-camera.webm").read_bytes())
    middle = len(whole) // 2
    whole[middle:middle + 3000] = np.random.default_rng(7).bytes(3000)  # damage inside
    damaged = tmp_path / "b-camera-damaged.webm"
    damaged.write_bytes(bytes(whole))
    garbage = tmp_path / "x-camera.webm"
    garbage.write_bytes(b"\x1aE\xdf\xa3 not really a webm" * 50)
    with av.open(str(cut)) as container:
        last = max(frame_seconds(f) for f in container.decode(video=0))
    assert 7 < last < 10.5
    tracks = [
        TrackInput(cut, "video", "camera", "a", NAMES["a"]),
        TrackInput(session.folder / "a-mic.webm", "audio", "microphone", "a", NAMES["a"]),
        TrackInput(damaged, "video", "camera", "b", NAMES["b"]),
        TrackInput(tmp_path / "missing.webm", "audio", "microphone", "b", NAMES["b"]),
        TrackInput(garbage, "video", "camera", "x", "X"),
    ]
    spec = CompositeSpec(tracks=tracks, duration_s=DURATION, speakers=[],
                         output=tmp_path / "out.mp4", width=480, height=270)
    level = av.logging.get_level()
    with caplog.at_level("WARNING", logger="huizhen.recording.composite"):
        result = compose(spec)
    assert av.logging.get_level() == level  # FFmpeg's log level is the process's again
    assert result.video_frames == round(DURATION * FPS)
    assert len(result.skipped) == 2
    assert any("missing.webm" in s for s in result.skipped)
    assert any("x-camera.webm" in s for s in result.skipped)
    notes = {label.split()[-1]: n for label, n in result.problems.items()}
    assert any("prematurely" in n for n in notes["a/camera"]), result.problems
    assert notes["b/camera"], result.problems
    logged = " ".join(r.getMessage() for r in caplog.records)
    for name in ("missing.webm", "x-camera.webm", "a-camera-cut.webm", "b-camera-damaged.webm"):
        assert name in logged
    t_card = min(11.9, last + 1.5)
    planes = frames_at(result.output, [1.0, 3.0, t_card])
    assert shows_colour(planes[1.0], layout_at(result, 1.0)["a"], tag_uv(TAG["a"]))
    assert shows_colour(planes[3.0], layout_at(result, 3.0)["b"], tag_uv(TAG["b"]))
    assert shows_colour(planes[t_card], layout_at(result, t_card)["a"],
                        np.array(rgb_to_yuv(CARD_RGB)[1:], dtype=float))


def test_h264_in_mkv_and_resolution_changes(tmp_path: Path) -> None:
    times = frame_times(0, 6000)
    frames, flashes_d = flash_video(Pattern(TAG["d"], 640, 480), times, phase_s=0.3)
    write_video(tmp_path / "d-camera.mkv", frames, codec="libx264")
    write_audio(tmp_path / "d-mic.webm", 0, 6000, flashes_d, 1000)
    # e switches layers mid-stream (each at a keyframe): 640×480, 320×240, then a phone
    # turned upright (480×640)
    patterns = [Pattern(TAG["e"], *size) for size in ((640, 480), (320, 240), (480, 640))]
    frames_e = [(ms, patterns[min(2, ms // 2000)].frame(i, in_flash(ms / 1000, 1.0, 0.7, 0.1)))
                for i, ms in enumerate(times)]
    flashes_e = [1000 * n + 700 for n in range(6)]  # 700 ms is a frame time (30 fps)
    write_video(tmp_path / "e-camera.webm", frames_e)
    write_audio(tmp_path / "e-mic.webm", 0, 6000, flashes_e, 1500)
    with av.open(str(tmp_path / "d-camera.mkv")) as container:
        assert container.streams.video[0].codec_context.name == "h264"
    tracks = [
        TrackInput(tmp_path / "d-camera.mkv", "video", "camera", "d", "Dr Dupont"),
        TrackInput(tmp_path / "d-mic.webm", "audio", "microphone", "d", "Dr Dupont"),
        TrackInput(tmp_path / "e-camera.webm", "video", "camera", "e", "欧阳娜娜"),
        TrackInput(tmp_path / "e-mic.webm", "audio", "microphone", "e", "欧阳娜娜"),
    ]
    spec = CompositeSpec(tracks=tracks, duration_s=6.0, speakers=[(0.0, "e")],
                         output=tmp_path / "out.mp4")
    result = compose(spec)
    assert result.problems == {} and result.skipped == []

    rects = layout_at(result, 0)
    assert main_key(rects) == "e"
    for person, freq, expected in (("d", 1000, flashes_d), ("e", 1500, flashes_e)):
        rect = centre(rects[person])
        offsets = pair_offsets(flash_onsets(result.output, rect),
                               beep_onsets(result.output, freq))
        print(f"\n{person}: A/V offsets max {max(map(abs, offsets)) * 1000:.1f} ms")
        assert len(offsets) == len(expected) == 6
        assert max(map(abs, offsets)) <= min(SYNC_TOLERANCE_S, 0.5 / FPS + 0.002), offsets

    planes = frames_at(result.output, [1.5, 3.5, 5.5])
    main = rects["e"]
    for t in (1.5, 3.5, 5.5):
        assert shows_colour(planes[t], main, tag_uv(TAG["e"])), t
        assert shows_colour(planes[t], rects["d"], tag_uv(TAG["d"])), t
    x, y, w, h = main
    upright = fit(480, 640, main)
    assert upright[2] < w  # pillarboxed: bars left and right, the picture not stretched
    for t, bars_black in ((3.5, False), (5.5, True)):
        left_bar = mean_yuv(planes[t], (x, y + 8, upright[0] - x - 4, h // 2))
        assert (left_bar[0] < 24) == bars_black, (t, left_bar)


# -- pieces ---------------------------------------------------------------------------------

def test_speaker_timeline_drops_short_turns() -> None:
    events = [(1.0, "a"), (5.0, "b"), (5.4, "a"), (9.0, "b"), (9.2, "b"), (20.0, "c")]
    assert speaker_timeline(events, 1.5) == [(1.0, "a"), (9.0, "b"), (20.0, "c")]
    assert speaker_timeline([], 1.5) == []


def test_mixer_places_samples_exactly_and_never_clips() -> None:
    mixer = Mixer()
    loud = np.full(480, 0.9, dtype=np.float32)
    mixer.add(1000, loud)
    mixer.add(1200, loud)  # overlaps: 1.8 before limiting
    mixer.add(3000, np.full(10, 0.25, dtype=np.float32))
    out = np.concatenate([mixer.take(1500), mixer.take(4000)])
    assert np.all(out[:1000] == 0) and np.all(out[1680:3000] == 0)
    assert np.all(out[3000:3010] == np.float32(0.25))  # below the knee: untouched, in place
    assert out[1100] == pytest.approx(soft_limit(np.array([0.9]))[0])
    assert 0.95 < out[1300] < 0.98  # two at 0.9: limited, not clipped
    assert np.abs(soft_limit(np.linspace(-50, 50, 1001))).max() <= 0.97


def test_tiles_keep_their_aspect_and_fit_the_canvas() -> None:
    x, y, w, h = fit(480, 640, (10, 20, 720, 540))  # pillarbox
    assert h == 540 and y == 20 and abs(w - 405) <= 2 and abs((x - 10) * 2 + w - 720) <= 2
    x, y, w, h = fit(1280, 720, (0, 0, 800, 540))  # letterbox
    assert w == 800 and abs(h - 450) <= 2 and abs(y * 2 + h - 540) <= 2
    assert all(v % 2 == 0 for v in fit(333, 251, (2, 4, 101 * 2, 77 * 2)))
    rects = arrange(960, 540, "a", ["b", "c", "d", "e", "f"])
    boxes = list(rects.values())
    for x, y, w, h in boxes:
        assert x >= 0 and y >= 0 and x + w <= 960 and y + h <= 540 and x % 2 == y % 2 == 0
    for i, (x1, y1, w1, h1) in enumerate(boxes):
        for x2, y2, w2, h2 in boxes[i + 1:]:
            assert x1 + w1 <= x2 or x2 + w2 <= x1 or y1 + h1 <= y2 or y2 + h2 <= y1


def test_no_cjk_font_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FontNotFoundError, match="fonts-wqy-microhei"):
        find_font(tmp_path / "no-such-font.ttc")
    spec = CompositeSpec(tracks=[], duration_s=1.0, speakers=[], output=tmp_path / "o.mp4",
                         font_path=tmp_path / "no-such-font.ttc")
    with pytest.raises(FontNotFoundError):
        compose(spec)
    assert not list(tmp_path.iterdir())


async def test_live_test_tracks_flash_and_beep_at_the_same_instant() -> None:
    t0 = time.monotonic()
    cams = [FlashVideoTrack(period_s=0.2, phase_s=0.1, tag=tag, t0=t0) for tag in (0, 1)]
    mic = BeepAudioTrack(period_s=0.2, phase_s=0.1, beep_s=0.05, t0=t0)

    async def first_flashes(track: FlashVideoTrack) -> list[float]:
        out, white_before = [], False
        for _ in range(15):
            frame = await track.recv()
            lag = time.monotonic() - t0 - frame_seconds(frame)
            assert -0.01 < lag < 0.5  # paced by the wall clock since t0: never early
            white = frame.to_ndarray()[:frame.height].mean() > 200
            if white and not white_before:
                out.append(frame_seconds(frame))
            white_before = white
        return out

    async def first_beeps() -> list[float]:
        frames = [await mic.recv() for _ in range(25)]
        first = frame_seconds(frames[0])
        assert all(round(frame_seconds(b) * 48000) == round(frame_seconds(a) * 48000) + a.samples
                   for a, b in itertools.pairwise(frames))  # contiguous
        wave = np.concatenate([f.to_ndarray()[0] for f in frames])
        loud = np.flatnonzero(wave != 0)
        starts = [i for n, i in enumerate(loud) if n == 0 or i - loud[n - 1] > 100]
        return [first + i / 48000 for i in starts]

    (flash0, flash1), beeps = await asyncio.gather(
        asyncio.gather(*(first_flashes(c) for c in cams)), first_beeps())
    assert flash0 and flash0 == flash1  # two publishers, one instant
    for t in flash0:
        assert math.isclose((t - 0.1) / 0.2, round((t - 0.1) / 0.2), abs_tol=1e-9)
        nearest = min(beeps, key=lambda b: abs(b - t), default=None)
        # a beep starts at phase 0: its first non-zero sample is the one after its onset
        assert nearest is not None and abs(nearest - 1 / 48000 - t) < 1e-9
    with pytest.raises(ValueError):
        FlashVideoTrack(phase_s=0.015)
