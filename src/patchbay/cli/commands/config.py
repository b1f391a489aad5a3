"""``config check``: validate a config file and print the report."""

from __future__ import annotations

import argparse
from pathlib import Path

from patchbay.cli.check import check_config
from patchbay.cli.configfile import LOCAL_CONFIG, user_config_path
from patchbay.cli.errors import EXIT_FAILED, EXIT_OK, CliError
from patchbay.cli.output import Output


def _check_target(args: argparse.Namespace) -> Path:
    path: Path | None = args.path or args.config
    if path is None:
        user = user_config_path()
        if LOCAL_CONFIG.exists():
            path = LOCAL_CONFIG
        elif user.exists():
            path = user
        else:
            raise CliError(
                f"no ./patchbay.json here and no per-user config ({user}); give the file to check: "
                "patchbay config check PATH"
            )
    return path.expanduser()


def cmd_config_check(args: argparse.Namespace) -> int:
    """Synchronous: nothing to await, so it runs without an event loop (and without importing asyncio)."""
    out = Output(args.json)
    path = _check_target(args)
    report = check_config(path)
    if out.json_mode:
        out.emit_json(report)
    else:
        n = len(report["servers"])
        if report["servers"] or report["valid"]:
            out.say(f"{path}: {n} server{'s' if n != 1 else ''}")
        for e in report["errors"]:
            out.say(f"  {out.paint('error  ', 'red bold')}  {e['message']}".replace("\n", "\n    "))
        for w in report["warnings"]:
            out.say(f"  {out.paint('warning', 'yellow')}  {w['message']}")
        nw, ne = len(report["warnings"]), len(report["errors"])
        tail = f" ({nw} warning{'s' if nw != 1 else ''})" if nw else ""
        if report["valid"]:
            out.say(f"{path}: {out.paint('valid', 'green')}{tail}")
        else:
            out.error(
                f"{path} is invalid ({ne} error{'s' if ne != 1 else ''}{', ' + tail[2:-1] if nw else ''})"
            )
    return EXIT_OK if report["valid"] else EXIT_FAILED
