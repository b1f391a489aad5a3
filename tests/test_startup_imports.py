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


def probe(tmp_path: Path, *args: str) -> tuple[int, set[str], str]:
    """Run the CLI in a fresh interpreter: (exit code, top-level packages it imported, its stdout)."""
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
    return code or 0, set(modules), proc.stdout


def imported(tmp_path: Path, *args: str) -> tuple[int, set[str]]:
    code, modules, _ = probe(tmp_path, *args)
    return code, modules


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


# ``config check`` validates everything (servers and their oauth, profiles, agents, tokens and roles,
# auth.oauth, tracing, rate limits, audit) without what serves it: no token verification (PyJWT,
# cryptography), no tracing SDK, and, having nothing to await, no event loop. ``--help`` needs no loop either.
CHECK_NOT_NEEDED = NOT_NEEDED | {"jwt", "cryptography", "opentelemetry", "asyncio"}
URL = "https://example.com/mcp"
FULL_CONFIG = {
    "mcpServers": {
        "local": {"command": "echo", "args": ["x"], "env": {"HOME_DIR": "${HOME}"}},
        "gh": {"url": URL, "oauth": {"clientId": "c", "clientSecret": "s", "scopes": ["repo"]}},
        "machine": {
            "url": URL,
            "oauth": {"grant": "client_credentials", "clientId": "c", "clientSecret": "s"},
        },
    },
    "agents": {"laptop": {"token": "agent-token"}},
    "profiles": {
        "coding": {"servers": ["local", "gh"], "tools": ["local__*"]},
        "all": {"discovery": "search"},
    },
    "auth": {
        "tokens": ["admin-token", {"name": "ci", "token": "ci-token", "role": "user", "profile": "coding"}],
        "oauth": {
            "issuer": "https://idp.example.com",
            "resource": "https://hub.example.com/mcp",
            "scopes": {"mcp": "user"},
        },
    },
    "telemetry": {"otlpEndpoint": "http://collector.example:4318"},
    "rateLimits": {"default": "100/min"},
    "audit": {"maxBytes": 10_000_000},
}


def test_help_needs_no_event_loop(tmp_path: Path) -> None:
    code, modules = imported(tmp_path, "--help")
    assert code == 0 and "patchbay" in modules
    assert not modules & CHECK_NOT_NEEDED, sorted(modules & CHECK_NOT_NEEDED)


def test_config_check_of_a_full_config_leaves_the_serving_stack_alone(tmp_path: Path) -> None:
    (tmp_path / "full.json").write_text(json.dumps(FULL_CONFIG))
    code, modules, out = probe(tmp_path, "config", "check", "full.json", "--json")
    report = json.loads(out)
    assert code == 0 and report["valid"], report
    assert report["servers"] == ["local", "gh", "machine"] and report["warnings"] == []
    assert not modules & CHECK_NOT_NEEDED, sorted(modules & CHECK_NOT_NEEDED)


def test_config_check_still_reports_every_section_without_the_serving_stack(tmp_path: Path) -> None:
    """The same sections, each with a mistake: every one is still found (the lazy imports skipped no
    check), and still without the stacks that would serve it."""
    bad = json.loads(json.dumps(FULL_CONFIG))
    bad["mcpServers"]["gh"]["oauth"] = {"clientID": "c"}
    bad["mcpServers"]["local"]["tools"] = {"echo": {"annotations": {"readOnlyHint": True}}}
    bad["auth"]["tokens"][1]["role"] = "root"
    bad["auth"]["oauth"]["algorithms"] = ["none"]
    bad["telemetry"]["otlpEndpoint"] = "ftp://collector.example"
    bad["rateLimits"]["default"] = "often"
    bad["audit"]["maxBytes"] = 1
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    code, modules, out = probe(tmp_path, "config", "check", "bad.json", "--json")
    report = json.loads(out)
    assert code == 1 and not report["valid"]
    fields = {e["field"] for e in report["errors"]}
    assert fields == {
        "oauth.clientID",
        "auth.tokens[1].role",
        "auth.oauth.algorithms",
        "rateLimits.default",
        "audit.maxBytes",
    }, report
    assert [w["field"] for w in report["warnings"]] == ["telemetry.otlpEndpoint"], report
    # tool annotations are checked with the SDK's own model, from ``mcp_types`` (a third of ``mcp``'s cost)
    assert "mcp_types" in modules
    assert not modules & (CHECK_NOT_NEEDED - {"mcp_types"}), sorted(modules & CHECK_NOT_NEEDED)


def test_serving_commands_still_get_what_they_need(tmp_path: Path) -> None:
    """The check above is not vacuous: a command that needs the SDK imports it (here ``tools`` on a file,
    which starts the configured servers)."""
    (tmp_path / "cfg.json").write_text(json.dumps({"mcpServers": {}}))
    code, modules = imported(tmp_path, "tools", "--config", "cfg.json")
    assert code == 0 and "mcp" in modules
