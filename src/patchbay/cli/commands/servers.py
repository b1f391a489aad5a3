"""``servers list|add|remove|enable|disable|restart``: through a running hub's API, or on the config file."""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from patchbay.cli.configfile import config_path, file_view, load_or_new, save_new_or_existing, spec_target
from patchbay.cli.errors import EXIT_FAILED, EXIT_OK, CliError
from patchbay.cli.hubclient import connect
from patchbay.cli.options import json_object, key_value_pairs
from patchbay.cli.output import STATE_STYLE, Cell, Output, error_suffix, one_line
from patchbay.config import load_config, parse_server_spec, save_config
from patchbay.errors import ConfigError, DuplicateServerError, UnknownServerError


def _state_cell(state: str | None) -> Cell:
    return (state or "-", STATE_STYLE.get(state or "", ""))


def _live_table(out: Output, views: Sequence[Mapping[str, Any]]) -> None:
    rows: list[list[Cell]] = []
    for v in views:
        rows.append(
            [
                v["name"],
                _state_cell(v.get("state")),
                str(v.get("transport") or "-"),
                str(v.get("pid") or "-"),
                str(v.get("tool_count", 0)),
                str(v.get("restarts", 0)),
                one_line(v.get("last_error") or ""),
            ]
        )
    out.table(["SERVER", "STATE", "TRANSPORT", "PID", "TOOLS", "RESTARTS", "LAST ERROR"], rows)


def _file_table(out: Output, views: Sequence[Mapping[str, Any]]) -> None:
    rows: list[list[Cell]] = []
    for v in views:
        enabled = "enabled" if v["enabled"] else "disabled"
        rows.append([v["name"], _state_cell(enabled), v["transport"], spec_target(v["spec"])])
    out.table(["SERVER", "ENABLED", "TRANSPORT", "COMMAND / URL"], rows)


async def cmd_servers_list(args: argparse.Namespace) -> int:
    out = Output(args.json)
    hub = await connect(args, out)
    if hub is not None:
        async with hub:
            views = await hub.request("GET", "/api/servers")
        table, none = _live_table, "the hub has no servers"
    else:
        config = load_config(config_path(args))
        views = [file_view(n, s) for n, s in config.servers.items()]
        table, none = _file_table, "no servers in the config"
    if out.json_mode:
        out.emit_json(views)
    elif views:
        table(out, views)
    else:
        out.note(none)
    return EXIT_OK


def build_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The config entry ``servers add`` describes; validated here so a bad one never reaches a hub."""
    spec: dict[str, Any] = {}
    if args.spec:
        spec.update(json_object("--spec", args.spec, "(a config entry)"))
    words = list(args.command_line)
    if len(words) == 1 and re.match(r"^https?://", words[0]):
        spec["url"] = words[0]
    elif words:
        spec["command"], spec["args"] = words[0], words[1:]
    if args.type:
        spec["type"] = args.type
    for key, given, header in (("env", args.env, False), ("headers", args.header, True)):
        if given:
            current = spec.get(key)
            base: dict[str, Any] = current if isinstance(current, dict) else {}
            spec[key] = {**base, **key_value_pairs(given, f"--{key.removesuffix('s')}", header=header)}
    if args.cwd:
        spec["cwd"] = args.cwd
    if args.prefix is not None:
        spec["prefix"] = args.prefix
    if args.timeout is not None:
        spec["timeout"] = args.timeout
    if args.disabled:
        spec["enabled"] = False
    if not spec.get("command") and not spec.get("url"):
        raise CliError(
            "give the server's command after '--' (patchbay servers add NAME -- COMMAND [ARGS…]) or its URL"
        )
    parse_server_spec(args.name, spec)  # ConfigError names the field
    return spec


def _report_view(out: Output, verb: str, view: Mapping[str, Any], *, expect_running: bool) -> int:
    """Print what a change through the hub left behind; a server that should run but does not is a failure."""
    name, state = view["name"], view.get("state")
    if out.json_mode:
        out.emit_json(view)
    else:
        tools = f", {view.get('tool_count', 0)} tools" if state == "ready" else ""
        out.say(f"{verb} {name}: {out.paint(str(state), STATE_STYLE.get(str(state), ''))}{tools}")
    if expect_running and view.get("enabled") and state != "ready":
        out.error(f"server {name!r} did not start ({state}){error_suffix(name, view.get('last_error'))}")
        return EXIT_FAILED
    return EXIT_OK


async def cmd_servers_add(args: argparse.Namespace) -> int:
    out = Output(args.json)
    spec = build_spec(args)
    hub = await connect(args, out)
    if hub is not None:
        if spec.get("enabled", True) is not False:
            out.note(f"adding {args.name} and waiting for it to start…")
        async with hub:
            view = await hub.request(
                "POST", "/api/servers", body={"name": args.name, "spec": spec}, timeout=None
            )
        return _report_view(out, "added", view, expect_running=True)
    path = config_path(args)
    config, created = load_or_new(path)
    if args.name in config.servers:
        raise DuplicateServerError(args.name)
    if args.name in config.agents:
        raise ConfigError(
            f"server {args.name!r}: an agent has the same name; server and agent names must differ"
        )
    config.servers[args.name] = parse_server_spec(args.name, spec)
    save_new_or_existing(config)
    if out.json_mode:
        out.emit_json(file_view(args.name, config.servers[args.name]))
    else:
        out.say(
            f"added {args.name} to {path}{' (new file)' if created else ''}; "
            "it starts when a hub runs this config (`patchbay serve`)"
        )
    return EXIT_OK


async def cmd_servers_remove(args: argparse.Namespace) -> int:
    out = Output(args.json)
    hub = await connect(args, out)
    if hub is not None:
        async with hub:
            await hub.request("DELETE", f"/api/servers/{quote(args.name, safe='')}")
        where = "from the hub (and its config file)"
    else:
        path = config_path(args)
        config = load_config(path)
        if args.name not in config.servers:
            raise UnknownServerError(args.name, list(config.servers))
        spec = config.servers.pop(args.name)
        save_config(config)
        where = f"from {path}"
        if spec.transport in ("http", "sse"):
            from patchbay.oauth.store import TokenStore

            if TokenStore().delete(args.name):  # no hub to revoke them through: deleted here
                where += " (its stored sign-in tokens deleted)"
    if out.json_mode:
        out.emit_json({"name": args.name, "removed": True})
    else:
        out.say(f"removed {args.name} {where}")
    return EXIT_OK


async def _set_enabled(args: argparse.Namespace, enabled: bool) -> int:
    out = Output(args.json)
    verb = "enabled" if enabled else "disabled"
    hub = await connect(args, out)
    if hub is not None:
        if enabled:
            out.note(f"enabling {args.name} and waiting for it to start…")
        async with hub:
            view = await hub.request(
                "POST", f"/api/servers/{quote(args.name, safe='')}/{verb[:-1]}", timeout=None
            )
        return _report_view(out, verb, view, expect_running=enabled)
    path = config_path(args)
    config = load_config(path)
    spec = config.servers.get(args.name)
    if spec is None:
        raise UnknownServerError(args.name, list(config.servers))
    changed = spec.is_enabled != enabled
    if changed:
        config.servers[args.name] = spec.with_enabled(enabled)
        save_config(config)
    if out.json_mode:
        out.emit_json(file_view(args.name, config.servers[args.name]))
    else:
        out.say(f"{verb} {args.name} in {path}" if changed else f"{args.name} is already {verb} in {path}")
    return EXIT_OK


async def cmd_servers_enable(args: argparse.Namespace) -> int:
    return await _set_enabled(args, True)


async def cmd_servers_disable(args: argparse.Namespace) -> int:
    return await _set_enabled(args, False)


async def cmd_servers_restart(args: argparse.Namespace) -> int:
    out = Output(args.json)
    hub = await connect(args, out, need_hub=True)
    assert hub is not None
    out.note(f"restarting {args.name}…")
    async with hub:
        view = await hub.request("POST", f"/api/servers/{quote(args.name, safe='')}/restart", timeout=None)
    return _report_view(out, "restarted", view, expect_running=True)
