"""``oauth clients|grants|revoke``: the built-in authorization server's clients and grants, through a running
hub's API (admin token). The state is the hub's (encrypted, held by the running process), so there is no
config-file fallback."""

from __future__ import annotations

import argparse
import time
from typing import Any
from urllib.parse import quote

from patchbay.cli.errors import EXIT_OK
from patchbay.cli.hubclient import connect
from patchbay.cli.output import Output


def _ago(epoch: Any) -> str:
    if not isinstance(epoch, int | float):
        return "-"
    seconds = max(0, int(time.time() - epoch))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


async def _get(args: argparse.Namespace, out: Output, path: str) -> Any:
    hub = await connect(args, out, need_hub=True)
    assert hub is not None
    async with hub:
        return await hub.request("GET", path)


async def cmd_oauth_clients(args: argparse.Namespace) -> int:
    out = Output(args.json)
    clients = await _get(args, out, "/api/oauth/clients")
    if out.json_mode:
        out.emit_json(clients)
    elif clients:
        out.table(
            ["CLIENT ID", "NAME", "KIND", "GRANTS", "REGISTERED", "REDIRECT URIS"],
            [
                [
                    c["client_id"],
                    c.get("client_name") or "-",
                    c["kind"],
                    str(c["grants"]),
                    _ago(c.get("registered_at")),
                    " ".join(c.get("redirect_uris") or []),
                ]
                for c in clients
            ],
        )
    else:
        out.note("no OAuth clients have registered or signed in yet")
    return EXIT_OK


async def cmd_oauth_grants(args: argparse.Namespace) -> int:
    out = Output(args.json)
    grants = await _get(args, out, "/api/oauth/grants")
    if out.json_mode:
        out.emit_json(grants)
    elif grants:
        out.table(
            ["GRANT", "CLIENT", "ROLE", "PROFILE", "APPROVED BY", "CREATED", "LAST USED"],
            [
                [
                    g["id"],
                    g.get("client_name") or g["client_id"],
                    g["role"],
                    g.get("profile") or "-",
                    g["approved_by"],
                    _ago(g.get("created_at")),
                    _ago(g.get("last_used_at")),
                ]
                for g in grants
            ],
        )
    else:
        out.note("no grants: no client has been approved on the consent page yet")
    return EXIT_OK


async def cmd_oauth_revoke(args: argparse.Namespace) -> int:
    out = Output(args.json)
    hub = await connect(args, out, need_hub=True)
    assert hub is not None
    path = "clients" if args.kind == "client" else "grants"
    async with hub:
        await hub.request("DELETE", f"/api/oauth/{path}/{quote(args.id, safe='')}")
    if out.json_mode:
        out.emit_json({"revoked": args.kind, "id": args.id})
    else:
        what = "client forgotten and its grants ended" if args.kind == "client" else "grant revoked"
        out.note(f"{args.id}: {what}; its tokens no longer work")
    return EXIT_OK
