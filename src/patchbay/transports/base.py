"""The wire contract: what a ``Connection`` needs from a transport, and the pieces transports share.

A wire moves decoded JSON-RPC messages and nothing else; the handshake, correlation and listing live in
``upstream.Connection`` so every kind of upstream behaves the same. The contract every wire keeps:

* ``send`` never blocks and never raises anything but a ``PatchbayError`` (the caller's error is typed);
* ``on_close(reason, returncode)`` is called exactly once, when the upstream can no longer answer;
* ``close`` stops everything the wire started (tasks, processes, sockets) and returns when they are gone.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from patchbay.errors import PatchbayError, ServerUnavailableError

STDERR_TAIL_LINES = 200
STDERR_LINE_MAX = 2000
STDERR_LOG_PER_SECOND = 20


class Wire(Protocol):
    """What a connection needs from a transport."""

    @property
    def pid(self) -> int | None: ...
    @property
    def stderr(self) -> StderrTail | None: ...

    async def start(self) -> None: ...
    def send(self, msg: dict[str, Any]) -> None: ...
    async def close(self) -> None: ...


WireFactory = Callable[[Callable[[Any], None], Callable[[str, int | None], None]], Wire]


class MessageEncodeError(PatchbayError, TypeError):
    """A message cannot be put on the wire (arguments that are not JSON): a caller bug, not a server one."""

    def __init__(self, server: str, detail: str) -> None:
        self.server = server
        super().__init__(f"cannot send to server {server!r}: the message is not valid JSON-RPC ({detail})")


class StderrTail:
    """The last lines a server wrote to stderr, kept for status, and logged at a bounded rate."""

    def __init__(self, logger: logging.Logger) -> None:
        self.lines: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self.total_bytes = 0
        self._partial = b""
        self._log = logger
        self._window = 0.0
        self._logged = 0
        self._suppressed = 0

    def feed(self, data: bytes) -> None:
        self.total_bytes += len(data)
        if b"\n" not in data:
            if len(self._partial) < STDERR_LINE_MAX:
                self._partial += data[:STDERR_LINE_MAX]
            return
        parts = (self._partial + data).split(b"\n")
        self._partial = parts.pop()[:STDERR_LINE_MAX]
        for raw in parts:
            self._line(raw)

    def flush(self) -> None:
        if self._partial:
            self._line(self._partial)
            self._partial = b""

    def _line(self, raw: bytes) -> None:
        text = raw[:STDERR_LINE_MAX].decode(errors="replace").rstrip()
        if not text:
            return
        self.lines.append(text)
        now = time.monotonic()
        if now - self._window >= 1.0:
            if self._suppressed:
                self._log.info("(%d more stderr lines not logged; see the stderr tail)", self._suppressed)
            self._window, self._logged, self._suppressed = now, 0, 0
        if self._logged < STDERR_LOG_PER_SECOND:
            self._logged += 1
            self._log.info("%s", text)
        else:
            self._suppressed += 1

    def tail(self, n: int = 50) -> list[str]:
        return list(self.lines)[-n:] if n > 0 else []


class OutboxFullError(ServerUnavailableError):
    """A wire's bounded send queue is full: the message was not queued, and the caller is told at once."""

    def __init__(
        self, server: str, limit: int, where: str, kind: str = "server", unit: str = "messages are"
    ) -> None:
        self.limit = limit
        super().__init__(
            server,
            f"{kind} {server!r}: {limit} {unit} already waiting to be sent to {where}; "
            f"this one was not sent (the {kind} is not keeping up, or the connection is stalled)",
        )
