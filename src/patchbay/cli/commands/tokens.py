"""``tokens list|add|remove``: the hub's bearer tokens, through a running hub's API or on the config file.

A new token is printed once and stored only as its SHA-256 (``tokenSha256`` in ``auth.tokens``).
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from patchbay.access.tokens import (
    describe_entries,
    new_token,
    set_entries,
    with_token,
    without_token,
)
from patchbay.cli.configfile import config_path, load_or_new, save_new_or_existing
from patchbay.cli.errors import EXIT_OK
from patchbay.cli.hubclient import connect
from patchbay.cli.output import Cell, Output
from patchbay.config import load_config
from patchbay.identity import ROLES


def _table(out: Output, rows: list[dict[str, Any]]) -> None:
    cells: list[list[Cell]] = [
        [r["name"], r["role"], r.get("profile") or "-", r.get("source") or "config"] for r in rows
    ]
    out.table(["TOKEN", "ROLE", "PROFILE", "GIVEN IN"], cells)


async def cmd_tokens_list(args: argparse.Namespace) -> int:
    out = Output(args.json)
    hub = await connect(args, out)
    if hub is not None:
        async with hub:
            rows = await hub.request("GET", "/api/tokens")
    else:
        config = load_config(config_path(args))
        rows = describe_entries(config)
    if out.json_mode:
        out.emit_json(rows)
    elif rows:
        _table(out, rows)
    else:
        out.note("no tokens: a hub on 127.0.0.1 then serves anyone who can reach it locally, as admin")
    return EXIT_OK


async def cmd_tokens_add(args: argparse.Namespace) -> int:
    out = Output(args.json)
    hub = await connect(args, out)
    if hub is not None:
        body = {"name": args.name, "role": args.role, "profile": args.profile}
        async with hub:
            created = await hub.request("POST", "/api/tokens", body=body)
        where = "the hub (and its config file); it works now"
    else:
        path = config_path(args)
        config, _ = load_or_new(path)
        token = new_token()
        set_entries(config, with_token(config, args.name, args.role, args.profile, token))
        save_new_or_existing(config)
        created = {"name": args.name, "role": args.role, "profile": args.profile, "token": token}
        where = f"{path}; a running hub reading it picks it up"
    if out.json_mode:
        out.emit_json(created)
    else:
        bound = f", profile {created['profile']}" if created.get("profile") else ""
        out.note(f"added token {created['name']} ({created['role']}{bound}) to {where}")
        out.note("the token is shown only now (patchbay keeps its SHA-256):")
        out.say(created["token"])
    return EXIT_OK


async def cmd_tokens_remove(args: argparse.Namespace) -> int:
    out = Output(args.json)
    hub = await connect(args, out)
    if hub is not None:
        async with hub:
            await hub.request("DELETE", f"/api/tokens/{quote(args.name, safe='')}")
        where = "from the hub (and its config file); it no longer works"
    else:
        path = config_path(args)
        config = load_config(path)
        set_entries(config, without_token(config, args.name))
        save_new_or_existing(config)
        where = f"from {path}"
    if out.json_mode:
        out.emit_json({"name": args.name, "removed": True})
    else:
        out.say(f"removed token {args.name} {where}")
    return EXIT_OK


def add_tokens_parser(
    sub: Any, common: argparse.ArgumentParser, hubopts: argparse.ArgumentParser, hub_note: str
) -> None:
    tokens = sub.add_parser(
        "tokens",
        help="list, add or remove the hub's bearer tokens (roles, profiles)",
        description="Manage who may use the hub: each token has a name, a role (admin: everything; user: "
        "MCP and tool calls; viewer: read-only status, catalog and events) and optionally a profile it "
        f"is bound to.\n\n{hub_note}\n\n"
        "examples:\n  patchbay tokens list\n  patchbay tokens add ci --role user --profile coding\n"
        "  patchbay tokens add wall --role viewer --json | jq -r .token\n  patchbay tokens remove ci",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = tokens.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser(
        "list",
        help="every token: name, role, profile (never the token)",
        parents=[common, hubopts],
    )
    ls.set_defaults(func=cmd_tokens_list)
    add = actions.add_parser(
        "add",
        help="create a token (printed once; only its SHA-256 is stored)",
        description="Create a token and print it once: patchbay stores only its SHA-256.\n\n"
        "examples:\n  patchbay tokens add ci --role user\n"
        "  patchbay tokens add claude --role user --profile coding",
        parents=[common, hubopts],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add.add_argument("name", help="the token's name: 1-64 letters, digits, '_', '-' or '.'")
    add.add_argument("--role", required=True, choices=list(reversed(ROLES)), help="what it may do")
    add.add_argument("--profile", help="bind it to this profile (config 'profiles') on every surface")
    add.set_defaults(func=cmd_tokens_add)
    rm = actions.add_parser(
        "remove", help="revoke a token (it stops working at once)", parents=[common, hubopts]
    )
    rm.add_argument("name", help="the token's name")
    rm.set_defaults(func=cmd_tokens_remove)
