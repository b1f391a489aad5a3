"""The console script (``patchbay``, ``python -m patchbay``): parse the command line, run the command, and
turn whatever it raises into one error line and an exit code."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys

from patchbay.cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, CliError, exit_code_for
from patchbay.cli.output import Output
from patchbay.cli.parser import absorb_extras, build_parser
from patchbay.errors import PatchbayError


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
        code: int = asyncio.run(args.func(args))
        return code
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
