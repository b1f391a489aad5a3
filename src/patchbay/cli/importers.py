"""Reading other MCP clients' configs (Claude Desktop, VS Code, Cursor) for ``import``: where each keeps
its servers, JSON with comments, and turning a client's entry into a patchbay entry with notes on what
patchbay cannot carry over (input prompts, unknown variables, env files)."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from patchbay.cli.errors import CliError

CLIENTS = {"claude": "Claude Desktop", "vscode": "VS Code", "cursor": "Cursor"}


def _app_data_dir() -> Path:
    """Where desktop (Electron) apps keep their settings on this OS."""
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Application Support"
    if os.name == "nt":
        return Path(os.environ.get("APPDATA") or home / "AppData" / "Roaming")
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return Path(xdg) if xdg and os.path.isabs(xdg) else home / ".config"


def client_config_paths(client: str) -> list[Path]:
    """Where the client keeps its MCP servers, most specific first (a project's file, then the user's)."""
    cwd = Path.cwd()
    if client == "claude":
        return [_app_data_dir() / "Claude" / "claude_desktop_config.json"]
    if client == "vscode":
        return [cwd / ".vscode" / "mcp.json", _app_data_dir() / "Code" / "User" / "mcp.json"]
    paths = [cwd / ".cursor" / "mcp.json", Path.home() / ".cursor" / "mcp.json"]
    return list(dict.fromkeys(paths))


def strip_jsonc(text: str) -> str:
    """JSON with comments and trailing commas (VS Code's files) → JSON; positions are kept for errors."""
    return _drop_trailing_commas(_blank_comments(text))


def _blank_comments(text: str) -> str:
    out: list[str] = []
    i, n, in_string = 0, len(text), False
    while i < n:
        c = text[i]
        if in_string:
            if c == "\\":
                out.append(text[i : i + 2])
                i += 2
                continue
            in_string = c != '"'
        elif c == '"':
            in_string = True
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _drop_trailing_commas(text: str) -> str:
    out = list(text)
    in_string, escaped = False, False
    for i, c in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == ",":
            j = i + 1
            while j < len(text) and text[j] in " \t\r\n":
                j += 1
            if j < len(text) and text[j] in "}]":
                out[i] = " "
    return "".join(out)


_VAR_RE = re.compile(r"\$\{([^}]*)\}")

_PATCHBAY_VAR = re.compile(r"^(?:env:)?[A-Za-z_][A-Za-z0-9_]*(?::-.*)?$")


class Translation:
    """One client entry turned into a patchbay entry, with notes on what needs the user's attention."""

    def __init__(self, name: str, client: str, workspace: Path | None, inputs: Mapping[str, str]) -> None:
        self.name = name
        self.client = client
        self.workspace = workspace
        self.inputs = inputs
        self.warnings: list[dict[str, Any]] = []

    def warn(self, fld: str, message: str) -> None:
        self.warnings.append(
            {"server": self.name, "field": fld, "message": f"server {self.name!r}: {fld}: {message}"}
        )

    def value(self, fld: str, value: Any) -> Any:
        if not isinstance(value, str) or "${" not in value:
            return value

        def sub(m: re.Match[str]) -> str:
            var = m.group(1)
            if var == "userHome":
                return str(Path.home())
            if var in ("workspaceFolder", "workspaceFolderBasename") and self.workspace is not None:
                return str(self.workspace) if var == "workspaceFolder" else self.workspace.name
            if var in ("pathSeparator", "/"):
                return os.sep
            if var in ("workspaceFolder", "workspaceFolderBasename"):
                self.warn(fld, f"${{{var}}}: this config has no workspace folder; replace it with a path")
                return m.group(0)
            if var.startswith("input:"):
                about = self.inputs.get(var[6:])
                self.warn(
                    fld,
                    f"${{{var}}}{f' ({about})' if about else ''} is asked "
                    f"for by {CLIENTS[self.client]} when the server starts; patchbay cannot ask: put the "
                    "value (or a ${VARIABLE} placeholder) there",
                )
            elif not _PATCHBAY_VAR.match(var):
                self.warn(
                    fld, f"${{{var}}} is a {CLIENTS[self.client]} variable patchbay does not know; replace it"
                )
            return m.group(0)

        return _VAR_RE.sub(sub, value)

    def entry(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        entry = dict(raw)
        for key in ("command", "cwd", "url"):
            if key in entry:
                entry[key] = self.value(key, entry[key])
        if isinstance(entry.get("args"), list):
            entry["args"] = [self.value(f"args[{i}]", a) for i, a in enumerate(entry["args"])]
        for key in ("env", "headers"):
            if isinstance(entry.get(key), dict):
                entry[key] = {k: self.value(f"{key}.{k}", v) for k, v in entry[key].items()}
        if "envFile" in entry:
            self.warn(
                "envFile",
                "patchbay does not read env files; set those variables in "
                "patchbay's environment or list them under 'env'",
            )
        url = entry.get("url")
        if "type" not in entry and isinstance(url, str) and urlsplit(url).path.rstrip("/").endswith("/sse"):
            entry["type"] = "sse"  # Cursor's url entries may be legacy SSE endpoints
            self.warn("url", "it ends in /sse, so it is imported as type 'sse' (legacy SSE transport)")
        return entry


def read_client_config(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The servers (by name) of a client's config file, and its VS Code input prompts (id → description)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CliError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: cannot read: {exc}") from None
    try:
        doc = json.loads(strip_jsonc(text)) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise CliError(f"{path}: the top level must be a JSON object, got {type(doc).__name__}")
    mcp_settings = doc.get("mcp")  # VS Code's settings.json keeps them under "mcp"
    holder: dict[str, Any] = (
        mcp_settings if isinstance(mcp_settings, dict) and "servers" in mcp_settings else doc
    )
    key = next((k for k in ("mcpServers", "servers") if k in holder), None)
    if key is None:
        raise CliError(f"{path}: no 'mcpServers' or 'servers' in this file; is it an MCP client's config?")
    servers = holder[key] or {}
    if not isinstance(servers, dict):
        raise CliError(f"{path}: '{key}' must be an object mapping server names to their settings")
    inputs: dict[str, str] = {}
    for item in holder.get("inputs") or doc.get("inputs") or []:
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            inputs[item["id"]] = str(item.get("description") or "")
    return servers, inputs
