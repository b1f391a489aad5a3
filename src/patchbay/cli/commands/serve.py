"""The long-running commands: ``run`` (servers supervised in the terminal), ``serve`` (the MCP endpoint and
management API over HTTP) and ``agent`` (lend this machine's servers to a remote hub)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from patchbay.access.authorization_server.settings import public_host
from patchbay.cli.configfile import announce_config, config_path
from patchbay.cli.errors import EXIT_USAGE, CliError
from patchbay.cli.output import Output
from patchbay.errors import ConfigError

if TYPE_CHECKING:  # the hub (and the MCP SDK under it) is imported only by the commands that run servers
    import asyncio

    from patchbay.hub import Hub


def event_loop_factory(kind: str | None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``serve --loop`` asks for: asyncio's (None), uvloop, or ``auto``: uvloop if installed.

    uvloop is optional (the ``uvloop`` extra; it does not exist on Windows). Next to httptools it served
    ~1.4x the /mcp calls per second at 64 connections (``bench/http.py --stacks``)."""
    if kind in (None, "asyncio"):
        return None
    if importlib.util.find_spec("uvloop") is None:
        if kind == "uvloop":
            raise CliError("--loop uvloop: uvloop is not installed (pip install 'mcp-patchbay[uvloop]')")
        return None
    import uvloop

    return uvloop.new_event_loop


def advertised(option: str | None, host: str, port: int) -> str:
    """Where the other replicas reach this one (proxied /mcp sessions): ``--cluster-advertise``, else
    ``--host:--port``, with the machine's name for a wildcard host."""
    if option:
        return option
    if host in ("0.0.0.0", "::", ""):
        import socket

        host = socket.getfqdn()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _usage_error(message: str) -> int:
    """A refused start (bad settings, token, URL) as the one error line on stderr; exit 2."""
    print(f"patchbay: error: {message}", file=sys.stderr)
    return EXIT_USAGE


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


async def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from patchbay import __version__
    from patchbay.events import CatalogEvent, ServerStateEvent
    from patchbay.hub import Hub

    args.config = config_path(args)
    announce_config(args, args.config)
    hub = Hub.from_file(args.config)
    out = Output(args.json)
    if not args.json:
        print(f"patchbay {__version__}: starting {len(hub.servers)} server(s) from {args.config}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with hub:
        if args.json:
            out.emit_json(
                {
                    "servers": [s.model_dump(mode="json") for s in hub.status().values()],
                    "tools": hub.tools("mcp"),
                }
            )
        else:
            _print_status(hub)
            _print_tools(hub)
        if args.once:
            return 0 if all(s.state == "ready" for s in hub.status().values() if s.enabled) else 1
        if not args.json:
            print("\nRunning; server and catalog changes are shown below. Ctrl-C to stop.", flush=True)

        async def watch() -> None:
            async for ev in hub.events():
                if args.json:
                    print(ev.model_dump_json(), flush=True)
                elif isinstance(ev, ServerStateEvent):
                    print(f"server {ev.server}: {ev.state}{f' ({ev.error})' if ev.error else ''}", flush=True)
                elif isinstance(ev, CatalogEvent) and (ev.added or ev.removed):
                    print(f"catalog v{ev.version}: +{len(ev.added)} -{len(ev.removed)} tools", flush=True)

        watcher = asyncio.create_task(watch())
        await stop.wait()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        if not args.json:
            print("stopping…", flush=True)
    return 0


async def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from patchbay import __version__
    from patchbay.hub import Hub
    from patchbay.server.app import ServeSettings, create_app, env_tokens, uvicorn_config

    args.config = config_path(args)
    announce_config(args, args.config)
    hub = Hub.from_file(args.config)
    from patchbay.access.resource_server import build_resource_server

    try:
        resource_server = build_resource_server(hub.config, args.host, args.port)
        issuer_host = public_host(hub.config)  # auth.server: its issuer's host name is one clients use
    except ConfigError as exc:
        return _usage_error(str(exc))

    from patchbay.cluster.settings import cluster_url

    try:
        redis_url = cluster_url(args.cluster, hub.config)
    except ConfigError as exc:
        return _usage_error(str(exc))
    if redis_url is not None:  # only now is the Redis client imported
        from patchbay.cluster.node import Cluster

        address = advertised(args.cluster_advertise, args.host, args.port)
        try:
            hub.cluster = Cluster(redis_url, hub, address=address)
        except ConfigError as exc:  # a PATCHBAY_SECRET_KEY that is no key
            return _usage_error(str(exc))
    settings = ServeSettings(
        host=args.host,
        port=args.port,
        tokens=[*args.token, *env_tokens()],  # admin tokens; create_app adds the config's auth.tokens
        allowed_hosts=[*args.allow_host, *issuer_host],
        watch_config=not args.no_reload,
        header_timeout=args.header_timeout,
        session_idle_timeout=args.session_idle_timeout,
        http=args.http,
        resource_server=resource_server,
    )
    try:
        app = create_app(hub, settings)
    except (ValueError, ConfigError) as exc:  # a refused binding, an invalid auth.tokens
        return _usage_error(str(exc))
    import uvicorn

    from patchbay.transports.deflate import hub_ws_protocol

    server = uvicorn.Server(
        uvicorn_config(
            app,
            settings,
            log_level="debug" if args.debug else "warning",
            ws=hub_ws_protocol(),  # websockets-sansio, short agent messages uncompressed
            ws_max_size=args.agent_max_frame,
            ws_ping_interval=args.agent_ping,
            ws_ping_timeout=args.agent_ping,
            timeout_graceful_shutdown=5,
        )
    )
    base = f"http://{args.host if ':' not in args.host else f'[{args.host}]'}:{args.port}"
    _set_callback_url(hub, base, resource_server.resource if resource_server is not None else None)
    print(f"patchbay {__version__}: {len(hub.servers)} server(s) from {args.config}", flush=True)
    print(f"  MCP endpoint  {base}/mcp", flush=True)
    if hub.cluster is not None:
        print(f"  cluster       replica {hub.cluster.id} of {hub.cluster.where}", flush=True)
    required = app.state.tokens.required
    print(f"  API docs      {base}/docs{'   (bearer token required)' if required else ''}", flush=True)
    if resource_server is not None:
        print(f"  OAuth         tokens from {resource_server.settings.issuer}", flush=True)
        print(f"                for {resource_server.resource} ({resource_server.metadata_url})", flush=True)

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
        await asyncio.gather(reporter, return_exceptions=True)
    return 0 if server.started else 1


def _set_callback_url(hub: Hub, base: str, resource: str | None) -> None:
    """Sign-ins started without a request to take the URL from (a per-user server's call from /mcp)
    come back to this hub's own /oauth/callback, where it is known how clients reach it."""
    from patchbay.oauth.callback import CALLBACK_PATH
    from patchbay.server.security import is_loopback

    if resource is not None and resource.endswith("/mcp"):
        root = resource.removesuffix("/mcp")
    elif is_loopback(base.split("//", 1)[1].rsplit(":", 1)[0]):
        root = base.replace("://localhost:", "://127.0.0.1:", 1)  # RFC 8252 §8.3
    else:
        return  # bound to every interface: the redirect goes to a loopback listener (manager default)
    if hub.oauth.callback_url is None:
        hub.oauth.callback_url = f"{root}{CALLBACK_PATH}"


async def cmd_agent(args: argparse.Namespace) -> int:
    from patchbay import __version__
    from patchbay.agent import AgentRefused, run_agent

    token = args.token or os.environ.get("PATCHBAY_AGENT_TOKEN", "")
    if not token:
        return _usage_error("give --token or set PATCHBAY_AGENT_TOKEN")
    if not args.hub.startswith(("ws://", "wss://")):
        return _usage_error(f"--hub must be a ws:// or wss:// URL, got {args.hub!r}")

    def on_state(state: str, detail: str) -> None:
        print(f"agent {state}: {detail}", flush=True)

    args.config = config_path(args)
    announce_config(args, args.config)
    print(f"patchbay agent {__version__}: lending the servers of {args.config} to {args.hub}", flush=True)
    try:
        await run_agent(args.config, args.hub, token, on_state)
    except AgentRefused as exc:
        return _usage_error(str(exc))
    return 0
