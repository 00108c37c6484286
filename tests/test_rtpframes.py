"""recording/rtpframes.py, timeline.py, trackfile.py: packets → whole frames → a file on a timeline.

Real encoded media (PyAV's libvpx/libx264/libopus in the test) is packetized the way WebRTC
senders do (RFC 7741, RFC 6184, RFC 7587), reordered, lost and repaired, and must come out as
the exact frames that went in — or not at all, never damaged.
"""

from __future__ import annotations

import fractions
import random
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from recording.rtpframes import (
    RENACK_S,
    Frame,
    FrameAssembler,
    H264Depacketizer,
    OpusDepacketizer,
    Vp8Depacketizer,
)
from recording.timeline import ClockOffset, SenderClock, SessionClock, ntp_to_unix
from recording.trackfile import TrackFile, h264_frame_size, vp8_frame_size

MTU = 300  # small packets: several per frame even at 160x120


def encode(codec: str, n: int, width: int = 160, height: int = 120, gop: int = 10
           ) -> list[tuple[bytes, bool]]:
    enc = av.CodecContext.create(codec, "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = fractions.Fraction(1, 30)
    enc.gop_size = gop
    enc.options = ({"deadline": "realtime", "cpu-used": "8"} if codec == "libvpx" else
                   {"preset": "ultrafast", "tune": "zerolatency"})
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        img = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = i
        out += [(bytes(p), p.is_keyframe) for p in enc.encode(frame)]
    out += [(bytes(p), p.is_keyframe) for p in enc.encode(None)]
    return out


def vp8_packets(frame: bytes) -> Iterator[tuple[bytes, bool]]:
    """RFC 7741 with a 2-byte picture id: (payload, last packet of the frame)."""
    chunks = [frame[i:i + MTU] for i in range(0, len(frame), MTU)]
    for i, chunk in enumerate(chunks):
        descriptor = bytes([0x90 if i == 0 else 0x80, 0x80, 0x80 | 0x12, 0x34])
        yield descriptor + chunk, i == len(chunks) - 1


def h264_packets(access_unit: bytes) -> Iterator[tuple[bytes, bool]]:
    """RFC 6184 as WebRTC senders do: small NAL units aggregated (STAP-A), big ones split
    (FU-A)."""
    nals = [n for n in access_unit.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01")
            .split(b"\x00\x00\x01") if n]
    payloads: list[bytes] = []
    small = [n for n in nals if len(n) < 100]
    if small:
        payloads.append(bytes([24]) + b"".join(len(n).to_bytes(2, "big") + n for n in small))
    for nal in (n for n in nals if len(n) >= 100):
        body = nal[1:]
        parts = [body[i:i + MTU] for i in range(0, len(body), MTU)]
        for i, part in enumerate(parts):
            fu_header = (0x80 if i == 0 else 0) | (0x40 if i == len(parts) - 1 else 0)
            payloads.append(bytes([(nal[0] & 0xE0) | 28, fu_header | (nal[0] & 0x1F)]) + part)
    for i, payload in enumerate(payloads):
        yield payload, i == len(payloads) - 1


def rtp_stream(frames: list[bytes], packetize, seq0: int = 65500, step: int = 3000
               ) -> list[tuple[int, int, bool, bytes]]:
    """(seq, timestamp, marker, payload) for each packet, sequence numbers wrapping."""
    out = []
    seq = seq0
    for index, frame in enumerate(frames):
        for payload, last in packetize(frame):
            out.append((seq & 0xFFFF, (1_000_000 + index * step) & 0xFFFFFFFF, last, payload))
            seq += 1
    return out


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def assembler(depacketizer, clock: Clock, give_up_s: float = 0.5, give_up_after: int = 3
              ) -> tuple[FrameAssembler, list[Frame], list[str]]:
    frames: list[Frame] = []
    events: list[str] = []
    asm = FrameAssembler(depacketizer, give_up_s, give_up_after, frames.append,
                         lambda: events.append("keyframe"),
                         lambda seqs: events.append(f"nack {seqs}"), clock=clock)
    return asm, frames, events


def shuffled_nearby(items: list, rng: random.Random, window: int = 4) -> list:
    """Each item moves at most ``window`` places: network reordering."""
    keyed = [(i + rng.uniform(0, window), item) for i, item in enumerate(items)]
    return [item for _, item in sorted(keyed, key=lambda x: x[0])]


@pytest.fixture(scope="module")
def vp8() -> list[tuple[bytes, bool]]:
    return encode("libvpx", 40)


def test_vp8_reordered_packets_give_back_exactly_the_frames_sent(vp8) -> None:
    clock = Clock()
    asm, out, events = assembler(Vp8Depacketizer(), clock)
    packets = rtp_stream([f for f, _ in vp8], vp8_packets)
    assert len(packets) > 2 * len(vp8)  # several packets a frame, and the numbers wrap
    for seq, ts, marker, payload in shuffled_nearby(packets, random.Random(3)):
        asm.add(seq, ts, marker, payload, arrival=0.0)
    assert [f.data for f in out] == [f for f, _ in vp8]
    assert [f.keyframe for f in out] == [k for _, k in vp8]
    assert out[0].keyframe and events == []
    assert asm.dropped_frames == 0


def test_a_repaired_hole_loses_nothing_and_an_open_one_is_asked_for_again(vp8) -> None:
    clock = Clock()
    asm, out, events = assembler(Vp8Depacketizer(), clock)
    packets = rtp_stream([f for f, _ in vp8], vp8_packets)
    lost = packets[20]
    for packet in packets[:20] + packets[21:40]:
        asm.add(*packet, arrival=0.0)
    clock.now = RENACK_S + 0.01
    asm.tick()
    assert events == [f"nack [{lost[0]}]"]  # asked again, only for what is missing
    asm.add(*lost, arrival=0.0)  # the retransmission
    for packet in packets[40:]:
        asm.add(*packet, arrival=0.0)
    assert [f.data for f in out] == [f for f, _ in vp8]


def test_a_packet_lost_for_good_costs_frames_up_to_the_next_keyframe_only(vp8) -> None:
    clock = Clock()
    asm, out, events = assembler(Vp8Depacketizer(), clock)
    sent = [f for f, _ in vp8]
    packets = rtp_stream(sent, vp8_packets)
    # lose a packet of the third frame (a delta frame; keyframes every 10)
    first_of = {}
    for i, (_, ts, _, _) in enumerate(packets):
        first_of.setdefault(ts, i)
    third = sorted(first_of.values())[2]
    for packet in packets[:third] + packets[third + 1:]:
        asm.add(*packet, arrival=0.0)
        clock.now += 0.01  # ≈ real pacing: the hole times out while the stream goes on
        asm.tick()
    assert events.count("keyframe") == 1
    keyframes = [i for i, (_, k) in enumerate(vp8) if k]
    resumed_at = next(k for k in keyframes if k > 2)
    assert [f.data for f in out] == sent[:2] + sent[resumed_at:]
    assert asm.dropped_frames == resumed_at - 2
    assert all(f.data in sent for f in out)  # never a damaged frame


def test_h264_fu_a_and_stap_a_come_back_as_the_access_units_sent() -> None:
    units = encode("libx264", 12)
    clock = Clock()
    asm, out, _ = assembler(H264Depacketizer(), clock)
    sent = [u for u, _ in units]
    for packet in shuffled_nearby(rtp_stream(sent, h264_packets), random.Random(5)):
        asm.add(*packet, arrival=0.0)
    def canonical(au: bytes) -> list[bytes]:
        return [n for n in au.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01")
                .split(b"\x00\x00\x01") if n]
    assert len(out) == len(sent)
    for got, want in zip(out, sent, strict=True):
        assert sorted(canonical(got.data)) == sorted(canonical(want))
    assert out[0].keyframe
    assert h264_frame_size(out[0].data) == (160, 120)


def test_opus_packets_are_frames_and_audio_holes_are_not_waited_for_long() -> None:
    clock = Clock()
    asm, out, events = assembler(OpusDepacketizer(), clock, give_up_s=0.2)
    payloads = [bytes([0xFC, i]) for i in range(10)]
    for i, payload in enumerate(payloads):
        if i != 4:
            asm.add(100 + i, 960 * i, False, payload, arrival=0.0)
    assert [f.data for f in out] == payloads[:4]
    clock.now = 0.25
    asm.tick()
    assert [f.data for f in out] == payloads[:4] + payloads[5:]
    assert events == []  # no keyframes in audio, no retransmission either


def test_a_held_up_event_loop_does_not_give_up_on_what_still_waits_in_the_socket() -> None:
    """Time alone does not give a hole up: after a stall, the tick may run before the queued
    packets (the one that fills the hole among them) are read."""
    clock = Clock()
    asm, out, _ = assembler(OpusDepacketizer(), clock, give_up_s=0.2, give_up_after=3)
    payloads = [bytes([0xFC, i]) for i in range(8)]
    asm.add(100, 0, False, payloads[0], arrival=0.0)
    asm.add(102, 1920, False, payloads[2], arrival=0.0)  # 101 reordered, not lost
    clock.now = 2.0  # the loop was held up for 2 s
    asm.tick()
    assert [f.data for f in out] == payloads[:1]  # still waiting: one packet after the hole
    for seq in (101, 103, 104, 105):
        asm.add(seq, 960 * (seq - 100), False, payloads[seq - 100], arrival=0.0)
    assert [f.data for f in out] == payloads[:6]  # nothing lost


def test_padding_only_packets_hold_a_number_but_carry_nothing(vp8) -> None:
    clock = Clock()
    asm, out, _ = assembler(Vp8Depacketizer(), clock)
    packets = rtp_stream([f for f, _ in vp8[:5]], vp8_packets)
    seq = packets[-1][0]
    for packet in packets:
        asm.add(*packet, arrival=0.0)
    asm.add((seq + 1) & 0xFFFF, packets[-1][1], False, b"", arrival=0.0)
    more = rtp_stream([f for f, _ in vp8[5:8]], vp8_packets, seq0=seq + 2,
                      step=3000)
    for s, ts, marker, payload in more:
        asm.add(s, ts + 5 * 3000, marker, payload, arrival=0.0)
    assert [f.data for f in out] == [f for f, _ in vp8[:8]]


# ---- timeline -------------------------------------------------------------------------------

def ntp(unix: float) -> int:
    seconds = unix + 2208988800
    return (int(seconds) << 32) | int((seconds % 1) * 2**32)


def test_sender_reports_map_rtp_to_the_sender_clock_taking_the_least_delayed() -> None:
    clock = SenderClock(90000)
    assert not clock.ready
    # the sender stamps reports when it sends them: 30 ms and 5 ms after capture
    clock.on_sender_report(ntp(1000.030), 90000 * 10)
    clock.on_sender_report(ntp(1001.005), 90000 * 11)
    assert abs(clock.sender_time(90000 * 10) - 1000.005) < 1e-3
    # wrapped timestamps still map (signed 32-bit difference)
    clock2 = SenderClock(48000)
    clock2.on_sender_report(ntp(50.0), 0xFFFFFF00)
    assert abs(clock2.sender_time(0x100) - (50.0 + 0x200 / 48000)) < 1e-6
    assert abs(ntp_to_unix(ntp(1234.5)) - 1234.5) < 1e-6


def test_clock_offset_is_the_smallest_delay_over_a_sliding_window() -> None:
    offset = ClockOffset()
    offset.observe(100.050, 90.0)  # 10.05 s: sender clock 10 s behind, 50 ms delay
    offset.observe(100.500, 90.490)
    assert offset.value is not None and abs(offset.value - 10.010) < 1e-9
    offset.observe(140.0, 130.0)  # 40 s later: the old minimum has left the window
    assert abs(offset.value - 10.0) < 1e-9


def test_session_clock_leaves_pauses_out() -> None:
    session = SessionClock(1000.0)
    assert session.to_session(999.0) is None
    assert session.to_session(1005.0) == 5.0
    session.pause(1010.0)
    session.resume(1030.0)
    assert session.to_session(1020.0) is None
    assert session.to_session(1031.0) == 11.0
    assert session.duration(1040.0) == 20.0


# ---- the file -------------------------------------------------------------------------------

def test_track_file_holds_the_frames_at_their_session_times(tmp_path: Path, vp8) -> None:
    path = tmp_path / "t.webm"
    track = TrackFile(path, "vp8")
    track.write(500, vp8[1][0], False)  # a video file starts at a keyframe: dropped
    for i, (data, key) in enumerate(vp8):
        track.write(2000 + i * 33, data, key)
    stats = track.close()
    assert stats.frames == len(vp8) and stats.first_ms == 2000
    assert stats.sizes == [(160, 120)]
    assert vp8_frame_size(vp8[0][0]) == (160, 120)
    with av.open(str(path)) as container:
        times = [round(f.time * 1000) for f in container.decode(video=0)]
    assert times == [2000 + i * 33 for i in range(len(vp8))]


def test_h264_sizes_with_cropping(tmp_path: Path) -> None:
    units = encode("libx264", 2, width=176, height=98)
    assert h264_frame_size(units[0][0]) == (176, 98)
    path = tmp_path / "t.mkv"
    track = TrackFile(path, "h264")
    for i, (data, key) in enumerate(units):
        track.write(i * 40, data, key)
    track.close()
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    assert [(f.width, f.height) for f in frames] == [(176, 98)] * len(units)
