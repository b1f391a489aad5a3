"""The command line's grammar: every command, option and help text (with examples), usage errors as one
line, and the words argparse leaves over (``call`` pairs, the command after ``servers add … --``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

from patchbay.cli.commands.audit import add_audit_subcommands
from patchbay.cli.commands.auth import cmd_auth_login, cmd_auth_logout, cmd_auth_status
from patchbay.cli.commands.config import cmd_config_check
from patchbay.cli.commands.config_export import cmd_config_export
from patchbay.cli.commands.import_ import cmd_import
from patchbay.cli.commands.oauth import cmd_oauth_clients, cmd_oauth_grants, cmd_oauth_revoke
from patchbay.cli.commands.profiles import add_profiles
from patchbay.cli.commands.serve import cmd_agent, cmd_run, cmd_serve
from patchbay.cli.commands.servers import (
    cmd_servers_add,
    cmd_servers_disable,
    cmd_servers_enable,
    cmd_servers_list,
    cmd_servers_remove,
    cmd_servers_restart,
)
from patchbay.cli.commands.tokens import add_tokens_parser
from patchbay.cli.commands.tools import cmd_call, cmd_tools
from patchbay.cli.commands.tools_search import add_tools_subcommands
from patchbay.cli.configfile import user_config_path
from patchbay.cli.errors import EXIT_USAGE
from patchbay.cli.hubclient import DEFAULT_URL
from patchbay.cli.importers import CLIENTS
from patchbay.cli.options import seconds

FORMATS = ("mcp", "openai", "anthropic")


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line (exit 2) and examples kept as written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        _usage_exit(self, self.prog, message)


def _usage_exit(parser: argparse.ArgumentParser, prog: str, message: str) -> NoReturn:
    """A usage error: one line pointing at the command's --help, exit 2."""
    parser.exit(EXIT_USAGE, f"patchbay: error: {message} (see '{prog} --help')\n")


def _common_options() -> Parser:
    p = Parser(add_help=False)
    p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="logs and full tracebacks")
    return p


def _bundled_config_option(p: argparse.ArgumentParser) -> None:
    """``--config`` for the commands that run servers (default: ./patchbay.json, else the per-user file)."""
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"config file (default: ./patchbay.json if it exists, else {user_config_path()}, created from "
        "the bundled demo config on first use)",
    )


def _hub_options() -> Parser:
    p = Parser(add_help=False)
    g = p.add_argument_group("hub or file")
    g.add_argument(
        "--url",
        help=f"the running hub to use (default: $PATCHBAY_URL, else {DEFAULT_URL}); when given, an "
        "unreachable hub is an error (exit 3) instead of a fallback to the config file",
    )
    g.add_argument("--token", help="bearer token for the hub (default: $PATCHBAY_TOKEN)")
    g.add_argument(
        "--config",
        type=Path,
        help="config file used when no hub is reachable (default: ./patchbay.json if it exists, else "
        f"{user_config_path()}, created from the bundled demo config on first use)",
    )
    g.add_argument("--no-hub", action="store_true", help="use the config file even if a hub is running")
    return p


HUB_NOTE = (
    "With a hub running (patchbay serve) at --url / $PATCHBAY_URL / " + DEFAULT_URL + ", this goes through "
    "its API; otherwise it works on the config file directly. A line on stderr says which."
)


class _Version(argparse.Action):
    """``--version``, looking the version up only when asked (see ``patchbay.__getattr__``)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=kwargs.get("help"))

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> NoReturn:
        from patchbay import __version__

        print(f"patchbay {__version__}")  # on stdout, as argparse's own version action does
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="patchbay",
        description="One hub for all your MCP servers.",
        epilog="examples:\n"
        "  patchbay serve --config patchbay.json        serve every tool at http://127.0.0.1:8765/mcp\n"
        "  patchbay import claude                       copy Claude Desktop's servers into ./patchbay.json\n"
        "  patchbay servers list                        what runs, or what the config has\n"
        "  patchbay tools --format openai --json        tool definitions for an LLM API\n"
        "  patchbay call demo__add a=1 b=2              call one tool\n"
        "  patchbay config check patchbay.json          validate a config file\n\n"
        "exit codes: 0 ok, 1 operation failed, 2 usage or config error, 3 hub not reachable, 130 Ctrl-C.\n"
        "Every command has --help with examples.",
    )
    parser.add_argument("--version", action=_Version, help="show the version and exit")
    parser.add_argument("--debug", action="store_true", help="verbose logs and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common, hubopts = _common_options(), _hub_options()

    run = sub.add_parser(
        "run",
        help="start the configured servers and show their tools",
        description="Start every enabled server, print status and the merged tool catalog, and keep them "
        "supervised until Ctrl-C.\n\nexample: patchbay run --config ~/.config/patchbay.json\n"
        "         patchbay run --once --json     (status and tools as JSON, then exit)",
        parents=[common],
    )
    _bundled_config_option(run)
    run.add_argument("--once", action="store_true", help="print status and tools, then exit")
    run.set_defaults(func=cmd_run)

    serve = sub.add_parser(
        "serve",
        help="serve every tool at one MCP endpoint (/mcp), with a management API",
        description="Start the configured servers and serve them: the aggregated MCP endpoint at /mcp, the "
        "management API at /api (docs at /docs), /healthz, /readyz and /metrics. The config file is watched "
        "and changes are applied live.\n\nexample: patchbay serve --config patchbay.json --port 8765\n"
        "then point any MCP client at http://127.0.0.1:8765/mcp",
    )
    _bundled_config_option(serve)
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
        "--cluster",
        metavar="REDIS_URL",
        default=None,
        help="join a cluster of replicas sharing this Redis (redis://HOST:PORT/DB); the config of record is "
        'then kept there (also "cluster": {"redis": "…"} in the config); see docs/cluster.md',
    )
    serve.add_argument(
        "--cluster-advertise",
        metavar="HOST:PORT",
        default=None,
        help="where the other replicas reach this one (default: --host:--port; the machine's name if --host "
        "is 0.0.0.0)",
    )
    serve.add_argument(
        "--header-timeout",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="close a connection whose request headers are not complete within this time (slow clients; "
        "default: 10)",
    )
    serve.add_argument(
        "--session-idle-timeout",
        type=seconds,
        default=300.0,
        metavar="SECONDS",
        help="close an /mcp session nobody used for this long (default: 300)",
    )
    serve.add_argument(
        "--http",
        choices=("auto", "h11", "httptools"),
        default="auto",
        help="HTTP/1.1 implementation (default: auto, httptools if installed, else h11)",
    )
    serve.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop (default: auto, uvloop if installed (the 'uvloop' extra), else asyncio)",
    )
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
    serve.set_defaults(func=cmd_serve)

    agent = sub.add_parser(
        "agent",
        help="dial out to a hub and lend it this machine's servers",
        description="Run the servers of --config here and offer their tools to a patchbay hub that cannot "
        "reach this machine (NAT, laptop): the agent dials out over WebSocket and reconnects forever.\n\n"
        "example: patchbay agent --hub wss://hub.example.com/agents --token $TOKEN --config laptop.json",
    )
    agent.add_argument(
        "--hub", required=True, help="the hub's agent endpoint, ws://HOST:PORT/agents or wss://…"
    )
    agent.add_argument("--token", help="this agent's token (or PATCHBAY_AGENT_TOKEN)")
    _bundled_config_option(agent)
    agent.set_defaults(func=cmd_agent)

    _add_servers(sub, common, hubopts)
    add_profiles(sub, common, hubopts)
    _add_auth(sub, common, hubopts)
    add_audit_subcommands(sub, common, hubopts)
    add_tokens_parser(sub, common, hubopts, HUB_NOTE)
    _add_oauth(sub, common, hubopts)
    _add_tools_and_call(sub, common, hubopts)
    _add_config(sub, common)
    _add_import(sub, common)
    return parser


def _add_auth(sub: Any, common: argparse.ArgumentParser, hubopts: argparse.ArgumentParser) -> None:
    auth = sub.add_parser(
        "auth",
        help="sign in to remote servers that need OAuth (login, status, logout)",
        description="Sign in to hosted MCP servers that use OAuth (Linear, Notion, GitHub, ...). Tokens are "
        f"stored encrypted in the user's data directory, never in the config file.\n\n{HUB_NOTE}\n\n"
        "examples:\n  patchbay auth login linear\n  patchbay auth login notion --no-browser\n"
        "  patchbay auth status --json\n  patchbay auth logout linear",
    )
    actions = auth.add_subparsers(dest="action", required=True, metavar="ACTION")
    login = actions.add_parser(
        "login",
        help="sign in: print the authorization URL, open a browser, wait for the redirect",
        description="Print the authorization URL alone on stdout, open a browser (unless --no-browser or "
        "none is available), receive the redirect on 127.0.0.1 (a random port) and exit 0 once tokens "
        f"are stored. A client_credentials server gets its token at once.\n\n{HUB_NOTE}\n\n"
        "examples:\n  patchbay auth login linear\n  open=$(patchbay auth login linear --no-browser)",
        parents=[common, hubopts],
    )
    login.add_argument("name", help="the server's name")
    login.add_argument("--no-browser", action="store_true", help="only print the URL")
    login.set_defaults(func=cmd_auth_login)
    status = actions.add_parser(
        "status",
        help="who is signed in where (never a token)",
        description=f"Signed in or not, issuer, scope and expiry of each OAuth server.\n\n{HUB_NOTE}",
        parents=[common, hubopts],
    )
    status.add_argument("name", nargs="?", help="only this server")
    status.set_defaults(func=cmd_auth_status)
    logout = actions.add_parser(
        "logout",
        help="revoke and delete a server's tokens",
        description="Revoke the server's tokens where its authorization server supports it (RFC 7009) and "
        f"delete them.\n\n{HUB_NOTE}",
        parents=[common, hubopts],
    )
    logout.add_argument("name", help="the server's name")
    logout.set_defaults(func=cmd_auth_logout)


def _add_oauth(sub: Any, common: argparse.ArgumentParser, hubopts: argparse.ArgumentParser) -> None:
    oauth = sub.add_parser(
        "oauth",
        help="clients and grants of the built-in authorization server (auth.server)",
        description="The OAuth clients (Claude.ai, ChatGPT, mcp-remote, ...) that registered with this hub's "
        "built-in authorization server, the grants approved for them on the consent page, and revoking "
        "either. Needs a running hub and its admin token.\n\n"
        "examples:\n  patchbay oauth clients\n  patchbay oauth grants --json\n"
        "  patchbay oauth revoke grant g_3f2a9c1d0b7e4a65\n  patchbay oauth revoke client 6f1c…",
    )
    actions = oauth.add_subparsers(dest="action", required=True, metavar="ACTION")
    clients = actions.add_parser(
        "clients", help="registered clients (never a secret)", parents=[common, hubopts]
    )
    clients.set_defaults(func=cmd_oauth_clients)
    grants = actions.add_parser(
        "grants", help="approved grants: client, role, profile, who approved", parents=[common, hubopts]
    )
    grants.set_defaults(func=cmd_oauth_grants)
    revoke = actions.add_parser(
        "revoke",
        help="revoke a grant, or forget a client and end all its grants",
        description="Revoke one grant (its access and refresh tokens stop working at once), or forget a "
        "client (it must register again, and every grant it held ends).\n\n"
        "examples:\n  patchbay oauth revoke grant g_3f2a9c1d0b7e4a65\n"
        "  patchbay oauth revoke client https://app.example/client.json",
        parents=[common, hubopts],
    )
    revoke.add_argument("kind", choices=["grant", "client"], help="what to revoke")
    revoke.add_argument("id", help="the grant's id or the client's client_id (see `oauth grants|clients`)")
    revoke.set_defaults(func=cmd_oauth_revoke)


def _add_servers(sub: Any, common: argparse.ArgumentParser, hubopts: argparse.ArgumentParser) -> None:
    servers = sub.add_parser(
        "servers",
        help="list, add, remove, enable, disable or restart servers",
        description=f"Manage the configured MCP servers.\n\n{HUB_NOTE}\n\n"
        "examples:\n"
        "  patchbay servers list\n"
        "  patchbay servers add github --env 'GITHUB_TOKEN=${GITHUB_TOKEN}' -- npx -y "
        "@modelcontextprotocol/server-github\n"
        "  patchbay servers disable github\n"
        "  patchbay servers restart github --url http://127.0.0.1:8765",
    )
    actions = servers.add_subparsers(dest="action", required=True, metavar="ACTION")

    ls = actions.add_parser(
        "list",
        help="every server: live state through a hub, else as configured",
        description="List the servers. Through a hub: state, pid, tools, restarts, last error. From the "
        f"file: enabled or not, and the command or URL.\n\n{HUB_NOTE}\n\n"
        "examples:\n  patchbay servers list\n  patchbay servers list --json | jq '.[].state'\n"
        "  patchbay servers list --no-hub --config ~/patchbay.json",
        parents=[common, hubopts],
    )
    ls.set_defaults(func=cmd_servers_list)

    add = actions.add_parser(
        "add",
        help="add a server (a stdio command after '--', or a URL)",
        description="Add a server. Through a hub it is saved to the hub's config file and started at once "
        "(exit 1 if it does not become ready); without one it is written to --config (created if "
        f"missing).\n\n{HUB_NOTE}\n\n"
        "Put the server's command after '--' so its options are not read as patchbay's. Quote ${VAR} "
        "placeholders so the shell leaves them to patchbay.\n\n"
        "examples:\n"
        "  patchbay servers add files -- npx -y @modelcontextprotocol/server-filesystem ~/notes\n"
        "  patchbay servers add github --env 'GITHUB_TOKEN=${GITHUB_TOKEN}' -- npx -y "
        "@modelcontextprotocol/server-github\n"
        "  patchbay servers add remote https://mcp.example.com/mcp \\\n"
        "      --header 'Authorization: Bearer ${TOKEN}'\n"
        '  patchbay servers add db --spec \'{"command": "db-mcp", "timeout": 20}\'',
        parents=[common, hubopts],
    )
    add.add_argument("name", help="the server's name: 1-64 letters, digits, '_', '-' or '.'")
    add.add_argument(
        "command_line",
        nargs="*",
        metavar="COMMAND [ARG …] | URL",
        help="the stdio command (after --), or a remote server's http(s):// URL",
    )
    add.add_argument("--type", choices=["stdio", "http", "sse"], help="transport (default: from command/url)")
    add.add_argument(
        "-e", "--env", action="append", metavar="KEY=VALUE", help="environment variable (repeat)"
    )
    add.add_argument("-H", "--header", action="append", metavar="'NAME: VALUE'", help="HTTP header (repeat)")
    add.add_argument("--cwd", help="working directory (relative: to the config file)")
    add.add_argument("--prefix", help="tool name prefix (default: the server's name; '' for none)")
    add.add_argument("--timeout", type=seconds, help="seconds allowed per call")
    add.add_argument("--disabled", action="store_true", help="add it switched off")
    add.add_argument("--spec", metavar="JSON", help="the whole config entry as JSON (flags override it)")
    add.set_defaults(func=cmd_servers_add)

    for name, func, what, example in (
        ("remove", cmd_servers_remove, "Remove a server from the config (a hub also stops it).",
         "remove github"),
        ("enable", cmd_servers_enable, "Enable a server (a hub also starts it; exit 1 if it does not "
         "become ready).", "enable github"),
        ("disable", cmd_servers_disable, "Disable a server (a hub also stops it). The file keeps the style "
         "it used: 'enabled: false' or 'disabled: true'.", "disable github --json"),
    ):  # fmt: skip
        p = actions.add_parser(
            name,
            help=what.split(" (")[0].split(".")[0].lower(),
            description=f"{what}\n\n{HUB_NOTE}\n\nexamples:\n  patchbay servers {example}\n"
            f"  patchbay servers {name} github --no-hub --config ~/patchbay.json",
            parents=[common, hubopts],
        )
        p.add_argument("name", help="the server's name")
        p.set_defaults(func=func)

    restart = actions.add_parser(
        "restart",
        help="restart a server now (needs a running hub)",
        description="Stop and start a server again now, with its failure count reset (also revives a "
        "'failed' server). Needs a running hub: exit 3 if none is reachable.\n\n"
        "examples:\n  patchbay servers restart github\n"
        "  patchbay servers restart github --url http://10.0.0.5:8765 --token $PATCHBAY_TOKEN",
        parents=[common, hubopts],
    )
    restart.add_argument("name", help="the server's name")
    restart.set_defaults(func=cmd_servers_restart)


def _add_tools_and_call(sub: Any, common: argparse.ArgumentParser, hubopts: argparse.ArgumentParser) -> None:
    tools = sub.add_parser(
        "tools",
        help="list the tools (MCP, OpenAI or Anthropic format)",
        description="List every exposed tool. Without a running hub the config's servers are started for "
        "the listing (progress on stderr). --format openai or anthropic prints tool definitions ready "
        f"for that LLM API, as JSON.\n\n{HUB_NOTE}\n\n"
        "examples:\n  patchbay tools\n  patchbay tools --server github\n"
        "  patchbay tools --profile coding\n"
        "  patchbay tools --format openai --json > tools.json",
        parents=[common, hubopts],
    )
    tools.add_argument("--server", metavar="NAME", help="only this server's tools")
    tools.add_argument("--profile", metavar="NAME", help="only this profile's tools (config 'profiles')")
    tools.add_argument("--format", choices=FORMATS, default="mcp", help="tool format (default: mcp)")
    tools.set_defaults(func=cmd_tools)
    add_tools_subcommands(tools, common, hubopts)  # tools search, tools approve

    call = sub.add_parser(
        "call",
        help="call one tool and print its result",
        description="Call one tool. Arguments are key=value pairs (a value is JSON if it parses as JSON, "
        "else a string) or one JSON object with --args (- reads it from stdin); not both. Exit 1 if the "
        "tool reports an error (isError). Without a running hub the config's servers are started for the "
        f"call.\n\n{HUB_NOTE}\n\n"
        "examples:\n  patchbay call demo__add a=1 b=2\n"
        "  patchbay call github__search_issues q='is:open label:bug'\n"
        '  patchbay call demo__add --args \'{"a": 1, "b": 2}\' --json\n'
        '  echo \'{"text": "hi"}\' | patchbay call mb__echo --args -',
        parents=[common, hubopts],
    )
    call.add_argument("tool", help="the exposed tool name, <server>__<tool>")
    call.add_argument("pairs", nargs="*", metavar="KEY=VALUE", help="an argument (repeat)")
    call.add_argument(
        "--args", metavar="JSON", help="the arguments as one JSON object ('-': read from stdin)"
    )
    call.add_argument("--timeout", type=seconds, default=None, help="seconds to wait for the result")
    call.set_defaults(func=cmd_call)


def _add_config(sub: Any, common: argparse.ArgumentParser) -> None:
    config = sub.add_parser(
        "config",
        help="check a config file, or export a cluster's",
        description="Config file commands.\n\nexample:\n  patchbay config check patchbay.json",
    )
    actions = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="validate a config file",
        description="Validate a config file without starting anything. Errors (the file cannot be used): "
        "JSON syntax with line:column, and every invalid field of every server. Warnings (it loads, but "
        "something would fail at start): placeholder variables that are not set, commands not found on "
        "PATH. Exit 0 if valid (warnings allowed), 1 if not.\n\n"
        "examples:\n  patchbay config check\n  patchbay config check ~/.config/patchbay.json --json",
        parents=[common],
    )
    check.add_argument(
        "path",
        nargs="?",
        type=Path,
        help="the file (default: --config, else ./patchbay.json, else the per-user file)",
    )
    check.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    check.set_defaults(func=cmd_config_check)
    export = actions.add_parser(
        "export",
        help="write a cluster's config of record (in Redis) to a file",
        description="In cluster mode (patchbay serve --cluster) the config of record is kept in Redis and "
        "changed through any replica's API or CLI. This prints it (or writes it atomically to --output), "
        "for a backup or to seed another cluster.\n\nexamples:\n"
        "  patchbay config export --cluster redis://127.0.0.1:6379/0 -o patchbay.json\n"
        '  patchbay config export --config patchbay.json   # its "cluster": {"redis": …}',
        parents=[common],
    )
    export.add_argument("--cluster", metavar="REDIS_URL", help="the cluster's Redis (redis://HOST:PORT/DB)")
    export.add_argument("-o", "--output", type=Path, help="write to this file (default: print it)")
    export.add_argument("--config", type=Path, help="a config file whose cluster.redis names the Redis")
    export.set_defaults(func=cmd_config_export)


def _add_import(sub: Any, common: argparse.ArgumentParser) -> None:
    imp = sub.add_parser(
        "import",
        help="copy the servers of Claude Desktop, VS Code or Cursor into patchbay's config",
        description="Read an MCP client's config and merge its servers into patchbay's config file "
        "(--config, default ./patchbay.json, created if missing; other keys of the file are kept). A name "
        "already present is skipped unless --overwrite; invalid entries are skipped with the reason "
        "(exit 1). It always works on the file (a `patchbay serve` running on that file reloads it by "
        "itself).\n\n"
        "Where each client's file is looked for (or give PATH):\n"
        "  claude  claude_desktop_config.json in ~/Library/Application Support/Claude (macOS),\n"
        "          %APPDATA%\\Claude (Windows), ~/.config/Claude (Linux)\n"
        "  vscode  .vscode/mcp.json in the current folder, then the user's mcp.json in\n"
        "          ~/Library/Application Support/Code/User, %APPDATA%\\Code\\User or ~/.config/Code/User\n"
        "  cursor  .cursor/mcp.json in the current folder, then ~/.cursor/mcp.json\n\n"
        "examples:\n  patchbay import claude\n  patchbay import vscode .vscode/mcp.json --config team.json\n"
        "  patchbay import cursor --overwrite --dry-run",
        parents=[common],
    )
    imp.add_argument("client", choices=list(CLIENTS), help="which client's config to read")
    imp.add_argument("path", nargs="?", type=Path, help="the client's config file (default: its usual place)")
    imp.add_argument("--config", type=Path, help="patchbay config to merge into (default: ./patchbay.json)")
    imp.add_argument("--overwrite", action="store_true", help="replace servers whose name is already present")
    imp.add_argument("--dry-run", action="store_true", help="report what would change; write nothing")
    imp.set_defaults(func=cmd_import)


def absorb_extras(parser: argparse.ArgumentParser, args: argparse.Namespace, extras: list[str]) -> None:
    """Words argparse could not place: ``call`` pairs and the ``servers add`` command after options/``--``."""
    if not extras:
        return
    if "--" in extras:
        i = extras.index("--")
        before, after = extras[:i], extras[i + 1 :]
    else:
        before, after = extras, []
    stray = [w for w in before if w.startswith("-")]
    func = getattr(args, "func", None)
    prog = " ".join(["patchbay", *(w for w in (args.command, getattr(args, "action", None)) if w)])
    if func is cmd_call and not stray:
        args.pairs = [*args.pairs, *before, *after]
        return
    if func is cmd_servers_add and not stray:
        args.command_line = [*args.command_line, *before, *after]
        return
    if func is cmd_servers_add and stray:
        _usage_exit(
            parser,
            prog,
            f"unrecognized option {stray[0]!r}; put the server's command after '--': "
            "patchbay servers add NAME [OPTIONS] -- COMMAND [ARGS…]",
        )
    _usage_exit(parser, prog, f"unrecognized arguments: {' '.join(extras)}")
