"""One socket write per turn of the event loop: a response's head and body go out together.

Why: uvicorn writes a response's status line and headers when the app sends ``http.response.start``,
and the body, separately, on ``http.response.body``: two ``send()`` system calls per answer, two TCP
segments for the client to read. Profiled under load (``bench/http.py --profile``) those two writes were
~18% of patchbay's CPU per ``/mcp`` call. :class:`CorkedTransport` wraps a connection's transport for
uvicorn's HTTP protocols (``app.py``): writes made during one turn of the loop are joined and written
once, at the end of that turn (``call_soon``), so nothing waits longer than the turn it was written in:
a streamed response's events still go out as they are sent. Closing (or ``write_eof``) first writes
what is pending; aborting drops it, as the transport's own ``abort`` does its buffer.
"""

from __future__ import annotations

import asyncio
from typing import Any


class CorkedTransport:
    """A proxy of ``transport`` (every other attribute is the transport's own) that batches writes."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Write what is pending now (nothing if the connection is already closing or closed)."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(p) for p in self._pending)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
