"""``audit tail``: the last records of the audit log, and with ``-f`` the new ones as they come.

Through a running hub it reads ``GET /api/audit`` (admin token), polling once a second to follow; without
one it reads the log file the config names (``audit.path``, default beside the config) and follows the
file, across rotations.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from patchbay.cli.configfile import config_path
from patchbay.cli.errors import EXIT_OK, CliError
from patchbay.cli.hubclient import HubClient, connect
from patchbay.cli.output import Output

POLL_SECONDS = 1.0
_OUTCOME_STYLE = {"ok": "green", "tool_error": "yellow"}


def _line(out: Output, record: dict[str, Any]) -> str:
    """One record as one line: time, who, what, outcome, duration."""
    when = str(record.get("time", "")).replace("T", " ").rstrip("Z")[:23]
    who = str(record.get("identity", "-"))
    if record.get("role"):
        who += f" ({record['role']})"
    event = str(record.get("event", ""))
    what = record.get("tool") or record.get("target") or record.get("path") or ""
    if event == "change":
        what = f"{record.get('action')} {record.get('target') or ''}".strip()
    elif event in ("api", "refused"):
        what = f"{record.get('method', '')} {record.get('path', '')}".strip()
    outcome = str(record.get("outcome") or record.get("status") or "")
    style = _OUTCOME_STYLE.get(outcome, "red" if outcome and not outcome.startswith("2") else "")
    parts = [out.paint(when, "dim"), who, event, what]
    if record.get("server"):
        parts.append(f"[{record['server']}]")
    parts.append(out.paint(outcome, style) if style else outcome)
    if record.get("duration_ms") is not None:
        parts.append(f"{record['duration_ms']:.1f} ms")
    client = record.get("client") or {}
    if isinstance(client, dict) and client.get("name"):
        parts.append(out.paint(f"{client['name']} {client.get('version') or ''}".strip(), "dim"))
    if record.get("detail"):
        parts.append(str(record["detail"]))
    return "  ".join(p for p in parts if p)


def _emit(out: Output, records: list[dict[str, Any]]) -> None:
    for record in records:
        if out.json_mode:
            print(json.dumps(record, ensure_ascii=False), flush=True)
        else:
            out.say(_line(out, record))


def _params(args: argparse.Namespace) -> dict[str, str]:
    params = {"limit": str(args.lines)}
    for key in ("identity", "tool", "outcome", "event", "since"):
        value = getattr(args, key)
        if value:
            params[key] = value
    return params


async def cmd_audit_tail(args: argparse.Namespace) -> int:
    out = Output(args.json)
    if not 1 <= args.lines <= 10_000:
        raise CliError("-n/--lines must be between 1 and 10000")
    hub = await connect(args, out)
    if hub is not None:
        async with hub:
            await _tail_hub(hub, args, out)
    else:
        await _tail_file(args, out)
    return EXIT_OK


async def _tail_hub(hub: HubClient, args: argparse.Namespace, out: Output) -> None:
    import asyncio

    params = _params(args)
    records: list[dict[str, Any]] = await hub.request("GET", "/api/audit", params=params)
    _emit(out, records)
    if not args.follow:
        return
    seen = {(r.get("time"), r.get("seq")) for r in records}
    last = records[-1]["time"] if records else None
    while True:
        await asyncio.sleep(POLL_SECONDS)
        if last is not None:
            params["since"] = last
        params["limit"] = "10000"
        batch: list[dict[str, Any]] = await hub.request("GET", "/api/audit", params=params)
        new = [r for r in batch if (r.get("time"), r.get("seq")) not in seen]
        _emit(out, new)
        for r in new:
            seen.add((r.get("time"), r.get("seq")))
        if batch:
            last = batch[-1]["time"]
        if len(seen) > 50_000:
            seen = {(r.get("time"), r.get("seq")) for r in batch}


def _settings(args: argparse.Namespace) -> Any:
    from patchbay.audit import parse_audit
    from patchbay.config import load_config

    path = config_path(args)
    config = load_config(path)
    settings = parse_audit(config.document, config.path)
    if settings is None:
        raise CliError(f'{path} turns the audit log off ("audit": false)')
    return settings


async def _tail_file(args: argparse.Namespace, out: Output) -> None:
    import asyncio

    from patchbay.audit import AuditQuery, audit_files, parse_time, read_records
    from patchbay.errors import ConfigError

    settings = _settings(args)
    try:
        since = parse_time(args.since, "--since") if args.since else None
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    query = AuditQuery(
        since=since, identity=args.identity, tool=args.tool, outcome=args.outcome, event=args.event,
        limit=args.lines,
    )  # fmt: skip
    if not settings.path.exists() and not args.follow:
        out.note(f"no audit log yet at {settings.path}")
        return
    _emit(out, await asyncio.to_thread(read_records, audit_files(settings), query))
    if args.follow:
        await _follow(settings.path, query, out)


async def _follow(path: Path, query: Any, out: Output) -> None:
    """New lines of the log as they are written; a rotation (new inode, or a shorter file) starts over."""
    import asyncio
    import datetime as dt

    position, inode = _end(path)
    while True:
        await asyncio.sleep(POLL_SECONDS / 4)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        if st.st_ino != inode or st.st_size < position:
            position, inode = 0, st.st_ino
        if st.st_size == position:
            continue
        data = await asyncio.to_thread(_read_from, path, position)
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next round
        position += end
        for raw in data[:end].splitlines():
            try:
                record = json.loads(raw)
                when = dt.datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00")).timestamp()
            except (ValueError, KeyError, TypeError):
                continue
            if query.matches(record, when):
                _emit(out, [record])


def _read_from(path: Path, position: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(position)
        return f.read()


def _end(path: Path) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return 0, 0
    return st.st_size, st.st_ino


def add_audit_subcommands(
    sub: Any, common: argparse.ArgumentParser, hubopts: argparse.ArgumentParser
) -> None:
    audit = sub.add_parser(
        "audit",
        help="read the audit log (who called what, changes, refusals)",
        description="The audit log: every tool call, resource read and prompt get, every management "
        "change, sign-in and refused request. Through a running hub (admin token) or from the log file "
        "beside the config.\n\nexamples:\n  patchbay audit tail\n  patchbay audit tail -f --identity ci\n"
        "  patchbay audit tail --tool github__create_issue --since 2h --json",
    )
    actions = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    tail = actions.add_parser(
        "tail",
        help="the last records, and with -f the new ones as they come",
        description="Print the last records of the audit log (one line each; --json: one JSON object per "
        "line). With -f, keep printing new ones until Ctrl-C.\n\nWith a hub running (patchbay serve), "
        "this reads its GET /api/audit (needs an admin token); otherwise the log file of the config.\n\n"
        "examples:\n  patchbay audit tail -n 50\n  patchbay audit tail -f --tool github__create_issue\n"
        "  patchbay audit tail --no-hub --config ~/patchbay.json --outcome rate_limited",
        parents=[common, hubopts],
    )
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
    tail.add_argument(
        "-n", "--lines", type=int, default=20, help="how many records to show first (default 20)"
    )
    tail.add_argument("--identity", help="only this identity's records")
    tail.add_argument("--tool", help="only calls of this tool (exposed name)")
    tail.add_argument("--outcome", help="only this outcome (ok, tool_error, timeout, rate_limited, …)")
    tail.add_argument("--event", help="only this kind (tool_call, change, api, refused, sign_in, …)")
    tail.add_argument("--since", help="only records after this time: ISO 8601, epoch seconds, or 15m, 2h, 1d")
    tail.set_defaults(func=cmd_audit_tail)
