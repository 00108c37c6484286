"""The recording worker: a process of its own that stores and composes finished recordings.

Composing decodes and encodes video, which would take cores the media process needs for
forwarding, so it never runs there. ``huizhen serve`` starts ``recording.workers`` of these
processes (they die with it); ``huizhen recording worker`` runs one by hand (on another host
too, given the same database and storage). Jobs live in the database: a worker claims one,
reports progress with a heartbeat, and a job whose worker vanished (a crash, a restart) is
claimed again after ``STALE_AFTER``; a worker told to stop puts its job back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from huizhen.config import Settings, load_settings
from huizhen.procgroup import die_with_parent
from recording.crypto import KeyRing
from recording.db import Job, RecordingDb
from recording.finish import Finisher, UploadPolicy
from recording.storage import open_storage
from rooms.db import Database

log = logging.getLogger("huizhen.recording")

HEARTBEAT_S = 2.0
STALE_AFTER = timedelta(seconds=30)
MAX_ATTEMPTS = 3
IDLE_POLL_S = 1.0
SETTINGS_ENV = "HUIZHEN_WORKER_SETTINGS"
PARENT_ENV = "HUIZHEN_WORKER_PARENT"


class Worker:
    def __init__(self, settings: Settings, name: str | None = None,
                 stale_after: timedelta = STALE_AFTER) -> None:
        self.settings = settings
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.stale_after = stale_after
        self.db: Database | None = None
        self.recordings: RecordingDb | None = None
        self.finisher: Finisher | None = None

    async def open(self) -> Worker:
        settings = self.settings
        self.db = await Database.open(settings.database_url)
        self.recordings = RecordingDb(self.db)
        storage = open_storage(settings)
        upload = settings.recording.upload
        self.finisher = Finisher(
            self.db, self.recordings, storage, KeyRing.from_config(settings.recording.encryption),
            settings.recordings_folder,
            UploadPolicy(upload.attempts, upload.backoff_s, upload.max_backoff_s,
                         upload.keep_local))
        return self

    async def close(self) -> None:
        if self.finisher is not None:
            await self.finisher.storage.close()
        if self.db is not None:
            await self.db.close()

    async def run(self, stop: asyncio.Event, once: bool = False) -> int:
        """Run jobs until ``stop`` is set (or, with ``once``, until none is left)."""
        assert self.recordings is not None
        done = 0
        while not stop.is_set():
            job = await self.recordings.claim_job(self.name, self.stale_after)
            if job is None:
                if once:
                    return done
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), IDLE_POLL_S)
                continue
            runner = asyncio.ensure_future(self.run_job(job))
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not runner.done():  # told to stop mid-job: it goes back to the queue
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
                await self.recordings.requeue_job(job.id, "worker stopped; picked up again")
                log.info("job handed back", extra={"job": job.id, "kind": job.kind})
                return done
            done += 1
        return done

    async def run_job(self, job: Job, on_progress: Callable[[float], None] | None = None
                      ) -> bool:
        """Run one claimed job; True when it succeeded."""
        assert self.recordings is not None and self.finisher is not None
        recordings = self.recordings
        recording = await recordings.get_recording(job.recording_id)
        if recording is None:
            await recordings.finish_job(job.id, f"no recording {job.recording_id}")
            return False
        state = {"progress": 0.0}

        def progress(fraction: float) -> None:
            state["progress"] = max(state["progress"], min(1.0, fraction))
            if on_progress is not None:
                on_progress(state["progress"])

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(HEARTBEAT_S)
                await recordings.job_progress(job.id, state["progress"])

        beating = asyncio.ensure_future(heartbeat())
        log.info("job started", extra={"job": job.id, "kind": job.kind,
                                       "recording": job.recording_id, "attempt": job.attempts})
        try:
            if job.kind == "store":
                await self.finisher.store(recording, progress)
            else:
                await self.finisher.composite(recording, progress)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.exception("job failed", extra={"job": job.id, "kind": job.kind,
                                               "recording": job.recording_id})
            if job.attempts < MAX_ATTEMPTS:
                await recordings.requeue_job(job.id, error)
            else:
                await recordings.finish_job(job.id, error)
                await recordings.update_recording(job.recording_id, error=f"{job.kind}: {error}")
            return False
        finally:
            beating.cancel()
        await recordings.finish_job(job.id)
        log.info("job done", extra={"job": job.id, "kind": job.kind,
                                    "recording": job.recording_id})
        return True


class WorkerProcess:
    """A worker started by ``huizhen serve`` (settings handed over in the environment) and
    started again if it dies (after 2 s, doubling to a minute while it keeps dying)."""

    def __init__(self, settings: Settings, index: int) -> None:
        self.settings = settings
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._stopping = False
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._spawn()
        self._watch = asyncio.ensure_future(self._watch_loop())

    async def _spawn(self) -> None:
        env = dict(os.environ)
        env[SETTINGS_ENV] = json.dumps(self.settings.handover())
        env[PARENT_ENV] = str(os.getpid())
        # no preexec_fn (not safe in a process with threads): the worker asks for its own
        # death signal first thing (main)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "recording.worker", env=env)
        log.info("recording worker started", extra={"pid": self.proc.pid, "index": self.index})

    async def _watch_loop(self) -> None:
        delay = 2.0
        while not self._stopping:
            assert self.proc is not None
            code = await self.proc.wait()
            if self._stopping:
                return
            self.restarts += 1
            log.error("recording worker exited; starting it again", extra={
                "index": self.index, "exit_code": code, "restart_in_s": delay})
            await asyncio.sleep(delay)
            delay = min(60.0, delay * 2)
            if not self._stopping:
                await self._spawn()

    async def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def settings_from_env() -> Settings:
    raw = os.environ.get(SETTINGS_ENV)
    if raw:
        data: dict[str, Any] = json.loads(raw)
        return Settings(**data)
    return load_settings()


async def main_async(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    worker = await Worker(settings).open()
    try:
        await worker.run(stop)
    finally:
        await worker.close()
    return 0


def main() -> int:
    from huizhen.logs import setup_logging

    die_with_parent()
    parent = os.environ.get(PARENT_ENV)
    if parent and os.getppid() != int(parent):
        return 0  # the service died before we could ask to die with it
    settings = settings_from_env()
    setup_logging(settings.logging.level, settings.logging.format)
    return asyncio.run(main_async(settings))


if __name__ == "__main__":
    sys.exit(main())
