"""``auth login|status|logout``: sign in to remote servers that need OAuth, through a hub or on the file.

``login`` prints the authorization URL alone on stdout, opens a browser (unless ``--no-browser`` or none is
available), takes the redirect on a loopback listener (127.0.0.1, a random port) and exits 0 once tokens
are stored. Through a hub, the listener hands the redirect to the hub (which holds the PKCE verifier);
without one, the sign-in runs here and the tokens go to the same store a hub reads.
"""

from __future__ import annotations

import argparse
import logging
import time
import webbrowser
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from patchbay.cli.configfile import config_path
from patchbay.cli.errors import EXIT_FAILED, EXIT_OK, CliError
from patchbay.cli.hubclient import HubClient, connect
from patchbay.cli.output import Output
from patchbay.config import HubConfig, load_config
from patchbay.errors import UnknownServerError

if TYPE_CHECKING:  # the OAuth stack imports the MCP SDK: only when a command runs, never for --help
    import asyncio

    from patchbay.oauth import OAuthClient, OAuthManager

log = logging.getLogger(__name__)


def _open_browser(url: str, out: Output) -> None:
    try:
        opened = webbrowser.get().open(url)
    except webbrowser.Error:
        opened = False
    if not opened:
        out.note("no browser here: open the URL above in one (on this machine: the redirect comes back here)")


def _client_from_file(config: HubConfig, name: str, manager: OAuthManager) -> OAuthClient:
    from patchbay.oauth import wants_oauth

    spec = config.servers.get(name)
    if spec is None:
        raise UnknownServerError(name, list(config.servers))
    from patchbay.config import resolve

    resolved = resolve(name, spec, config.base_dir)
    if not resolved.url or not wants_oauth(spec, resolved.headers):
        raise CliError(f"server {name!r} is not a remote server that signs in with OAuth")
    return manager.client(name, resolved.url, spec, config.base_dir)


async def cmd_auth_login(args: argparse.Namespace) -> int:
    import asyncio

    from patchbay.oauth import OAuthManager
    from patchbay.oauth.callback import LoopbackCallback

    out = Output(args.json)
    hub = await connect(args, out)
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    manager: OAuthManager | None = None

    async def forward(params: dict[str, str]) -> str:
        try:
            if hub is not None:
                server = (await hub.request("POST", "/api/oauth/callback", body=params))["server"]
            else:
                assert manager is not None
                server = await manager.complete(params)
        except Exception as exc:
            if not done.done():
                done.set_exception(exc)
            raise
        if not done.done():
            done.set_result(server)
        return f"patchbay is signed in to {server!r}."

    async with LoopbackCallback(forward) as listener:
        if hub is not None:
            async with hub:
                started = await hub.request(
                    "POST",
                    f"/api/servers/{quote(args.name, safe='')}/auth",
                    body={"redirectUri": listener.redirect_uri},
                )
                return await _finish(args, out, started["url"], done)
        config = load_config(config_path(args))
        manager = OAuthManager()
        _client_from_file(config, args.name, manager)
        url = await manager.sign_in(args.name, redirect_uri=listener.redirect_uri)
        try:
            return await _finish(args, out, url, done)
        finally:
            await manager.close()


async def _finish(args: argparse.Namespace, out: Output, url: str, done: asyncio.Future[str]) -> int:
    import asyncio

    from patchbay.oauth import OAuthError
    from patchbay.oauth.client import PENDING_TTL

    if not url:
        out.note(f"signed in to {args.name!r} (client credentials: no browser needed)")
        return EXIT_OK
    out.say(url)
    if not args.no_browser:
        _open_browser(url, out)
    out.note("waiting for the sign-in to finish in the browser …")
    try:
        async with asyncio.timeout(PENDING_TTL):
            server = await done
    except TimeoutError:
        raise CliError(f"no sign-in within {PENDING_TTL / 60:g} minutes; run it again", EXIT_FAILED) from None
    except CliError:
        raise
    except OAuthError as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    out.note(f"signed in to {server!r}; tokens stored")
    return EXIT_OK


def _status_row(status: dict[str, Any]) -> list[str]:
    expires = status.get("expires_at")
    left = f"{max(0, int(expires - time.time()))} s" if isinstance(expires, int | float) else "-"
    return [
        status["server"],
        "yes" if status.get("signed_in") else "no",
        str(status.get("issuer") or "-"),
        str(status.get("scope") or "-"),
        left,
    ]


async def cmd_auth_status(args: argparse.Namespace) -> int:
    from patchbay.oauth import OAuthManager

    out = Output(args.json)
    hub = await connect(args, out)
    statuses: list[dict[str, Any]] = []
    if hub is not None:
        async with hub:
            statuses = await _hub_statuses(hub, args.name)
    else:
        config = load_config(config_path(args))
        manager = OAuthManager()
        names = [args.name] if args.name else list(config.servers)
        for name in names:
            try:
                statuses.append(_client_from_file(config, name, manager).status())
            except CliError:
                if args.name:
                    raise
    if out.json_mode:
        out.emit_json(statuses[0] if args.name and statuses else statuses)
    elif statuses:
        out.table(
            ["SERVER", "SIGNED IN", "ISSUER", "SCOPE", "EXPIRES IN"], [_status_row(s) for s in statuses]
        )
    else:
        out.note("no remote servers that sign in with OAuth")
    return EXIT_OK


async def _hub_statuses(hub: HubClient, name: str | None) -> list[dict[str, Any]]:
    if name:
        return [await hub.request("GET", f"/api/servers/{quote(name, safe='')}/auth")]
    out = []
    for view in await hub.request("GET", "/api/servers"):
        if view.get("transport") in ("http", "sse"):
            try:
                out.append(await hub.request("GET", f"/api/servers/{quote(view['name'], safe='')}/auth"))
            except CliError:
                continue  # a static Authorization header: not an OAuth server
    return out


async def cmd_auth_logout(args: argparse.Namespace) -> int:
    from patchbay.oauth import OAuthManager

    out = Output(args.json)
    hub = await connect(args, out)
    if hub is not None:
        async with hub:
            await hub.request("DELETE", f"/api/servers/{quote(args.name, safe='')}/auth")
    else:
        config = load_config(config_path(args))
        manager = OAuthManager()
        await _client_from_file(config, args.name, manager).logout()
    out.note(f"signed out of {args.name!r}; its tokens are revoked (where supported) and deleted")
    return EXIT_OK
