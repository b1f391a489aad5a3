"""``tools search QUERY`` (the tools that best match a request) and ``tools approve NAME`` (pin a changed
tool's definition again): through a running hub, or with the config's servers started for the command.

Kept apart from ``tools.py`` so the grammar is one call, ``add_tools_subcommands``, from the parser.
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from patchbay.cli.configfile import config_path
from patchbay.cli.errors import EXIT_OK, CliError
from patchbay.cli.hubclient import connect
from patchbay.cli.localhub import local_hub
from patchbay.cli.output import Output
from patchbay.search import DEFAULT_LIMIT, MAX_LIMIT


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


async def cmd_tools_search(args: argparse.Namespace) -> int:
    out = Output(args.json)
    query = " ".join(args.query).strip()
    if not query:
        raise CliError("say what the tool should do, e.g. patchbay tools search 'open a pull request'")
    if not 1 <= args.limit <= MAX_LIMIT:
        raise CliError(f"--limit must be between 1 and {MAX_LIMIT}")
    hub = await connect(args, out)
    matches: list[dict[str, Any]]
    if hub is not None:
        async with hub:
            matches = await hub.request(
                "GET", "/api/tools/search", params={"q": query, "limit": str(args.limit)}
            )
    else:
        async with local_hub(config_path(args), out) as local:
            await local.prepare_search()  # "search": "hybrid": the tools embedded first
            matches = [m.to_json() for m in await local.asearch_tools(query, args.limit)]
    if out.json_mode:
        out.emit_json(matches)
        return EXIT_OK
    if matches:
        out.table(
            ["TOOL", "SCORE", "DESCRIPTION"],
            [[(m["name"], "cyan"), f"{m['score']:.2f}", _first_line(m["description"])] for m in matches],
        )
    out.note(f"{len(matches)} match(es)")
    return EXIT_OK


async def cmd_tools_approve(args: argparse.Namespace) -> int:
    out = Output(args.json)
    hub = await connect(args, out)
    if hub is not None:
        async with hub:
            change = await hub.request("POST", f"/api/tools/{quote(args.name, safe='')}/approve")
    else:
        async with local_hub(config_path(args), out) as local:
            change = local.approve_tool(args.name).to_json()
    if out.json_mode:
        out.emit_json(change)
        return EXIT_OK
    if change.get("diff"):
        out.say(change["diff"])
    out.note(f"approved {change['name']}: its current definition is pinned")
    return EXIT_OK


def add_tools_subcommands(
    tools: argparse.ArgumentParser, common: argparse.ArgumentParser, hubopts: argparse.ArgumentParser
) -> None:
    """``tools search`` and ``tools approve``; plain ``tools [--format …]`` keeps listing."""
    sub = tools.add_subparsers(dest="tools_command", required=False, metavar="[search|approve]")
    search = sub.add_parser(
        "search",
        help="the tools that best match a request",
        description="Rank every exposed tool against a request in your own words (offline: BM25 over "
        "names, descriptions and parameters, with light stemming and common synonyms).\n\n"
        "examples:\n  patchbay tools search open a pull request for this branch\n"
        "  patchbay tools search 'what time is it in Tokyo' --limit 3 --json",
        parents=[common, hubopts],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    search.add_argument("query", nargs="+", help="the request (several words may go unquoted)")
    search.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, help=f"how many matches (default {DEFAULT_LIMIT})"
    )
    search.set_defaults(func=cmd_tools_search)
    approve = sub.add_parser(
        "approve",
        help="approve a tool whose definition changed since it was pinned",
        description="Pin the current definition (description, schemas, annotations) of a tool that "
        "changed since patchbay first saw it; prints the diff. With pinning 'block' the tool is listed "
        "and callable again.\n\nexample: patchbay tools approve github__create_issue",
        parents=[common, hubopts],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    approve.add_argument("name", help="the exposed tool name, <server>__<tool>")
    approve.set_defaults(func=cmd_tools_approve)
