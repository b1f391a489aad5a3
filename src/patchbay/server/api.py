"""The management API (mounted under ``/api``): servers, tools, resources, prompts and a live event stream.

A thin surface over :class:`~patchbay.hub.Hub`: every change goes through the hub, which validates before it
saves or starts anything, so a bad request changes nothing. Secrets never leave through this API: every
``env`` and ``headers`` value of a server's config entry is shown as ``"***"`` (the keys are kept). Sending
``"***"`` back for a key in ``PUT /servers/{name}`` keeps the stored value, so a GET-edit-PUT round trip
does not overwrite secrets with the placeholder.

Every error, the hub's own and the HTTP layer's alike, is one shape, :class:`ErrorBody`:
``{"detail": "<message>", "error": "<kind>", ...}``. 400 for a body that is not UTF-8, 404 for an unknown
server, tool or route (with close matches in ``suggestions``), 405 for a method a route does not have, 409
for a duplicate name, 415 for a body that is not JSON, 422 for an invalid request or config entry (the
message names the field), 503 when the server is not running, 504 on a call timeout, 502 when the upstream
answered with a JSON-RPC error, and 500 only for a bug (logged with its traceback).
"""

from __future__ import annotations

import asyncio
import email.message
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from typing import Annotated, Any
from urllib.parse import urlsplit

import anyio
import mcp.types as types
from fastapi import APIRouter, Body, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from patchbay import replies
from patchbay.access.roles import visible_event
from patchbay.audit import ClientInfo
from patchbay.catalog import Format
from patchbay.config import ServerSpec, error_message, field_path, redact_url
from patchbay.dialin import AgentStatus
from patchbay.errors import (
    ConfigError,
    PatchbayError,
    UnknownServerError,
)
from patchbay.events import Event, Subscription
from patchbay.hub import Hub
from patchbay.identity import Identity, identity_of
from patchbay.oauth.callback import CALLBACK_PATH
from patchbay.supervisor import ServerStatus

log = logging.getLogger(__name__)

REDACTED = "***"
SECRET_FIELDS = ("env", "headers")
OAUTH_SECRETS = ("clientSecret", "privateKey")  # in a server's ``oauth`` object
EVENT_PING_SECONDS = 15
SHUTDOWN_GRACE_SECONDS = 2.0  # for event streams to end on their own when the server stops

_SPEC_EXAMPLE: dict[str, Any] = {
    "command": "npx",
    "args": ["-y", "@modelcontextprotocol/server-github"],
    "env": {"GITHUB_TOKEN": "${GITHUB_TOKEN}"},
    "timeout": 30,
}
_STATUS_EXAMPLE: dict[str, Any] = {
    "name": "github",
    "state": "ready",
    "transport": "stdio",
    "enabled": True,
    "pid": 41235,
    "protocol_version": "2025-06-18",
    "server_info": {"name": "github-mcp-server", "version": "1.2.0"},
    "capabilities": {"tools": {"listChanged": True}},
    "tool_count": 26,
    "restarts": 0,
    "last_error": None,
    "ready_since": 1764050000.5,
    "calls_in_flight": 0,
    "conflicts": [],
    "problems": [],
    "stderr_tail": ["GitHub MCP Server running on stdio"],
    "spec": {**_SPEC_EXAMPLE, "env": {"GITHUB_TOKEN": REDACTED}},
}


ServerName = Annotated[
    str, Path(description="The server's name, as in the config file.", examples=["github"])
]

# --- models ---------------------------------------------------------------------------------------------


class ServerView(ServerStatus):
    """A server's live status plus its config entry, with secrets redacted."""

    model_config = ConfigDict(json_schema_extra={"examples": [_STATUS_EXAMPLE]})

    spec: dict[str, Any] = Field(
        description="The server's entry as written in the config file (camelCase keys, placeholders "
        f"unexpanded), with every `env` and `headers` value replaced by `{REDACTED}`."
    )


class AuthStartRequest(BaseModel):
    """Optional: where the authorization server should send the browser back."""

    model_config = ConfigDict(populate_by_name=True)

    redirect_uri: str | None = Field(
        default=None,
        alias="redirectUri",
        description="A loopback redirect URI of the caller's own (as `patchbay auth login` uses, which "
        "then posts the redirect's parameters to `/api/oauth/callback`); default: this hub's "
        "`/oauth/callback`.",
    )


class AuthStart(BaseModel):
    """Where to sign in."""

    server: str
    url: str = Field(description="The authorization URL to open in a browser ('' for client credentials).")


def check_redirect_uri(uri: str) -> None:
    """Loopback http or https only, as the MCP authorization spec wants of redirect URIs."""
    parts = urlsplit(uri)
    loopback = parts.scheme == "http" and (parts.hostname or "") in ("127.0.0.1", "::1", "localhost")
    if not (loopback or (parts.scheme == "https" and parts.hostname)) or parts.fragment:
        raise ConfigError(
            f"redirectUri: {uri!r} must be an https:// URL or http:// on a loopback address (no fragment)",
            field="redirectUri",
        )


def callback_url(request: Request) -> str:
    """This hub's redirect URI as the client reached it (``localhost`` as 127.0.0.1, RFC 8252 8.3), under
    the prefix a host app mounted patchbay at (``root_path``; ``base_url`` would give the host's root)."""
    url = request.url
    base = f"{url.scheme}://{url.netloc}{request.scope.get('root_path', '')}".rstrip("/")
    return base.replace("://localhost:", "://127.0.0.1:", 1) + CALLBACK_PATH


class AddAgentRequest(BaseModel):
    """A remote agent the hub will accept. The token is stored only as its SHA-256 and never shown back."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "laptop", "token": "a-long-random-secret"}]}
    )

    name: str = Field(description="The agent's name: its tools are exposed as `<name>__<tool>`.")
    token: str = Field(min_length=16, description="The bearer token the agent will present (16+ characters).")


class AddServerRequest(BaseModel):
    """A new server: its name and its config entry (the same shape as in the config file)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "github", "spec": _SPEC_EXAMPLE}]})

    name: str = Field(description="1-64 letters, digits, `_`, `-` or `.`; also the default tool prefix.")
    spec: ServerSpec = Field(description="The config entry: `command`/`args`/`env` or `url`/`headers`, …")


class CallToolRequest(BaseModel):
    """Arguments of one tool call."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,  # a timeout of 1e999 (infinity) is refused, not taken as "forever"
        json_schema_extra={"examples": [{"arguments": {"text": "hello"}, "timeout": 10}]},
    )

    arguments: dict[str, Any] = Field(
        default_factory=dict, description="The tool's arguments, as described by its input schema."
    )
    timeout: float | None = Field(
        default=None,
        gt=0,
        description="Seconds to wait for the answer (default: the server's `timeout`, else the hub's).",
    )


class GetPromptRequest(BaseModel):
    """Arguments of one prompt."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"arguments": {"topic": "x"}}]})

    arguments: dict[str, str] = Field(default_factory=dict, description="The prompt's arguments.")


class ErrorBody(BaseModel):
    """Every error of this API: a message saying what went wrong and what to do, plus machine fields."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": "unknown tool 'github__serch'; did you mean 'github__search'?",
                    "error": "unknown_tool",
                    "suggestions": ["github__search"],
                }
            ]
        }
    )

    detail: str = Field(description="Human-readable message.")
    error: str = Field(
        description="Kind: unknown_server, unknown_tool, duplicate_server, config (an invalid config entry), "
        "invalid_request (a parameter or body field; see `field`), invalid_json, unsupported_media_type, "
        "not_found (no such route), method_not_allowed, unauthorized, forbidden, misdirected (Host not "
        "allowed), unavailable, timeout, upstream_error, internal_error or error."
    )
    server: str | None = Field(default=None, description="The server concerned, if any.")
    field: str | None = Field(default=None, description="For config errors: the field to fix.")
    suggestions: list[str] | None = Field(default=None, description="Close matches for an unknown name.")
    code: int | None = Field(default=None, description="For upstream errors: the JSON-RPC error code.")
    data: Any = Field(default=None, description="For upstream errors: the JSON-RPC error data.")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        404: "Unknown server or tool (see `suggestions`).",
        409: "A server of that name already exists (or, for sign-in: it is not a remote server).",
        422: "Invalid request or config entry; the message names the field to fix.",
        502: "The upstream server answered with a JSON-RPC error (`code`, `detail`), or its authorization "
        "server refused the sign-in (`error: oauth`).",
        503: "The server is not running (starting, restarting, failed or disabled).",
        504: "The upstream did not answer in time; a cancellation was sent to it.",
    }
    return {c: {"model": ErrorBody, "description": descriptions[c]} for c in codes}


# What any route may answer besides its own errors; added to every operation of the OpenAPI document.
COMMON_ERRORS: dict[str, str] = {
    "401": "Missing or invalid bearer token (when the hub has tokens).",
    "403": "The token's role may not use this route (the message names the role it needs), or the "
    "request's Origin is not allowed (DNS-rebinding protection).",
    "405": "The route does not have this method (`Allow` lists the ones it has).",
    "421": "The request's Host is not allowed (DNS-rebinding protection).",
    "500": "A bug in patchbay (logged with its traceback); never an expected answer.",
}
BODY_ERRORS: dict[str, str] = {
    "400": "The body is not valid UTF-8.",
    "415": "The body is not sent as JSON (`Content-Type: application/json`).",
    "422": "Invalid JSON or an invalid field; the message and `field` name it.",
}
PARAM_ERRORS: dict[str, str] = {"422": "An invalid parameter; the message and `field` name it."}


# --- errors ---------------------------------------------------------------------------------------------


def error_response(exc: PatchbayError) -> JSONResponse:
    """The HTTP answer for a hub error: the status and body come from the one table in ``replies``."""
    body, status = replies.rest_error(exc)
    return JSONResponse(body, status_code=status, headers=replies.rest_headers(exc))


def error_json(
    status: int, error: str, detail: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """An :class:`ErrorBody` answer."""
    body = ErrorBody(detail=detail, error=error, **extra)
    return JSONResponse(body.model_dump(exclude_none=True, mode="json"), status_code=status, headers=headers)


# Routes whose body (or a key of it) is a server's config entry: their validation errors are config
# errors naming the server, as a bad entry in the file would be.
_SPEC_BODIES: dict[tuple[str, str], tuple[str, ...]] = {
    ("POST", "/servers"): ("spec",),
    ("PUT", "/servers/{name}"): (),
}


def _content_type_is_json(request: Request) -> bool | None:
    """None when no Content-Type was sent."""
    value = request.headers.get("content-type")
    if not value:
        return None
    message = email.message.Message()
    message["content-type"] = value
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def validation_response(
    request: Request, errors: Sequence[Any], body: Any, route_path: str = ""
) -> JSONResponse:
    """FastAPI's request validation errors as one :class:`ErrorBody` whose message names the field."""
    first: Mapping[str, Any] = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        pos = first["loc"][1] if len(first["loc"]) > 1 else 0
        why = (first.get("ctx") or {}).get("error", "JSON decode error")
        return error_json(
            422, "invalid_json", f"the request body is not valid JSON: {why} (at character {pos})"
        )
    if isinstance(body, bytes | bytearray) and _content_type_is_json(request) is not True:
        sent = request.headers.get("content-type") or "none"
        return error_json(
            415,
            "unsupported_media_type",
            f"send the body as JSON with 'Content-Type: application/json' (got Content-Type: {sent})",
        )
    spec_at = next(
        (at for (m, p), at in _SPEC_BODIES.items() if request.method == m and route_path.endswith(p)), None
    )
    server = None
    if spec_at is not None:
        server = request.path_params.get("name") if not spec_at else None
        if server is None and isinstance(body, dict) and isinstance(body.get("name"), str):
            server = body["name"]
    parts: list[str] = []
    fields: list[str] = []
    in_spec = False
    for err in errors:
        loc = tuple(err.get("loc", ()))
        where, rest = (loc[0], loc[1:]) if loc else ("body", ())
        if where == "body" and spec_at is not None and rest[: len(spec_at)] == spec_at and server:
            in_spec = True
            fld = field_path(rest[len(spec_at) :])
            prefix = f"server {server!r}: "
        elif where in ("query", "path", "header", "cookie"):
            fld = field_path(rest)
            prefix = f"{where} parameter {fld!r}: " if fld else ""
            parts.append(f"{prefix}{error_message(err)}")
            fields.append(fld)
            continue
        else:
            fld = field_path(rest)
            prefix = ""
        fields.append(fld)
        parts.append(f"{prefix}{fld + ': ' if fld else ''}{error_message(err)}")
    detail = "; ".join(parts) or "invalid request"
    if in_spec:
        return error_json(422, "config", detail, server=server, field=fields[0] or None)
    return error_json(422, "invalid_request", detail, field=fields[0] if fields and fields[0] else None)


def http_error_response(exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's and FastAPI's own HTTP errors (no such route, wrong method, unreadable body)."""
    status = exc.status_code
    headers = dict(exc.headers) if exc.headers else None
    if status == 404:
        return error_json(404, "not_found", "no such route; see /docs for the API", headers)
    if status == 405:
        allow = (headers or {}).get("Allow") or (headers or {}).get("allow")
        hint = f"; this route accepts {allow}" if allow else ""
        return error_json(405, "method_not_allowed", f"method not allowed{hint}", headers)
    if status == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
        return error_json(
            400, "invalid_request", "the request body is not valid UTF-8; send JSON encoded as UTF-8"
        )
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    return error_json(status, "error", detail, headers)


class _HubErrorRoute(APIRoute):
    """Turns the hub's typed errors and request validation errors into :class:`ErrorBody` answers (routers
    cannot register exception handlers, and here the route's path is known)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        path = self.path

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except PatchbayError as exc:
                return error_response(exc)
            except RequestValidationError as exc:
                return validation_response(request, exc.errors(), exc.body, path)
            except StarletteHTTPException as exc:
                return http_error_response(exc)

        return route


def install_error_handlers(app: FastAPI) -> None:
    """Make every error of ``app`` an :class:`ErrorBody`: unknown routes, wrong methods, validation errors
    outside the API router, and, as a last resort, a bug (500, its traceback logged)."""

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return http_error_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        route = request.scope.get("route")
        return validation_response(request, exc.errors(), exc.body, getattr(route, "path", ""))

    async def on_hub_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PatchbayError)  # outside the API router: e.g. the authorization server's
        return error_response(exc)  # routes when its state in Redis cannot be reached (503)

    async def on_bug(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_json(
            500, "internal_error", "internal error in patchbay (logged on the hub); please report it"
        )

    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(PatchbayError, on_hub_error)
    app.add_exception_handler(Exception, on_bug)


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare in an OpenAPI document what every operation may answer, all as :class:`ErrorBody`: FastAPI's
    own 422 (``HTTPValidationError``, a shape this API never sends) is replaced."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ErrorBody", ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}"))
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for item in schema.get("paths", {}).values():
        for op in item.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses: dict[str, Any] = op["responses"]
            extra = dict(COMMON_ERRORS)
            if op.get("parameters"):
                extra.update(PARAM_ERRORS)
            if "requestBody" in op:
                extra.update(BODY_ERRORS)
            for code, description in extra.items():
                current = responses.get(code)
                if current is None or "HTTPValidationError" in json.dumps(current):
                    responses[code] = {"description": description, "content": ref}
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    return schema


# --- secrets --------------------------------------------------------------------------------------------


def redact_spec(spec: ServerSpec) -> dict[str, Any]:
    """The config entry as JSON with every ``env`` and ``headers`` value replaced by ``"***"``, and the
    password of a ``proxy`` URL masked."""
    data = spec.to_json()
    for key in SECRET_FIELDS:
        values = data.get(key)
        if isinstance(values, dict):
            data[key] = dict.fromkeys(values, REDACTED)
    if isinstance(data.get("proxy"), str):
        data["proxy"] = redact_url(data["proxy"])
    oauth = data.get("oauth")
    if isinstance(oauth, dict):
        data["oauth"] = {k: REDACTED if k in OAUTH_SECRETS and v else v for k, v in oauth.items()}
    return data


def _restore_oauth_secrets(name: str, spec: ServerSpec, old: ServerSpec | None) -> ServerSpec:
    """The ``oauth`` secrets sent back as ``"***"`` replaced by the stored ones (or refused)."""
    extra = spec.model_extra or {}
    oauth = extra.get("oauth")
    if not isinstance(oauth, dict) or REDACTED not in oauth.values():
        return spec
    stored = (old.model_extra or {}).get("oauth") if old is not None else None
    stored = stored if isinstance(stored, dict) else {}
    restored = dict(oauth)
    for key, value in oauth.items():
        if value != REDACTED:
            continue
        if key not in stored:
            raise ConfigError(
                f"server {name!r}: oauth.{key}: {REDACTED!r} is the placeholder this API shows instead of "
                "secrets and there is no stored value to keep; give the real value (or a ${VARIABLE})",
                server=name,
                field=f"oauth.{key}",
            )
        restored[key] = stored[key]
    data = spec.to_json()
    data["oauth"] = restored
    return ServerSpec.model_validate(data)


def _restore_secrets(name: str, spec: ServerSpec, old: ServerSpec | None) -> ServerSpec:
    """Put back the stored value of every secret sent as ``"***"``; refuse a ``"***"`` with none to keep."""
    updates: dict[str, dict[str, str]] = {}
    for key in SECRET_FIELDS:
        values: dict[str, str] = getattr(spec, key)
        if REDACTED not in values.values():
            continue
        stored: dict[str, str] = getattr(old, key) if old is not None else {}
        for var, value in values.items():
            if value == REDACTED and var not in stored:
                raise ConfigError(
                    f"server {name!r}: {key}.{var}: {REDACTED!r} is the placeholder this API shows instead "
                    f"of secrets and there is no stored value to keep; give the real value (or a "
                    f"${{VARIABLE}} placeholder)",
                    server=name,
                    field=f"{key}.{var}",
                )
        updates[key] = {var: stored[var] if value == REDACTED else value for var, value in values.items()}
    proxy: dict[str, Any] = {}
    if (
        spec.proxy is not None
        and old is not None
        and old.proxy is not None
        and spec.proxy == redact_url(old.proxy)
    ):
        proxy["proxy"] = old.proxy  # the masked URL this API showed: keep the stored one
    result = spec.model_copy(update=updates) if updates else spec
    result = result.model_copy(update=proxy) if proxy else result
    return _restore_oauth_secrets(name, result, old)


# --- the router -----------------------------------------------------------------------------------------


def build_api(hub: Hub) -> APIRouter:
    """The management API over ``hub``.

    Mount it with ``app.include_router(build_api(hub), prefix="/api")``.
    """
    router = APIRouter(route_class=_HubErrorRoute)

    def view(status: ServerStatus, caller: Identity) -> ServerView:
        if not caller.allows("admin"):  # config entries and stderr are the admin's (they may hold secrets)
            return ServerView(**status.model_dump(exclude={"stderr_tail"}), spec={})
        return ServerView(**status.model_dump(), spec=redact_spec(hub.server_spec(status.name)))

    def visible(caller: Identity, source: str) -> bool:
        """A profile-bound caller sees only its profile's servers."""
        return caller.profile is None or hub.profile(caller.profile).admits_source(source)

    # --- the caller ----------------------------------------------------------------------------------

    @router.get(
        "/whoami",
        tags=["access"],
        summary="Who is asking",
        description="The identity of this request's token: `name`, `role` (`admin`, `user` or `viewer`), "
        "the `profile` it is bound to (or null) and its `kind`. The dashboard shows management controls "
        "only to an admin. Never a token.",
    )
    async def whoami(request: Request) -> dict[str, str | None]:
        caller = identity_of(request.scope)
        return {"name": caller.name, "role": caller.role, "profile": caller.profile, "kind": caller.kind}

    # --- servers -------------------------------------------------------------------------------------

    @router.get(
        "/servers",
        tags=["servers"],
        summary="List servers",
        description="Every configured server in config order: live status and its (redacted) config entry "
        "(for a non-admin token: status only, `spec` empty).",
    )
    async def list_servers(request: Request) -> list[ServerView]:
        caller = identity_of(request.scope)
        return [view(s, caller) for s in hub.status().values() if visible(caller, s.name)]

    @router.get(
        "/servers/{name}",
        tags=["servers"],
        summary="Get one server",
        description="Live status (state, pid, capabilities, counts, last error, stderr tail) and the "
        "(redacted) config entry.",
        responses=_errors(404),
    )
    async def get_server(
        request: Request,
        name: ServerName,
        tail: Annotated[
            int, Query(ge=0, le=200, description="How many of the last stderr lines to show.")
        ] = 50,
    ) -> ServerView:
        caller = identity_of(request.scope)
        if not visible(caller, name):
            raise UnknownServerError(name, [n for n in hub.status() if visible(caller, n)])
        status = hub.server_status(name)
        status.stderr_tail = _stderr_tail(hub, name, tail)
        return view(status, caller)

    @router.post(
        "/servers",
        tags=["servers"],
        status_code=201,
        summary="Add a server",
        description="Validate the entry, save it to the config file, then start the server (if enabled) and "
        "wait for its first attempt to settle. The answer is its status: `ready`, or `backoff`/`failed` with "
        "`last_error`. Nothing is saved if the name or the entry is invalid.",
        responses=_errors(409, 422),
    )
    async def add_server(request: Request, response: Response, body: AddServerRequest) -> ServerView:
        spec = _restore_secrets(body.name, body.spec, None)
        status = await hub.add_server(body.name, spec)
        response.headers["Location"] = str(request.url_for("get_server", name=body.name))
        return view(status, identity_of(request.scope))

    @router.put(
        "/servers/{name}",
        tags=["servers"],
        summary="Replace a server's config entry",
        description="Validate and save the new entry, then restart the server with it. An `env` or "
        f"`headers` value of `{REDACTED}` keeps the stored value (so what `GET` returned can be sent back).",
        responses=_errors(404, 422),
    )
    async def update_server(
        request: Request,
        name: ServerName,
        spec: Annotated[
            ServerSpec, Body(description="The whole new config entry.", examples=[_SPEC_EXAMPLE])
        ],
    ) -> ServerView:
        spec = _restore_secrets(name, spec, hub.server_spec(name))
        return view(await hub.update_server(name, spec), identity_of(request.scope))

    @router.delete(
        "/servers/{name}",
        tags=["servers"],
        status_code=204,
        summary="Remove a server",
        description="Remove the entry from the config file and stop the server (its whole process group).",
        responses=_errors(404),
    )
    async def remove_server(name: ServerName) -> Response:
        await hub.remove_server(name)
        return Response(status_code=204)

    @router.post(
        "/servers/{name}/enable",
        tags=["servers"],
        summary="Enable a server",
        description="Save `enabled` and start the server if it is not running.",
        responses=_errors(404),
    )
    async def enable_server(request: Request, name: ServerName) -> ServerView:
        return view(await hub.set_enabled(name, True), identity_of(request.scope))

    @router.post(
        "/servers/{name}/disable",
        tags=["servers"],
        summary="Disable a server",
        description="Save `enabled: false` (or `disabled: true`, as the file had it) and stop the server.",
        responses=_errors(404),
    )
    async def disable_server(request: Request, name: ServerName) -> ServerView:
        return view(await hub.set_enabled(name, False), identity_of(request.scope))

    @router.post(
        "/servers/{name}/restart",
        tags=["servers"],
        summary="Restart a server",
        description="Stop and start again now with the failure count reset (also revives a `failed` "
        "server). 503 if the server is disabled.",
        responses=_errors(404, 503),
    )
    async def restart_server(request: Request, name: ServerName) -> ServerView:
        return view(await hub.restart_server(name), identity_of(request.scope))

    # --- signing in (OAuth) -------------------------------------------------------------------------

    @router.post(
        "/servers/{name}/auth",
        tags=["servers"],
        summary="Start signing in to a server",
        description="Discover how the server signs in (RFC 9728, RFC 8414), register patchbay if needed, "
        "and return the authorization URL to open in a browser. The redirect comes back to this hub's "
        "`/oauth/callback`; once tokens are stored a server in `needs_auth` starts. For a "
        "`client_credentials` server the token is fetched at once and `url` is empty.",
        responses=_errors(404, 409, 502),
    )
    async def start_sign_in(
        request: Request, name: ServerName, body: Annotated[AuthStartRequest | None, Body()] = None
    ) -> AuthStart:
        redirect = callback_url(request)
        if body is not None and body.redirect_uri:
            check_redirect_uri(body.redirect_uri)
            redirect = body.redirect_uri
        return AuthStart(server=name, url=await hub.sign_in(name, redirect_uri=redirect))

    @router.post(
        "/oauth/callback",
        tags=["servers"],
        summary="Finish a sign-in whose redirect reached someone else",
        description="The query parameters of the authorization redirect (`code`, `state`, `iss`, or "
        "`error`), as a JSON object. `patchbay auth login` sends them here from its own loopback "
        "listener, so a sign-in works with a hub whose `/oauth/callback` the browser cannot reach.",
        responses=_errors(502),
    )
    async def finish_sign_in(params: Annotated[dict[str, str], Body()]) -> dict[str, str]:
        return {"server": await hub.oauth.complete(params)}

    @router.get(
        "/servers/{name}/auth",
        tags=["servers"],
        summary="A server's sign-in status",
        description="Signed in or not, issuer, granted scope, expiry, whether it can refresh. Never a token.",
        responses=_errors(404, 409),
    )
    async def sign_in_status(name: ServerName) -> dict[str, Any]:
        return hub.auth_status(name)

    @router.delete(
        "/servers/{name}/auth",
        tags=["servers"],
        status_code=204,
        summary="Sign out of a server",
        description="Revoke the server's tokens where its authorization server supports RFC 7009 and "
        "delete them; a running server then waits in `needs_auth`.",
        responses=_errors(404, 409),
    )
    async def sign_out(name: ServerName) -> Response:
        await hub.sign_out(name)
        return Response(status_code=204)

    # per-user sign-in ("credentials": "perUser"): the caller signs in for itself, never for anyone else

    @router.post(
        "/servers/{name}/sign-in",
        tags=["servers"],
        summary="Sign yourself in to a per-user server",
        description='For a server with `"credentials": "perUser"`: start the sign-in of the identity '
        "making this request (its bearer token or OAuth subject) and return the authorization URL. The "
        "tokens are stored for that identity only, and its calls use them; 409 for a shared server.",
        responses=_errors(404, 409, 502),
    )
    async def start_user_sign_in(request: Request, name: ServerName) -> AuthStart:
        caller = identity_of(request.scope)
        return AuthStart(
            server=name, url=await hub.sign_in_user(name, caller, redirect_uri=callback_url(request))
        )

    @router.get(
        "/servers/{name}/sign-in",
        tags=["servers"],
        summary="Your own sign-in status for a per-user server",
        description="Whether the identity making this request is signed in, issuer, scope, expiry. "
        "Never a token.",
        responses=_errors(404, 409),
    )
    async def user_sign_in_status(request: Request, name: ServerName) -> dict[str, Any]:
        return hub.user_auth_status(name, identity_of(request.scope))

    @router.delete(
        "/servers/{name}/sign-in",
        tags=["servers"],
        status_code=204,
        summary="Sign yourself out of a per-user server",
        description="Revoke and delete the tokens of the identity making this request, and close its "
        "upstream connection; other identities stay signed in.",
        responses=_errors(404, 409),
    )
    async def user_sign_out(request: Request, name: ServerName) -> Response:
        await hub.sign_out_user(name, identity_of(request.scope))
        return Response(status_code=204)

    # --- agents --------------------------------------------------------------------------------------

    @router.get(
        "/agents",
        tags=["agents"],
        summary="List agents",
        description="Every agent the hub accepts: connected or not, address, connected since, protocol "
        "version, tool count, calls in flight. Tokens are never shown.",
    )
    async def list_agents(request: Request) -> list[AgentStatus]:
        caller = identity_of(request.scope)
        return [a for n, a in hub.agents().items() if visible(caller, n)]

    @router.post(
        "/agents",
        tags=["agents"],
        status_code=201,
        summary="Accept a new agent",
        description="Save the agent (its token only as a SHA-256 digest). The agent can then dial in to "
        "`/agents` with `Authorization: Bearer <token>`.",
        responses=_errors(409, 422),
    )
    async def add_agent(body: AddAgentRequest) -> AgentStatus:
        return await hub.add_agent(body.name, body.token)

    @router.delete(
        "/agents/{name}",
        tags=["agents"],
        status_code=204,
        summary="Revoke an agent",
        description="Remove the agent: its token stops working and its live connection is closed.",
        responses=_errors(404),
    )
    async def revoke_agent(name: ServerName) -> Response:
        await hub.revoke_agent(name)
        return Response(status_code=204)

    # --- tools, resources, prompts -------------------------------------------------------------------

    @router.get(
        "/tools",
        tags=["tools"],
        summary="List tools",
        description="Every exposed tool (prefixed names), as MCP `Tool` objects or in the OpenAI or "
        "Anthropic tool format, ready to hand to an LLM API. While the servers' first start is in "
        "progress, the answer waits for it (each server bounded by its `startTimeout`).",
        responses=_errors(404),
    )
    async def list_tools(
        format: Annotated[Format, Query(description="`mcp`, `openai` or `anthropic`.")] = "mcp",
        server: Annotated[str | None, Query(description="Only the tools of this server.")] = None,
        profile: Annotated[str | None, Query(description="Only the tools of this profile.")] = None,
    ) -> list[dict[str, Any]]:
        # the first start settled (each server within its startTimeout): a complete list, not an
        # empty one a client may keep
        await hub.wait_started()
        return hub.tools(format, server=server, profile=profile)

    @router.post(
        "/tools/{name:path}/call",
        tags=["tools"],
        summary="Call a tool",
        description="Call an exposed tool and return the upstream's `CallToolResult` as MCP JSON. A tool "
        "that fails on its own answers 200 with `isError: true`; the hub's own failures are HTTP errors. "
        "With `profile`, through that profile: a tool outside it is refused (404 `not_in_profile`), and a "
        "search profile also answers its meta-tools `search_tools` and `call_tool`.",
        response_model=None,
        responses={
            200: {
                "model": types.CallToolResult,
                "description": "The tool's result (MCP `CallToolResult`, camelCase).",
                "content": {
                    "application/json": {
                        "example": {"content": [{"type": "text", "text": "hello"}], "isError": False}
                    }
                },
            },
            **_errors(404, 502, 503, 504),
        },
    )
    async def call_tool(
        name: Annotated[
            str, Path(description="The exposed (prefixed) tool name.", examples=["github__search"])
        ],
        request: Request,
        body: Annotated[CallToolRequest | None, Body()] = None,
        profile: Annotated[str | None, Query(description="Call through this profile.")] = None,
    ) -> JSONResponse:
        body = body or CallToolRequest()
        try:
            result = await hub.call_tool(
                name,
                body.arguments,
                timeout=body.timeout,
                profile=profile,
                caller=identity_of(request.scope),
                client_info=rest_client(request),
            )
        except PatchbayError as exc:  # the status from the one error table every surface shares
            return error_response(exc)
        return JSONResponse(result.model_dump(by_alias=True, exclude_none=True, mode="json"))

    @router.get(
        "/resources",
        tags=["resources"],
        summary="List resources",
        description="Every exposed resource (MCP `Resource` objects, names prefixed).",
    )
    async def list_resources(request: Request) -> list[dict[str, Any]]:
        # the first start settled (each server within its startTimeout): a complete list, not an
        # empty one a client may keep
        await hub.wait_started()
        caller = identity_of(request.scope)
        entries = [e for e in hub.catalog.resources.values() if visible(caller, e.source)]
        return [_mcp_json(e.resource.model_copy(update={"name": e.name})) for e in entries]

    @router.get(
        "/resources/read",
        tags=["resources"],
        summary="Read a resource",
        description="Read one resource (or a URI matching a resource template) from the server that "
        "exposes it; the answer is the upstream's `ReadResourceResult` as MCP JSON.",
        response_model=None,
        responses={
            200: {"model": types.ReadResourceResult, "description": "The contents (camelCase)."},
            **_errors(404, 502, 503, 504),
        },
    )
    async def read_resource(
        request: Request,
        uri: Annotated[str, Query(min_length=1, description="The resource's URI, as listed.")],
    ) -> JSONResponse:
        result = await hub.read_resource(uri, caller=identity_of(request.scope))
        return JSONResponse(_mcp_json(result))

    @router.get(
        "/resources/templates",
        tags=["resources"],
        summary="List resource templates",
        description="Every exposed resource template (MCP `ResourceTemplate` objects, names prefixed).",
    )
    async def list_resource_templates(request: Request) -> list[dict[str, Any]]:
        # the first start settled (each server within its startTimeout): a complete list, not an
        # empty one a client may keep
        await hub.wait_started()
        caller = identity_of(request.scope)
        entries = [t for t in hub.catalog.templates if visible(caller, t.source)]
        return [_mcp_json(t.template.model_copy(update={"name": t.name})) for t in entries]

    @router.get(
        "/prompts",
        tags=["prompts"],
        summary="List prompts",
        description="Every exposed prompt (MCP `Prompt` objects, names prefixed).",
    )
    async def list_prompts(request: Request) -> list[dict[str, Any]]:
        # the first start settled (each server within its startTimeout): a complete list, not an
        # empty one a client may keep
        await hub.wait_started()
        caller = identity_of(request.scope)
        entries = [e for e in hub.catalog.prompts.values() if visible(caller, e.source)]
        return [_mcp_json(e.prompt.model_copy(update={"name": e.name})) for e in entries]

    @router.post(
        "/prompts/{name:path}/get",
        tags=["prompts"],
        summary="Get a prompt",
        description="Render an exposed (prefixed) prompt with its arguments; the answer is the upstream's "
        "`GetPromptResult` as MCP JSON.",
        response_model=None,
        responses={
            200: {"model": types.GetPromptResult, "description": "The prompt's messages (camelCase)."},
            **_errors(404, 502, 503, 504),
        },
    )
    async def get_prompt(
        request: Request,
        name: Annotated[str, Path(description="The exposed (prefixed) prompt name.")],
        body: Annotated[GetPromptRequest | None, Body()] = None,
    ) -> JSONResponse:
        body = body or GetPromptRequest()
        result = await hub.get_prompt(name, body.arguments, caller=identity_of(request.scope))
        return JSONResponse(_mcp_json(result))

    # --- events --------------------------------------------------------------------------------------

    @router.get(
        "/events",
        tags=["events"],
        summary="Stream hub events",
        description="Server-Sent Events, from the moment of the request on: `server_state`, `catalog`, "
        "`config`, `config_reload`, and `events_dropped` when this reader fell behind. Each event is "
        "`event: <type>` and `data: <JSON>`; a comment line is sent every "
        f"{EVENT_PING_SECONDS} s to keep proxies from closing an idle stream.",
        response_class=EventSourceResponse,
        responses={
            200: {
                "description": "An endless `text/event-stream`.",
                "content": {
                    "text/event-stream": {
                        "example": 'event: server_state\r\ndata: {"type":"server_state","time":1764050000.5,'
                        '"server":"github","state":"disabled","previous":"ready","error":null}\r\n\r\n'
                    }
                },
            }
        },
    )
    async def events(
        request: Request,
        calls: Annotated[
            bool,
            Query(
                description="Also `call_started` and `call_finished` for every tool call (tool, server, "
                "caller, client, duration, outcome; never arguments): the dashboard's Activity view."
            ),
        ] = False,
    ) -> EventSourceResponse:
        sub = hub.events(calls=calls)  # subscribed now, so nothing that happens after this is missed
        shutdown = anyio.Event()  # set by sse-starlette when the server begins to shut down
        profile = identity_of(request.scope).profile
        visible_to: Callable[[Event], Event | None] | None = None
        if profile is not None:  # a profile-bound token sees its profile's tools and servers only

            def visible_to(event: Event) -> Event | None:
                return visible_event(event, hub.profile(profile), hub.catalog)

        return EventSourceResponse(
            _event_stream(sub, shutdown, visible_to),
            ping=EVENT_PING_SECONDS,
            shutdown_event=shutdown,
            shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
            background=BackgroundTask(sub.close),
        )

    return router


async def _event_stream(
    sub: Subscription, shutdown: anyio.Event, visible_to: Callable[[Event], Event | None] | None = None
) -> AsyncIterator[ServerSentEvent]:
    """The hub's events as SSE until the server shuts down (then the stream ends properly, with its final
    chunk) or the client goes away (then this generator is cancelled); the subscription is closed either way.
    """
    stop = asyncio.ensure_future(shutdown.wait())
    pending: asyncio.Future[Event] | None = None
    try:
        while True:
            pending = pending or asyncio.ensure_future(anext(sub))
            await asyncio.wait((pending, stop), return_when=asyncio.FIRST_COMPLETED)
            if not pending.done():
                return
            shown: Event | None = pending.result()
            pending = None
            if visible_to is not None and shown is not None:
                shown = visible_to(shown)
            if shown is None:
                continue
            yield ServerSentEvent(data=shown.model_dump_json(), event=shown.type)
    finally:
        stop.cancel()
        if pending is not None:
            pending.cancel()
        sub.close()


def rest_client(request: Request) -> ClientInfo:
    """A REST caller, for the audit log: its User-Agent's first product (``name/version``)."""
    product = request.headers.get("user-agent", "").split(" ", 1)[0]
    name, _, version = product.partition("/")
    return ClientInfo(name[:100] or None, version[:50] or None, "rest")


def _mcp_json(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


def _stderr_tail(hub: Hub, name: str, n: int) -> list[str]:
    """The last ``n`` stderr lines."""
    return hub.server_status(name, tail=n).stderr_tail


__all__ = [
    "REDACTED",
    "AddServerRequest",
    "CallToolRequest",
    "ErrorBody",
    "ServerView",
    "build_api",
    "error_response",
    "redact_spec",
]
