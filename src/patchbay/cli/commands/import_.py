"""``import claude|vscode|cursor``: merge an MCP client's servers into patchbay's config file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from patchbay.cli.configfile import config_path, load_or_new, save_new_or_existing, spec_target
from patchbay.cli.errors import EXIT_FAILED, EXIT_OK, CliError
from patchbay.cli.importers import CLIENTS, Translation, client_config_paths, read_client_config
from patchbay.cli.output import Cell, Output, one_line
from patchbay.config import parse_server_spec
from patchbay.errors import ConfigError


def _import_source(args: argparse.Namespace, out: Output) -> Path:
    if args.path is not None:
        return Path(args.path).expanduser()
    candidates = client_config_paths(args.client)
    existing = [p for p in candidates if p.exists()]
    if not existing:
        raise CliError(
            f"no {CLIENTS[args.client]} config found (looked for {', '.join(str(p) for p in candidates)}); "
            f"give its path: patchbay import {args.client} PATH"
        )
    for other in existing[1:]:
        out.note(f"also found {other}; import it with: patchbay import {args.client} {other}")
    return existing[0]


async def cmd_import(args: argparse.Namespace) -> int:
    out = Output(args.json)
    source = _import_source(args, out)
    servers, inputs = read_client_config(source)
    workspace = source.resolve().parent.parent if source.parent.name in (".vscode", ".cursor") else None
    target = config_path(args, write=True)
    config, created = load_or_new(target)
    out.note(f"importing {CLIENTS[args.client]} servers from {source} into {target}")
    added: list[str] = []
    replaced: list[str] = []
    skipped: list[dict[str, str]] = []
    invalid = 0
    warnings: list[dict[str, Any]] = []
    for name, raw in servers.items():
        tr = Translation(str(name), args.client, workspace, inputs)
        try:
            if not isinstance(raw, dict):
                raise ConfigError(f"server {name!r}: expected an object, got {type(raw).__name__}")
            spec = parse_server_spec(name, tr.entry(raw))
        except ConfigError as exc:
            skipped.append({"name": str(name), "reason": one_line(str(exc))})
            invalid += 1
            continue
        if name in config.agents:
            skipped.append({"name": name, "reason": f"an agent named {name!r} is in {target}"})
            invalid += 1
            continue
        if name in config.servers:
            if config.servers[name].to_json() == spec.to_json():
                skipped.append({"name": name, "reason": "already present, identical"})
                continue
            if not args.overwrite:
                skipped.append({"name": name, "reason": "already present (use --overwrite to replace it)"})
                continue
            replaced.append(name)
        else:
            added.append(name)
        config.servers[name] = spec
        warnings += tr.warnings
    written = bool(added or replaced) and not args.dry_run
    if written:
        save_new_or_existing(config)
    report = {
        "source": str(source),
        "target": str(target),
        "created": created and written,
        "dry_run": args.dry_run,
        "added": added,
        "replaced": replaced,
        "skipped": skipped,
        "warnings": warnings,
    }
    if out.json_mode:
        out.emit_json(report)
    else:
        rows: list[list[Cell]] = []
        for name in added:
            rows.append([("added", "green"), name, spec_target(config.servers[name].to_json())])
        for name in replaced:
            rows.append([("replaced", "yellow"), name, spec_target(config.servers[name].to_json())])
        for item in skipped:
            rows.append([("skipped", "dim"), item["name"], item["reason"]])
        if rows:
            out.table(["RESULT", "SERVER", "DETAIL"], rows)
        for w in warnings:
            out.warn(w["message"])
        summary = f"{len(added)} added, {len(replaced)} replaced, {len(skipped)} skipped"
        if args.dry_run:
            out.say(f"dry run: {summary}; {target} not written")
        elif written:
            out.say(f"wrote {target}{' (new file)' if created else ''}: {summary}")
        else:
            out.say(f"nothing to change in {target}: {summary}")
    return EXIT_FAILED if invalid else EXIT_OK
