"""Test hook: network loss on publishers' uplinks, applied where packets enter the SFU.

Tests set ``Sfu.impairment``; the service never does. A dropped packet is invisible to the SFU
(to aiortc's receiver statistics and NACK generation too), as if the network had lost it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Impairment:
    #: random loss ratio, 0.0–1.0, for packets of these kinds (retransmissions included)
    loss: float = 0.0
    kinds: frozenset[str] = frozenset({"video"})
    #: sequence numbers lost for good: every copy, the original and each retransmission
    lose_for_good: set[int] = field(default_factory=set)
    seed: int = 1
    dropped: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def drops(self, kind: str, seq: int) -> bool:
        if kind not in self.kinds:
            return False
        if seq in self.lose_for_good or (self.loss and self._rng.random() < self.loss):
            self.dropped += 1
            return True
        return False
