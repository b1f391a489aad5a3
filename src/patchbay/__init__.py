"""patchbay: one hub for all your MCP servers."""

from typing import TYPE_CHECKING, Any

# Lazy: ``import patchbay`` (and so every CLI command) must not pay for the MCP SDK (~1.3 s) until a name
# that needs it is used. ``from patchbay import Hub`` works as before.
_EXPORTS = {
    "HubConfig": "patchbay.config",
    "ServerSpec": "patchbay.config",
    "load_config": "patchbay.config",
    "CallTimeoutError": "patchbay.errors",
    "ConfigError": "patchbay.errors",
    "DuplicateServerError": "patchbay.errors",
    "PatchbayError": "patchbay.errors",
    "ServerExitedError": "patchbay.errors",
    "ServerUnavailableError": "patchbay.errors",
    "UnknownServerError": "patchbay.errors",
    "UnknownToolError": "patchbay.errors",
    "UpstreamError": "patchbay.errors",
    "CatalogEvent": "patchbay.events",
    "ConfigEvent": "patchbay.events",
    "Event": "patchbay.events",
    "ServerStateEvent": "patchbay.events",
    "Hub": "patchbay.hub",
    "result_text": "patchbay.results",
    "mount": "patchbay.server.embed",
    "ServerState": "patchbay.supervisor",
    "ServerStatus": "patchbay.supervisor",
}

if TYPE_CHECKING:
    __version__: str
    from patchbay.config import HubConfig, ServerSpec, load_config
    from patchbay.errors import (
        CallTimeoutError,
        ConfigError,
        DuplicateServerError,
        PatchbayError,
        ServerExitedError,
        ServerUnavailableError,
        UnknownServerError,
        UnknownToolError,
        UpstreamError,
    )
    from patchbay.events import CatalogEvent, ConfigEvent, Event, ServerStateEvent
    from patchbay.hub import Hub
    from patchbay.results import result_text
    from patchbay.server.embed import mount
    from patchbay.supervisor import ServerState, ServerStatus


def _version() -> str:
    """The installed version; looked up on first use (``importlib.metadata`` costs ~50 ms to start)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mcp-patchbay")
    except PackageNotFoundError:  # running from a source tree without installing
        return "0.0.0"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        globals()[name] = value = _version()
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'patchbay' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "CallTimeoutError",
    "CatalogEvent",
    "ConfigError",
    "ConfigEvent",
    "DuplicateServerError",
    "Event",
    "Hub",
    "HubConfig",
    "PatchbayError",
    "ServerExitedError",
    "ServerSpec",
    "ServerState",
    "ServerStateEvent",
    "ServerStatus",
    "ServerUnavailableError",
    "UnknownServerError",
    "UnknownToolError",
    "UpstreamError",
    "__version__",
    "load_config",
    "mount",
    "result_text",
]
