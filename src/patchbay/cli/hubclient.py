"""Talking to a running hub over its REST API (``/api``), and deciding whether a command goes through a hub
or works on the config file (:func:`connect`, which says which on stderr)."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from patchbay.cli.configfile import config_path, describe_config
from patchbay.cli.errors import EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE, CliError
from patchbay.cli.output import Output

DEFAULT_URL = "http://127.0.0.1:8765"


def _is_loopback_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def normalise_url(url: str) -> str:
    """``host:port`` → ``http://host:port``; a pasted ``…/mcp`` or ``…/api`` endpoint → the hub's base."""
    url = url.strip()
    if "://" not in url:
        url = f"http://{url}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(f"--url must be an http:// or https:// address like {DEFAULT_URL}, got {url!r}")
    url = url.rstrip("/")
    for suffix in ("/mcp", "/api", "/docs"):
        url = url.removesuffix(suffix)
    return url


class HubClient:
    """The management API of a running hub (``/api``), errors turned into :class:`CliError`."""

    def __init__(self, url: str, token: str | None) -> None:
        import httpx2

        self.url = url
        self._httpx = httpx2
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx2.AsyncClient(
            base_url=url,
            headers=headers,
            timeout=httpx2.Timeout(30.0, connect=3.0),
            trust_env=not _is_loopback_url(url),  # never send 127.0.0.1 through an HTTP proxy
        )

    async def __aenter__(self) -> HubClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.http.aclose()

    async def probe(self) -> str | None:
        """None if a patchbay hub answers here, else why not."""
        try:
            r = await self.http.get("/healthz", timeout=self._httpx.Timeout(5.0, connect=2.0))
        except self._httpx.TimeoutException:
            return "no answer in time"
        except self._httpx.TransportError as exc:
            return _transport_reason(exc)
        if r.status_code == 421:
            return "it refused this host name (start the hub with --allow-host for it)"
        if r.status_code != 200:
            return f"GET /healthz answered HTTP {r.status_code}: not a patchbay hub?"
        try:
            ok = r.json().get("status") == "ok"
        except (ValueError, AttributeError):
            ok = False
        return None if ok else "GET /healthz did not answer like a patchbay hub"

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = 30.0,
    ) -> Any:
        httpx2 = self._httpx
        try:
            r = await self.http.request(
                method,
                path,
                json=body,
                params=dict(params) if params else None,
                timeout=httpx2.Timeout(timeout, connect=3.0),
            )
        except httpx2.TimeoutException:
            raise CliError(
                f"the hub at {self.url} did not answer {method} {path} in time", EXIT_FAILED
            ) from None
        except httpx2.TransportError as exc:
            raise CliError(f"lost the hub at {self.url}: {_transport_reason(exc)}", EXIT_FAILED) from None
        if r.status_code < 300:
            return r.json() if r.content else None
        raise self._error(r.status_code, r)

    def _error(self, status: int, r: Any) -> CliError:
        try:
            body = r.json()
        except ValueError:
            body = {}
        detail = body.get("detail") if isinstance(body, dict) else None
        if status == 401:
            why = "refused the token" if self.http.headers.get("authorization") else "needs a bearer token"
            return CliError(f"the hub at {self.url} {why}: give --token or set PATCHBAY_TOKEN", EXIT_USAGE)
        if status in (403, 421):
            hint = " (a hub serving other host names needs --allow-host)" if status == 421 else ""
            return CliError(f"the hub at {self.url} refused this request: {detail}{hint}", EXIT_USAGE)
        if isinstance(detail, list):  # FastAPI's request validation errors
            parts = []
            for err in detail:
                loc = ".".join(str(p) for p in err.get("loc", ())[1:] if p != "spec")
                parts.append(f"{loc + ': ' if loc else ''}{err.get('msg', err)}")
            return CliError("; ".join(parts) or f"HTTP {status}", EXIT_USAGE)
        kind = body.get("error") if isinstance(body, dict) else None
        message = str(detail or f"the hub answered HTTP {status}")
        usage = kind in (
            "unknown_server",
            "unknown_tool",
            "duplicate_server",
            "config",
            "invalid_request",
            "invalid_json",
        ) or status in (404, 409, 422)
        return CliError(message, EXIT_USAGE if usage else EXIT_FAILED)


def _transport_reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "refused" in text.lower() or text == "All connection attempts failed":
        return "nothing is listening there (connection refused)"
    return text


async def _nothing_listens(url: str) -> bool:
    """Whether a TCP connection to a loopback hub's port is refused: the usual "no hub running" case, told
    without importing the HTTP client, so commands that then work on the file start fast."""
    import asyncio

    parts = urlsplit(url)
    if parts.scheme != "http" or not _is_loopback_url(url):
        return False
    try:
        async with asyncio.timeout(2.0):
            _, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
    except ConnectionRefusedError:
        return True
    except (OSError, TimeoutError):  # anything else: the HTTP probe finds out and says why
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return False


async def connect(args: argparse.Namespace, out: Output, *, need_hub: bool = False) -> HubClient | None:
    """The running hub to use, or None to work on the config file; says which on stderr."""
    if getattr(args, "no_hub", False):
        if args.url:
            raise CliError("give either --url or --no-hub, not both")
        if need_hub:
            raise CliError("this command needs a running hub; drop --no-hub", EXIT_USAGE)
        out.note(f"using {describe_config(config_path(args))} directly (--no-hub)")
        return None
    explicit = args.url is not None
    url = normalise_url(args.url or os.environ.get("PATCHBAY_URL") or DEFAULT_URL)
    token = args.token or next(
        (t.strip() for t in os.environ.get("PATCHBAY_TOKEN", "").split(",") if t.strip()), None
    )
    why = "nothing is listening there (connection refused)" if await _nothing_listens(url) else None
    if why is None:
        client = HubClient(url, token)
        why = await client.probe()
        if why is None:
            ignored = " (--config ignored; add --no-hub to edit the file instead)" if args.config else ""
            out.note(out.paint_err(f"via hub at {url}{ignored}", "dim"))
            return client
        await client.http.aclose()
    if explicit:
        raise CliError(f"hub not reachable at {url}: {why}", EXIT_UNREACHABLE)
    if need_hub:
        raise CliError(
            f"this needs a running hub and none is reachable at {url} ({why}); start one with "
            "`patchbay serve`, or give --url",
            EXIT_UNREACHABLE,
        )
    target = describe_config(config_path(args))
    out.note(out.paint_err(f"hub not reachable; using {target} directly", "dim"))
    return None
