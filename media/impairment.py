"""Test hook: a bad network, simulated inside the SFU.

Tests set ``Sfu.impairment`` before participants join; the service never does.

* Uplinks: loss applied where publishers' packets enter the SFU. A dropped packet is invisible
  to the SFU (to aiortc's receiver statistics and NACK generation too), as if the network had
  lost it.
* Downlinks: random loss and/or a rate limit on what the SFU sends one subscriber, the limit
  behaving like a ``tc tbf`` qdisc (rate, a small burst, and a queue that drops what would
  wait longer than its latency), applied to the encrypted datagrams just before the socket.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class DownlinkLimit:
    """The link between the SFU and one subscriber: a bottleneck of ``kbps`` (None: no
    limit) and/or a random ``loss`` ratio."""

    kbps: float | None = None
    loss: float = 0.0
    burst_bytes: int = 3000
    latency_s: float = 0.3  # a cellular link's buffer; shallower ones drop whole keyframes
    seed: int = 1
    dropped: int = 0
    sent_bytes: int = 0
    _free_at: float = 0.0  # when the queue will have drained

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def send(self, data: bytes, transmit: Callable[[bytes], None]) -> None:
        if self.loss and self._rng.random() < self.loss:
            self.dropped += 1
            return
        if self.kbps is None:
            self.sent_bytes += len(data)
            transmit(data)
            return
        now = time.monotonic()
        rate = self.kbps * 125  # bytes per second
        start = max(self._free_at, now - self.burst_bytes / rate)
        wait = start - now
        if wait > self.latency_s:
            self.dropped += 1
            return
        self._free_at = start + len(data) / rate
        self.sent_bytes += len(data)
        if wait <= 0:
            transmit(data)
        else:
            asyncio.get_running_loop().call_later(wait, transmit, data)


@dataclass
class Impairment:
    #: random loss ratio, 0.0–1.0, for packets of these kinds (retransmissions included)
    loss: float = 0.0
    kinds: frozenset[str] = frozenset({"video"})
    #: sequence numbers lost for good: every copy, the original and each retransmission
    lose_for_good: set[int] = field(default_factory=set)
    seed: int = 1
    dropped: int = 0
    #: rate limits on subscribers' downlinks, by subscriber label (the participant id)
    downlinks: dict[str, DownlinkLimit] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def drops(self, kind: str, seq: int) -> bool:
        if kind not in self.kinds:
            return False
        if seq in self.lose_for_good or (self.loss and self._rng.random() < self.loss):
            self.dropped += 1
            return True
        return False
