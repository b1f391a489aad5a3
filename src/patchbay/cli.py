"""The ``patchbay`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from patchbay import __version__
from patchbay.errors import PatchbayError
from patchbay.events import CatalogEvent, ServerStateEvent
from patchbay.hub import Hub

log = logging.getLogger("patchbay.cli")


def default_config_path() -> Path:
    """The bundled config: the demo server, so a first run shows real tools."""
    return Path(str(resources.files("patchbay").joinpath("default_config.json")))


def _print_status(hub: Hub) -> None:
    rows = [("SERVER", "STATE", "PID", "PROTOCOL", "TOOLS", "RESTARTS", "LAST ERROR")]
    for st in hub.status().values():
        rows.append(
            (
                st.name,
                str(st.state),
                str(st.pid or "-"),
                st.protocol_version or "-",
                str(st.tool_count),
                str(st.restarts),
                (st.last_error or "")[:80],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _print_tools(hub: Hub) -> None:
    tools = hub.tools("mcp")
    print(f"\n{len(tools)} tools:")
    width = max((len(t["name"]) for t in tools), default=0)
    for t in tools:
        desc = (t.get("description") or "").strip().splitlines()
        print(f"  {t['name'].ljust(width)}  {desc[0][:90] if desc else ''}")


async def _run(args: argparse.Namespace) -> int:
    hub = Hub.from_file(args.config)
    print(f"patchbay {__version__}: starting {len(hub.servers)} server(s) from {args.config}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with hub:
        _print_status(hub)
        _print_tools(hub)
        if args.once:
            return 0 if all(s.state == "ready" for s in hub.status().values() if s.enabled) else 1
        print("\nRunning; server and catalog changes are shown below. Ctrl-C to stop.", flush=True)

        async def watch() -> None:
            async for ev in hub.events():
                if isinstance(ev, ServerStateEvent):
                    print(f"server {ev.server}: {ev.state}{f' ({ev.error})' if ev.error else ''}", flush=True)
                elif isinstance(ev, CatalogEvent) and (ev.added or ev.removed):
                    print(f"catalog v{ev.version}: +{len(ev.added)} -{len(ev.removed)} tools", flush=True)

        watcher = asyncio.create_task(watch())
        await stop.wait()
        watcher.cancel()
        print("stopping…", flush=True)
    return 0


async def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from patchbay.config import auth_tokens
    from patchbay.server.app import ServeSettings, create_app, env_tokens

    hub = Hub.from_file(args.config)
    settings = ServeSettings(
        host=args.host,
        port=args.port,
        tokens=[*args.token, *env_tokens(), *auth_tokens(hub.config)],
        allowed_hosts=args.allow_host,
        watch_config=not args.no_reload,
    )
    try:
        app = create_app(hub, settings)
    except ValueError as exc:
        print(f"patchbay: error: {exc}", file=sys.stderr)
        return 2
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level="debug" if args.debug else "warning",
            ws="websockets-sansio",
            ws_max_size=args.agent_max_frame,
            ws_ping_interval=args.agent_ping,
            ws_ping_timeout=args.agent_ping,
            timeout_graceful_shutdown=5,
            lifespan="on",
        )
    )
    base = f"http://{args.host if ':' not in args.host else f'[{args.host}]'}:{args.port}"
    print(f"patchbay {__version__}: {len(hub.servers)} server(s) from {args.config}", flush=True)
    print(f"  MCP endpoint  {base}/mcp", flush=True)
    print(f"  API docs      {base}/docs{'   (bearer token required)' if settings.tokens else ''}", flush=True)

    async def report_ready() -> None:
        await app.state.started.wait()
        print("", flush=True)
        _print_status(hub)
        _print_tools(hub)
        print(f"\nready: serving {len(hub.catalog.tools)} tools at {base}/mcp. Ctrl-C to stop.", flush=True)

    reporter = asyncio.create_task(report_ready())
    try:
        await server.serve()
    finally:
        reporter.cancel()
    return 0 if server.started else 1


async def _agent(args: argparse.Namespace) -> int:
    import os

    from patchbay.agent import AgentRefused, run_agent

    token = args.token or os.environ.get("PATCHBAY_AGENT_TOKEN", "")
    if not token:
        print("patchbay: error: give --token or set PATCHBAY_AGENT_TOKEN", file=sys.stderr)
        return 2
    if not args.hub.startswith(("ws://", "wss://")):
        print(f"patchbay: error: --hub must be a ws:// or wss:// URL, got {args.hub!r}", file=sys.stderr)
        return 2

    def on_state(state: str, detail: str) -> None:
        print(f"agent {state}: {detail}", flush=True)

    print(f"patchbay agent {__version__}: lending the servers of {args.config} to {args.hub}", flush=True)
    try:
        await run_agent(args.config, args.hub, token, on_state)
    except AgentRefused as exc:
        print(f"patchbay: error: {exc}", file=sys.stderr)
        return 2
    return 0


async def _call(args: argparse.Namespace) -> int:
    from patchbay.results import result_text

    arguments: dict[str, Any] = json.loads(args.args) if args.args else {}
    async with Hub.from_file(args.config) as hub:
        result = await hub.call_tool(args.tool, arguments, timeout=args.timeout)
        if args.json:
            print(result.model_dump_json(by_alias=True, exclude_none=True, indent=2))
        else:
            print(result_text(result))
        return 1 if result.is_error else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="patchbay", description="One hub for all your MCP servers.")
    parser.add_argument("--version", action="version", version=f"patchbay {__version__}")
    parser.add_argument("--debug", action="store_true", help="verbose logs and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="start the configured servers and show their tools",
        description="Start every enabled server, print status and the merged tool catalog, and keep them "
        "supervised until Ctrl-C.\n\nexample: patchbay run --config ~/.config/patchbay.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--config", type=Path, default=default_config_path(), help="config file (default: bundled)"
    )
    run.add_argument("--once", action="store_true", help="print status and tools, then exit")
    run.set_defaults(func=_run)

    serve = sub.add_parser(
        "serve",
        help="serve every tool at one MCP endpoint (/mcp), with a management API",
        description="Start the configured servers and serve them: the aggregated MCP endpoint at /mcp, the "
        "management API at /api (docs at /docs), /healthz, /readyz and /metrics. The config file is watched "
        "and changes are applied live.\n\nexample: patchbay serve --config patchbay.json --port 8765\n"
        "then point any MCP client at http://127.0.0.1:8765/mcp",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--config", type=Path, default=default_config_path(), help="config file (default: bundled)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port (default: 8765)")
    serve.add_argument(
        "--token", action="append", default=[], help="bearer token clients must send (also PATCHBAY_TOKEN)"
    )
    serve.add_argument(
        "--allow-host",
        action="append",
        default=[],
        help="extra host name clients may use (Host header check)",
    )
    serve.add_argument("--no-reload", action="store_true", help="do not watch the config file")
    serve.add_argument(
        "--agent-max-frame",
        type=int,
        default=16 * 1024 * 1024,
        help="largest WebSocket frame accepted (bytes)",
    )
    serve.add_argument(
        "--agent-ping",
        type=float,
        default=10.0,
        help="seconds between pings to agents; one that does not answer within as long again is dropped",
    )
    serve.set_defaults(func=_serve)

    agent = sub.add_parser(
        "agent",
        help="dial out to a hub and lend it this machine's servers",
        description="Run the servers of --config here and offer their tools to a patchbay hub that cannot "
        "reach this machine (NAT, laptop): the agent dials out over WebSocket and reconnects forever.\n\n"
        "example: patchbay agent --hub wss://hub.example.com/agents --token $TOKEN --config laptop.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    agent.add_argument(
        "--hub", required=True, help="the hub's agent endpoint, ws://HOST:PORT/agents or wss://…"
    )
    agent.add_argument("--token", help="this agent's token (or PATCHBAY_AGENT_TOKEN)")
    agent.add_argument(
        "--config", type=Path, default=default_config_path(), help="config file (default: bundled)"
    )
    agent.set_defaults(func=_agent)

    call = sub.add_parser(
        "call",
        help="call one tool and print its result",
        description='example: patchbay call demo__add --args \'{"a": 1, "b": 2}\'',
    )
    call.add_argument("tool")
    call.add_argument("--args", help="arguments as a JSON object")
    call.add_argument("--config", type=Path, default=default_config_path())
    call.add_argument("--timeout", type=float, default=None)
    call.add_argument("--json", action="store_true", help="print the full CallToolResult as JSON")
    call.set_defaults(func=_call)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = asyncio.run(args.func(args))
        return code
    except PatchbayError as exc:
        if args.debug:
            raise
        print(f"patchbay: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except json.JSONDecodeError as exc:
        print(f"patchbay: error: --args is not valid JSON: {exc}", file=sys.stderr)
        return 2
    finally:
        with contextlib.suppress(Exception):
            logging.shutdown()


if __name__ == "__main__":
    sys.exit(main())
