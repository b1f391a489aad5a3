"""Commands that do not serve import only what they need: no MCP SDK, no web stack, no HTTP client when no
hub is running. Checked by *which modules* a real ``patchbay`` process imported (its start-up time is
measured in ``bench/startup.py``, never asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import clean_env

# Runs the CLI as ``python -m patchbay`` does, then reports the top-level packages it imported.
PROBE = """
import json, runpy, sys
sys.argv = ["patchbay", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("patchbay", run_name="__main__")
except SystemExit as exc:
    code = exc.code
print("MODULES " + json.dumps([code, sorted({m.split(".")[0] for m in sys.modules})]), file=sys.stderr)
"""
# What none of these commands needs: the MCP SDK (1-2 s to import), the web stack, the HTTP client.
NOT_NEEDED = {"mcp", "mcp_types", "fastapi", "starlette", "uvicorn", "sse_starlette", "httpx2", "anyio"}


def imported(tmp_path: Path, *args: str) -> tuple[int, set[str]]:
    (tmp_path / "claude.json").write_text(json.dumps({"mcpServers": {"x": {"command": "echo"}}}))
    env = clean_env()
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES "))
    code, modules = json.loads(line.removeprefix("MODULES "))
    return code or 0, set(modules)


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["config", "check", "--config", "cfg.json"],
        ["servers", "list", "--config", "cfg.json"],
        ["import", "claude", "claude.json", "--config", "out.json"],
        ["tools", "search", "--help"],
    ],
    ids=lambda a: " ".join(a),
)
def test_commands_that_do_not_serve_leave_the_sdk_alone(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "cfg.json").write_text(json.dumps({"mcpServers": {"a": {"command": "echo"}}}))
    code, modules = imported(tmp_path, *args)
    assert code == 0
    assert "patchbay" in modules  # the probe ran the CLI
    assert not modules & NOT_NEEDED, sorted(modules & NOT_NEEDED)
    if args[0] == "import":
        assert "x" in json.loads((tmp_path / "out.json").read_text())["mcpServers"]


def test_serving_commands_still_get_what_they_need(tmp_path: Path) -> None:
    """The check above is not vacuous: a command that needs the SDK imports it (here ``tools`` on a file,
    which starts the configured servers)."""
    (tmp_path / "cfg.json").write_text(json.dumps({"mcpServers": {}}))
    code, modules = imported(tmp_path, "tools", "--config", "cfg.json")
    assert code == 0 and "mcp" in modules
