"""The HTTP side of the authorization server: the SDK's routes, adjusted in one place, plus the consent
page and the protected-resource metadata.

``mcp.server.auth.routes.create_auth_routes`` serves ``/authorize``, ``/token``, ``/register``,
``/revoke`` and the RFC 8414 metadata. Two of its routes are replaced here, deliberately:

- the metadata, which the SDK builds without ``client_id_metadata_document_supported``, without the
  ``none`` token-endpoint method public clients (Claude.ai, mcp-remote) register with, without
  ``authorization_response_iss_parameter_supported`` (RFC 9207; patchbay sends ``iss``) and without
  ``scopes_supported``;
- ``/authorize``, wrapped: the SDK answers any client it cannot load with "Client ID not found", so a
  client ID metadata document that was refused (private address, too large, wrong ``client_id``) is
  fetched here first and its refusal named; the SDK handler then runs with the client cached;
- ``/revoke``, wrapped: the SDK's request model requires a ``client_secret`` field even from a public
  client (``token_endpoint_auth_method: none``), which RFC 7009 does not ask of it; an absent one is
  added, empty, before the SDK handler parses the form.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from mcp.server.auth.handlers.authorize import AuthorizationHandler
from mcp.server.auth.handlers.metadata import MetadataHandler, ProtectedResourceMetadataHandler
from mcp.server.auth.routes import (
    AUTHORIZATION_PATH,
    REVOCATION_PATH,
    build_metadata,
    cors_middleware,
    create_auth_routes,
)
from mcp.server.auth.settings import ClientRegistrationOptions, RevocationOptions
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE, RequestBodyLimitMiddleware
from mcp.shared.auth import OAuthMetadata, ProtectedResourceMetadata
from pydantic import AnyHttpUrl
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, request_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from patchbay.access.authorization_server.client_metadata import ClientMetadataError, is_metadata_url
from patchbay.access.authorization_server.consent import CONSENT_PATH, ConsentPage
from patchbay.access.authorization_server.provider import SCOPE, PatchbayProvider
from patchbay.identity import Identity

METADATA_PATH = "/.well-known/oauth-authorization-server"
RESOURCE_METADATA_PATH = "/.well-known/oauth-protected-resource"
OPEN_PATHS = frozenset(
    {
        METADATA_PATH,
        AUTHORIZATION_PATH,
        CONSENT_PATH,
        "/token",
        "/register",
        "/revoke",
        RESOURCE_METADATA_PATH,
    }
)
OPEN_PREFIXES = (f"{RESOURCE_METADATA_PATH}/",)


def resource_metadata_url(provider: PatchbayProvider) -> str:
    return f"{provider.settings.issuer}{RESOURCE_METADATA_PATH}/mcp"


def metadata(provider: PatchbayProvider) -> OAuthMetadata:
    issuer = AnyHttpUrl(provider.settings.issuer)
    doc = build_metadata(
        issuer, None, ClientRegistrationOptions(enabled=True), RevocationOptions(enabled=True)
    )
    methods = ["none", "client_secret_post", "client_secret_basic"]
    # re-validated from strings: the issuer must stay exactly as configured (no trailing slash added)
    return OAuthMetadata.model_validate(
        {
            **doc.model_dump(mode="json", exclude_none=True),
            "issuer": provider.settings.issuer,
            "scopes_supported": [SCOPE],
            "token_endpoint_auth_methods_supported": methods,
            "revocation_endpoint_auth_methods_supported": methods,
            "client_id_metadata_document_supported": True,
            "authorization_response_iss_parameter_supported": True,
        }
    )


def build_routes(
    provider: PatchbayProvider,
    admin: Callable[[str], Identity | None],
    profiles: Callable[[], Iterable[str]],
) -> list[BaseRoute]:
    settings = provider.settings
    sdk_routes = create_auth_routes(
        provider,
        AnyHttpUrl(settings.issuer),
        # any scope may be registered: scopes grant nothing here, the role approved on the consent page does
        client_registration_options=ClientRegistrationOptions(enabled=True, default_scopes=[SCOPE]),
        revocation_options=RevocationOptions(enabled=True),
    )
    sdk_authorize = AuthorizationHandler(provider)

    async def authorize(request: Request) -> Response:
        params = request.query_params if request.method == "GET" else await request.form()
        client_id = params.get("client_id")
        if isinstance(client_id, str) and is_metadata_url(client_id):
            try:
                await provider.resolve_client(client_id)
            except ClientMetadataError as exc:
                return JSONResponse(
                    {"error": "invalid_client", "error_description": f"client {client_id}: {exc}"},
                    status_code=400,
                    headers={"Cache-Control": "no-store"},
                )
        return await sdk_authorize.handle(request)

    routes: list[BaseRoute] = []
    for route in sdk_routes:
        path = getattr(route, "path", "")
        if path in (METADATA_PATH, AUTHORIZATION_PATH):
            continue
        if path == REVOCATION_PATH and isinstance(route, Route):
            route = Route(path, endpoint=_EmptySecretAllowed(route.app), methods=["POST", "OPTIONS"])
        routes.append(route)
    routes.append(
        Route(
            METADATA_PATH,
            endpoint=cors_middleware(MetadataHandler(metadata(provider)).handle, ["GET", "OPTIONS"]),
            methods=["GET", "OPTIONS"],
        )
    )
    routes.append(Route(AUTHORIZATION_PATH, endpoint=authorize, methods=["GET", "POST"]))
    page = ConsentPage(provider, admin, profiles)
    routes.append(Route(CONSENT_PATH, endpoint=page.show, methods=["GET"]))
    routes.append(
        Route(
            CONSENT_PATH,
            endpoint=RequestBodyLimitMiddleware(request_response(page.submit), DEFAULT_MAX_REQUEST_BODY_SIZE),
            methods=["POST"],
        )
    )

    async def resource_metadata(request: Request) -> Response:
        """RFC 9728: one document per resource (``/mcp``, ``/mcp/<profile>``); the bare path is ``/mcp``'s."""
        suffix = request.url.path[len(RESOURCE_METADATA_PATH) :]
        resource = f"{settings.issuer}{suffix or '/mcp'}"
        if not settings.accepts_resource(resource):
            return JSONResponse(
                {
                    "detail": f"no protected resource at {suffix!r}; patchbay serves /mcp",
                    "error": "not_found",
                },
                status_code=404,
            )
        doc = ProtectedResourceMetadata.model_validate(
            {
                "resource": resource,
                "authorization_servers": [settings.issuer],
                "scopes_supported": [SCOPE],
                "resource_name": "patchbay",
            }
        )
        return await ProtectedResourceMetadataHandler(doc).handle(request)

    handler = cors_middleware(resource_metadata, ["GET", "OPTIONS"])
    routes.append(Route(RESOURCE_METADATA_PATH, endpoint=handler, methods=["GET", "OPTIONS"]))
    routes.append(
        Route(RESOURCE_METADATA_PATH + "/{rest:path}", endpoint=handler, methods=["GET", "OPTIONS"])
    )
    return routes


MAX_FORM = 64 * 1024


class _EmptySecretAllowed:
    """``/revoke`` for public clients: add ``client_secret=`` to a form that has none (see the module
    docstring); bodies over ``MAX_FORM`` are refused with 413 before anything parses them. (A class, not
    a function: Starlette would take a function endpoint for a request handler, not an ASGI app.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self.app
        if scope.get("method") != "POST":
            await app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > MAX_FORM:
                await JSONResponse(
                    {"error": "invalid_request", "error_description": "request body too large"}, 413
                )(scope, receive, send)
                return
            if not message.get("more_body"):
                break
        if not any(part.split(b"=", 1)[0] == b"client_secret" for part in body.split(b"&")):
            body = body + (b"&" if body else b"") + b"client_secret="
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await app({**scope, "headers": headers}, replay, send)
