"""``tools`` (the tool catalog, in MCP, OpenAI or Anthropic format) and ``call`` (one tool call): through a
running hub, or with the config's servers started in-process for the one command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any
from urllib.parse import quote

from patchbay.cli.configfile import config_path
from patchbay.cli.errors import EXIT_FAILED, EXIT_OK, CliError
from patchbay.cli.hubclient import connect
from patchbay.cli.localhub import local_hub
from patchbay.cli.options import json_object
from patchbay.cli.output import Output, error_suffix

DEFAULT_START_TIMEOUT = 30.0


def _start_timeout(view: Mapping[str, Any]) -> float:
    spec = view.get("spec") or {}
    try:
        return float(spec.get("startTimeout", DEFAULT_START_TIMEOUT))
    except (TypeError, ValueError):
        return DEFAULT_START_TIMEOUT


def _tool_name(tool: Mapping[str, Any]) -> str:
    return str(tool.get("name") or tool.get("function", {}).get("name") or "?")


def _tool_description(tool: Mapping[str, Any]) -> str:
    desc = tool.get("description") or tool.get("function", {}).get("description") or tool.get("title") or ""
    lines = str(desc).strip().splitlines()
    return lines[0] if lines else ""


async def cmd_tools(args: argparse.Namespace) -> int:
    out = Output(args.json)
    params = {"format": args.format, **({"server": args.server} if args.server else {})}
    profile = getattr(args, "profile", None)
    if profile:
        params["profile"] = profile
    hub = await connect(args, out)
    state: tuple[str, str | None] | None = None
    if hub is not None:
        async with hub:
            # The hub answers once its servers' first start has settled, each within its startTimeout:
            # wait at least that long (plus a margin), not the client's usual 30 s.
            views = await hub.request("GET", "/api/servers")
            longest = max((_start_timeout(v) for v in views), default=DEFAULT_START_TIMEOUT)
            tools = await hub.request("GET", "/api/tools", params=params, timeout=longest + 30)
            if args.server and not tools:
                view = await hub.request("GET", f"/api/servers/{quote(args.server, safe='')}")
                state = (str(view.get("state")), view.get("last_error"))
    else:
        async with local_hub(config_path(args), out) as local:
            tools = local.tools(args.format, server=args.server, profile=profile)
            if args.server and not tools:
                st = local.server_status(args.server)
                state = (str(st.state), st.last_error)
    if state is not None and state[0] != "ready":
        raise CliError(
            f"server {args.server!r} is not ready ({state[0]}){error_suffix(args.server, state[1])}",
            EXIT_FAILED,
        )
    if out.json_mode or args.format != "mcp":  # the LLM formats are only useful as JSON
        out.emit_json(tools)
        return EXIT_OK
    if tools:
        out.table(["TOOL", "DESCRIPTION"], [[(_tool_name(t), "cyan"), _tool_description(t)] for t in tools])
    out.note(f"{len(tools)} tool(s)")
    return EXIT_OK


def _json_or_text(raw: str) -> Any:
    def no_constants(name: str) -> Any:  # NaN / Infinity stay strings
        raise ValueError(name)

    try:
        return json.loads(raw, parse_constant=no_constants)
    except ValueError:
        return raw


def parse_call_arguments(
    args_json: str | None, pairs: Sequence[str], stdin: IO[str] | None = None
) -> dict[str, Any]:
    """``--args JSON`` (``-`` reads stdin) or ``key=value`` pairs, whose values are JSON when they parse
    (``n=5`` → 5, ``on=true`` → true, ``tags=["a"]`` → a list) and strings otherwise (``text=hi``)."""
    if args_json is not None and pairs:
        raise CliError("give the arguments either as --args JSON or as key=value pairs, not both")
    if args_json is not None:
        text = (stdin or sys.stdin).read() if args_json == "-" else args_json
        return json_object("--args", text, "like '{\"a\": 1}'")
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise CliError(f"expected key=value, got {pair!r}")
        if key in result:
            raise CliError(f"argument {key!r} is given twice")
        result[key] = _json_or_text(raw)
    return result


async def cmd_call(args: argparse.Namespace) -> int:
    import asyncio

    import mcp.types as types

    from patchbay.results import result_text

    out = Output(args.json)
    if args.args == "-":  # in a thread: Ctrl-C must not wait for stdin
        arguments = await asyncio.to_thread(parse_call_arguments, args.args, args.pairs)
    else:
        arguments = parse_call_arguments(args.args, args.pairs)
    hub = await connect(args, out)
    if hub is not None:
        body: dict[str, Any] = {"arguments": arguments}
        if args.timeout is not None:
            body["timeout"] = args.timeout
        async with hub:
            data = await hub.request(
                "POST",
                f"/api/tools/{quote(args.tool, safe='')}/call",
                body=body,
                timeout=None if args.timeout is None else args.timeout + 10,
            )
        result = types.CallToolResult.model_validate(data)
    else:
        async with local_hub(config_path(args), out) as local:
            out.note(f"calling {args.tool}…")
            result = await local.call_tool(args.tool, arguments, timeout=args.timeout)
    if out.json_mode:
        out.emit_json(result.model_dump(by_alias=True, exclude_none=True, mode="json"))
    else:
        out.say(result_text(result))
    return EXIT_FAILED if result.is_error else EXIT_OK
