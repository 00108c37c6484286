"""The controlling ICE agent nominates the best pair that works, not the first to answer.

aioice nominates aggressively: as the controlling agent (the SFU on the connections it
offers, a client SDK on the ones it publishes) every check carries USE-CANDIDATE, and the
first pair whose check succeeds carries the media. A browser behind no firewall at all still
sends checks through its TURN relay; one that reaches us before the direct pair's check is
answered triggers a check on the relay pair at once, the relay (often over TCP) answers first,
and the call goes through coturn although UDP works.

So a check on a pair through a relay (either candidate of type ``relay``) waits while a
non-relay pair of the same component is still to be tried or in progress, for at most
``RELAY_GRACE_S``: on a network where only the relay works that is what the relay path costs
once, at connection time. If a better pair is nominated meanwhile the relay check ends there.
The pair is marked in progress while it waits, so aioice's pacing goes on to the pairs below.

aioice internals used (aioice 0.13, pinned with aiortc): ``Connection.check_start``,
``_check_list``, ``_nominated``, ``check_state``, ``check_complete``, ``ice_controlling``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aioice.ice import CandidatePair, Connection

RELAY_GRACE_S = 1.0
_POLL_S = 0.02

_PENDING = (CandidatePair.State.FROZEN, CandidatePair.State.WAITING,
            CandidatePair.State.IN_PROGRESS)


def relayed(pair: CandidatePair) -> bool:
    return "relay" in (pair.local_candidate.type, pair.remote_candidate.type)


def better_pending(connection: Connection, pair: CandidatePair) -> bool:
    """Is a pair of the same component that does not go through a relay still undecided?"""
    return any(p.component == pair.component and p.state in _PENDING and not relayed(p)
               for p in connection._check_list)


_original_check_start: Callable[[Connection, CandidatePair], Awaitable[None]] = \
    Connection.check_start


async def _check_start(self: Connection, pair: CandidatePair) -> None:
    if self.ice_controlling and relayed(pair) and better_pending(self, pair):
        self.check_state(pair, CandidatePair.State.IN_PROGRESS)  # aioice's pacing skips it
        for _ in range(round(RELAY_GRACE_S / _POLL_S)):  # aioice has no event to wait on
            if pair.component in self._nominated or not better_pending(self, pair):
                break
            await asyncio.sleep(_POLL_S)
        if pair.component in self._nominated:
            self.check_state(pair, CandidatePair.State.FAILED)
            self.check_complete(pair)
            return
    await _original_check_start(self, pair)


def install() -> None:
    """Process-wide, like aioice itself (idempotent)."""
    setattr(Connection, "check_start", _check_start)  # noqa: B010


def installed() -> bool:
    method: Any = Connection.check_start
    return method is _check_start
