"""The built-in OAuth authorization server (``auth.server``), for clients that connect only over OAuth:
Claude.ai and ChatGPT connectors, mcp-remote. The protocol is the MCP SDK's (``mcp.server.auth``); the
modules here decide and remember: settings, state at rest, client metadata documents, the provider, the
consent page, the token authenticator, the REST API and the wiring into the app."""
