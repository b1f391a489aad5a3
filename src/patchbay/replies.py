"""One table from hub errors to answers, and one ``tools/call`` reply builder, for every surface.

``/mcp`` (SDK handlers and the fast path), the dial-in agent, the REST API and the LLM helpers all turn
the same :class:`~patchbay.errors.PatchbayError` classes into answers. Written once here, so a model, an
MCP client and a REST caller are told the same thing for the same failure:

- ``tool_error``: a ``tools/call`` failure the model should read (the server is down, timed out or
  answered with an error) comes back as a ``CallToolResult`` with ``isError``, naming the server;
- otherwise (an unknown name, a bad request) it is a JSON-RPC error with ``jsonrpc_code``;
- ``http_status`` is the REST answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeGuard

import mcp.types as types
from mcp.shared.exceptions import MCPError

from patchbay.catalog import Catalog
from patchbay.errors import (
    CallTimeoutError,
    ClusterUnavailableError,
    ConfigConflictError,
    ConfigError,
    DuplicateServerError,
    NotOAuthServerError,
    OAuthError,
    PatchbayError,
    ServerUnavailableError,
    ToolNotInProfileError,
    UnknownProfileError,
    UnknownServerError,
    UnknownToolError,
    UpstreamError,
)
from patchbay.transports.base import MessageEncodeError

RESOURCE_NOT_FOUND = -32002
INTERNAL_MESSAGE = "internal error in patchbay; the hub's log has the details"


@dataclass(frozen=True)
class ErrorKind:
    """How one error class is answered on each surface."""

    name: str  # the REST ``error`` field
    jsonrpc_code: int  # for UpstreamError, the upstream's own code is used instead
    tool_error: bool  # a tools/call failure answered as an isError result, for the model to read
    http_status: int


# Most specific first: the first class that matches wins.
ERROR_TABLE: tuple[tuple[type[PatchbayError], ErrorKind], ...] = (
    (UnknownServerError, ErrorKind("unknown_server", types.INVALID_PARAMS, False, 404)),
    (UnknownProfileError, ErrorKind("unknown_profile", types.INVALID_PARAMS, False, 404)),
    (ToolNotInProfileError, ErrorKind("not_in_profile", types.INVALID_PARAMS, False, 404)),
    (UnknownToolError, ErrorKind("unknown_tool", types.INVALID_PARAMS, False, 404)),
    (DuplicateServerError, ErrorKind("duplicate_server", types.INVALID_PARAMS, False, 409)),
    (ConfigConflictError, ErrorKind("config_conflict", types.INTERNAL_ERROR, False, 409)),
    (ClusterUnavailableError, ErrorKind("cluster_unavailable", types.INTERNAL_ERROR, False, 503)),
    (ConfigError, ErrorKind("config", types.INVALID_PARAMS, False, 422)),
    (MessageEncodeError, ErrorKind("invalid_arguments", types.INVALID_PARAMS, False, 422)),
    (ServerUnavailableError, ErrorKind("unavailable", types.INTERNAL_ERROR, True, 503)),
    (CallTimeoutError, ErrorKind("timeout", types.REQUEST_TIMEOUT, True, 504)),
    (UpstreamError, ErrorKind("upstream_error", types.INTERNAL_ERROR, True, 502)),
    (NotOAuthServerError, ErrorKind("not_oauth", types.INVALID_PARAMS, False, 409)),
    (OAuthError, ErrorKind("oauth", types.INTERNAL_ERROR, True, 502)),  # refused or failed sign-in
    (PatchbayError, ErrorKind("error", types.INTERNAL_ERROR, True, 502)),
)


def error_kind(exc: PatchbayError) -> ErrorKind:
    for cls, kind in ERROR_TABLE:
        if isinstance(exc, cls):
            return kind
    return ERROR_TABLE[-1][1]  # pragma: no cover (PatchbayError matches everything)


def jsonrpc_code(exc: PatchbayError) -> int:
    """The JSON-RPC error code: the upstream's own, -32002 for an unknown resource, else the table's."""
    if isinstance(exc, UpstreamError):
        return exc.code
    if isinstance(exc, UnknownToolError) and exc.kind == "resource":
        return RESOURCE_NOT_FOUND
    return error_kind(exc).jsonrpc_code


def jsonrpc_error(exc: PatchbayError) -> dict[str, Any]:
    """The ``error`` member of a JSON-RPC response."""
    error: dict[str, Any] = {"code": jsonrpc_code(exc), "message": str(exc)}
    if isinstance(exc, UpstreamError) and exc.data is not None:
        error["data"] = exc.data
    return error


def mcp_error(exc: PatchbayError) -> MCPError:
    """The same, raised from an SDK handler."""
    return MCPError(jsonrpc_code(exc), str(exc), exc.data if isinstance(exc, UpstreamError) else None)


def tool_error_result(exc: PatchbayError | str) -> types.CallToolResult:
    """A failure the model reads: one text block naming the server, marked ``isError``."""
    return types.CallToolResult(content=[types.TextContent(type="text", text=str(exc))], is_error=True)


def call_result_json(result: types.CallToolResult) -> dict[str, Any]:
    """A ``CallToolResult`` as handshake-era JSON (no ``resultType``), as the SDK writes it."""
    data = result.model_dump(by_alias=True, exclude_none=True, mode="json")
    data.pop("resultType", None)
    return data


def call_outcome(result: types.CallToolResult | Exception) -> types.CallToolResult | MCPError:
    """What a ``tools/call`` answers: the result, a tool error result, or a JSON-RPC error to raise.

    An exception that is not a PatchbayError is a patchbay bug: a generic -32603, never its text."""
    if isinstance(result, types.CallToolResult):
        return result
    if not isinstance(result, PatchbayError):
        return MCPError(types.INTERNAL_ERROR, INTERNAL_MESSAGE)
    if error_kind(result).tool_error:
        return tool_error_result(result)
    return mcp_error(result)


def call_reply(rid: Any, outcome: types.CallToolResult | Exception) -> dict[str, Any]:
    """The whole JSON-RPC response to a ``tools/call`` with id ``rid`` (handshake-era shape)."""
    answer = call_outcome(outcome)
    if isinstance(answer, MCPError):
        error: dict[str, Any] = {"code": answer.code, "message": answer.message}
        if answer.data is not None:
            error["data"] = answer.data
        return {"jsonrpc": "2.0", "id": rid, "error": error}
    return {"jsonrpc": "2.0", "id": rid, "result": call_result_json(answer)}


def invalid_request(message: str) -> dict[str, Any]:
    """A JSON-RPC -32600 for a request that cannot be answered by id (``id: null``, as the SDK does)."""
    return {"jsonrpc": "2.0", "id": None, "error": {"code": types.INVALID_REQUEST, "message": message}}


def is_request_id(rid: Any) -> TypeGuard[str | int]:
    """MCP request ids are strings or integers (not null, bools, floats, arrays or objects)."""
    return type(rid) is str or type(rid) is int


def dumps(message: dict[str, Any]) -> str:
    """JSON text that encodes as UTF-8: lone surrogates (legal as JSON escapes, not in UTF-8) escaped."""
    text = json.dumps(message, ensure_ascii=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        return json.dumps(message)
    return text


def encode(message: dict[str, Any]) -> bytes:
    """UTF-8 JSON; lone surrogates (legal as JSON escapes, not in UTF-8) are sent escaped."""
    try:
        return json.dumps(message, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(message).encode()


def rest_error(exc: PatchbayError) -> tuple[dict[str, Any], int]:
    """The REST answer: ``({"detail", "error", ...}, status)`` (the API's ``ErrorBody`` shape)."""
    kind = error_kind(exc)
    body: dict[str, Any] = {"detail": str(exc), "error": kind.name}
    if isinstance(exc, UnknownServerError):
        body["server"] = exc.name
        body["suggestions"] = Catalog.suggest(exc.name, exc.known)
    elif isinstance(exc, ToolNotInProfileError):
        body["profile"] = exc.profile
        body["suggestions"] = exc.suggestions
    elif isinstance(exc, UnknownToolError):
        body["error"] = f"unknown_{exc.kind}"
        body["suggestions"] = exc.suggestions
    elif isinstance(exc, UnknownProfileError):
        body["suggestions"] = Catalog.suggest(exc.name, exc.known)
    elif isinstance(exc, DuplicateServerError):
        body["server"] = exc.name
    elif isinstance(exc, ConfigError):
        body["server"], body["field"] = exc.server, exc.field
    elif isinstance(exc, ServerUnavailableError | CallTimeoutError | OAuthError):
        body["server"] = exc.server
    elif isinstance(exc, UpstreamError):
        body["server"], body["code"], body["data"] = exc.server, exc.code, exc.data
    return {k: v for k, v in body.items() if v is not None}, kind.http_status
