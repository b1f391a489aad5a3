"""Translating HTTP failures into words: httpx2 exceptions and error statuses become short, telling reasons.

The reasons end up in ``ServerExitedError`` / ``StartError`` messages and in the server's status, in front
of users and LLMs, so they name the URL and say what to check.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx2

from patchbay.errors import ConfigError
from patchbay.transports.http import limits


def causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, its causes and contexts, and the leaves of any exception group, depth first."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        if isinstance(e, BaseExceptionGroup):
            stack.extend(reversed(e.exceptions))
        for nxt in (e.__context__, e.__cause__):
            if nxt is not None:
                stack.append(nxt)


def describe_http_error(exc: BaseException) -> str:
    """A short human phrase for a connection-level failure: "connection refused", "timed out connecting"."""
    for e in causes(exc):
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, socket.gaierror):
            return f"cannot resolve the host name ({e.strerror or e})"
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"TLS certificate verification failed ({e.verify_message or e})"
        if isinstance(e, ssl.SSLError):
            return f"TLS error ({e.reason or e})"
        if isinstance(e, ConnectionResetError):
            return "connection reset by the server"
    if isinstance(exc, httpx2.ProxyError):
        return f"the proxy refused the connection ({exc})"
    if isinstance(exc, httpx2.ConnectTimeout):
        return "timed out connecting"
    if isinstance(exc, httpx2.ReadTimeout):
        return f"no data for {limits.READ_TIMEOUT:g} s"
    if isinstance(exc, httpx2.RemoteProtocolError):
        return "the server closed the connection mid-response"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def first_failure(exc: BaseException) -> BaseException:
    """The most telling leaf of a (nested) exception group: a transport error if there is one."""
    leaves = [e for e in causes(exc) if not isinstance(e, BaseExceptionGroup | asyncio.CancelledError)]
    for e in leaves:
        if isinstance(e, httpx2.TransportError | httpx2.HTTPStatusError | httpx2.SSEError):
            return e
    return leaves[0] if leaves else exc


def is_connect_failure(exc: BaseException) -> bool:
    return isinstance(
        exc, httpx2.ConnectError | httpx2.ConnectTimeout | httpx2.UnsupportedProtocol | httpx2.ProxyError
    )


def jsonrpc_error_message(body: bytes) -> str | None:
    """The ``error.message`` of a JSON-RPC error body, if that is what ``body`` is."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    err = doc.get("error") if isinstance(doc, dict) else None
    msg = err.get("message") if isinstance(err, dict) else None
    return msg if isinstance(msg, str) else None


def snippet(body: bytes, limit: int = 200) -> str:
    text = body[:limit].decode(errors="replace").strip().replace("\n", " ")
    return f": {text}" if text else ""


def status_text(response: httpx2.Response) -> str:
    return f"HTTP {response.status_code} {response.reason_phrase}".rstrip()


def check_url(name: str, url: str | None) -> str:
    """The URL, or a ConfigError naming the server if it is not an http(s) URL."""
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"server {name!r}: url: {url!r} is not an http:// or https:// URL", server=name, field="url"
        )
    assert url is not None
    return url
