"""Reading py-spy's collapsed stacks: shared by the benchmarks that profile themselves."""

from __future__ import annotations

import re

# One frame of a collapsed stack: ``func (path/to/file.py:123)``.
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")


def short(frame: str) -> str:
    """A frame with its path cut to what identifies it (package-relative)."""
    m = FRAME.match(frame)
    if not m:
        return frame
    file = m["file"]
    for marker in ("site-packages/", "src/", "lib/python3.11/", "lib/python3.12/", "lib/python3.13/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{m['func']} ({file}:{m['line']})" if m["line"] else f"{m['func']} ({file})"
