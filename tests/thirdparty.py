"""Real third-party MCP servers for the tests: launch specs, availability checks and a safe tool to call.

The servers are pinned in the project's own files and installed by ``make test``:

- Node: ``tests/npm/package.json`` + ``package-lock.json`` (``npm ci`` into ``tests/npm/node_modules``):
  ``@modelcontextprotocol/server-everything``, ``-memory`` and ``-filesystem``, all ``2026.8.31``.
- Python: ``tests/requirements-servers.txt`` (into the project venv): ``mcp-server-time`` and
  ``mcp-server-git``, both ``2026.10.19``.

Each launcher returns a patchbay server spec in Claude Desktop shape (``{"command", "args", "env"}``) with
absolute paths, so it works whatever the test's working directory. The Node launchers are ``#!/usr/bin/env
node`` scripts: ``node`` must be on the ``PATH`` the server is spawned with. ``mcp-server-git`` needs ``git``.

Each server also has a ``Probe``: a tool that is safe to call (no network, no writes outside the temp dirs
the test gives), its arguments, and a substring the call's text content contains.
"""

from __future__ import annotations

import shutil
import sys
import urllib.parse
from pathlib import Path
from typing import Any, NamedTuple

HERE = Path(__file__).resolve().parent
NPM_BIN = HERE / "npm" / "node_modules" / ".bin"
# Not resolved: the venv's python is a symlink, and its console scripts sit next to the link.
PY_BIN = Path(sys.executable).absolute().parent

HINT = "run `make test` (it installs the pinned third-party MCP servers the tests use)"

# server name -> (executable, extra program it needs on PATH, where it is pinned)
_EXECUTABLES: dict[str, tuple[Path, str | None, str]] = {
    "everything": (NPM_BIN / "mcp-server-everything", "node", "tests/npm/package.json"),
    "memory": (NPM_BIN / "mcp-server-memory", "node", "tests/npm/package.json"),
    "filesystem": (NPM_BIN / "mcp-server-filesystem", "node", "tests/npm/package.json"),
    "time": (PY_BIN / "mcp-server-time", None, "tests/requirements-servers.txt"),
    "git": (PY_BIN / "mcp-server-git", "git", "tests/requirements-servers.txt"),
}
SERVERS = tuple(_EXECUTABLES)


class Probe(NamedTuple):
    """A tool that is safe to call, its arguments, and a substring its text result contains."""

    tool: str
    arguments: dict[str, Any]
    expect: str


# --- launch specs -------------------------------------------------------------------------------------


def everything() -> dict[str, Any]:
    """server-everything over stdio.

    12 tools until ``notifications/initialized``; then it registers the tools the client's capabilities allow
    and sends ``notifications/tools/list_changed``: 13 with ``capabilities: {}`` (adds
    ``simulate-research-query``), more with sampling / elicitation / roots. If the client advertises roots it
    sends ``roots/list`` 350 ms after ``initialized``. Its ``get-env`` tool returns the whole environment.
    """
    return _spec("everything", ["stdio"])


# server-everything's HTTP transport calls ``app.listen(PORT)`` with no host, i.e. on every interface.
# This preload (passed through NODE_OPTIONS as a data: URL, so there is no file to ship) adds 127.0.0.1
# to any listen(port) call that gives no host.
_LOOPBACK_ONLY = "data:text/javascript," + urllib.parse.quote(
    'import net from "node:net";'
    "const listen = net.Server.prototype.listen;"
    "net.Server.prototype.listen = function (...a) {"
    ' if ((typeof a[0] === "number" || /^[0-9]+$/.test(String(a[0]))) && typeof a[1] !== "string")'
    ' a.splice(1, 0, "127.0.0.1");'
    " return listen.apply(this, a); };",
    safe="",
)
# Printed on stderr once the port is bound (stdout gets a line per request: send it to DEVNULL or a file).
EVERYTHING_HTTP_READY = "MCP Streamable HTTP Server listening on port"


def everything_http(port: int) -> dict[str, Any]:
    """server-everything's Streamable HTTP transport on ``127.0.0.1:port`` (start it yourself).

    ``port`` must be a real free port: with ``PORT=0`` it binds an ephemeral port but reports ``0``. Serve at
    ``everything_http_url(port)``; it replies to POSTs as SSE only and wants ``Mcp-Session-Id`` after
    ``initialize``. It stops on SIGTERM / SIGINT.
    """
    return _spec(
        "everything", ["streamableHttp"], {"PORT": str(port), "NODE_OPTIONS": f"--import={_LOOPBACK_ONLY}"}
    )


def everything_http_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/mcp"


def memory(tmp_path: Path) -> dict[str, Any]:
    """server-memory with its knowledge graph in ``tmp_path/memory.jsonl`` (never the package dir)."""
    return _spec("memory", [], {"MEMORY_FILE_PATH": str(Path(tmp_path).absolute() / "memory.jsonl")})


def filesystem(allowed_dir: Path) -> dict[str, Any]:
    """server-filesystem confined to ``allowed_dir`` (a client that advertises roots replaces it)."""
    return _spec("filesystem", [str(Path(allowed_dir).absolute())])


def time() -> dict[str, Any]:
    """mcp-server-time with its local zone forced to UTC (deterministic whatever the machine's zone).

    The Python servers take about 1.3 s to answer ``initialize``; the Node ones about 0.5 s.
    """
    return _spec("time", ["--local-timezone", "UTC"])


def git(repo_path: Path) -> dict[str, Any]:
    """mcp-server-git confined to the repository at ``repo_path`` (must be a git working tree)."""
    return _spec("git", ["--repository", str(Path(repo_path).absolute())])


def _spec(name: str, args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    return {"command": str(_EXECUTABLES[name][0]), "args": args, "env": dict(env or {})}


# --- safe tool calls ----------------------------------------------------------------------------------

EVERYTHING_PROBE = Probe("echo", {"message": "hi"}, "Echo: hi")
# An empty (not yet created) graph reads back as {"entities": [], "relations": []}.
MEMORY_PROBE = Probe("read_graph", {}, '"entities"')
TIME_PROBE = Probe("get_current_time", {"timezone": "UTC"}, '"timezone": "UTC"')


def filesystem_probe(allowed_dir: Path) -> Probe:
    """``list_directory`` of ``allowed_dir``; the text lists entries as ``[FILE] name`` / ``[DIR] name``.

    ``expect`` only holds if the directory is not empty: put a file in it and check for its name.
    """
    return Probe("list_directory", {"path": str(Path(allowed_dir).absolute())}, "[FILE]")


def git_probe(repo_path: Path) -> Probe:
    """``git_status`` of ``repo_path``; the text starts ``Repository status:``."""
    return Probe("git_status", {"repo_path": str(Path(repo_path).absolute())}, "Repository status:")


# --- availability -------------------------------------------------------------------------------------


def missing(*names: str) -> list[str]:
    """One message per server (of ``names``, default all) that cannot be launched here; empty if all can."""
    problems = []
    for name in names or SERVERS:
        exe, needs, pinned = _EXECUTABLES[name]
        if not exe.exists():
            problems.append(
                f"MCP server {name!r} is not installed ({exe} missing, pinned in {pinned}): {HINT}"
            )
        elif needs and shutil.which(needs) is None:
            problems.append(f"MCP server {name!r} needs {needs!r} on PATH")
    return problems


def available(*names: str) -> bool:
    """True if every server of ``names`` (default all) can be launched."""
    return not missing(*names)


def require(*names: str) -> None:
    """Skip the calling test, saying how to fix it, unless every server of ``names`` (default all) is here."""
    problems = missing(*names)
    if problems:
        import pytest

        pytest.skip("; ".join(problems))
