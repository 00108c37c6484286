"""``huizhen recording …``: run the worker, make a composite again, verify, see progress.

These commands work on the service's database and recording storage directly (run them
where the service's configuration is: same ``config.yaml`` and environment), like a database
migration tool does; they need no running service.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huizhen.config import Settings, load_settings
from huizhen.remote import CliError

if TYPE_CHECKING:  # the commands import what they use: `huizhen` starts in a fraction of a second
    from recording.db import Recording, RecordingDb
    from rooms.db import Database


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(Path(args.config) if args.config else None)


async def _open(settings: Settings) -> tuple[Database, RecordingDb]:
    from recording.db import RecordingDb
    from rooms.db import Database

    db = await Database.open(settings.database_url)
    return db, RecordingDb(db)


async def _find(recordings: RecordingDb, session: str) -> list[Recording]:
    """A recording id, or a room id (all its recordings)."""
    found = await recordings.get_recording(session)
    if found is not None:
        return [found]
    in_room = await recordings.recordings(room_id=session)
    if not in_room:
        raise CliError(f"no recording or room {session!r}: see `huizhen recording list`")
    return in_room


def _bar(fraction: float, width: int = 30) -> str:
    done = round(fraction * width)
    return "[" + "#" * done + "." * (width - done) + f"] {fraction * 100:5.1f} %"


class ProgressLine:
    """Progress on stderr: one line redrawn on a terminal, a line per tenth in a log."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.interactive = sys.stderr.isatty()
        self.shown = -1

    def __call__(self, fraction: float) -> None:
        line = f"{self.label}: composing {_bar(fraction)}"
        if self.interactive:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        elif int(fraction * 10) > self.shown:
            self.shown = int(fraction * 10)
            print(line, file=sys.stderr, flush=True)


async def cmd_composite(args: argparse.Namespace) -> None:
    """Make the composite of a recording (or of every recording of a room) again."""
    from recording.worker import Worker

    settings = _settings(args)
    db, recordings = await _open(settings)
    try:
        targets = await _find(recordings, args.session)
        for recording in targets:
            if recording.status in ("recording", "paused"):
                raise CliError(f"{recording.id} is still recording: stop it first")
            job_id = await recordings.add_job(recording.id, "composite")
            if args.queue:
                print(f"{recording.id}: composite queued (job {job_id}); the service's worker "
                      "makes it — follow it with `huizhen recording show`")
                continue
            job = await recordings.claim_job("cli", timedelta(0), job_id=job_id)
            if job is None:
                raise CliError(f"job {job_id} was taken by a worker meanwhile")
            worker = Worker(settings, name="cli")
            await worker.open()
            try:
                ok = await worker.run_job(job, on_progress=ProgressLine(recording.id))
            finally:
                await worker.close()
            print(file=sys.stderr)
            if not ok:
                failed = await recordings.jobs(recording.id)
                raise CliError(f"{recording.id}: composite failed: {failed[-1].error}")
            done = await recordings.get_recording(recording.id)
            composite = next((f for f in (done.files if done else []) if f["role"] == "composite"),
                             None)
            print(f"{recording.id}: composite ready"
                  + (f" ({composite['duration_s']:.1f} s, {composite['size']} bytes)"
                     if composite else ""))
    finally:
        await db.close()


async def cmd_verify(args: argparse.Namespace) -> None:
    """Re-hash every stored file of a recording against its manifest; exit 1 on a problem."""
    from recording.storage import open_storage

    settings = _settings(args)
    db, recordings = await _open(settings)
    storage = open_storage(settings)
    bad = 0
    try:
        if args.all:
            targets = [r for r in await recordings.recordings() if r.manifest is not None]
        elif args.session:
            targets = await _find(recordings, args.session)
        else:
            raise CliError("give a recording id, a room id, or --all")
        for recording in targets:
            problems = await verify_one(storage, recording)
            if problems:
                bad += 1
                print(f"{recording.id}: {len(problems)} problem(s)")
                for problem in problems:
                    print(f"  {problem}")
            else:
                print(f"{recording.id}: ok")
    finally:
        await storage.close()
        await db.close()
    if bad:
        raise CliError(f"{bad} recording(s) failed verification")


async def verify_one(storage: Any, recording: Recording) -> list[Any]:
    """Problems of one recording: its stored manifest against the database's copy, then
    every file against the manifest."""
    from recording.manifest import Manifest, ManifestError, manifest_key, verify

    if recording.manifest is None:
        return [f"not stored yet (status {recording.status}): nothing to verify"]
    kept = Manifest.model_validate(recording.manifest)
    key = manifest_key(recording.id)
    found = await storage.stat(key)
    if found is None:
        return [f"{key} is missing from storage"]
    try:
        stored = Manifest.from_json(await storage.read_range(key, 0, found.size), key)
    except ManifestError as exc:
        return [f"{key} cannot be read: {exc}"]
    problems: list[Any] = []
    if stored != kept:
        problems.append("manifest.json in storage differs from the database's copy "
                        "(edited or replaced)")
    problems += await verify(storage, recording.id, kept)
    return problems


async def cmd_list(args: argparse.Namespace) -> None:
    settings = _settings(args)
    db, recordings = await _open(settings)
    try:
        found = await recordings.recordings(room_id=args.room)
    finally:
        await db.close()
    if args.json:
        print(json.dumps([r.as_dict() for r in found], indent=2, ensure_ascii=False))
        return
    for r in found:
        jobs = ", ".join(f"{j['kind']} {j['status']} {j['progress'] * 100:.0f}%" for j in r.jobs)
        print(f"{r.id}  room {r.room_id}  {r.status:<11} {r.started_at:%Y-%m-%d %H:%M}  "
              f"{(r.duration_s or 0):7.1f} s  {jobs}")


async def cmd_show(args: argparse.Namespace) -> None:
    settings = _settings(args)
    db, recordings = await _open(settings)
    try:
        found = await recordings.get_recording(args.recording)
    finally:
        await db.close()
    if found is None:
        raise CliError(f"no recording {args.recording!r}")
    data = found.as_dict()
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return
    print(f"{found.id}: {found.status} (room {found.room_id}), {found.duration_s or 0:.1f} s"
          + (", interrupted" if found.interrupted else "")
          + (f", override: {found.override_reason}" if found.override_reason else ""))
    for job in found.jobs:
        print(f"  job {job['id']} {job['kind']:<9} {job['status']:<8} {_bar(job['progress'])}"
              + (f"  error: {job['error']}" if job["error"] else ""))
    for f in found.files:
        print(f"  {f['name']}  {f['kind']}/{f['source'] or '-'}  {f['duration_s']:.1f} s  "
              f"{f['frames']} frames  {f['size']} bytes"
              + (f"  key {f['key_id']}" if f["key_id"] else ""))


def cmd_worker(args: argparse.Namespace) -> None:
    from huizhen.logs import setup_logging
    from recording.worker import main_async

    settings = _settings(args)
    setup_logging(settings.logging.level, settings.logging.format)
    asyncio.run(main_async(settings))


def add_parser(sub: Any) -> None:
    recording = sub.add_parser("recording", help="recordings: worker, composite, verify")
    rsub = recording.add_subparsers(dest="recording_cmd", required=True)
    worker = rsub.add_parser("worker", help="run a worker that stores and composes recordings")
    worker.set_defaults(func=cmd_worker)
    composite = rsub.add_parser("composite", help="make the composite of a recording again")
    composite.add_argument("session", help="a recording id, or a room id (all its recordings)")
    composite.add_argument("--queue", action="store_true",
                           help="leave it to the service's worker instead of running it here")
    composite.set_defaults(func=cmd_composite, is_async=True)
    check = rsub.add_parser("verify", help="check stored files against their manifest")
    check.add_argument("session", nargs="?", help="a recording id or a room id")
    check.add_argument("--all", action="store_true", help="every stored recording")
    check.set_defaults(func=cmd_verify, is_async=True)
    listing = rsub.add_parser("list", help="recordings, with their jobs' progress")
    listing.add_argument("--room", help="only this room's")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list, is_async=True)
    show = rsub.add_parser("show", help="one recording: status, jobs, files")
    show.add_argument("recording")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show, is_async=True)
