"""Which redirect URIs a client may register: https, or http to a loopback address (RFC 8252 native
apps); never a fragment (RFC 6749 §3.1.2). The SDK then compares a request's redirect_uri with the
registered ones exactly."""

from __future__ import annotations

from urllib.parse import urlsplit

from patchbay.server.security import is_loopback


def check_redirect_uri(uri: str) -> str | None:
    """None when ``uri`` may be registered, else why not."""
    try:
        parts = urlsplit(uri)
        host = parts.hostname
    except ValueError:
        return f"{uri!r} is not a URL"
    if parts.fragment:
        return f"{uri!r} has a fragment"
    if parts.scheme == "https" and host:
        return None
    if parts.scheme == "http" and host and is_loopback(host):
        return None
    return f"{uri!r} must be https (http only to 127.0.0.1, [::1] or localhost)"
