"""The console script (``patchbay``, ``python -m patchbay``): parse the command line, run the command, and
turn whatever it raises into one error line and an exit code."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from patchbay.cli.commands.serve import event_loop_factory
from patchbay.cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, CliError, exit_code_for
from patchbay.cli.output import Output
from patchbay.cli.parser import absorb_extras, build_parser
from patchbay.errors import PatchbayError

if TYPE_CHECKING:  # imported by run_interruptibly: a command with nothing to await never needs it
    import asyncio


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    absorb_extras(parser, args, extras)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="replace")  # type: ignore[attr-defined,union-attr]
    debug = bool(getattr(args, "debug", False))
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    out = Output()
    try:
        loop_factory = event_loop_factory(args.loop) if args.command == "serve" else None
        result = args.func(args)
        if isinstance(result, int):  # a command with nothing to await (``config check``): no event loop
            return result
        return run_interruptibly(result, loop_factory)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except CliError as exc:
        if debug:
            raise
        out.error(str(exc))
        return exc.code
    except PatchbayError as exc:
        if debug:
            raise
        out.error(str(exc))
        return EXIT_USAGE if args.command in ("serve", "agent") else exit_code_for(exc)
    except BrokenPipeError:  # `patchbay tools | head`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:
        if debug:
            raise
        out.error(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return EXIT_FAILED
    finally:
        with contextlib.suppress(Exception):
            logging.shutdown()


# After Ctrl-C, the command has this long to stop its servers politely before they are killed and the
# process exits (130): the whole exit stays under 2 s, whatever the servers or the machine's load do.
INTERRUPT_GRACE_SECONDS = 1.5


def run_interruptibly(
    coro: Coroutine[Any, Any, int], loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
) -> int:
    """Run a command; Ctrl-C cancels it (servers started here are stopped by their owners), and if that
    takes longer than :data:`INTERRUPT_GRACE_SECONDS` (or Ctrl-C comes again), every child process group is
    killed and the process exits with 130 at once. Commands that handle SIGINT themselves (``run``,
    ``serve``) replace this handler with their own."""
    import asyncio

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        loop = runner.get_loop()
        task = loop.create_task(coro)
        interrupted = False

        def on_sigint() -> None:
            nonlocal interrupted
            if interrupted:
                _hard_exit()
            interrupted = True
            task.cancel()
            loop.call_later(INTERRUPT_GRACE_SECONDS, _hard_exit)

        with contextlib.suppress(NotImplementedError, RuntimeError):  # no signal handlers on Windows loops
            loop.add_signal_handler(signal.SIGINT, on_sigint)
        try:
            code = loop.run_until_complete(task)
        except BaseException:
            if interrupted:
                _kill_children()
                return EXIT_INTERRUPTED
            raise
        if interrupted:  # the command swallowed the cancellation
            _kill_children()
            return EXIT_INTERRUPTED
        return code


def _hard_exit() -> None:
    _kill_children()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(EXIT_INTERRUPTED)


def _kill_children() -> None:
    """SIGKILL every child process of this one with its process group (stdio servers lead their own),
    so nothing started here outlives an interrupted command."""
    for pid in _child_pids():
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _child_pids() -> list[int]:
    me = os.getpid()
    if os.path.isdir("/proc"):
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                    stat = f.read()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in parentheses may hold spaces
            except (OSError, ValueError, IndexError):
                continue
            if ppid == me:
                pids.append(int(entry))
        return pids
    try:  # macOS and other Unixes without /proc
        found = subprocess.run(["pgrep", "-P", str(me)], capture_output=True, text=True, timeout=1)
    except (OSError, subprocess.SubprocessError):
        return []
    return [int(p) for p in found.stdout.split() if p.isdigit()]
