"""The metrics of one service instance: its own registry (several apps may run in one process,
as in the tests), the instruments the signalling layer feeds, and what is read at scrape time.

Fed as things happen (rare events only): join latency, signalling messages by type, error
codes. Sampled by a small task (sampler.py): event-loop lag, join-to-first-frame. Read at
scrape time: the rooms and media counters (collector.py), recording jobs from the database,
and the process's CPU, memory and file descriptors (prometheus_client's ProcessCollector).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from media.sfu import Sfu
from observability.collector import MediaCollector
from observability.sampler import Sampler
from recording.service import RecordingService
from rooms.service import RoomService

#: seconds: a join (token check, room, lobby, negotiation not included) is tens of ms
JOIN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: seconds from joining (or being admitted) to the first video packet sent
FIRST_FRAME_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        #: event-loop lag and CPU while the service runs (also the admin API's node load)
        self.sampler: Sampler | None = None
        reg = self.registry
        ProcessCollector(registry=reg)
        self.join_latency = Histogram(
            "huizhen_join_latency_seconds", "from a join message to the joined reply",
            buckets=JOIN_BUCKETS, registry=reg)
        self.first_frame = Histogram(
            "huizhen_join_to_first_frame_seconds",
            "from joining (or admission from the lobby) to the first video packet sent to "
            "the participant", buckets=FIRST_FRAME_BUCKETS, registry=reg)
        self.loop_lag = Histogram(
            "huizhen_event_loop_lag_seconds", "how late the event loop woke a sleeping task",
            buckets=LAG_BUCKETS, registry=reg)
        self.messages = Counter(
            "huizhen_signaling_messages", "WebSocket signalling messages by type, received "
            "(in) and sent (out)", ["direction", "type"], registry=reg)
        self.errors = Counter(
            "huizhen_signaling_errors", "error replies on the WebSocket, by code", ["code"],
            registry=reg)
        self.recording_jobs = Gauge(
            "huizhen_recording_jobs", "recording jobs in the database by kind and status",
            ["kind", "status"], registry=reg)
        self._recordings: RecordingService | None = None

    @contextlib.asynccontextmanager
    async def watching(self, sfu: Sfu, rooms: RoomService, recordings: RecordingService
                       ) -> AsyncIterator[None]:
        """While the service runs: its rooms and media in the scrape, the sampler running."""
        collector = MediaCollector(sfu, rooms, recordings)
        self.registry.register(collector)
        self._recordings = recordings
        sampler = self.sampler = Sampler(self, sfu)
        sampler.start()
        try:
            yield
        finally:
            await sampler.stop()
            self.sampler = None
            self._recordings = None
            self.registry.unregister(collector)

    async def scrape(self) -> bytes:
        """The exposition text; what lives in the database is read now."""
        if self._recordings is not None:
            counts = await self._recordings.db.job_counts()
            self.recording_jobs.clear()
            for (kind, status), n in counts.items():
                self.recording_jobs.labels(kind, status).set(n)
        return generate_latest(self.registry)
