"""The headless client publishes a media file; the others decode what is in it."""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np
from aiortc.contrib.media import MediaPlayer

from sdk.testmedia import tag_colour
from tests.harness import Server


def write_clip(path: Path, tag: int, seconds: int = 2, fps: int = 25) -> None:
    """A small file whose every frame is filled with the colour of ``tag``."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.time_base = fractions.Fraction(1, fps)
        img = np.zeros((240, 320, 3), dtype=np.uint8)
        img[:, :] = tag_colour(tag)
        for i in range(seconds * fps):
            img[100:140, (i * 8) % 300:(i * 8) % 300 + 20] = 255  # a moving block
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


async def test_publish_a_media_file(server: Server, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    write_clip(clip, tag=7)
    room = await server.create_room("broadcast")
    presenter = await server.participant(room, "or-camera", "presenter")
    viewer = await server.participant(room, "trainee", "viewer")
    player = MediaPlayer(str(clip), loop=True)
    try:
        await presenter.publish(audio=False, video=True, video_track=player.video)
        assert await viewer.wait_until(
            lambda: viewer.frames_from(presenter.id, "video") >= 30, timeout=15), \
            viewer.summary()
        video = viewer.received_from(presenter.id, "video")
        assert video is not None and set(video.tags) == {7}, video.tags
    finally:
        await viewer.leave()
        await presenter.leave()
