"""Structured logging: one JSON object per line (or plain text for people at a terminal).

Every line carries the ids of what it is about, where one applies: ``request_id`` (each HTTP
request and WebSocket connection, set by the request-id middleware in
observability/http.py), ``room`` and ``participant`` (set for a WebSocket connection's tasks
when it joins: :func:`bind`). They live in context variables, so a task started while handling
a participant carries that participant's ids; an ``extra`` given to the call wins.

What must never reach a log: tokens, SDP credentials, patient names. The code logs ids only
(tests/conftest.py scans every line of the test suite for them); as a last line of defence the
formatters also blank JWTs, bearer credentials and ``a=ice-pwd`` / ``a=ice-ufrag`` /
``a=fingerprint`` values (``REDACTED`` stands in their place).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
ROOM: ContextVar[str | None] = ContextVar("room", default=None)
PARTICIPANT: ContextVar[str | None] = ContextVar("participant", default=None)
_CONTEXT = (("request_id", REQUEST_ID), ("room", ROOM), ("participant", PARTICIPANT))

_SECRETS = re.compile(
    r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"  # a JWT (participant or API token)
    r"|(?<=a=ice-pwd:)[^\s\\\"]+|(?<=a=ice-ufrag:)[^\s\\\"]+|(?<=a=fingerprint:)[^\r\n\\\"]+"
    r"|(?<=[Bb]earer )[A-Za-z0-9._~+/=-]{16,}")
#: what stands in a line in place of a secret: a line that has it shows a bug (the scan of the
#: test suite's logs fails on it)
REDACTED = "[redacted]"


def bind(room: str | None = None, participant: str | None = None) -> None:
    """Name the room and/or participant for what the current task does from now on (and the
    tasks it starts)."""
    if room is not None:
        ROOM.set(room)
    if participant is not None:
        PARTICIPANT.set(participant)


def context_of(room: str, participant: str) -> contextvars.Context:
    """The context for tasks that work for this participant: the current one when it is that
    participant's own, else a fresh one naming it (not another participant's request)."""
    if PARTICIPANT.get() == participant:
        return contextvars.copy_context()
    context = contextvars.Context()
    context.run(bind, room, participant)
    return context


def redact(line: str) -> str:
    return _SECRETS.sub(REDACTED, line)


def _with_context(make: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    """Records take the context's ids when they are made, so a handler that formats later
    (a queue, pytest's capture) still has them."""
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        record._ids = tuple(var.get() for _, var in _CONTEXT)
        return record
    factory.with_context = True  # type: ignore[attr-defined]
    return factory


if not getattr(logging.getLogRecordFactory(), "with_context", False):
    logging.setLogRecordFactory(_with_context(logging.getLogRecordFactory()))


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's own extras, then the ids from the context where it gave none."""
    out = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
    ids = getattr(record, "_ids", None) or tuple(var.get() for _, var in _CONTEXT)
    for (key, _), value in zip(_CONTEXT, ids, strict=True):
        if value is not None and key not in out:
            out[key] = value
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_fields(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(out, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{record.levelname.lower():7} {record.name}: {record.getMessage()}"
        if extras:
            line += f" [{extras}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


def setup_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiortc/aioice are chatty at INFO about every candidate pair
    for noisy in ("aioice", "aiortc", "aiohttp.access", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
