"""One gate in front of every route: Host and Origin checks (DNS rebinding) and bearer tokens.

The SDK protects only ``/mcp`` against DNS rebinding; patchbay's management API can add a server, which
runs a command, so the same check must cover every path. Tokens are compared as SHA-256 digests with
``hmac.compare_digest`` (constant time, no length leak; see ``access/tokens.py``) and never logged.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from patchbay.access.tokens import StaticToken, TokenTable
from patchbay.identity import LOCAL, AuthenticationError, Authenticator, Identity, attach

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
OPEN_PATHS = frozenset({"/healthz"})
_DENIED = {401: "unauthorized", 403: "forbidden", 421: "misdirected"}
REFUSAL_HOOK = "patchbay.on_refused"  # scope key: who is told of a refusal (the audit log), see deny()
HEADERS_KEY = "patchbay.headers"  # scope key: the request's headers decoded once, see headers_of()
RefusalHook = Callable[[Mapping[str, Any], int, str], None]


def route_path(scope: Scope) -> str:
    """The request's path inside patchbay's app: ``scope["path"]`` less ``root_path``, the prefix a host app
    mounted patchbay under (ASGI keeps the full path in ``path``; see ``embed.py``)."""
    path: str = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :] or "/"
    return path


def headers_of(scope: Scope) -> dict[str, str]:
    """The request's headers as a dict (names lower-cased, latin-1), decoded once per request: the Guard,
    the fast path and the tracing all read them. Cached in the scope beside the very list it was made
    from, so a layer that replaces ``scope["headers"]`` is never answered from a stale copy."""
    raw = scope.get("headers", [])
    cached = scope.get(HEADERS_KEY)
    if cached is not None and cached[0] is raw:
        found: dict[str, str] = cached[1]
        return found
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}
    scope[HEADERS_KEY] = (raw, headers)
    return headers


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=256)  # clients send the same few Host values: urlsplit each once
def _hostname(value: str) -> str:
    """``host:port`` / ``[v6]:port`` → the host name, lower-cased, without brackets ("" for a value that
    is no host at all, such as an unclosed ``[``: refused, not a 500)."""
    try:
        return (urlsplit(f"//{value}").hostname or "").lower()
    except ValueError:
        return ""


@functools.lru_cache(maxsize=256)
def _origin_hostname(origin: str) -> str:
    """An ``Origin`` header's host name, lower-cased ("" when it has none or is malformed)."""
    try:
        return (urlsplit(origin).hostname or "").lower()
    except ValueError:
        return ""


class Guard:
    """ASGI middleware. ``allowed_hosts=None`` disables the Host check (binding to every interface
    without knowing the names clients use; tokens are mandatory then).

    ``tokens`` are static bearer tokens: a plain string is an admin token, a ``(token, Identity)``
    pair names who holds it, a ``StaticToken`` is known by its digest only; or a ``TokenTable``, which
    the caller may change while serving (tokens added or revoked at runtime). A token none of them
    matches is offered to each of ``authenticators`` in turn (OAuth access tokens). The identity found
    is stored in the scope (``patchbay.identity``); with no tokens and no authenticators every request
    is ``LOCAL``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: Iterable[str | tuple[str, Identity] | StaticToken] | TokenTable = (),
        allowed_hosts: Iterable[str] | None = LOOPBACK_NAMES,
        open_paths: Iterable[str] = OPEN_PATHS,
        open_prefixes: Iterable[str] = (),
        authenticators: Sequence[Authenticator] = (),
        resource_metadata: str | None = None,
        on_refused: RefusalHook | None = None,
    ) -> None:
        self.app = app
        self.on_refused = on_refused  # told of every refusal here and inside (the audit log)
        self._resource_metadata = resource_metadata  # RFC 9728 metadata URL named in every 401 (OAuth mode)
        self.tokens = tokens if isinstance(tokens, TokenTable) else TokenTable(tokens)
        self._authenticators = tuple(authenticators)
        self._hosts = (
            None if allowed_hosts is None else frozenset(h.lower().strip("[]") for h in allowed_hosts)
        )
        self._open = frozenset(open_paths)
        self._open_prefixes = tuple(open_prefixes)

    @property
    def auth_required(self) -> bool:
        return self.tokens.required or bool(self._authenticators)

    def token_ok(self, presented: str) -> bool:
        return self.static_identity(presented) is not None

    def static_identity(self, presented: str) -> Identity | None:
        """The identity of a configured static token, or None (compared in constant time)."""
        return self.tokens.identify(presented)

    async def identify(self, presented: str) -> Identity | None:
        """A static token's identity, else the first authenticator's that recognises the token.
        Raises ``AuthenticationError`` when one recognises it and refuses it."""
        found = self.static_identity(presented)
        if found is not None:
            return found
        for authenticator in self._authenticators:
            found = await authenticator.authenticate(presented)
            if found is not None:
                return found
        return None

    def is_open(self, path: str) -> bool:
        """Served without a token: an exact open path, or under an open prefix (never with a ``..``
        segment, so a prefix cannot be used to climb out of it)."""
        if path in self._open:
            return True
        return path.startswith(self._open_prefixes) and ".." not in path.split("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self.on_refused is not None:
            scope[REFUSAL_HOOK] = self.on_refused  # deny() finds it, for the gate's refusals and the roles'
        headers = headers_of(scope)
        if self._hosts is not None:
            host = _hostname(headers.get("host", ""))
            if host not in self._hosts:
                await self._deny(
                    scope, receive, send, 421, f"Host {headers.get('host', '')!r} is not allowed"
                )
                return
            origin = headers.get("origin")
            if origin and origin != "null" and _origin_hostname(origin) not in self._hosts:
                await self._deny(scope, receive, send, 403, f"Origin {origin!r} is not allowed")
                return
        if not self.auth_required:
            attach(scope, LOCAL)
        elif not self.is_open(route_path(scope)):
            auth = headers.get("authorization", "")
            scheme, _, presented = auth.partition(" ")
            identity = None
            if scheme.lower() == "bearer" and presented.strip():
                try:
                    identity = await self.identify(presented.strip())
                except AuthenticationError as exc:
                    error, needed = exc.error, getattr(exc, "scope", None)
                    await self._deny(
                        scope, receive, send, exc.status, str(exc), error=error, scope_needed=needed
                    )
                    return
            if identity is None:
                why = "missing bearer token" if not auth else "invalid bearer token"
                refused = "invalid_token" if auth else None
                await self._deny(scope, receive, send, 401, why, error=refused)
                return
            attach(scope, identity)
        await self.app(scope, receive, send)

    async def _deny(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        message: str,
        *,
        error: str | None = None,
        scope_needed: str | None = None,
    ) -> None:
        challenge = self._challenge(status, message, error, scope_needed)
        await deny(scope, send, status, message, challenge=challenge)

    def _challenge(self, status: int, message: str, error: str | None, needed: str | None) -> str | None:
        """RFC 6750 §3 ``WWW-Authenticate`` as the MCP authorization spec wants it: every 401 (and a 403
        ``insufficient_scope``) names the RFC 9728 metadata in OAuth mode, a refused token says why."""
        if status != 401 and error != "insufficient_scope":
            return None
        params = ['realm="patchbay"']
        if error:
            params.append(f'error="{error}"')
        if needed:
            params.append(f'scope="{needed}"')
        if self._resource_metadata:
            params.append(f'resource_metadata="{self._resource_metadata}"')
        if error:
            params.append('error_description="{}"'.format(message.replace("\\", "").replace('"', "'")))
        return "Bearer " + ", ".join(params)


async def deny(scope: Scope, send: Send, status: int, message: str, *, challenge: str | None = None) -> None:
    """Refuse a request before it reaches the app: the API's error body (or a WebSocket close)."""
    log.info("refused %s %s: %s", scope.get("method", "WS"), scope.get("path"), message)
    hook = scope.get(REFUSAL_HOOK)
    if hook is not None:
        try:
            hook(scope, status, message)
        except Exception:
            log.exception("the refusal hook failed")
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    # the API's ErrorBody shape (patchbay.server.api), which cannot be imported here without a cycle
    body = json.dumps({"detail": message, "error": _DENIED.get(status, "error")}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if challenge:
        headers.append((b"www-authenticate", challenge.encode("latin-1", "replace")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
