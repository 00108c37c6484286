"""What every client of the v1 protocol does on its WebSocket (sdk/participant.py, the load
tester's light viewer): a request carries an ``id`` and waits for the message with that
``ref``; every other message goes to the client's handler; the bytes the server sent are
counted; when the socket closes, requests still waiting get a ``closed`` error."""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp


class JoinRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RequestFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Replies:
    def __init__(self) -> None:
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self.signal_bytes = 0  # WebSocket text the server sent (the load tester's figure)
        self.signal_messages: collections.Counter[str] = collections.Counter()  # by type
        self.closed = asyncio.Event()

    async def request(self, send: Callable[[dict[str, Any]], Awaitable[None]],
                      message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send ``message`` with a new id; its reply, or RequestFailed for an ``error``."""
        msg_id = str(next(self._ids))
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[msg_id] = future
        await send({**message, "id": msg_id})
        try:
            reply = await asyncio.wait_for(future, timeout)
        finally:
            self.pending.pop(msg_id, None)
        if reply.get("type") == "error":
            raise RequestFailed(str(reply.get("code")), str(reply.get("message")))
        return reply

    async def read(self, ws: aiohttp.ClientWebSocketResponse,
                   on_message: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """Until the socket closes: replies to their requests, the rest to ``on_message``."""
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                self.signal_bytes += len(msg.data.encode())
                message = json.loads(msg.data)
                self.signal_messages[str(message.get("type"))] += 1
                ref = message.get("ref")
                if ref is not None and ref in self.pending:
                    if not self.pending[ref].done():
                        self.pending[ref].set_result(message)
                    continue
                await on_message(message)
        finally:
            for future in self.pending.values():
                if not future.done():
                    future.set_result({"type": "error", "code": "closed",
                                       "message": "the connection closed"})
            self.closed.set()
