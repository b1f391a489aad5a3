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

log = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009
CLOSE_REPLACED = 4000  # a newer connection of the same agent took over: the agent should back off
CLOSE_REASONS = {1009: "sent a frame larger than the hub accepts", 1011: "had an internal error"}


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
    ) -> None:
        self.ws = ws
        self.name = name
        self._on_message = on_message
        self._on_close = on_close
        self._limit = RateLimit(frames_per_second, burst)
        self._expects = expects  # answers to our own requests in flight are not counted as a flood
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._read_loop(), name=f"agent-{self.name}-read"),
            asyncio.create_task(self._write_loop(), name=f"agent-{self.name}-write"),
        ]

    def send(self, msg: dict[str, Any]) -> None:
        if self._closed:
            raise ConnectionError(f"agent {self.name!r} is disconnected")
        self._queue.put_nowait(json.dumps(msg, separators=(",", ":"), ensure_ascii=False))

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
        self._queue.put_nowait(None)
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
