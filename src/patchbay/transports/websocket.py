"""The hub's end of a dial-in agent: JSON-RPC in WebSocket text frames, one message per frame.

The agent is untrusted input. A binary frame, malformed JSON, or more frames per second than the limit
allows disconnects that agent (with a close code saying why) and nobody else. Oversized frames are
refused by the server's ``ws_max_size`` before they reach this code (close code 1009).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from patchbay.errors import ServerExitedError
from patchbay.transports.base import MessageEncodeError, OutboxFullError

log = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009
CLOSE_REPLACED = 4000  # a newer connection of the same agent took over: the agent should back off
SEND_QUEUE_LIMIT = 1024  # frames waiting for a slow agent; past that a send fails at once
CLOSE_REASONS = {1009: "sent a frame larger than the hub accepts", 1011: "had an internal error"}
# one encoder for every frame (``json.dumps`` with options builds a new one per call)
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


class RateLimit:
    """A token bucket: ``rate`` frames a second on average, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class WebSocketWire:
    """A ``Wire`` over an accepted Starlette WebSocket (see ``transports.base.Wire``)."""

    pid: int | None = None
    stderr: None = None

    def __init__(
        self,
        ws: WebSocket,
        name: str,
        on_message: Callable[[Any], None],
        on_close: Callable[[str, int | None], None],
        *,
        frames_per_second: float = 500.0,
        burst: float = 1000.0,
        expects: Callable[[Any], bool] = lambda rid: False,
        send_queue_limit: int = SEND_QUEUE_LIMIT,
    ) -> None:
        self.ws = ws
        self.name = name
        self._on_message = on_message
        self._on_close = on_close
        self._limit = RateLimit(frames_per_second, burst)
        self._expects = expects  # answers to our own requests in flight are not counted as a flood
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(send_queue_limit)
        self._queue_limit = send_queue_limit
        self._tasks: list[asyncio.Task[None]] = []
        self._write_task: asyncio.Task[None] | None = None
        self._closed = False
        self._reason: str | None = None

    async def start(self) -> None:
        """Start the reader and the writer; both are owned here and awaited by ``close``."""
        self._write_task = asyncio.create_task(self._write_loop(), name=f"agent-{self.name}-write")
        self._tasks = [
            asyncio.create_task(self._read_loop(), name=f"agent-{self.name}-read"),
            self._write_task,
        ]

    def send(self, msg: dict[str, Any]) -> None:
        """Queue one frame; never blocks. Raises ``ServerExitedError`` once the agent is gone.

        The queue is bounded: an agent that stops reading while the hub keeps sending (its TCP window
        full) makes ``send`` raise ``OutboxFullError`` at once, so the caller fails now instead of
        waiting for its timeout, and the hub's memory stays bounded.
        """
        if self._closed:
            raise ServerExitedError(self.name, self._reason or "is disconnected")
        try:
            text = _encode(msg)
        except (TypeError, ValueError) as exc:
            raise MessageEncodeError(self.name, str(exc)) from None
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            raise OutboxFullError(self.name, self._queue_limit, "its WebSocket", kind="agent") from None

    async def _write_loop(self) -> None:
        try:
            while (text := await self._queue.get()) is not None:
                await self.ws.send_text(text)
        except Exception as exc:  # the socket went away under us; the reader reports why
            log.debug("agent %s: write failed: %s", self.name, exc)

    async def _read_loop(self) -> None:
        reason = "disconnected"
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    code = message.get("code", CLOSE_NORMAL)
                    reason = f"disconnected ({CLOSE_REASONS.get(code, f'close code {code}')})"
                    break
                text = message.get("text")
                if text is None:
                    reason = await self._violation(
                        CLOSE_INVALID_DATA, "sent a binary frame; only text frames"
                    )
                    break
                try:
                    payload = json.loads(text)
                except ValueError:
                    reason = await self._violation(CLOSE_INVALID_DATA, "sent a frame that is not valid JSON")
                    break
                # Answers to the hub's own requests in flight are paced by the hub; all else is rate-limited,
                # including "answers" to requests the hub never made.
                awaited = (
                    type(payload) is dict and "method" not in payload and self._expects(payload.get("id"))
                )
                if not awaited and not self._limit.allow():
                    reason = await self._violation(
                        CLOSE_POLICY, f"sent more than {self._limit.rate:g} frames a second (flood)"
                    )
                    break
                self._on_message(payload)
        except WebSocketDisconnect as exc:
            reason = f"disconnected ({CLOSE_REASONS.get(exc.code, f'close code {exc.code}')})"
        except Exception as exc:
            reason = f"lost its connection: {exc}"
        finally:
            self._finish(reason)

    async def _violation(self, code: int, what: str) -> str:
        log.warning("agent %s %s; disconnecting it", self.name, what)
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, reason=what[:120])
        return f"was disconnected: it {what}"

    def _finish(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._reason = reason
        try:
            self._queue.put_nowait(None)  # the writer sends what is queued, then stops
        except asyncio.QueueFull:
            if self._write_task is not None:  # a full queue to a gone agent: nothing more will be sent
                self._write_task.cancel()
        try:
            self._on_close(reason, None)
        except Exception:
            log.exception("agent %s: close handler failed", self.name)

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        if not self._closed:
            with contextlib.suppress(Exception):
                await self.ws.close(code=code, reason=reason[:120])
            self._finish(f"was disconnected by the hub{f': {reason}' if reason else ''}")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
