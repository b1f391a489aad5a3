"""patchbay serve: the HTTP surfaces (``/mcp``, the management API, health and metrics) over one hub."""
