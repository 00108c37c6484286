"""Downlink estimation, layer choice and step-up tries (media/bandwidth.py), and the simulcast
SDP handling (media/simulcast.py), without a network."""

from __future__ import annotations

import pytest

from media import bandwidth
from media.bandwidth import (
    REMB_HOLD_S,
    DownlinkEstimate,
    RembCap,
    StepUpTrials,
    Traffic,
    choose_layer,
)
from media.simulcast import SimulcastError, accept_in_answer, offered_rids


def _tick(est: DownlinkEstimate, kbps: float, nack_share: float = 0.0,
          dt: float = 0.25) -> float:
    """One tick of ``kbps`` of video in 1000-byte packets, a share of them NACKed."""
    packets = int(kbps * 1000 / 8 * dt / 1000)
    return est.update(dt, Traffic(sent_bytes=packets * 1000, sent_packets=packets,
                                  video_packets=packets, video_bytes=packets * 1000,
                                  nacked=round(packets * nack_share)))


def test_heavy_loss_brings_the_estimate_down_to_what_got_through() -> None:
    est = DownlinkEstimate()
    for _ in range(8):
        _tick(est, 1000)
    assert est.bps == bandwidth.START_BPS  # no loss, 1 Mbit/s sent: nothing to learn yet
    est_before = est.bps
    _tick(est, 1000, nack_share=0.8)
    assert est.bps >= est_before / 2  # one bad tick at most halves it
    for _ in range(16):
        _tick(est, 1000, nack_share=0.8)
    assert est.loss == pytest.approx(0.8, abs=0.05)
    # 1 Mbit/s (+ overhead) sent, 80 % lost: 20 % of it got through
    assert est.bps == pytest.approx(0.2 * est.sent_bps, rel=0.05)


def test_a_bottleneck_moves_a_simulcast_viewer_down_and_it_stays_there() -> None:
    """A link (a tbf: what does not fit is lost, and NACKed) that carries audio and the small
    layer but not the full one, as in the Chromium test: 45 kbit/s of audio, layers of 220
    and 446 kbit/s, 337 kbit/s of link; the receiver's REMB caps the layer early, NACKs
    arrive a second late. The viewer must move down and stay there, never paused: NACKs for
    the layer it left are not its loss any more (DownTrack.nacks_answered counts only those
    of the layer it is on), and what got through counts lost packets, not a loss share."""
    audio, rates, capacity = 45_000, [220_000, 446_000], 337_000
    est, layer = DownlinkEstimate(), 1
    layers: list[int | None] = []
    nacks: list[tuple[int | None, int]] = [(1, 0)] * 4  # (layer sent on, NACKed), late
    for tick in range(60):  # 15 s, in 0.25 s ticks
        video = rates[layer] if layer is not None else 0.0
        lost = max(0.0, 1 - (capacity - audio) / video) if video else 0.0
        v_packets = int(video / 8 * 0.25 / 1000)
        nacks.append((layer, round(v_packets * lost)))
        sent_on, nacked = nacks.pop(0)
        est.update(0.25, Traffic(
            sent_bytes=int(audio / 8 * 0.25) + v_packets * 1000,
            sent_packets=12 + v_packets, video_packets=v_packets,
            video_bytes=v_packets * 1000, nacked=nacked if sent_on == layer else 0))
        remb = 300_000 if tick >= 2 else None  # delay-based: sees the queue first
        layer = choose_layer(rates, est.bps - audio, layer, remb=remb)
        layers.append(layer)
    assert None not in layers, layers  # the small layer fits: never paused
    assert layers.index(0) <= 8, layers
    assert set(layers[layers.index(0):]) == {0}, layers  # no flapping back up on its own


def test_moderate_loss_holds_and_low_loss_grows_up_to_headroom() -> None:
    est = DownlinkEstimate(start_bps=500_000)
    for _ in range(40):  # 5 % loss: between the thresholds, the estimate holds
        _tick(est, 450, nack_share=0.05)
    assert est.bps == pytest.approx(500_000)
    for _ in range(40):  # no loss for 10 s: grows 8 %/s, but not past 1.5 × sent
        _tick(est, 450)
    assert 500_000 < est.bps <= 1.5 * est.sent_bps + 1


def test_a_keyframe_burst_nacked_in_one_tick_is_not_a_lost_link() -> None:
    est = DownlinkEstimate(start_bps=500_000)
    for _ in range(8):
        _tick(est, 400)
    # half of one tick's packets NACKed (a burst): 6 % of the last two seconds
    est.update(0.25, Traffic(sent_bytes=12_000, sent_packets=12, video_packets=12,
                                  nacked=6))
    assert est.bps >= 0.9 * 500_000


def test_audio_receiver_reports_count_as_loss() -> None:
    est = DownlinkEstimate(start_bps=200_000)
    est.on_receiver_report(128)  # 50 % lost since the last report
    est.update(0.25, Traffic(sent_bytes=1600, sent_packets=12))
    assert est.loss == pytest.approx(0.5)
    assert est.bps < 200_000


def test_choose_layer_prefers_the_best_that_fits_and_keeps_the_current_on_a_short_budget(
        ) -> None:
    rates = [150_000, 500_000, 1_500_000]
    assert choose_layer(rates, 2_000_000, None) == 2
    assert choose_layer(rates, 600_000, None) == 1
    assert choose_layer(rates, 450_000, None) == 0
    assert choose_layer(rates, 450_000, current=1) == 1  # 90 % of its rate: keeps flowing
    assert choose_layer(rates, 100_000, None) is None  # pause
    assert choose_layer(rates, 2_000_000, None, max_layer=0) == 0  # a small tile
    # a REMB caps the layer but never pauses: loss decides that
    assert choose_layer(rates, 2_000_000, None, remb=600_000) == 1
    assert choose_layer(rates, 2_000_000, None, remb=50_000) == 0


def test_a_remb_moves_the_layer_being_sent_down_only_once_it_stays_too_low() -> None:
    """A keyframe lifts the full layer's measured rate above a trailing REMB for a moment (the
    Chromium simulcast test's open viewer: REMB 566 kbit/s, layer 720 kbit/s for 0.8 s): the
    layer stays. A REMB that stays low moves it down after REMB_HOLD_S, one that falls at
    once; the loss-based budget moves it at once; and a step up is never taken above the
    REMB."""
    cap, ticks = RembCap(), [i * 0.25 for i in range(40)]
    spike = [cap.choose([250_000, 720_000 if 1.0 <= t < 1.8 else 600_000], 2_500_000, 1, None,
                        566_000, t) for t in ticks]
    assert set(spike) == {1}, spike
    cap = RembCap()  # a REMB that never grew past 300 kbit/s
    low = [cap.choose([250_000, 600_000], 2_500_000, 1, None, 300_000, t) for t in ticks]
    assert low.index(0) == int(REMB_HOLD_S / 0.25), low
    # a REMB that falls (the receiver's queue grew): at once
    cap = RembCap()
    assert cap.choose([250_000, 600_000], 2_500_000, 1, None, 650_000, 0.0) == 1
    assert cap.choose([250_000, 600_000], 2_500_000, 1, None, 450_000, 0.25) == 0
    assert RembCap().choose([250_000, 600_000], 400_000, 1, None, 300_000, 0.0) == 0
    assert RembCap().choose([250_000, 600_000], 2_500_000, 0, None, 500_000, 0.0) == 0


def test_step_up_tries_back_off_after_failures_and_reset_after_success() -> None:
    trials = StepUpTrials()
    assert not trials.blocked(0.0)
    assert not trials.blocked(4.9)
    assert not trials.trying(4.9)
    assert trials.blocked(5.0)  # first try after 5 s
    assert trials.trying(5.0) and trials.trying(8.0)  # (the adaptation then looks more often)
    trials.stepped_down(5.5)  # it failed
    assert not trials.trying(5.5)
    assert trials.backoff_s == 10
    assert not trials.blocked(10.0)
    assert trials.blocked(15.6)
    trials.stepped_down(16.0)
    assert trials.backoff_s == 20
    assert trials.blocked(36.1)
    trials.settled(36.2)
    trials.settled(39.2)  # the try lasted its 3 s: success, back to the shortest back-off
    assert trials.backoff_s == bandwidth.BACKOFF_MIN_S


CHROME_OFFER = (
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\n"
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n"
    "a=rid:l send\r\na=rid:h send\r\na=simulcast:send l;h\r\n"
)


def test_offered_rids_reads_the_simulcast_m_line() -> None:
    assert offered_rids(CHROME_OFFER) == {"1": ["l", "h"]}
    # alternatives keep the first choice, paused rids are kept
    offer = CHROME_OFFER.replace("a=rid:h send", "a=rid:h send\r\na=rid:x send").replace(
        "simulcast:send l;h", "simulcast:send ~l;h,x")
    assert offered_rids(offer) == {"1": ["l", "h"]}
    assert offered_rids(CHROME_OFFER.replace("a=simulcast:send l;h\r\n", "")) == {}


@pytest.mark.parametrize(("old", "new", "why"), [
    ("a=simulcast:send l;h", "a=simulcast:recv l;h", "only a=simulcast:send"),
    ("a=rid:h send\r\n", "", "no a=rid:h send"),
    ("a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n", "", "rtp-stream-id"),
    ("simulcast:send l;h", "simulcast:send l;l", "2 to 4 distinct"),
    ("simulcast:send l;h", "simulcast:send l", "2 to 4 distinct"),
    ("l", "l!x", "bad rid"),
])
def test_unusable_simulcast_offers_are_refused_with_the_reason(old: str, new: str, why: str
                                                               ) -> None:
    offer = CHROME_OFFER.replace("a=rid:l", f"a=rid:{new}").replace(":send l;", f":send {new};") \
        if old == "l" else CHROME_OFFER.replace(old, new)
    with pytest.raises(SimulcastError, match=why):
        offered_rids(offer)


def test_the_answer_accepts_the_layers_on_that_m_line_only() -> None:
    answer = (
        "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=recvonly\r\n"
    )
    out = accept_in_answer(answer, {"1": ["l", "h"]})
    audio, video = out.split("m=")[1:]
    assert "rid" not in audio and "simulcast" not in audio
    assert video.endswith("a=rid:l recv\r\na=rid:h recv\r\na=simulcast:recv l;h\r\n")
    assert accept_in_answer(answer, {}) == answer
