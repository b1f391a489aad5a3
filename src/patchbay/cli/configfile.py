"""The config file the management commands work on when no hub is running: which file, reading it (or a
new one), saving it, and showing its servers in the shape the hub's API uses."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from patchbay.config import HubConfig, ServerSpec, load_config, save_config

LOCAL_CONFIG = Path("patchbay.json")

REDACTED = "***"


def default_config_path() -> Path:
    """The bundled config: the demo server, so a first run shows real tools."""
    return Path(str(resources.files("patchbay").joinpath("default_config.json")))


def config_path(args: argparse.Namespace, *, write: bool = False) -> Path:
    """``--config``; else ./patchbay.json; reading with neither, the bundled demo config (as ``serve``)."""
    given: Path | None = getattr(args, "config", None)
    if given is not None:
        return given.expanduser()
    if write or LOCAL_CONFIG.exists():
        return LOCAL_CONFIG
    return default_config_path()


def describe_config(path: Path) -> str:
    if path == default_config_path():
        return "the bundled demo config (no ./patchbay.json here)"
    return str(path)


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
