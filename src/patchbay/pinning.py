"""Tool-definition pinning: notice when a server changes a tool after you started using it.

Why: a tool's description and schema are text the model reads and obeys. A server (or whoever took over
its package) can change them later, for example to smuggle instructions in. Patchbay records each tool's
definition (description, input and output schema, annotations) with a SHA-256 digest the first time it
sees it, and compares every later listing against that pin:

- ``off``: nothing is recorded or checked;
- ``warn`` (the default): a change publishes a ``tool_changed`` event and shows as a status problem of the
  server, with the diff available from the API, until an admin approves it;
- ``block``: in addition, the changed tool is withheld from every listing and call until approved.

New tools are not changes: they are pinned as first seen. Pins are kept per server and original tool
name in a state file beside the config (``<config>.pins.json``), written atomically; a hub without a
config file keeps them in memory. A tool that disappears keeps its pin, so coming back changed is a
change too.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import mcp.types as types

from patchbay.catalog import Listing, safe_name
from patchbay.config import ToolOverride, atomic_write
from patchbay.errors import ConfigError, UnknownToolError
from patchbay.events import Event

log = logging.getLogger(__name__)

PinMode = Literal["off", "warn", "block"]
PIN_MODES: tuple[PinMode, ...] = ("off", "warn", "block")
DEFAULT_MODE: PinMode = "warn"
PINS_SUFFIX = ".pins.json"
FORMAT_VERSION = 1


def pinning_mode(document: dict[str, Any]) -> PinMode:
    """The top-level ``pinning`` key of a config document (kept by HubConfig as an unknown key)."""
    value = document.get("pinning", DEFAULT_MODE)
    if value not in PIN_MODES:
        raise ConfigError(
            f"pinning: {value!r} is not a pinning mode; use one of {', '.join(map(repr, PIN_MODES))}",
            field="pinning",
        )
    mode: PinMode = value
    return mode


def pins_path(config_path: Path | None) -> Path | None:
    """Where the pins of a config live: ``patchbay.json`` → ``patchbay.json.pins.json``.

    None (pins in memory) for no file, and for a config shipped inside the patchbay package (the bundled
    demo): the installed package is no place for state.
    """
    if config_path is None:
        return None
    package = Path(__file__).resolve().parent
    if config_path.resolve().is_relative_to(package):
        return None
    return config_path.with_name(config_path.name + PINS_SUFFIX)


def _shown(original: str, overrides: Mapping[str, ToolOverride] | None) -> str:
    """The tool's name as exposed (before the prefix): the override's, if the user renamed it."""
    override = overrides.get(original) if overrides else None
    return override.name if override is not None and override.name else original


def definition(tool: types.Tool) -> dict[str, Any]:
    """What is pinned of a tool: what the model reads and what shapes its calls."""
    return {
        "description": tool.description,
        "inputSchema": tool.input_schema,
        "outputSchema": tool.output_schema,
        "annotations": tool.annotations.model_dump(by_alias=True, exclude_none=True, mode="json")
        if tool.annotations
        else None,
    }


def digest(defn: dict[str, Any]) -> str:
    canonical = json.dumps(defn, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _pretty(defn: dict[str, Any]) -> list[str]:
    return json.dumps(defn, sort_keys=True, indent=2, ensure_ascii=False, default=str).splitlines()


class ToolChangedEvent(Event):
    """A tool's definition differs from its pin (``blocked``: it is withheld until approved)."""

    type: Literal["tool_changed"] = "tool_changed"
    server: str
    tool: str  # the exposed name
    original: str
    blocked: bool
    diff: str


class ToolApprovedEvent(Event):
    type: Literal["tool_approved"] = "tool_approved"
    server: str
    tool: str
    original: str


class ToolAwaitingApprovalError(UnknownToolError):
    """The tool's definition changed since it was pinned and pinning is ``block``: an admin must approve."""

    def __init__(self, change: ToolChange) -> None:
        super().__init__(change.name, [])
        self.change = change
        self.args = (
            f"tool {change.name!r} is withheld: server {change.server!r} changed its definition since it "
            f"was pinned, and it awaits approval (POST /api/tools/{change.name}/approve, "
            f"`patchbay tools approve {change.name}` or hub.approve_tool)",
        )


@dataclass(frozen=True)
class ToolChange:
    """A tool whose current definition differs from its pin."""

    server: str
    original: str
    name: str  # the exposed name it has (or would have)
    pinned: dict[str, Any]
    pinned_digest: str
    current: dict[str, Any]
    current_digest: str
    detected: float
    blocked: bool

    def diff(self) -> str:
        """A unified diff of the pinned and the current definition, as pretty JSON."""
        return "\n".join(
            difflib.unified_diff(
                _pretty(self.pinned), _pretty(self.current), "pinned", "current", lineterm="", n=2
            )
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "server": self.server,
            "tool": self.original,
            "blocked": self.blocked,
            "detected": self.detected,
            "pinnedDigest": self.pinned_digest,
            "currentDigest": self.current_digest,
            "pinned": self.pinned,
            "current": self.current,
            "diff": self.diff(),
        }


class PinStore:
    """The pins, ``{server: {tool: {"digest", "definition", "pinnedAt"}}}``, in a file or in memory."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.pins: dict[str, dict[str, dict[str, Any]]] = {}
        if path is not None and path.exists():
            self.pins = self._read(path)

    @staticmethod
    def _read(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            # Never silently start over: that would accept every changed tool as new.
            raise ConfigError(
                f"{path}: the tool pins cannot be read ({exc}); fix the file, or delete it to pin every "
                "tool afresh"
            ) from None
        servers = data.get("servers") if isinstance(data, dict) else None
        if not isinstance(servers, dict) or not all(isinstance(v, dict) for v in servers.values()):
            raise ConfigError(
                f"{path}: not a patchbay pins file (no 'servers' object); delete it to pin afresh"
            )
        return servers

    def get(self, server: str, tool: str) -> dict[str, Any] | None:
        return self.pins.get(server, {}).get(tool)

    def put(self, server: str, tool: str, defn: dict[str, Any], dig: str) -> None:
        self.pins.setdefault(server, {})[tool] = {"digest": dig, "definition": defn, "pinnedAt": time.time()}

    def approve(self, server: str, tool: str, defn: dict[str, Any], dig: str) -> None:
        """An approved definition replaces the pin (``put`` only pins tools seen for the first time)."""
        self.put(server, tool, defn, dig)

    def refresh(self) -> None:
        """Before a screen: nothing to re-read for pins kept here (cluster/pins.py reads Redis)."""

    def save(self) -> None:
        if self.path is None:
            return
        data = {"version": FORMAT_VERSION, "servers": self.pins}
        atomic_write(self.path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


class Pinning:
    """The hub's pin keeper: screens each listing before it reaches the catalog."""

    def __init__(self, mode: PinMode, path: Path | None) -> None:
        self.mode = mode
        self.store = PinStore(path) if mode != "off" else PinStore(None)
        self._changes: dict[tuple[str, str], ToolChange] = {}

    def screen(
        self,
        server: str,
        prefix: str,
        listing: Listing,
        overrides: Mapping[str, ToolOverride] | None = None,
    ) -> tuple[Listing, list[ToolChange]]:
        """Pin new tools, detect changed ones; returns the listing to catalog and the newly seen changes.

        In ``block`` mode the listing returned leaves out every changed tool. Pins are keyed by the
        upstream's own name and definition (what the server may change behind the user's back); the
        user's ``tools`` overrides only decide the exposed name a change is reported and approved under.
        """
        if self.mode == "off":
            return listing, []
        self.store.refresh()
        fresh: list[ToolChange] = []
        kept: list[types.Tool] = []
        dirty = False
        seen: set[str] = set()
        for tool in listing.tools:
            seen.add(tool.name)
            defn = definition(tool)
            dig = digest(defn)
            key = (server, tool.name)
            pin = self.store.get(server, tool.name)
            if pin is None:
                self.store.put(server, tool.name, defn, dig)
                dirty = True
            elif pin.get("digest") != dig:
                old = self._changes.get(key)
                if old is None or old.current_digest != dig:
                    change = ToolChange(
                        server=server,
                        original=tool.name,
                        name=safe_name(prefix, _shown(tool.name, overrides)),
                        pinned=pin.get("definition") or {},
                        pinned_digest=str(pin.get("digest")),
                        current=defn,
                        current_digest=dig,
                        detected=time.time(),
                        blocked=self.mode == "block",
                    )
                    self._changes[key] = change
                    fresh.append(change)
                    log.warning(
                        "%s: tool %r changed since it was pinned%s",
                        server,
                        tool.name,
                        "; withheld until approved" if self.mode == "block" else "",
                    )
                if self.mode == "block":
                    continue
            else:
                self._changes.pop(key, None)  # back to what was pinned
            kept.append(tool)
        # A change of a tool no longer listed is moot until it comes back. A server that merely stops keeps
        # its pending changes: the same change on its return is not news.
        for key in [k for k in self._changes if k[0] == server and k[1] not in seen]:
            del self._changes[key]
        if dirty:
            self._save()
        if len(kept) == len(listing.tools):
            return listing, fresh
        return replace(listing, tools=kept), fresh

    def change(self, name: str) -> ToolChange | None:
        """The pending change of the tool with this exposed (or ``server/original``) name."""
        for change in self._changes.values():
            if change.name == name or f"{change.server}/{change.original}" == name:
                return change
        return None

    def changes(self, server: str | None = None) -> list[ToolChange]:
        return [c for c in self._changes.values() if server is None or c.server == server]

    def approve(self, name: str) -> ToolChange:
        """Pin the current definition of a changed tool; raises ``UnknownToolError`` if none is pending."""
        change = self.change(name)
        if change is None:
            pending = [c.name for c in self._changes.values()]
            raise UnknownToolError(name, pending, kind="changed tool awaiting approval")
        self.store.approve(change.server, change.original, change.current, change.current_digest)
        del self._changes[(change.server, change.original)]
        self._save()
        return change

    def check_callable(self, name: str) -> None:
        """Raise the awaiting-approval error if ``name`` is withheld (only asked off the hot path)."""
        if self.mode != "block" or not self._changes:
            return
        change = self.change(name)
        if change is not None and change.blocked:
            raise ToolAwaitingApprovalError(change)

    def problems(self, server: str) -> list[str]:
        return [
            f"tool {c.original!r} changed since it was pinned"
            + (" and is withheld until approved" if c.blocked else "")
            + f" (see GET /api/tools/changes; approve: patchbay tools approve {c.name})"
            for c in self._changes.values()
            if c.server == server
        ]

    def _save(self) -> None:
        try:
            self.store.save()
        except OSError as exc:  # pins still hold in memory; the next save tries again
            log.error("could not save tool pins to %s: %s", self.store.path, exc)
