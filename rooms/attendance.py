"""Attendance: who was in a room, when, and for how many minutes (any kind of room).

Derived from the participant sessions (rooms/db.py: one row per stay, join to leave), one
line per person (identity): their stays merged where they overlap (a reconnect replaces the
old session a moment after the new one starts), the first join, the last leave (none while
still in the room: their time counts up to now), and the total. Teaching broadcasts need it for
CME credit, MDT meetings for the attendance list of the minutes.

A patient's or guardian's name is never listed (``PATIENT_SIDE``): their line has the identity
and role only. Departments come from the participant's link (the ``department`` claim).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rooms.models import SessionRecord
from rooms.policy import PATIENT_SIDE

CSV_COLUMNS = ("identity", "name", "role", "department", "first_join", "last_leave",
               "intervals", "minutes")


@dataclass
class Attendee:
    identity: str
    name: str | None
    role: str
    department: str | None
    intervals: list[tuple[datetime, datetime | None]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def first_join(self) -> datetime:
        return self.intervals[0][0]

    @property
    def last_leave(self) -> datetime | None:
        return self.intervals[-1][1]

    @property
    def minutes(self) -> float:
        return round(self.seconds / 60, 2)

    def as_dict(self) -> dict[str, Any]:
        last = self.last_leave
        return {"identity": self.identity, "name": self.name, "role": self.role,
                "department": self.department, "first_join": self.first_join.isoformat(),
                "last_leave": last.isoformat() if last else None,
                "present": last is None,
                "intervals": [{"joined_at": a.isoformat(),
                               "left_at": b.isoformat() if b else None}
                              for a, b in self.intervals],
                "seconds": round(self.seconds, 1), "minutes": self.minutes}


def _merge(stays: list[tuple[datetime, datetime | None]], now: datetime
           ) -> list[tuple[datetime, datetime | None]]:
    merged: list[tuple[datetime, datetime | None]] = []
    for start, end in sorted(stays, key=lambda s: s[0]):
        if merged:
            last_start, last_end = merged[-1]
            if last_end is None or start <= last_end:
                later = None if last_end is None or end is None else max(last_end, end)
                merged[-1] = (last_start, later)
                continue
        merged.append((start, end))
    return merged


def attendance(sessions: list[SessionRecord], now: datetime) -> list[Attendee]:
    """One line per identity, in order of first join."""
    by_identity: dict[str, list[SessionRecord]] = {}
    for session in sessions:
        by_identity.setdefault(session.identity, []).append(session)
    out = []
    for identity, stays in by_identity.items():
        stays.sort(key=lambda s: s.joined_at)
        latest = stays[-1]
        patient_side = any(s.role in PATIENT_SIDE for s in stays)
        department = next((s.department for s in reversed(stays) if s.department), None)
        intervals = _merge([(s.joined_at, s.left_at) for s in stays], now)
        seconds = sum(((end or now) - start).total_seconds() for start, end in intervals)
        out.append(Attendee(identity=identity, name=None if patient_side else latest.name,
                            role=latest.role, department=department, intervals=intervals,
                            seconds=max(0.0, seconds)))
    out.sort(key=lambda a: a.first_join)
    return out


def _cell(value: str) -> str:
    """A text cell a spreadsheet will not run as a formula."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def as_csv(attendees: list[Attendee]) -> str:
    """One row per person; stays as ``joined/left`` pairs separated by ``;``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for a in attendees:
        last = a.last_leave
        writer.writerow([
            _cell(a.identity), _cell(a.name or ""), a.role, _cell(a.department or ""),
            a.first_join.isoformat(),
            last.isoformat() if last else "",
            ";".join(f"{s.isoformat()}/{e.isoformat() if e else ''}" for s, e in a.intervals),
            f"{a.minutes:.2f}"])
    return buffer.getvalue()
