"""Supervised stdio transport: a child process speaking newline-delimited JSON-RPC.

Built on ``asyncio.SubprocessProtocol`` rather than the SDK's ``stdio_client`` because patchbay needs
what that hides: the pid and exit status, an exit signal the instant the process dies, stderr drained by
the event loop itself (a server that floods stderr can never block on a full pipe), no line-length limit
(an 8 MiB result is one line), and a process-group kill on every stop so grandchildren die too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

from patchbay.config import ResolvedSpec
from patchbay.errors import ConfigError, ServerExitedError
from patchbay.transports.base import MessageEncodeError, OutboxFullError, StderrTail

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_UNREAD_BYTES = 32 * 1024 * 1024  # written to stdin, not yet read (one message always fits)
STREAM_CLOSED_GRACE = 0.2  # a child that closes stdin or stdout normally exits within this
# patchbay's own secrets: never inherited by a child (a server's explicit ``env`` may still pass one on);
# the OTLP headers carry the trace collector's credentials (telemetry.py)
SECRET_ENV_VARS = frozenset(
    {
        "PATCHBAY_TOKEN",
        "PATCHBAY_AGENT_TOKEN",
        "PATCHBAY_SECRET_KEY",  # cluster mode: the key of the shared OAuth token store
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    }
)


# one encoder for every line (``json.dumps`` with options builds a new one per call)
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def child_env(spec_env: Mapping[str, str]) -> dict[str, str]:
    """The environment a child starts with: ours minus ``SECRET_ENV_VARS``, then the server's ``env``."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV_VARS}
    env.update(spec_env)
    return env


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "exited"
    if returncode < 0:
        try:
            return f"was killed by signal {-returncode} ({signal.Signals(-returncode).name})"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


class _Protocol(asyncio.SubprocessProtocol):
    def __init__(self, owner: StdioTransport) -> None:
        self._owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Before subprocess_exec returns: a process that dies at once reports its exit through this.
        # uvloop's process transport (uvicorn picks uvloop when it is installed, e.g. in a host app that
        # embeds patchbay) has the SubprocessTransport methods without deriving from it.
        self._owner._transport = cast(asyncio.SubprocessTransport, transport)

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self._owner._on_stdout(data)
        else:
            self._owner.stderr.feed(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self._owner._stream_closed("closed its stdout")
        elif fd == 0:
            self._owner._stream_closed("closed its stdin")

    def process_exited(self) -> None:
        self._owner._on_process_exited()


class StdioTransport:
    """Spawns the server in its own process group and frames JSON-RPC messages on its pipes.

    ``on_message`` gets each decoded message; ``on_close(reason, returncode)`` is called exactly once when
    the server can no longer answer (process exited, stdout closed, or a protocol violation).
    """

    def __init__(
        self,
        spec: ResolvedSpec,
        on_message: Callable[[Any], None],
        on_close: Callable[[str, int | None], None],
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_unread_bytes: int = DEFAULT_MAX_UNREAD_BYTES,
    ) -> None:
        self.spec = spec
        self._on_message = on_message
        self._on_close = on_close
        self._max = max_message_bytes
        self._max_unread = max_unread_bytes
        self.stderr = StderrTail(logging.getLogger(f"patchbay.server.{spec.name}"))
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._buf = bytearray()
        self._closed = False
        self._reason: str | None = None  # why it can no longer answer, once it cannot
        self._stopping = False
        self._loop = asyncio.get_running_loop()
        self._exited = self._loop.create_future()
        # Lines written in the same turn of the event loop as an earlier one wait for ``_flush`` (at the end
        # of the turn) and go in one write: 64 concurrent calls cost a few syscalls, not 64.
        self._coalescing = False
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._garbage_logged = 0
        self._close_task: asyncio.Future[None] | None = None
        self.pid: int | None = None
        self.returncode: int | None = None

    async def start(self) -> None:
        spec = self.spec
        assert spec.command is not None
        env = child_env(spec.env)
        cwd = spec.cwd
        if cwd is not None and not os.path.isdir(cwd):  # noqa: ASYNC240 (one stat, at start)
            raise ConfigError(
                f"server {spec.name!r}: cwd: directory {cwd!r} does not exist", server=spec.name, field="cwd"
            )
        exe = shutil.which(spec.command, path=env.get("PATH"))
        if exe is None and os.sep in spec.command and cwd:
            candidate = os.path.join(cwd, spec.command)
            exe = candidate if os.access(candidate, os.X_OK) else None
        if exe is None:
            raise ConfigError(
                f"server {spec.name!r}: command: {spec.command!r} was not found on PATH or is not executable",
                server=spec.name,
                field="command",
            )
        loop = asyncio.get_running_loop()
        transport, _ = await loop.subprocess_exec(
            lambda: _Protocol(self),
            exe,
            *spec.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self._transport = transport
        self.pid = transport.get_pid()
        stdin = transport.get_pipe_transport(0)
        if stdin is None:  # it was asked for (PIPE): only a broken event loop gives none
            raise RuntimeError(f"{spec.name}: the event loop gave no stdin pipe for the child")
        self._stdin = cast(asyncio.WriteTransport, stdin)  # uvloop's pipe has the methods, not the class
        log.debug("%s: started pid %s: %s %s", spec.name, self.pid, exe, " ".join(spec.args))

    # --- writing -----------------------------------------------------------------------------------

    def send(self, msg: dict[str, Any]) -> None:
        """Write one line; never blocks. A wire that no longer takes input raises ``ServerExitedError``.

        Raising, rather than dropping the message and leaving the caller to the close callback: between
        stdin closing (we are stopping it, or the pipe broke) and the exit being reported there can be
        seconds (a child that ignores EOF waits for SIGTERM), and a dropped request would wait that long,
        or for its whole timeout. A write that the pipe itself drops (EPIPE inside asyncio) is different:
        the child is dead and its exit, reported within milliseconds, fails that caller.

        What the child has not read yet is bounded too (``max_unread_bytes``): past it, ``OutboxFullError``.

        The first line of a turn of the event loop is written at once (no latency for a lone call); the
        lines after it in the same turn are written together when the turn ends (``_flush``).
        """
        stdin = self._stdin
        if self._closed or stdin is None or stdin.is_closing():
            raise self._refused()
        if stdin.get_write_buffer_size() + self._pending_bytes > self._max_unread:
            # The child stopped reading stdin: fail the caller now instead of buffering without bound.
            raise OutboxFullError(self.spec.name, self._max_unread, "its stdin", unit="bytes are")
        try:
            line = _encode(msg).encode() + b"\n"
        except (TypeError, ValueError) as exc:
            raise MessageEncodeError(self.spec.name, str(exc)) from None
        if self._coalescing:
            self._pending.append(line)
            self._pending_bytes += len(line)
            return
        stdin.write(line)
        self._coalescing = True
        self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write the lines sent since the turn's first one, in one go. A pipe closed meanwhile drops them,
        like a write the pipe itself drops: the exit, reported within milliseconds, fails their callers."""
        self._coalescing = False
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        stdin = self._stdin
        if stdin is not None and not stdin.is_closing():
            stdin.write(data)

    def _refused(self) -> ServerExitedError:
        reason = self._reason or (
            "is not running yet" if self._stdin is None else "is not accepting input (its stdin is closed)"
        )
        return ServerExitedError(self.spec.name, reason, self.returncode)

    # --- reading -----------------------------------------------------------------------------------

    def _on_stdout(self, data: bytes) -> None:
        if self._closed:
            return
        buf = self._buf
        if not buf and data.endswith(b"\n"):  # the common case: whole messages in one chunk
            lines = data.split(b"\n")
            lines.pop()
        elif b"\n" not in data:
            buf += data
            if len(buf) > self._max:
                self._fail(f"sent a message larger than {self._max} bytes")
            return
        else:
            buf += data
            lines = bytes(buf).split(b"\n")
            rest = lines.pop()
            buf.clear()
            buf += rest
        for line in lines:
            self._line(line)
            if self._closed:
                return

    def _line(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            msg = json.loads(line)
        except ValueError:
            self._garbage("non-JSON line", line)
            return
        if type(msg) is not dict and type(msg) is not list:
            self._garbage("non-JSON-RPC line", line)
            return
        self._on_message(msg)

    def _garbage(self, what: str, line: bytes) -> None:
        self._garbage_logged += 1
        if self._garbage_logged <= 20 or self._garbage_logged % 1000 == 0:
            log.warning("%s: skipped a %s on stdout: %.200r", self.spec.name, what, line)

    # --- lifecycle ---------------------------------------------------------------------------------

    def _stream_closed(self, reason: str) -> None:
        if self.returncode is None and not self._closed and not self._stopping:
            loop = asyncio.get_running_loop()
            # Normally the exit follows at once; if the process lingers without stdin or stdout, it is broken.
            loop.call_later(STREAM_CLOSED_GRACE, self._stream_closed_check, reason)

    def _stream_closed_check(self, reason: str) -> None:
        if self.returncode is None and not self._closed and not self._stopping:
            self._fail(reason)

    def _on_process_exited(self) -> None:
        self.returncode = self._transport.get_returncode() if self._transport is not None else None
        self.stderr.flush()
        if not self._exited.done():
            self._exited.set_result(self.returncode)
        self._finish(describe_exit(self.returncode), self.returncode)

    def _fail(self, reason: str) -> None:
        """A protocol violation: report it, then make sure the process goes away.

        The stop runs as ``_close_task``, which ``close()`` (always called by the owner) awaits.
        """
        self._finish(reason, None)
        if self._transport is not None and self.returncode is None and self._close_task is None:
            self._close_task = asyncio.ensure_future(self._terminate(2.0, 2.0))
            self._close_task.add_done_callback(_log_stop_failure)

    def _finish(self, reason: str, returncode: int | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._reason = reason
        self._buf.clear()
        try:
            self._on_close(reason, returncode)
        except Exception:
            log.exception("%s: close handler failed", self.spec.name)

    async def wait(self) -> int | None:
        return await asyncio.shield(self._exited)

    async def close(self, grace: float = 2.0, term_grace: float = 2.0) -> None:
        """Stop politely (close stdin), then SIGTERM, then SIGKILL the whole process group, each bounded.

        The group is signalled even after a graceful exit, so grandchildren never outlive the server.
        One stop runs at a time: a second ``close()`` (or one after a protocol violation) awaits it.
        """
        if self._transport is None:
            return
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._terminate(grace, term_grace))
        await self._close_task

    async def _terminate(self, grace: float, term_grace: float) -> None:
        transport = self._transport
        assert transport is not None
        self._stopping = True
        pgid = self.pid
        try:
            if self.returncode is None:
                self._flush()  # what was sent before the stop goes first (closing stdin writes it out)
                if self._stdin is not None and not self._stdin.is_closing():
                    self._stdin.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wait(), grace)
            if self.returncode is None:
                self._killpg(pgid, signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wait(), term_grace)
            if self.returncode is None:
                self._killpg(pgid, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wait(), 2.0)
            # Leftover members of the group (grandchildren): TERM, a short wait, then KILL.
            if self._killpg(pgid, signal.SIGTERM):
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline and self._killpg(pgid, 0):
                    await asyncio.sleep(0.02)
                self._killpg(pgid, signal.SIGKILL)
        finally:
            self._finish("was stopped", self.returncode)
            transport.close()

    @staticmethod
    def _killpg(pgid: int | None, sig: int) -> bool:
        """Signal the process group; False when nothing in it is left."""
        if pgid is None:
            return False
        try:
            os.killpg(pgid, sig)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            log.warning("not allowed to signal process group %s", pgid)
            return False


def _log_stop_failure(task: asyncio.Future[None]) -> None:
    """Retrieve the outcome of a stop nobody may await (the owner normally does, through ``close``)."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("stopping a server failed", exc_info=exc)
