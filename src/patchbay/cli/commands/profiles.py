"""``profiles list|show|set|remove``: through a running hub's API, or on the config file.

A profile is a named view of the catalog served at ``/mcp/<name>`` (see ``patchbay.profiles``). Through a
hub, ``list`` and ``show`` say how many tools each profile has now (``show`` names them); on the file they
show what is written. ``set`` replaces the whole profile, as ``PUT /api/profiles/{name}`` does.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from patchbay.cli.configfile import config_path, load_or_new, save_new_or_existing
from patchbay.cli.errors import EXIT_OK
from patchbay.cli.hubclient import connect
from patchbay.cli.options import json_object
from patchbay.cli.output import Cell, Output
from patchbay.config import ProfileSpec, load_config, parse_profile_spec, save_config
from patchbay.errors import UnknownProfileError


def file_view(name: str, spec: ProfileSpec, known: set[str]) -> dict[str, Any]:
    """A profile as the file has it, in the shape of the API's view (the live count empty)."""
    return {
        "name": name,
        "servers": list(spec.servers) if spec.servers is not None else None,
        "tools": list(spec.tools) if spec.tools is not None else None,
        "discovery": spec.discovery or "full",
        "tool_count": None,
        "unknown_servers": [s for s in spec.servers or () if s not in known],
    }


def _selection(view: Mapping[str, Any]) -> tuple[str, str]:
    servers = view.get("servers")
    tools = view.get("tools")
    return (", ".join(servers) if servers is not None else "(all)", " ".join(tools) if tools else "(all)")


def _table(out: Output, views: Sequence[Mapping[str, Any]]) -> None:
    rows: list[list[Cell]] = []
    for v in views:
        servers, tools = _selection(v)
        count = v.get("tool_count")
        discovery = str(v.get("discovery") or "full")
        rows.append(
            [
                (v["name"], "cyan"),
                (discovery, "yellow" if discovery == "search" else ""),
                "-" if count is None else str(count),
                servers,
                tools,
            ]
        )
    out.table(["PROFILE", "DISCOVERY", "TOOLS", "SERVERS", "PATTERNS"], rows)


def _warn_unknown(out: Output, views: Sequence[Mapping[str, Any]]) -> None:
    for v in views:
        for server in v.get("unknown_servers") or ():
            out.warn(f"profile {v['name']!r}: servers: {server!r} is not a configured server or agent")


async def cmd_profiles_list(args: argparse.Namespace) -> int:
    out = Output(args.json)
    hub = await connect(args, out)
    if hub is not None:
        async with hub:
            views: list[dict[str, Any]] = await hub.request("GET", "/api/profiles")
    else:
        config = load_config(config_path(args))
        known = set(config.servers) | set(config.agents)
        views = [file_view(n, s, known) for n, s in config.profiles.items()]
    if out.json_mode:
        out.emit_json(views)
        return EXIT_OK
    if views:
        _table(out, views)
        _warn_unknown(out, views)
    else:
        out.note("no profiles (add one: patchbay profiles set NAME --server S --tool 'S__*')")
    return EXIT_OK


async def cmd_profiles_show(args: argparse.Namespace) -> int:
    out = Output(args.json)
    hub = await connect(args, out)
    if hub is not None:
        async with hub:
            view: dict[str, Any] = await hub.request("GET", f"/api/profiles/{quote(args.name, safe='')}")
    else:
        config = load_config(config_path(args))
        spec = config.profiles.get(args.name)
        if spec is None:
            raise UnknownProfileError(args.name, list(config.profiles))
        view = file_view(args.name, spec, set(config.servers) | set(config.agents))
    if out.json_mode:
        out.emit_json(view)
        return EXIT_OK
    servers, tools = _selection(view)
    out.say(f"profile    {out.paint(view['name'], 'bold')}  (served at /mcp/{view['name']})")
    out.say(f"servers    {servers}")
    out.say(f"patterns   {tools}")
    discovery = view.get("discovery") or "full"
    listed = " (its clients list search_tools and call_tool)" if discovery == "search" else ""
    out.say(f"discovery  {discovery}{listed}")
    names = view.get("tool_names")
    if names is None:
        out.note(f"the tools it has now: patchbay tools --profile {args.name} (or with a hub running)")
    else:
        out.say(f"tools      {len(names)}")
        for name in names:
            out.say(f"  {name}")
    _warn_unknown(out, [view])
    return EXIT_OK


def build_profile(args: argparse.Namespace) -> dict[str, Any]:
    """The profile ``profiles set`` describes; validated here so a bad one never reaches a hub."""
    spec: dict[str, Any] = {}
    if args.spec:
        spec.update(json_object("--spec", args.spec, "(a profile: servers, tools, discovery)"))
    if args.server:
        spec["servers"] = [s for given in args.server for s in given.split(",") if s.strip()]
    if args.tool:
        spec["tools"] = list(args.tool)
    if args.discovery:
        spec["discovery"] = args.discovery
    parse_profile_spec(args.name, spec)  # ConfigError names the profile and the field
    return spec


async def cmd_profiles_set(args: argparse.Namespace) -> int:
    out = Output(args.json)
    spec = build_profile(args)
    hub = await connect(args, out)
    if hub is not None:
        async with hub:
            view = await hub.request("PUT", f"/api/profiles/{quote(args.name, safe='')}", body=spec)
        where = "on the hub (and its config file)"
    else:
        path = config_path(args)
        config, created = load_or_new(path)
        replaced = args.name in config.profiles
        config.profiles[args.name] = parse_profile_spec(args.name, spec)
        save_new_or_existing(config)
        view = file_view(args.name, config.profiles[args.name], set(config.servers) | set(config.agents))
        where = f"in {path}{' (new file)' if created else ''}"
        if not replaced:
            where += "; a hub running this config serves it at once"
    if out.json_mode:
        out.emit_json(view)
        return EXIT_OK
    count = view.get("tool_count")
    tools = f", {count} tools" if count is not None else ""
    out.say(f"set profile {args.name} {where}{tools}: /mcp/{args.name}")
    _warn_unknown(out, [view])
    return EXIT_OK


async def cmd_profiles_remove(args: argparse.Namespace) -> int:
    out = Output(args.json)
    hub = await connect(args, out)
    if hub is not None:
        async with hub:
            await hub.request("DELETE", f"/api/profiles/{quote(args.name, safe='')}")
        where = "from the hub (and its config file); its /mcp endpoint closed its sessions"
    else:
        path = config_path(args)
        config = load_config(path)
        if args.name not in config.profiles:
            raise UnknownProfileError(args.name, list(config.profiles))
        config.profiles.pop(args.name)
        save_config(config)
        where = f"from {path}"
    if out.json_mode:
        out.emit_json({"name": args.name, "removed": True})
    else:
        out.say(f"removed profile {args.name} {where}")
    return EXIT_OK


def add_profiles(sub: Any, common: argparse.ArgumentParser, hubopts: argparse.ArgumentParser) -> None:
    """The ``profiles`` command and its actions (called by the parser)."""
    note = (
        "With a hub running (patchbay serve) at --url / $PATCHBAY_URL, this goes through its API; otherwise "
        "it works on the config file directly. A line on stderr says which."
    )
    profiles = sub.add_parser(
        "profiles",
        help="list, show, set or remove profiles (named views of the catalog)",
        description="Manage profiles: named views of the catalog, each served at /mcp/<name>.\n\n"
        f"{note}\n\nexamples:\n"
        "  patchbay profiles list\n"
        "  patchbay profiles set coding --server github --server files --tool 'github__*' --tool 'files__*' "
        "--tool '!github__delete_*'\n"
        "  patchbay profiles set everything --discovery search\n"
        "  patchbay profiles show coding\n"
        "  patchbay profiles remove coding",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = profiles.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser(
        "list",
        help="the profiles, with their tool counts through a hub",
        description=f"List the profiles: discovery, tool count (through a hub), servers, patterns.\n\n{note}",
        parents=[common, hubopts],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ls.set_defaults(func=cmd_profiles_list)
    show = actions.add_parser(
        "show",
        help="one profile, with its tools' names through a hub",
        description=f"Show one profile; through a hub, also the exposed names of its tools.\n\n{note}\n\n"
        "example:\n  patchbay profiles show coding --json",
        parents=[common, hubopts],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("name", help="the profile's name")
    show.set_defaults(func=cmd_profiles_show)
    put = actions.add_parser(
        "set",
        help="add or replace a profile",
        description="Add a profile, or replace it whole (options not given are not kept). Saved to the "
        "config file atomically; a hub serves it at /mcp/<name> at once.\n\n"
        f"{note}\n\nexamples:\n"
        "  patchbay profiles set coding --server github,files --tool 'github__*' --tool '!github__delete_*'\n"
        "  patchbay profiles set math --tool '*__add' --tool '*__multiply'\n"
        "  patchbay profiles set big --discovery search      (lists search_tools and call_tool only)\n"
        '  patchbay profiles set ops --spec \'{"servers": ["k8s"], "discovery": "search"}\'',
        parents=[common, hubopts],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    put.add_argument("name", help="the profile's name (letters, digits, '_' or '-')")
    put.add_argument(
        "--server",
        action="append",
        metavar="NAME[,NAME…]",
        help="a server or agent whose tools it may hold (repeatable; default: any)",
    )
    put.add_argument(
        "--tool",
        action="append",
        metavar="PATTERN",
        help="a glob over exposed names, '!' to exclude (repeatable; quote it in the shell)",
    )
    put.add_argument(
        "--discovery",
        choices=["full", "search"],
        help="full (default): list its tools; search: list the meta-tools search_tools and call_tool",
    )
    put.add_argument("--spec", help="the profile as JSON (the options above override its keys)")
    put.set_defaults(func=cmd_profiles_set)
    rm = actions.add_parser(
        "remove",
        help="remove a profile",
        description=f"Remove a profile (a hub closes its /mcp/<name> sessions).\n\n{note}",
        parents=[common, hubopts],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rm.add_argument("name", help="the profile's name")
    rm.set_defaults(func=cmd_profiles_remove)
