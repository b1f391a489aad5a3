"""The config file the commands work on: which file (``--config``, else ./patchbay.json, else the per-user
file, created from the bundled demo config on first use), reading it (or a new one), saving it, and showing
its servers in the shape the hub's API uses.

The bundled ``default_config.json`` lives in the installed package and is never written: runtime changes
(dashboard, API, CLI) go to the per-user file instead."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from patchbay.config import HubConfig, ServerSpec, atomic_write, load_config, save_config

log = logging.getLogger(__name__)

LOCAL_CONFIG = Path("patchbay.json")

REDACTED = "***"


def default_config_path() -> Path:
    """The bundled config (the demo server, so a first run shows real tools): only ever copied."""
    return Path(str(resources.files("patchbay").joinpath("default_config.json")))


def user_config_path() -> Path:
    """The per-user config file: ``$XDG_CONFIG_HOME/patchbay/patchbay.json`` (``~/.config`` by default) on
    Linux and other Unixes, ``~/Library/Application Support/patchbay/`` on macOS, ``%APPDATA%\\patchbay\\``
    on Windows."""
    if sys.platform == "win32":
        appdata = os.environ.get("APPDATA")
        base = Path(appdata) if appdata else Path.home() / "AppData" / "Roaming"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        xdg = os.environ.get("XDG_CONFIG_HOME", "")
        base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    return base / "patchbay" / "patchbay.json"


def ensure_user_config() -> tuple[Path, bool]:
    """The per-user config file, created from the bundled default if it does not exist yet; and whether it
    was created now."""
    path = user_config_path()
    if path.exists():
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, default_config_path().read_bytes())
    log.info("created %s from the bundled default config", path)
    return path, True


def config_path(args: argparse.Namespace, *, write: bool = False, create: bool = True) -> Path:
    """``--config``; else ./patchbay.json if it exists; else the per-user file (created from the bundled
    default unless ``create`` is false). ``write`` (``import``): ./patchbay.json, created if missing."""
    given: Path | None = getattr(args, "config", None)
    if given is not None:
        return given.expanduser()
    if write or LOCAL_CONFIG.exists():
        return LOCAL_CONFIG
    if not create:
        return user_config_path()
    path, created = ensure_user_config()
    if created:
        args.config_created = True
    return path


def describe_config(path: Path) -> str:
    """How a note names the file: the per-user one is said to be so (and that ./patchbay.json is not here)."""
    if path == user_config_path():
        return f"the per-user config {path} (no ./patchbay.json here)"
    return str(path)


def announce_config(args: argparse.Namespace, path: Path) -> None:
    """One line on stderr: which config file this command uses, and whether it was just created."""
    created = " (created from the bundled demo config)" if getattr(args, "config_created", False) else ""
    print(f"patchbay: config {describe_config(path)}{created}", file=sys.stderr, flush=True)


def load_or_new(path: Path) -> tuple[HubConfig, bool]:
    """The config at ``path``, or a new empty one (``mcpServers``) if the file does not exist yet."""
    if path.exists():
        return load_config(path), False
    return HubConfig(document={"mcpServers": {}}, path=path.absolute()), True


def save_new_or_existing(config: HubConfig) -> None:
    """Save atomically (creating the file's folder if needed); unknown keys of the file are kept."""
    if config.path is not None:
        config.path.parent.mkdir(parents=True, exist_ok=True)
    save_config(config)


def redacted(spec: ServerSpec) -> dict[str, Any]:
    """The entry as written, with every ``env`` and ``headers`` value hidden (as the API shows it)."""
    data = spec.to_json()
    for key in ("env", "headers"):
        if isinstance(data.get(key), dict):
            data[key] = dict.fromkeys(data[key], REDACTED)
    oauth = data.get("oauth")
    if isinstance(oauth, dict):
        data["oauth"] = {
            k: REDACTED if k in ("clientSecret", "privateKey") and v else v for k, v in oauth.items()
        }
    return data


def file_view(name: str, spec: ServerSpec) -> dict[str, Any]:
    """A server as the file has it, in the shape of the API's server view (live fields empty)."""
    return {
        "name": name,
        "state": None,
        "transport": spec.transport,
        "enabled": spec.is_enabled,
        "pid": None,
        "tool_count": None,
        "restarts": None,
        "last_error": None,
        "spec": redacted(spec),
    }


def spec_target(spec: Mapping[str, Any]) -> str:
    if spec.get("url"):
        return str(spec["url"])
    return " ".join([str(spec.get("command") or ""), *(str(a) for a in spec.get("args") or [])]).strip()
