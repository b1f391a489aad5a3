"""patchbay: one hub for all your MCP servers."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mcp-patchbay")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

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
from patchbay.supervisor import ServerState, ServerStatus

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
    "result_text",
]
