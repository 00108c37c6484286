"""Fire-and-forget coroutines, referenced until they finish and logged if they fail."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("huizhen.media")
_tasks: set[asyncio.Task[Any]] = set()


def _done(task: asyncio.Task[Any]) -> None:
    _tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("background task failed", exc_info=task.exception())


def spawn(coro: Coroutine[Any, Any, Any],
          context: contextvars.Context | None = None) -> asyncio.Task[Any]:
    """Run ``coro`` as a task; ``context``: the context variables it sees (its own copy;
    by default the caller's, as asyncio does): a peer's tasks keep the ids its logs carry."""
    task = (asyncio.ensure_future(coro) if context is None
            else asyncio.get_running_loop().create_task(coro, context=context.copy()))
    _tasks.add(task)
    task.add_done_callback(_done)
    return task
