"""What one subscriber's downlink can carry, and which video it gets for that.

The estimate follows the loss the subscriber reports, much like the loss-based half of Google
congestion control. Video loss is read from its NACKs (they arrive within a round trip, and
only packets the SFU had sent count: a gap the publisher's uplink made is not this link's
fault); audio loss from its RTCP receiver reports:

* loss above 10 %: the estimate falls to what got through over the last two seconds: what
  was sent less the NACKed video packets (less the reported share, for audio), at most
  halving per tick. At a bottleneck (a tbf, a full 4G cell) that is the link's capacity.
  (GCC's gentler sent × (1 − loss/2) over-estimates a bottleneck: a 1 Mbit/s layer on a
  525 kbit/s link came out at ~760 kbit/s, which kept that layer flowing, losing nearly half
  its packets.) Counting lost packets, not a loss share of the window's rate, also keeps a
  step down from overshooting: after a move to a smaller layer the window still holds the
  bigger layer's loss, but not a share of it applied to the smaller layer's rate;
* loss under 2 %: it grows by 8 % a second, up to 1.5 × what is being sent.

A REMB (the receiver's delay-based estimate for the streams it lists) caps the simulcast layer
of those streams, but never pauses video on its own: delay alone is a weaker signal than loss
(aiortc's estimator, for one, reads event-loop jitter as congestion). Nor does it move the
layer being sent down at once unless it fell: a REMB that did not fall must stay below the
layer for REMB_HOLD_S first (RembCap).

Audio comes first: the allocation gives each video track the best layer that fits what is
left after audio, and pauses a video track when not even its lowest layer fits. A paused link
is re-tried after a back-off (5 s, doubling to 20 s after each failed try): video resumes (from
a keyframe) and stays if the loss stays low; a higher simulcast layer is tried the same way.
While a try runs, the subscriber's adaptation looks every 0.1 s instead of 0.25 s
(media/subscriber.py ``TRIAL_INTERVAL_S``): a try that fails costs the link's audio until it
is stopped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

START_BPS = 2_500_000  # a new subscriber's estimate: video starts at once, loss corrects it
MIN_BPS = 30_000
MAX_BPS = 50_000_000
HIGH_LOSS = 0.10
LOW_LOSS = 0.02
GROWTH_PER_S = 1.08
HEADROOM = 1.5  # growth stops at this multiple of the rate being sent
#: bytes per packet on the wire beyond the RTP payload: IPv4/UDP 28, RTP header and
#: extensions ~20, SRTP tag 10
PACKET_OVERHEAD = 60
MIN_NACK_SAMPLE = 30  # video packets sent in the window before NACKs count as a loss figure
WINDOW_TICKS = 8  # ticks of traffic the loss and sent rate are measured over
REMB_FRESH_S = 3.0  # a REMB older than this no longer caps anything
REMB_HOLD_S = 2.0  # a REMB moves the layer being sent down once it stays below it this long
REMB_FALL = 0.9  # … or at once when it fell by this factor within REMB_HOLD_S (RembCap)
#: a layer keeps flowing while the budget covers this share of its rate (no flapping when
#: rates wobble); a paused or lower layer needs all of it
KEEP_SHARE = 0.8
TRIAL_S = 3.0
BACKOFF_MIN_S = 5.0
BACKOFF_MAX_S = 20.0


@dataclass
class Traffic:
    """What a subscriber connection was sent and told us in one tick."""

    sent_bytes: int = 0  # RTP payload bytes, all kinds
    sent_packets: int = 0
    video_packets: int = 0
    video_bytes: int = 0  # RTP payload bytes of the video packets
    nacked: int = 0  # sequence numbers the subscriber asked for again


class DownlinkEstimate:
    def __init__(self, start_bps: float = START_BPS) -> None:
        self.bps = float(start_bps)
        self.sent_bps = 0.0  # over the window below
        self.loss = 0.0  # the latest loss figure used, 0–1
        self._rr_loss: float | None = None
        #: (seconds, bits sent, video packets sent, their bits, NACKed) of the last ticks
        self._window: deque[tuple[float, float, int, float, int]] = deque(maxlen=WINDOW_TICKS)

    def on_receiver_report(self, fraction_lost: int) -> None:
        """``fraction_lost`` as RTCP carries it: lost/expected × 256 since the last report."""
        loss = min(max(fraction_lost, 0), 255) / 256
        self._rr_loss = loss if self._rr_loss is None else max(self._rr_loss, loss)

    def update(self, dt: float, traffic: Traffic) -> float:
        """Fold one tick (``dt`` seconds) of traffic and feedback in; returns the estimate."""
        if dt <= 0:
            return self.bps
        bits = (traffic.sent_bytes + traffic.sent_packets * PACKET_OVERHEAD) * 8
        video_bits = (traffic.video_bytes + traffic.video_packets * PACKET_OVERHEAD) * 8
        self._window.append((dt, bits, traffic.video_packets, video_bits, traffic.nacked))
        # sent rate and NACKs over the same ~two seconds: a keyframe burst lost in one tick
        # is not a lost link, and what got through is measured on what was sent meanwhile
        seconds = sum(w[0] for w in self._window)
        self.sent_bps = sum(w[1] for w in self._window) / seconds
        losses: list[tuple[float, float]] = []  # (loss, bit/s that got through)
        if self._rr_loss is not None:
            losses.append((self._rr_loss, self.sent_bps * (1 - self._rr_loss)))
            self._rr_loss = None
        packets = sum(w[2] for w in self._window)
        if traffic.video_packets and packets >= MIN_NACK_SAMPLE:
            nacked = min(sum(w[4] for w in self._window), packets)
            lost_bits = nacked * sum(w[3] for w in self._window) / packets
            losses.append((nacked / packets, self.sent_bps - lost_bits / seconds))
        if losses:
            self.loss, got_through = max(losses)
            if self.loss > HIGH_LOSS:
                self.bps = min(self.bps, max(got_through, self.bps / 2))
            elif self.loss < LOW_LOSS:
                ceiling = HEADROOM * self.sent_bps  # no growth without evidence
                if self.bps < ceiling:
                    self.bps = min(self.bps * GROWTH_PER_S ** dt, ceiling)
        self.bps = min(max(self.bps, MIN_BPS), MAX_BPS)
        return self.bps


def choose_layer(rates: list[float], budget: float, current: int | None,
                 max_layer: int | None = None, remb: float | None = None) -> int | None:
    """The best layer (index into ``rates``, low to high) that ``budget`` bit/s carries;
    None: not even the lowest one (pause). The layer being sent keeps flowing on a slightly
    short budget; no layer above ``max_layer`` (the subscriber's wanted size), nor above what
    a REMB for this stream allows (but a REMB alone never pauses)."""
    top = len(rates) - 1 if max_layer is None else min(max_layer, len(rates) - 1)
    capped = budget if remb is None else min(budget, remb)
    for layer in range(top, -1, -1):
        need = rates[layer] * (KEEP_SHARE if layer == current else 1.0)
        if need <= capped:
            return layer
    return 0 if rates[0] * (KEEP_SHARE if current == 0 else 1.0) <= budget else None


class RembCap:
    """choose_layer for one video stream, with its REMB capping the layer being sent at once
    only when the REMB fell (by REMB_FALL within REMB_HOLD_S: the receiver saw its queue grow;
    a delay-based estimator answers overuse with 0.85 × what it receives); a REMB that did
    not fall moves the layer down only once it has stayed below it for REMB_HOLD_S. A
    receiver's estimate trails what it is sent (it grows a few per cent a second), and a
    keyframe lifts a layer's measured rate for a moment: in the Chromium simulcast test a
    steadily growing REMB of 566 kbit/s met a full layer measured at 720 kbit/s for 0.8 s
    after a keyframe, on an open link, and dropping the layer there showed a blurred picture
    for no reason. The loss-based budget moves the layer at once, and a step up is never
    taken above the REMB."""

    def __init__(self) -> None:
        self._low_since: float | None = None
        self._last_remb: float | None = None
        self._fell_at: float | None = None

    def choose(self, rates: list[float], budget: float, current: int | None,
               max_layer: int | None, remb: float | None, now: float) -> int | None:
        if remb is not None:
            if self._last_remb is not None and remb < REMB_FALL * self._last_remb:
                self._fell_at = now
            self._last_remb = remb
        choice = choose_layer(rates, budget, current, max_layer, remb)
        if remb is None or current is None or choice is None or choice >= current:
            self._low_since = None
            return choice
        uncapped = choose_layer(rates, budget, current, max_layer)
        if uncapped is None or uncapped <= choice:  # the budget moves it down, not the REMB
            self._low_since = None
            return choice
        if self._low_since is None:
            self._low_since = now
        if (now - self._low_since >= REMB_HOLD_S
                or (self._fell_at is not None and now - self._fell_at <= REMB_HOLD_S)):
            return choice
        return min(uncapped, current)


class StepUpTrials:
    """When to try a step up that the estimate does not allow yet (resuming paused video, or a
    higher layer): the estimate only grows with evidence, and the evidence is a try."""

    def __init__(self) -> None:
        self.backoff_s = BACKOFF_MIN_S
        self._blocked_since: float | None = None
        self._trial_until: float | None = None

    def blocked(self, now: float) -> bool:
        """A step up is wanted but not allowed; True when it is time to try it."""
        if self._trial_until is not None and now <= self._trial_until:
            return False
        if self._blocked_since is None:
            self._blocked_since = now
            return False
        if now - self._blocked_since < self.backoff_s:
            return False
        self._blocked_since = None
        self._trial_until = now + TRIAL_S
        return True

    def trying(self, now: float) -> bool:
        """A try is under way (its loss shows within a round trip or two: look often)."""
        return self._trial_until is not None and now <= self._trial_until

    def stepped_down(self, now: float) -> None:
        """Loss forced a step down; during a try, the try failed: wait twice as long."""
        if self._trial_until is not None and now <= self._trial_until:
            self.backoff_s = min(self.backoff_s * 2, BACKOFF_MAX_S)
        self._trial_until = None
        self._blocked_since = now

    def settled(self, now: float) -> None:
        """Nothing stepped down this tick: a try that lasted its time succeeded."""
        if self._trial_until is not None and now > self._trial_until:
            self._trial_until = None
            self.backoff_s = BACKOFF_MIN_S
