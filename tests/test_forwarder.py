"""Unit tests of the forwarding path: keyframes, header rewriting, continuity, NACK, PLI."""

from __future__ import annotations

import asyncio
import itertools
import struct

from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from media import rtp
from media.downtrack import DownTrack, PacketSink
from media.source import SourceTrack


# ---- keyframe detection --------------------------------------------------------------------
def test_vp8_keyframe_detection() -> None:
    # S=1, PID=0, no extension, then the VP8 payload header with P=0 (keyframe)
    assert rtp.vp8_is_keyframe_start(bytes([0x10, 0x00, 0x9D]))
    assert not rtp.vp8_is_keyframe_start(bytes([0x10, 0x01, 0x9D]))  # P=1: interframe
    assert not rtp.vp8_is_keyframe_start(bytes([0x00, 0x00]))  # not the start of a frame
    assert not rtp.vp8_is_keyframe_start(bytes([0x11, 0x00]))  # partition 1
    # X=1 with a 15-bit picture id (I=1, M=1): descriptor is 4 bytes
    assert rtp.vp8_is_keyframe_start(bytes([0x90, 0x80, 0x81, 0x23, 0x00]))
    assert not rtp.vp8_is_keyframe_start(bytes([0x90, 0x80, 0x81, 0x23, 0x01]))
    # X=1, I=1 (7-bit id), L=1, T=1: 1 + 1 + 1 + 1 + 1 bytes before the payload header
    assert rtp.vp8_is_keyframe_start(bytes([0x90, 0xE0, 0x05, 0x07, 0x20, 0x00]))
    assert not rtp.vp8_is_keyframe_start(b"")
    assert not rtp.vp8_is_keyframe_start(bytes([0x90, 0x80]))  # truncated


def test_h264_keyframe_detection() -> None:
    assert rtp.h264_is_keyframe_start(bytes([0x65, 0x88]))  # IDR slice
    assert rtp.h264_is_keyframe_start(bytes([0x67, 0x42]))  # SPS
    assert not rtp.h264_is_keyframe_start(bytes([0x41, 0x9A]))  # non-IDR slice
    stap = bytes([0x18]) + struct.pack("!H", 2) + bytes([0x67, 0x42]) + struct.pack("!H", 1) \
        + bytes([0x68])
    assert rtp.h264_is_keyframe_start(stap)
    assert rtp.h264_is_keyframe_start(bytes([0x7C, 0x85, 0x00]))  # FU-A, start, IDR
    assert not rtp.h264_is_keyframe_start(bytes([0x7C, 0x05, 0x00]))  # FU-A continuation
    assert not rtp.h264_is_keyframe_start(bytes([0x7C, 0x81, 0x00]))  # FU-A start, non-IDR


# ---- header building, cross-checked with aiortc's parser ---------------------------------------
def test_stamped_packet_parses_with_the_subscribers_extension_ids() -> None:
    ids = rtp.ExtensionIds(audio_level=2, abs_send_time=3)
    block = rtp.build_extension_block(ids, (True, 37), 0x123456)
    template = rtp.build_packet(block, b"opus-payload")
    data = rtp.stamp(template, (1 << 7) | 111, 0xFFFE, 0xDEADBEEF, 0x01020304)
    ext_map = HeaderExtensionsMap()
    ext_map.configure(RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=2, uri=rtp.URI_AUDIO_LEVEL),
        RTCRtpHeaderExtensionParameters(id=3, uri=rtp.URI_ABS_SEND_TIME)]))
    packet = RtpPacket.parse(data, ext_map)
    assert (packet.marker, packet.payload_type) == (1, 111)
    assert (packet.sequence_number, packet.timestamp, packet.ssrc) == (0xFFFE, 0xDEADBEEF,
                                                                       0x01020304)
    assert packet.extensions.audio_level == (True, 37)
    assert packet.extensions.abs_send_time == 0x123456
    assert packet.payload == b"opus-payload"


def test_no_extension_block_when_none_negotiated() -> None:
    assert rtp.build_extension_block(rtp.ExtensionIds(), (False, 10), 5) == b""
    data = rtp.stamp(rtp.build_packet(b"", b"x"), 96, 1, 2, 3)
    assert len(data) == 13 and data[0] == 0x80


# ---- DownTrack / SourceTrack ------------------------------------------------------------------
class Sink(PacketSink):
    def __init__(self) -> None:
        self.rtp: list[RtpPacket] = []
        self.rtcp: list[bytes] = []

    def send_rtp(self, data: bytes) -> bool:
        self.rtp.append(RtpPacket.parse(data))
        return True

    def send_rtcp(self, data: bytes) -> None:
        self.rtcp.append(data)


KEY = bytes([0x10, 0x00, 0x9D])
DELTA = bytes([0x10, 0x01, 0x9D])


def make_source(track_id: str = "t1") -> tuple[SourceTrack, list[int], list[list[int]]]:
    plis: list[int] = []
    nacks: list[list[int]] = []
    source = SourceTrack(track_id, "video", "video/VP8", 90000, plis.append,
                         lambda ssrc, lost: nacks.append(lost), pli_throttle_s=0.2)
    return source, plis, nacks


def feed(source: SourceTrack, seq: int, ts: int, payload: bytes, ssrc: int = 1000) -> None:
    source.on_packet(ssrc, seq & 0xFFFF, ts & 0xFFFFFFFF, 1, payload, 0, None, None)


def make_down(sink: Sink) -> DownTrack:
    down = DownTrack("video", 5555, sink)
    down.configure(96, 90000, rtp.ExtensionIds(), "cname")
    down.active = True
    return down


async def test_new_subscriber_waits_for_keyframe_and_asks_for_one() -> None:
    source, plis, _ = make_source()
    feed(source, 10, 0, KEY)
    sink = Sink()
    down = make_down(sink)
    down.attach(source)
    assert plis == [1000]  # asked at once
    feed(source, 11, 3000, DELTA)
    feed(source, 12, 6000, DELTA)
    assert sink.rtp == []  # nothing before a keyframe
    feed(source, 13, 9000, KEY)
    feed(source, 14, 12000, DELTA)
    assert [p.ssrc for p in sink.rtp] == [5555, 5555]
    assert sink.rtp[1].sequence_number == (sink.rtp[0].sequence_number + 1) & 0xFFFF
    assert (sink.rtp[1].timestamp - sink.rtp[0].timestamp) & 0xFFFFFFFF == 3000
    assert all(p.payload_type == 96 for p in sink.rtp)


async def test_video_packets_before_the_end_of_a_frame_may_be_held() -> None:
    calls: list[tuple[str, int]] = []

    class HoldingSink(Sink):
        def forward_rtp(self, block: rtp.PacketTemplate, marker_pt: int, seq: int,
                        timestamp: int, ssrc: int, end_of_frame: bool) -> None:
            calls.append(("send" if end_of_frame else "queue", seq))

    source, _, _ = make_source()
    down = make_down(HoldingSink())
    down.attach(source)
    for seq, marker in ((1, 0), (2, 0), (3, 1)):
        source.on_packet(1000, seq, 0, marker, KEY if seq == 1 else DELTA, 0, None, None)
    first = calls[0][1]
    assert calls == [("queue", first), ("queue", first + 1), ("send", first + 2)]
    calls.clear()
    audio = SourceTrack("a", "audio", "audio/opus", 48000, lambda ssrc: None,
                        lambda ssrc, lost: None)
    audio_down = DownTrack("audio", 6666, HoldingSink())
    audio_down.configure(111, 48000, rtp.ExtensionIds(), "cname")
    audio_down.active = True
    audio_down.attach(audio)
    audio.on_packet(2000, 1, 960, 0, b"opus", 0, None, None)
    assert [kind for kind, _ in calls] == ["send"]  # audio is never held


async def test_a_long_stream_keeps_flowing_past_32768_packets() -> None:
    source, _, _ = make_source()
    sent: list[bytes] = []
    sink = Sink()
    sink.send_rtp = sent.append  # type: ignore[method-assign]
    down = make_down(sink)
    down.attach(source)
    total = 70000  # more than a full turn of the 16-bit sequence number
    for i in range(total):
        feed(source, 100 + i, 3000 * i, KEY if i == 0 else DELTA)
    assert len(sent) == total
    seqs = [RtpPacket.parse(data).sequence_number for data in (sent[0], sent[-1])]
    assert (seqs[1] - seqs[0]) & 0xFFFF == (total - 1) & 0xFFFF


async def test_sequence_and_timestamp_continue_across_a_source_switch() -> None:
    first, _, _ = make_source("a")
    second, _, _ = make_source("b")
    sink = Sink()
    down = make_down(sink)
    down.attach(first)
    for i in range(5):
        feed(first, 60000 + i, 1_000_000 + 3000 * i, KEY if i == 0 else DELTA)
    down.attach(second)  # e.g. the m-line now carries another publisher's camera
    for i in range(5):
        feed(second, 123 + i, 4_000_000_000 + 3000 * i, KEY if i == 0 else DELTA, ssrc=2000)
    seqs = [p.sequence_number for p in sink.rtp]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs)), seqs
    stamps = [p.timestamp for p in sink.rtp]
    assert all(0 < (b - a) & 0xFFFFFFFF < 90000 for a, b in itertools.pairwise(stamps)), stamps
    assert {p.ssrc for p in sink.rtp} == {5555}


async def test_nack_is_answered_from_history_or_forwarded_upstream() -> None:
    source, _, nacks = make_source()
    sink = Sink()
    down = make_down(sink)
    down.attach(source)
    for i in range(10):
        if i != 7:  # 507 never reaches the server
            feed(source, 500 + i, 3000 * i, KEY if i == 0 else DELTA)
    lost_out = sink.rtp[4].sequence_number
    down.on_nack([lost_out])
    assert sink.rtp[-1].sequence_number == lost_out
    assert sink.rtp[-1].payload == sink.rtp[4].payload
    assert down.retransmissions == 1
    # a packet the server never had: asked from the publisher instead
    down.on_nack([(lost_out + 3) & 0xFFFF])
    assert nacks == [[507]]
    # one it has not forwarded yet is no loss of this subscriber's: nothing to ask
    down.on_nack([(lost_out + 10) & 0xFFFF])  # (the newest sent is lost_out + 5)
    assert nacks == [[507]] and down.retransmissions == 1


async def test_packets_from_before_the_start_are_not_forwarded() -> None:
    source, _, _ = make_source()
    sink = Sink()
    down = make_down(sink)
    down.attach(source)
    feed(source, 100, 0, KEY)
    feed(source, 99, 0, DELTA)  # reordered: older than the keyframe this subscriber began at
    feed(source, 101, 3000, DELTA)
    assert [p.sequence_number - sink.rtp[0].sequence_number for p in sink.rtp] == [0, 1]


async def test_keyframe_requests_are_throttled_and_deferred_not_dropped() -> None:
    source, plis, _ = make_source()
    feed(source, 1, 0, DELTA)
    source.request_keyframe()
    source.request_keyframe()  # within the 0.2 s window: deferred
    source.request_keyframe()  # still one deferred request
    assert plis == [1000]
    await asyncio.sleep(0.3)
    assert plis == [1000, 1000]  # the deferred one went out at the end of the window
    await asyncio.sleep(0.3)
    assert len(plis) == 2


async def test_pli_waits_for_the_publisher_ssrc() -> None:
    source, plis, _ = make_source()
    source.request_keyframe()
    assert plis == []
    feed(source, 1, 0, DELTA)
    assert plis == [1000]


async def test_sender_report_maps_ntp_to_the_subscribers_timestamps() -> None:
    source, _, _ = make_source()
    sink = Sink()
    down = make_down(sink)
    down.attach(source)
    feed(source, 1, 90000, KEY)
    source.on_sender_report(ntp=0x1234567800000000, rtp_timestamp=90000 + 4500)
    (report,) = sink.rtcp
    ssrc, ntp_hi, ntp_lo, rtp_ts = struct.unpack_from("!IIII", report, 4)
    assert ssrc == 5555 and (ntp_hi, ntp_lo) == (0x12345678, 0)
    assert (rtp_ts - sink.rtp[0].timestamp) & 0xFFFFFFFF == 4500


async def test_inactive_down_track_gets_nothing() -> None:
    source, _, _ = make_source()
    sink = Sink()
    down = make_down(sink)
    down.active = False
    down.attach(source)
    feed(source, 1, 0, KEY)
    assert sink.rtp == []
    down.detach()
    assert source.down_tracks == []


async def test_publisher_ssrc_change_keeps_subscriber_numbering_continuous() -> None:
    source, plis, _ = make_source()
    sink = Sink()
    down = make_down(sink)
    down.attach(source)
    for i in range(4):
        feed(source, 100 + i, 3000 * i, KEY if i == 0 else DELTA, ssrc=1000)
    plis.clear()
    # the publisher's encoder restarts: new SSRC, sequence numbers and timestamps elsewhere
    feed(source, 40000, 777_000, DELTA, ssrc=2000)
    await asyncio.sleep(0.25)  # the subscription's own PLI was just sent: this one is deferred
    assert plis == [2000]  # a keyframe is asked of the new stream
    feed(source, 40001, 780_000, KEY, ssrc=2000)
    feed(source, 40002, 783_000, DELTA, ssrc=2000)
    seqs = [p.sequence_number for p in sink.rtp]
    assert len(seqs) == 6
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs)), seqs
    assert {p.ssrc for p in sink.rtp} == {5555}


async def test_packet_lost_for_good_upstream_costs_one_frame_not_a_stall() -> None:
    source, plis, _ = make_source()
    sink = Sink()
    down = make_down(sink)
    down.attach(source)
    feed(source, 10, 0, KEY)
    feed(source, 11, 3000, DELTA)
    feed(source, 13, 6000, DELTA)  # 12 is missing
    feed(source, 12, 3000, DELTA)  # … and a retransmission fills it: nothing given up
    feed(source, 15, 9000, DELTA)  # 14 is missing and never comes back
    await asyncio.sleep(0.35)
    plis.clear()
    feed(source, 16, 12000, DELTA)  # the gap is now too old: give up on it
    assert source.lost_for_good == 1
    assert down.waiting_keyframe
    await asyncio.sleep(0.25)
    assert plis == [1000]  # asked for a keyframe (deferred past the throttle window)
    sent_before = len(sink.rtp)
    feed(source, 17, 15000, DELTA)  # not forwarded: the subscriber resumes at a keyframe
    assert len(sink.rtp) == sent_before
    feed(source, 18, 18000, KEY)
    feed(source, 19, 21000, DELTA)
    seqs = [p.sequence_number for p in sink.rtp]
    # what the subscriber got is gap-free: the hole it had already passed (14) was plugged
    # with an empty padding packet, and the rest of the lost frame is simply not there
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(sorted(seqs))), seqs
    (filler,) = [p for p in sink.rtp if not p.payload]
    assert filler.padding_size == 1 and filler.sequence_number == sink.rtp[0].sequence_number + 4


# ---- simulcast layers and pausing ---------------------------------------------------------------
async def test_layer_switch_waits_for_the_new_layers_keyframe_and_keeps_numbering() -> None:
    low, _, _ = make_source("t")
    high, high_plis, _ = make_source("t")
    sink = Sink()
    down = make_down(sink)
    down.attach(low)
    for i in range(3):
        feed(low, 100 + i, 3000 * i, KEY if i == 0 else DELTA, ssrc=1)
        feed(high, 500 + i, 7000 + 3000 * i, KEY if i == 0 else DELTA, ssrc=2)
    down.switch(high)
    assert high_plis == [2] and down.target is high and down.source is low
    # until the high layer's keyframe, the low layer keeps flowing; high deltas are not sent
    feed(high, 503, 16000, DELTA, ssrc=2)
    feed(low, 103, 9000, DELTA, ssrc=1)
    assert [p.payload for p in sink.rtp][-1] == DELTA and len(sink.rtp) == 4
    feed(high, 504, 19000, KEY, ssrc=2)
    assert down.source is high and down in high.down_tracks and down not in low.down_tracks
    feed(low, 104, 12000, DELTA, ssrc=1)  # no longer forwarded
    feed(high, 505, 22000, DELTA, ssrc=2)
    assert [p.payload for p in sink.rtp][-2:] == [KEY, DELTA]
    seqs = [p.sequence_number for p in sink.rtp]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs)), seqs
    stamps = [p.timestamp for p in sink.rtp]
    assert all(0 <= (b - a) & 0xFFFFFFFF < 90000 for a, b in itertools.pairwise(stamps))


async def test_nacks_after_a_layer_switch_or_restart_resend_what_was_sent() -> None:
    """A subscriber on a lossy link NACKs packets sent just before its layer switched (or
    before a restart): each sequence number must bring back the packet it was, with its
    timestamp, not whatever the new layer's numbering maps it to (that left holes its
    jitter buffer waited seconds at, or put the other layer's data in them)."""
    low, _, low_nacks = make_source("t")
    high, _, high_nacks = make_source("t")
    sink = Sink()
    down = make_down(sink)
    down.attach(high)
    for i in range(4):
        feed(high, 500 + i, 3000 * i, (KEY if i == 0 else DELTA) + b"high%d" % i, ssrc=2)
    before_switch = list(sink.rtp)
    down.switch(low)
    feed(low, 100, 9000, KEY + b"low0", ssrc=1)
    feed(low, 101, 12000, DELTA + b"low1", ssrc=1)
    assert down.source is low and sink.rtp[-1].payload == DELTA + b"low1"
    sent = len(sink.rtp)
    down.on_nack([p.sequence_number for p in before_switch[1:3]])
    resent = sink.rtp[sent:]
    assert [(p.sequence_number, p.timestamp, p.payload) for p in resent] == [
        (p.sequence_number, p.timestamp, p.payload) for p in before_switch[1:3]]
    # answered, but not counted as this link's loss now: it was the layer it left
    assert down.nacks_answered == 0 and low_nacks == [] and high_nacks == []
    down.on_nack([sink.rtp[sent - 1].sequence_number])  # one of the new layer's
    assert down.nacks_answered == 1 and sink.rtp[-1].payload == DELTA + b"low1"

    # lost for good upstream: the filler that plugged the hole is what a NACK brings back
    feed(low, 102, 15000, DELTA + b"low2", ssrc=1)
    feed(low, 104, 18000, DELTA + b"low4", ssrc=1)  # 103 never comes
    await asyncio.sleep(0.35)
    feed(low, 105, 21000, DELTA + b"low5", ssrc=1)  # given up: a filler went out for it
    (filler,) = [p for p in sink.rtp if not p.payload]
    feed(low, 106, 24000, KEY + b"low6", ssrc=1)  # the restart
    sent = len(sink.rtp)
    down.on_nack([filler.sequence_number])
    (again,) = sink.rtp[sent:]
    assert (again.sequence_number, again.timestamp, again.payload) == (
        filler.sequence_number, filler.timestamp, b"")


async def test_paused_down_track_sends_nothing_and_resumes_at_a_keyframe() -> None:
    source, plis, _ = make_source()
    sink = Sink()
    down = make_down(sink)
    down.attach(source)
    feed(source, 1, 0, KEY)
    feed(source, 2, 3000, DELTA)
    down.pause()
    plis.clear()
    feed(source, 3, 6000, KEY)
    feed(source, 4, 9000, DELTA)
    down.on_keyframe_request()  # a paused subscriber's PLI does not reach the publisher
    assert len(sink.rtp) == 2 and plis == []
    # a hole in what it was sent before the pause is closed (a hole would stall its jitter
    # buffer after the resume) with a padding filler: the weak link is spared the video
    down.on_nack([sink.rtp[-1].sequence_number])
    assert len(sink.rtp) == 3 and sink.rtp[-1].payload == b""
    assert (sink.rtp[-1].sequence_number, sink.rtp[-1].timestamp) == (
        sink.rtp[1].sequence_number, sink.rtp[1].timestamp)
    await asyncio.sleep(0.25)  # past the PLI throttle
    down.resume()
    assert plis == [1000]
    feed(source, 5, 12000, DELTA)
    assert len(sink.rtp) == 3  # waits for the keyframe it asked for
    feed(source, 6, 15000, KEY)
    assert len(sink.rtp) == 4 and sink.rtp[-1].payload == KEY
    assert (sink.rtp[-1].sequence_number - sink.rtp[1].sequence_number) & 0xFFFF == 1


async def test_only_nacks_for_packets_it_was_sent_count_as_downlink_loss() -> None:
    source, _, upstream = make_source()
    sink = Sink()
    down = make_down(sink)
    down.attach(source)
    feed(source, 1, 0, KEY)
    feed(source, 3, 3000, DELTA)  # 2 never arrived upstream
    first = sink.rtp[0].sequence_number
    down.on_nack([first, (first + 1) & 0xFFFF])
    down.on_nack([first])  # a repeated NACK is not more loss
    assert down.nacks_answered == 1
    assert upstream == [[2]]  # the upstream gap is asked of the publisher instead


def test_vp8_keyframe_size_is_read_from_the_frame_header() -> None:
    header = bytes([0x10, 0x00, 0x00, 0x00, 0x9D, 0x01, 0x2A]) + struct.pack("<HH", 640, 480)
    assert rtp.vp8_keyframe_size(header) == (640, 480)
    assert rtp.vp8_keyframe_size(DELTA + bytes(10)) is None


async def test_nack_is_answered_as_rtx_when_the_subscriber_negotiated_it() -> None:
    source, _, _ = make_source()
    sink = Sink()
    down = DownTrack("video", 5555, sink)
    down.configure(96, 90000, rtp.ExtensionIds(), "cname", rtx=(97, 7777))
    down.active = True
    down.attach(source)
    feed(source, 1, 0, KEY)
    feed(source, 2, 3000, DELTA)
    lost = sink.rtp[1]
    down.on_nack([lost.sequence_number])
    down.on_nack([lost.sequence_number])
    first, second = sink.rtp[2:]
    for rtx in (first, second):
        assert (rtx.ssrc, rtx.payload_type, rtx.timestamp) == (7777, 97, lost.timestamp)
        # the original sequence number, then the original payload
        assert struct.unpack("!H", rtx.payload[:2])[0] == lost.sequence_number
        assert rtx.payload[2:] == DELTA
    assert second.sequence_number == (first.sequence_number + 1) & 0xFFFF
    assert down.retransmissions == 2 and down.nacks_answered == 1
