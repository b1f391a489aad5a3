"""Client ID metadata documents: a client whose ``client_id`` is an https URL publishes its metadata there.

The URL comes from whoever opens ``/authorize``, so fetching it is a request patchbay makes on a
stranger's behalf (SSRF). The fetch is therefore narrow: https only; the host is resolved first and every
address must be public (no private, loopback, link-local, multicast, reserved or unspecified address,
unless the test-only ``allow_loopback`` lets loopback through); the connection goes to the address that
was checked (TLS still verified against the host name, through SNI), so DNS cannot answer differently
between the check and the connect; no redirects; at most ``MAX_BYTES`` and ``TIMEOUT`` seconds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2
from mcp.shared.auth import OAuthClientInformationFull
from pydantic import ValidationError

from patchbay.access.authorization_server.redirects import check_redirect_uri

log = logging.getLogger(__name__)

MAX_BYTES = 5 * 1024
TIMEOUT = 5.0


class ClientMetadataError(Exception):
    """The document could not be used; the message says why (it names the URL, never a secret)."""


def is_metadata_url(client_id: str) -> bool:
    return client_id.startswith("https://")


def _refused_address(address: str, allow_loopback: bool) -> str | None:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    for attribute, what in (  # the most specific first: 169.254/16 is also "private" to ipaddress
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_unspecified", "an unspecified address"),
        ("is_reserved", "a reserved address"),
        ("is_private", "a private address"),
    ):
        if getattr(ip, attribute):
            return what
    return None if ip.is_global else "a non-public address"


async def _resolve(host: str, port: int, allow_loopback: bool) -> str:
    """One checked address of ``host``; every address it resolves to must pass (a name with one private
    address among public ones is refused: which one a connect would use is not ours to choose)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ClientMetadataError(f"the host {host!r} does not resolve ({exc.strerror or exc})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise ClientMetadataError(f"the host {host!r} does not resolve")
    for address in addresses:
        why = _refused_address(address, allow_loopback)
        if why is not None:
            raise ClientMetadataError(f"the host {host!r} resolves to {why} ({address}); refused")
    return addresses[0]


async def fetch_client_metadata(url: str, *, allow_loopback: bool = False) -> OAuthClientInformationFull:
    """The client described by the document at ``url`` (its ``client_id``), validated."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ClientMetadataError(f"a client metadata URL must be https, got {url!r}")
    if parts.username or parts.password or parts.fragment:
        raise ClientMetadataError(f"a client metadata URL must not carry credentials or a fragment: {url!r}")
    if parts.path in ("", "/"):
        raise ClientMetadataError(f"a client metadata URL must have a path: {url!r}")
    host, port = parts.hostname, parts.port or 443
    try:
        async with asyncio.timeout(TIMEOUT):
            address = await _resolve(host, port, allow_loopback)
            literal = f"[{address}]" if ":" in address else address
            pinned = urlunsplit(("https", f"{literal}:{port}", parts.path, parts.query, ""))
            body = await _get(pinned, host=parts.netloc, sni=host)
    except TimeoutError:
        raise ClientMetadataError(
            f"the client metadata document {url} did not arrive within {TIMEOUT:g} s"
        ) from None
    return _parse(url, body)


async def _get(url: str, *, host: str, sni: str) -> bytes:
    async with httpx2.AsyncClient(follow_redirects=False, trust_env=True, timeout=TIMEOUT) as http:
        request = http.build_request(
            "GET",
            url,
            headers={"Host": host, "Accept": "application/json"},
            extensions={"sni_hostname": sni},
        )
        try:
            response = await http.send(request, stream=True)
        except httpx2.HTTPError as exc:
            raise ClientMetadataError(
                f"fetching the client metadata document failed: {type(exc).__name__}"
            ) from None
        try:
            if response.status_code != 200:
                raise ClientMetadataError(
                    f"the client metadata document answered HTTP {response.status_code} "
                    "(redirects are not followed)"
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_BYTES:
                    raise ClientMetadataError(
                        f"the client metadata document is larger than {MAX_BYTES} bytes"
                    )
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            await response.aclose()


def _parse(url: str, body: bytes) -> OAuthClientInformationFull:
    try:
        doc: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ClientMetadataError("the client metadata document is not JSON") from None
    if not isinstance(doc, dict):
        raise ClientMetadataError("the client metadata document is not a JSON object")
    if doc.get("client_id") != url:
        raise ClientMetadataError(
            f"the client metadata document's client_id {doc.get('client_id')!r} is not its URL {url!r}"
        )
    method = doc.get("token_endpoint_auth_method", "none")
    if method != "none":
        raise ClientMetadataError(
            f"token_endpoint_auth_method {method!r} is not supported for metadata-document clients "
            "(only 'none')"
        )
    for secret in ("client_secret", "client_secret_expires_at"):
        doc.pop(secret, None)
    uris = doc.get("redirect_uris")
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
        raise ClientMetadataError("the client metadata document must list redirect_uris")
    for uri in uris:
        problem = check_redirect_uri(uri)
        if problem:
            raise ClientMetadataError(f"the client metadata document's redirect URI is refused: {problem}")
    try:
        info = OAuthClientInformationFull.model_validate(
            {**doc, "token_endpoint_auth_method": "none", "client_id_issued_at": int(time.time())}
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ClientMetadataError(
            f"the client metadata document is invalid: {where}: {first['msg']}"
        ) from None
    if "authorization_code" not in info.grant_types:
        raise ClientMetadataError(
            "the client metadata document's grant_types must include authorization_code"
        )
    return info
