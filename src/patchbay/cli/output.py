"""What the CLI prints and how: results to stdout (aligned tables, colour on a terminal, ``--json``), notes,
warnings and the one-line error to stderr. Every command prints through :class:`Output`."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Sequence
from typing import IO, Any

_ANSI = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}

STATE_STYLE = {
    "ready": "green",
    "starting": "yellow",
    "backoff": "yellow",
    "failed": "red bold",
    "needs_auth": "yellow",
    "needs sign-in": "yellow",
    "disabled": "dim",
    "stopped": "dim",
    "enabled": "green",
}


def colour_enabled(stream: IO[str]) -> bool:
    """Colour on a terminal unless NO_COLOR is set (https://no-color.org) or TERM=dumb; FORCE_COLOR forces."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


Cell = str | tuple[str, str]  # text, or (text, style)


class Output:
    """Everything the CLI prints goes through here: results to stdout, notes and progress to stderr."""

    def __init__(self, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        self.colour = colour_enabled(sys.stdout)
        self.err_colour = colour_enabled(sys.stderr)

    @staticmethod
    def _paint(text: str, style: str, on: bool) -> str:
        if not on or not style or not text:
            return text
        return f"\x1b[{';'.join(_ANSI[s] for s in style.split())}m{text}\x1b[0m"

    def paint(self, text: str, style: str) -> str:
        return self._paint(text, style, self.colour)

    def paint_err(self, text: str, style: str) -> str:
        return self._paint(text, style, self.err_colour)

    def say(self, text: str = "") -> None:
        print(text, flush=True)

    def note(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def warn(self, text: str) -> None:
        print(f"{self.paint_err('warning:', 'yellow')} {text}", file=sys.stderr, flush=True)

    def error(self, text: str) -> None:
        print(
            f"patchbay: {self.paint_err('error:', 'red bold')} {one_line(text)}", file=sys.stderr, flush=True
        )

    def emit_json(self, data: Any) -> None:
        print(json.dumps(data, indent=2, ensure_ascii=False), flush=True)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Cell]]) -> None:
        """Aligned columns; on a terminal the last column is cut to the terminal's width."""
        cells = [[(c, "") if isinstance(c, str) else c for c in row] for row in rows]
        widths = [len(h) for h in header]
        for row in cells:
            for i, (text, _) in enumerate(row):
                widths[i] = max(widths[i], len(text))
        last_max: int | None = None
        if sys.stdout.isatty():
            columns = shutil.get_terminal_size((120, 24)).columns
            room = columns - sum(widths[:-1]) - 2 * (len(widths) - 1)
            last_max = room if room >= 12 else None
        last = len(header) - 1
        self.say(
            "  ".join(
                self.paint(h if i == last else h.ljust(widths[i]), "bold") for i, h in enumerate(header)
            )
        )
        for row in cells:
            out = []
            for i, (text, style) in enumerate(row):
                if i == len(row) - 1:
                    if last_max is not None and len(text) > last_max:
                        text = text[: last_max - 1] + "…"
                    out.append(self.paint(text, style))
                else:
                    out.append(self.paint(text.ljust(widths[i]), style))
            self.say("  ".join(out).rstrip())


def one_line(message: str) -> str:
    """A possibly multi-line message (a config with several problems) as one line."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    return f"{lines[0]} {'; '.join(lines[1:])}"


def error_suffix(name: str, error: str | None) -> str:
    """``: <error>`` without the ``server 'x': `` the error starts with (the sentence already names it)."""
    return f": {one_line(error).removeprefix(f'server {name!r}: ')}" if error else ""
