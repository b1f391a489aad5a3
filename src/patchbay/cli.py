"""The ``patchbay`` command line.

Long-running commands: ``run``, ``serve`` and ``agent``. Management commands: ``servers``, ``tools``,
``call``, ``config check`` and ``import``.

``servers``, ``tools`` and ``call`` talk to a running hub through its REST API when one answers at ``--url``
(default ``$PATCHBAY_URL``, else http://127.0.0.1:8765); otherwise they work on the config file directly
(``tools`` and ``call`` start the servers in-process for the one command). They always say which on stderr.

Output: results on stdout (tables, coloured on a terminal unless ``NO_COLOR`` is set), ``--json`` for
machines; notes and progress on stderr; an error is one line, ``patchbay: error: …`` (``--debug`` for the
traceback). Exit codes: 0 ok, 1 the operation failed, 2 usage or config error, 3 hub not reachable at an
explicit ``--url`` (or needed and absent), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote, urlsplit

from patchbay import __version__
from patchbay.config import (
    HubConfig,
    ServerSpec,
    auth_tokens,
    expand,
    load_config,
    parse_config,
    parse_server_spec,
    placeholder_env,
    save_config,
    validate_server_name,
)
from patchbay.errors import (
    ConfigError,
    DuplicateServerError,
    PatchbayError,
    UnknownServerError,
    UnknownToolError,
)
from patchbay.events import CatalogEvent, ServerStateEvent

if TYPE_CHECKING:  # the hub (and the MCP SDK under it) is imported only by the commands that run servers
    from patchbay.hub import Hub

log = logging.getLogger("patchbay.cli")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

DEFAULT_URL = "http://127.0.0.1:8765"
LOCAL_CONFIG = Path("patchbay.json")
FORMATS = ("mcp", "openai", "anthropic")
REDACTED = "***"


def default_config_path() -> Path:
    """The bundled config: the demo server, so a first run shows real tools."""
    return Path(str(resources.files("patchbay").joinpath("default_config.json")))


class CliError(Exception):
    """A failure reported as one line on stderr, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def one_line(message: str) -> str:
    """A possibly multi-line message (a config with several problems) as one line."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    return f"{lines[0]} {'; '.join(lines[1:])}"


def exit_code_for(exc: PatchbayError) -> int:
    """Wrong input (names, config) is a usage error; everything else is a failed operation."""
    if isinstance(exc, ConfigError | UnknownServerError | UnknownToolError | DuplicateServerError):
        return EXIT_USAGE
    return EXIT_FAILED


# --- output ---------------------------------------------------------------------------------------------

_ANSI = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}
STATE_STYLE = {
    "ready": "green",
    "starting": "yellow",
    "backoff": "yellow",
    "failed": "red bold",
    "disabled": "dim",
    "stopped": "dim",
    "enabled": "green",
}


def colour_enabled(stream: IO[str]) -> bool:
    """Colour on a terminal unless NO_COLOR is set (https://no-color.org) or TERM=dumb; FORCE_COLOR forces."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


Cell = str | tuple[str, str]  # text, or (text, style)


class Output:
    """Everything the CLI prints goes through here: results to stdout, notes and progress to stderr."""

    def __init__(self, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        self.colour = colour_enabled(sys.stdout)
        self.err_colour = colour_enabled(sys.stderr)

    @staticmethod
    def _paint(text: str, style: str, on: bool) -> str:
        if not on or not style or not text:
            return text
        return f"\x1b[{';'.join(_ANSI[s] for s in style.split())}m{text}\x1b[0m"

    def paint(self, text: str, style: str) -> str:
        return self._paint(text, style, self.colour)

    def paint_err(self, text: str, style: str) -> str:
        return self._paint(text, style, self.err_colour)

    def say(self, text: str = "") -> None:
        print(text, flush=True)

    def note(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def warn(self, text: str) -> None:
        print(f"{self.paint_err('warning:', 'yellow')} {text}", file=sys.stderr, flush=True)

    def error(self, text: str) -> None:
        print(
            f"patchbay: {self.paint_err('error:', 'red bold')} {one_line(text)}", file=sys.stderr, flush=True
        )

    def emit_json(self, data: Any) -> None:
        print(json.dumps(data, indent=2, ensure_ascii=False), flush=True)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Cell]]) -> None:
        """Aligned columns; on a terminal the last column is cut to the terminal's width."""
        cells = [[(c, "") if isinstance(c, str) else c for c in row] for row in rows]
        widths = [len(h) for h in header]
        for row in cells:
            for i, (text, _) in enumerate(row):
                widths[i] = max(widths[i], len(text))
        last_max: int | None = None
        if sys.stdout.isatty():
            columns = shutil.get_terminal_size((120, 24)).columns
            room = columns - sum(widths[:-1]) - 2 * (len(widths) - 1)
            last_max = room if room >= 12 else None
        last = len(header) - 1
        self.say(
            "  ".join(
                self.paint(h if i == last else h.ljust(widths[i]), "bold") for i, h in enumerate(header)
            )
        )
        for row in cells:
            out = []
            for i, (text, style) in enumerate(row):
                if i == len(row) - 1:
                    if last_max is not None and len(text) > last_max:
                        text = text[: last_max - 1] + "…"
                    out.append(self.paint(text, style))
                else:
                    out.append(self.paint(text.ljust(widths[i]), style))
            self.say("  ".join(out).rstrip())


def _state_cell(state: str | None) -> Cell:
    return (state or "-", STATE_STYLE.get(state or "", ""))


# --- talking to a running hub ---------------------------------------------------------------------------


def _is_loopback_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def normalise_url(url: str) -> str:
    """``host:port`` → ``http://host:port``; a pasted ``…/mcp`` or ``…/api`` endpoint → the hub's base."""
    url = url.strip()
    if "://" not in url:
        url = f"http://{url}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(f"--url must be an http:// or https:// address like {DEFAULT_URL}, got {url!r}")
    url = url.rstrip("/")
    for suffix in ("/mcp", "/api", "/docs"):
        url = url.removesuffix(suffix)
    return url


class HubClient:
    """The management API of a running hub (``/api``), errors turned into :class:`CliError`."""

    def __init__(self, url: str, token: str | None) -> None:
        import httpx2

        self.url = url
        self._httpx = httpx2
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx2.AsyncClient(
            base_url=url,
            headers=headers,
            timeout=httpx2.Timeout(30.0, connect=3.0),
            trust_env=not _is_loopback_url(url),  # never send 127.0.0.1 through an HTTP proxy
        )

    async def __aenter__(self) -> HubClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.http.aclose()

    async def probe(self) -> str | None:
        """None if a patchbay hub answers here, else why not."""
        try:
            r = await self.http.get("/healthz", timeout=self._httpx.Timeout(5.0, connect=2.0))
        except self._httpx.TimeoutException:
            return "no answer in time"
        except self._httpx.TransportError as exc:
            return _transport_reason(exc)
        if r.status_code == 421:
            return "it refused this host name (start the hub with --allow-host for it)"
        if r.status_code != 200:
            return f"GET /healthz answered HTTP {r.status_code}: not a patchbay hub?"
        try:
            ok = r.json().get("status") == "ok"
        except (ValueError, AttributeError):
            ok = False
        return None if ok else "GET /healthz did not answer like a patchbay hub"

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = 30.0,
    ) -> Any:
        httpx2 = self._httpx
        try:
            r = await self.http.request(
                method,
                path,
                json=body,
                params=dict(params) if params else None,
                timeout=httpx2.Timeout(timeout, connect=3.0),
            )
        except httpx2.TimeoutException:
            raise CliError(
                f"the hub at {self.url} did not answer {method} {path} in time", EXIT_FAILED
            ) from None
        except httpx2.TransportError as exc:
            raise CliError(f"lost the hub at {self.url}: {_transport_reason(exc)}", EXIT_FAILED) from None
        if r.status_code < 300:
            return r.json() if r.content else None
        raise self._error(r.status_code, r)

    def _error(self, status: int, r: Any) -> CliError:
        try:
            body = r.json()
        except ValueError:
            body = {}
        detail = body.get("detail") if isinstance(body, dict) else None
        if status == 401:
            why = "refused the token" if self.http.headers.get("authorization") else "needs a bearer token"
            return CliError(f"the hub at {self.url} {why}: give --token or set PATCHBAY_TOKEN", EXIT_USAGE)
        if status in (403, 421):
            hint = " (a hub serving other host names needs --allow-host)" if status == 421 else ""
            return CliError(f"the hub at {self.url} refused this request: {detail}{hint}", EXIT_USAGE)
        if isinstance(detail, list):  # FastAPI's request validation errors
            parts = []
            for err in detail:
                loc = ".".join(str(p) for p in err.get("loc", ())[1:] if p != "spec")
                parts.append(f"{loc + ': ' if loc else ''}{err.get('msg', err)}")
            return CliError("; ".join(parts) or f"HTTP {status}", EXIT_USAGE)
        kind = body.get("error") if isinstance(body, dict) else None
        message = str(detail or f"the hub answered HTTP {status}")
        usage = kind in ("unknown_server", "unknown_tool", "duplicate_server", "config") or status in (
            404,
            409,
            422,
        )
        return CliError(message, EXIT_USAGE if usage else EXIT_FAILED)


def _transport_reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "refused" in text.lower() or text == "All connection attempts failed":
        return "nothing is listening there (connection refused)"
    return text


async def connect(
    args: argparse.Namespace, out: Output, *, need_hub: bool = False, write: bool = False
) -> HubClient | None:
    """The running hub to use, or None to work on the config file; says which on stderr."""
    if getattr(args, "no_hub", False):
        if args.url:
            raise CliError("give either --url or --no-hub, not both")
        if need_hub:
            raise CliError("this command needs a running hub; drop --no-hub", EXIT_USAGE)
        out.note(f"using {describe_config(config_path(args, write=write))} directly (--no-hub)")
        return None
    explicit = args.url is not None
    url = normalise_url(args.url or os.environ.get("PATCHBAY_URL") or DEFAULT_URL)
    token = args.token or next(
        (t.strip() for t in os.environ.get("PATCHBAY_TOKEN", "").split(",") if t.strip()), None
    )
    client = HubClient(url, token)
    why = await client.probe()
    if why is None:
        ignored = " (--config ignored; add --no-hub to edit the file instead)" if args.config else ""
        out.note(out.paint_err(f"via hub at {url}{ignored}", "dim"))
        return client
    await client.http.aclose()
    if explicit:
        raise CliError(f"hub not reachable at {url}: {why}", EXIT_UNREACHABLE)
    if need_hub:
        raise CliError(
            f"this needs a running hub and none is reachable at {url} ({why}); start one with "
            "`patchbay serve`, or give --url",
            EXIT_UNREACHABLE,
        )
    target = describe_config(config_path(args, write=write))
    out.note(out.paint_err(f"hub not reachable; using {target} directly", "dim"))
    return None


# --- the config file ------------------------------------------------------------------------------------


def config_path(args: argparse.Namespace, *, write: bool = False) -> Path:
    """``--config``; else ./patchbay.json; reading with neither, the bundled demo config (as ``serve``)."""
    given: Path | None = getattr(args, "config", None)
    if given is not None:
        return given.expanduser()
    if write or LOCAL_CONFIG.exists():
        return LOCAL_CONFIG
    return default_config_path()


def describe_config(path: Path) -> str:
    if path == default_config_path():
        return "the bundled demo config (no ./patchbay.json here)"
    return str(path)


def load_or_new(path: Path) -> tuple[HubConfig, bool]:
    """The config at ``path``, or a new empty one (``mcpServers``) if the file does not exist yet."""
    if path.exists():
        return load_config(path), False
    return HubConfig(document={"mcpServers": {}}, path=path.absolute()), True


def save_new_or_existing(config: HubConfig) -> None:
    """Save atomically (creating the file's folder if needed); unknown keys of the file are kept."""
    if config.path is not None:
        config.path.parent.mkdir(parents=True, exist_ok=True)
    save_config(config)


def redacted(spec: ServerSpec) -> dict[str, Any]:
    """The entry as written, with every ``env`` and ``headers`` value hidden (as the API shows it)."""
    data = spec.to_json()
    for key in ("env", "headers"):
        if isinstance(data.get(key), dict):
            data[key] = dict.fromkeys(data[key], REDACTED)
    return data


def file_view(name: str, spec: ServerSpec) -> dict[str, Any]:
    """A server as the file has it, in the shape of the API's server view (live fields empty)."""
    return {
        "name": name,
        "state": None,
        "transport": spec.transport,
        "enabled": spec.is_enabled,
        "pid": None,
        "tool_count": None,
        "restarts": None,
        "last_error": None,
        "spec": redacted(spec),
    }


def spec_target(spec: Mapping[str, Any]) -> str:
    if spec.get("url"):
        return str(spec["url"])
    return " ".join([str(spec.get("command") or ""), *(str(a) for a in spec.get("args") or [])]).strip()


# --- an in-process hub (no hub running) -----------------------------------------------------------------


@contextlib.asynccontextmanager
async def local_hub(path: Path, out: Output) -> AsyncIterator[Hub]:
    """Start the config's servers here for one command, showing each as it becomes ready or fails."""
    from patchbay.hub import Hub

    hub = Hub.from_file(path)
    try:
        await start_with_progress(hub, out)
        yield hub
    finally:
        await hub.close()


async def start_with_progress(hub: Hub, out: Output) -> None:
    enabled = [n for n in hub.servers if hub.server_spec(n).is_enabled]
    if not enabled:
        out.note("no enabled servers in the config")
        return
    out.note(f"starting {len(enabled)} server(s)…")
    shown: set[str] = set()

    def show(name: str, state: str, error: str | None) -> None:
        if name in shown or state not in ("ready", "backoff", "failed"):
            return
        shown.add(name)
        label = "ready" if state == "ready" else "failed"
        why = _why(name, error) if state != "ready" else ""
        out.note(f"  {name}: {out.paint_err(label, STATE_STYLE.get(label, ''))}{why}")

    sub = hub.events()

    async def watch() -> None:
        async for ev in sub:
            if isinstance(ev, ServerStateEvent):
                show(ev.server, ev.state, ev.error)

    watcher = asyncio.create_task(watch())
    try:
        await hub.start()
    finally:
        watcher.cancel()
        sub.close()
    for name in enabled:  # whatever the watcher had not printed yet
        st = hub.server_status(name)
        show(name, str(st.state), st.last_error)


# --- patchbay servers -----------------------------------------------------------------------------------


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
        if out.json_mode:
            out.emit_json(views)
        elif views:
            _live_table(out, views)
        else:
            out.note("the hub has no servers")
        return EXIT_OK
    config = load_config(config_path(args))
    views = [file_view(n, s) for n, s in config.servers.items()]
    if out.json_mode:
        out.emit_json(views)
    elif views:
        _file_table(out, views)
    else:
        out.note("no servers in the config")
    return EXIT_OK


def _pairs(items: Sequence[str] | None, what: str, *, header: bool = False) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in items or ():
        if header and ":" in item and ("=" not in item or item.index(":") < item.index("=")):
            key, _, value = item.partition(":")
            value = value.strip()
        else:
            key, sep, value = item.partition("=")
            if not sep:
                raise CliError(f"{what} expects KEY=VALUE, got {item!r}")
        if not key.strip():
            raise CliError(f"{what} expects KEY=VALUE, got {item!r}")
        result[key.strip()] = value
    return result


def build_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The config entry ``servers add`` describes; validated here so a bad one never reaches a hub."""
    spec: dict[str, Any] = {}
    if args.spec:
        try:
            loaded = json.loads(args.spec)
        except json.JSONDecodeError as exc:
            raise CliError(
                f"--spec is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
            ) from None
        if not isinstance(loaded, dict):
            raise CliError(f"--spec must be a JSON object (a config entry), got {type(loaded).__name__}")
        spec.update(loaded)
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
            spec[key] = {**base, **_pairs(given, f"--{key.removesuffix('s')}", header=header)}
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


def _why(name: str, error: str | None) -> str:
    """``: <error>`` without the ``server 'x': `` the error starts with (the sentence already names it)."""
    return f": {one_line(error).removeprefix(f'server {name!r}: ')}" if error else ""


def _report_view(out: Output, verb: str, view: Mapping[str, Any], *, expect_running: bool) -> int:
    """Print what a change through the hub left behind; a server that should run but does not is a failure."""
    name, state = view["name"], view.get("state")
    if out.json_mode:
        out.emit_json(view)
    else:
        tools = f", {view.get('tool_count', 0)} tools" if state == "ready" else ""
        out.say(f"{verb} {name}: {out.paint(str(state), STATE_STYLE.get(str(state), ''))}{tools}")
    if expect_running and view.get("enabled") and state != "ready":
        out.error(f"server {name!r} did not start ({state}){_why(name, view.get('last_error'))}")
        return EXIT_FAILED
    return EXIT_OK


async def cmd_servers_add(args: argparse.Namespace) -> int:
    out = Output(args.json)
    spec = build_spec(args)
    hub = await connect(args, out, write=True)
    if hub is not None:
        if spec.get("enabled", True) is not False:
            out.note(f"adding {args.name} and waiting for it to start…")
        async with hub:
            view = await hub.request(
                "POST", "/api/servers", body={"name": args.name, "spec": spec}, timeout=None
            )
        return _report_view(out, "added", view, expect_running=True)
    path = config_path(args, write=True)
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
    hub = await connect(args, out, write=True)
    if hub is not None:
        async with hub:
            await hub.request("DELETE", f"/api/servers/{quote(args.name, safe='')}")
        where = "from the hub (and its config file)"
    else:
        path = config_path(args, write=True)
        config = load_config(path)
        if args.name not in config.servers:
            raise UnknownServerError(args.name, list(config.servers))
        del config.servers[args.name]
        save_config(config)
        where = f"from {path}"
    if out.json_mode:
        out.emit_json({"name": args.name, "removed": True})
    else:
        out.say(f"removed {args.name} {where}")
    return EXIT_OK


async def _set_enabled(args: argparse.Namespace, enabled: bool) -> int:
    out = Output(args.json)
    verb = "enabled" if enabled else "disabled"
    hub = await connect(args, out, write=True)
    if hub is not None:
        if enabled:
            out.note(f"enabling {args.name} and waiting for it to start…")
        async with hub:
            view = await hub.request(
                "POST", f"/api/servers/{quote(args.name, safe='')}/{verb[:-1]}", timeout=None
            )
        return _report_view(out, verb, view, expect_running=enabled)
    path = config_path(args, write=True)
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


# --- patchbay tools -------------------------------------------------------------------------------------


def _tool_name(tool: Mapping[str, Any]) -> str:
    return str(tool.get("name") or tool.get("function", {}).get("name") or "?")


def _tool_description(tool: Mapping[str, Any]) -> str:
    desc = tool.get("description") or tool.get("function", {}).get("description") or tool.get("title") or ""
    lines = str(desc).strip().splitlines()
    return lines[0] if lines else ""


async def cmd_tools(args: argparse.Namespace) -> int:
    out = Output(args.json)
    params = {"format": args.format, **({"server": args.server} if args.server else {})}
    hub = await connect(args, out)
    state: tuple[str, str | None] | None = None
    if hub is not None:
        async with hub:
            tools = await hub.request("GET", "/api/tools", params=params)
            if args.server and not tools:
                view = await hub.request("GET", f"/api/servers/{quote(args.server, safe='')}")
                state = (str(view.get("state")), view.get("last_error"))
    else:
        async with local_hub(config_path(args), out) as local:
            tools = local.tools(args.format, server=args.server)
            if args.server and not tools:
                st = local.server_status(args.server)
                state = (str(st.state), st.last_error)
    if state is not None and state[0] != "ready":
        raise CliError(
            f"server {args.server!r} is not ready ({state[0]}){_why(args.server, state[1])}", EXIT_FAILED
        )
    if out.json_mode or args.format != "mcp":  # the LLM formats are only useful as JSON
        out.emit_json(tools)
        return EXIT_OK
    if tools:
        out.table(["TOOL", "DESCRIPTION"], [[(_tool_name(t), "cyan"), _tool_description(t)] for t in tools])
    out.note(f"{len(tools)} tool(s)")
    return EXIT_OK


# --- patchbay call --------------------------------------------------------------------------------------


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
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CliError(
                f"--args is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
            ) from None
        if not isinstance(value, dict):
            raise CliError(f"--args must be a JSON object like '{{\"a\": 1}}', got {type(value).__name__}")
        return value
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
    import mcp.types as types

    from patchbay.results import result_text

    out = Output(args.json)
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
            result = await local.call_tool(args.tool, arguments, timeout=args.timeout)
    if out.json_mode:
        out.emit_json(result.model_dump(by_alias=True, exclude_none=True, mode="json"))
    else:
        out.say(result_text(result))
    return EXIT_FAILED if result.is_error else EXIT_OK


# --- patchbay config check ------------------------------------------------------------------------------

_INPUT_RE = re.compile(r"\$\{input:([^}]*)\}")


def _problem(
    message: str, server: str | None = None, field: str | None = None, **extra: Any
) -> dict[str, Any]:
    return {"server": server, "field": field, "message": message, **extra}


def _entry_errors(name: Any, entry: Any) -> list[dict[str, Any]]:
    """Every problem of one server entry, each naming the field (not just the first, as loading does)."""
    from pydantic import ValidationError

    try:
        validate_server_name(name)
    except ConfigError as exc:
        return [_problem(str(exc), str(name))]
    if not isinstance(entry, Mapping):
        return [_problem(f"server {name!r}: expected an object, got {type(entry).__name__}", name)]
    try:
        ServerSpec.model_validate(dict(entry))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or None
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(_problem(f"server {name!r}: {loc + ': ' if loc else ''}{msg}", name, loc))
        return problems
    return []


def _spec_fields(spec: ServerSpec) -> list[tuple[str, str]]:
    """(field, value) of every value patchbay expands placeholders in."""
    fields: list[tuple[str, str]] = []
    if spec.command:
        fields.append(("command", spec.command))
    fields += [(f"args[{i}]", a) for i, a in enumerate(spec.args)]
    fields += [(f"env.{k}", v) for k, v in spec.env.items()]
    if spec.cwd:
        fields.append(("cwd", spec.cwd))
    if spec.url:
        fields.append(("url", spec.url))
    fields += [(f"headers.{k}", v) for k, v in spec.headers.items()]
    return fields


def _entry_warnings(name: str, spec: ServerSpec, base_dir: Path) -> list[dict[str, Any]]:
    """Missing placeholder variables (each field) and a command not found: what would fail at start."""
    env = placeholder_env(base_dir)
    warnings: list[dict[str, Any]] = []
    values: dict[str, str | None] = {}
    for fld, value in _spec_fields(spec):
        for m in _INPUT_RE.finditer(value):
            warnings.append(
                _problem(
                    f"server {name!r}: {fld}: ${{input:{m.group(1)}}} is a VS Code input prompt, which "
                    "patchbay cannot ask for; replace it with the value or a ${VARIABLE} placeholder",
                    name,
                    fld,
                )
            )
        try:
            values[fld] = expand(value, env, server=name, field=fld)
        except ConfigError as exc:
            values[fld] = None
            warnings.append(_problem(str(exc), name, fld))
    if spec.transport == "stdio" and values.get("command"):
        command = str(values["command"])
        path_var = os.environ.get("PATH")
        if "env.PATH" in values:
            path_var = values["env.PATH"] or path_var
        cwd = values.get("cwd")
        if cwd and not os.path.isabs(cwd):
            cwd = str((base_dir / cwd).resolve())
        found = shutil.which(command, path=path_var)
        if found is None and os.sep in command and cwd:
            found = command if os.access(os.path.join(cwd, command), os.X_OK) else None
        if found is None:
            warnings.append(
                _problem(
                    f"server {name!r}: command: {command!r} was not found on PATH or is not executable",
                    name,
                    "command",
                )
            )
    if not spec.is_enabled:
        for w in warnings:
            w["message"] += " (the server is disabled)"
    return warnings


def check_config(path: Path) -> dict[str, Any]:
    """Validate a config file: errors make it unusable, warnings are what would fail when it starts."""
    report: dict[str, Any] = {"path": str(path), "valid": False, "servers": [], "errors": [], "warnings": []}
    errors: list[dict[str, Any]] = report["errors"]
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        errors.append(_problem(f"{path}: config file not found"))
        return report
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(_problem(f"{path}: cannot read config file: {exc}"))
        return report
    try:
        doc = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        errors.append(
            _problem(
                f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}",
                line=exc.lineno,
                column=exc.colno,
            )
        )
        return report
    config: HubConfig | None = None
    try:
        config = parse_config(text, source=str(path), path=path.resolve())
    except ConfigError as exc:
        lines = str(exc).splitlines()
        if len(lines) > 1 and lines[0].endswith("invalid configuration:"):
            # per-server lines are reported below, field by field; keep the rest (agents, names)
            errors += [
                _problem(f"{path}: {line.strip()}")
                for line in lines[1:]
                if not line.strip().startswith(("server ", "invalid server name"))
            ]
        else:
            errors.append(_problem(str(exc)))
    key = next((k for k in ("mcpServers", "servers") if isinstance(doc, dict) and k in doc), "mcpServers")
    raw = doc.get(key) if isinstance(doc, dict) else None
    base_dir = path.resolve().parent
    if isinstance(raw, dict):
        report["servers"] = list(raw)
        for name, entry in raw.items():
            problems = _entry_errors(name, entry)
            errors += problems
            if not problems:
                report["warnings"] += _entry_warnings(name, parse_server_spec(name, entry), base_dir)
    if config is not None:
        try:
            auth_tokens(config)
        except ConfigError as exc:
            report["warnings"].append(_problem(str(exc), field=exc.field))
    report["valid"] = not errors
    return report


def _check_target(args: argparse.Namespace) -> Path:
    path: Path | None = args.path or args.config
    if path is None:
        if not LOCAL_CONFIG.exists():
            raise CliError("no ./patchbay.json here; give the file to check: patchbay config check PATH")
        path = LOCAL_CONFIG
    return path.expanduser()


async def cmd_config_check(args: argparse.Namespace) -> int:
    out = Output(args.json)
    path = _check_target(args)
    report = check_config(path)
    if out.json_mode:
        out.emit_json(report)
    else:
        n = len(report["servers"])
        if report["servers"] or report["valid"]:
            out.say(f"{path}: {n} server{'s' if n != 1 else ''}")
        for e in report["errors"]:
            out.say(f"  {out.paint('error  ', 'red bold')}  {e['message']}".replace("\n", "\n    "))
        for w in report["warnings"]:
            out.say(f"  {out.paint('warning', 'yellow')}  {w['message']}")
        nw, ne = len(report["warnings"]), len(report["errors"])
        tail = f" ({nw} warning{'s' if nw != 1 else ''})" if nw else ""
        if report["valid"]:
            out.say(f"{path}: {out.paint('valid', 'green')}{tail}")
        else:
            out.error(
                f"{path} is invalid ({ne} error{'s' if ne != 1 else ''}{', ' + tail[2:-1] if nw else ''})"
            )
    return EXIT_OK if report["valid"] else EXIT_FAILED


# --- patchbay import ------------------------------------------------------------------------------------

CLIENTS = {"claude": "Claude Desktop", "vscode": "VS Code", "cursor": "Cursor"}


def _app_data_dir() -> Path:
    """Where desktop (Electron) apps keep their settings on this OS."""
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Application Support"
    if os.name == "nt":
        return Path(os.environ.get("APPDATA") or home / "AppData" / "Roaming")
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return Path(xdg) if xdg and os.path.isabs(xdg) else home / ".config"


def client_config_paths(client: str) -> list[Path]:
    """Where the client keeps its MCP servers, most specific first (a project's file, then the user's)."""
    cwd = Path.cwd()
    if client == "claude":
        return [_app_data_dir() / "Claude" / "claude_desktop_config.json"]
    if client == "vscode":
        return [cwd / ".vscode" / "mcp.json", _app_data_dir() / "Code" / "User" / "mcp.json"]
    paths = [cwd / ".cursor" / "mcp.json", Path.home() / ".cursor" / "mcp.json"]
    return list(dict.fromkeys(paths))


def strip_jsonc(text: str) -> str:
    """JSON with comments and trailing commas (VS Code's files) → JSON; positions are kept for errors."""
    return _drop_trailing_commas(_blank_comments(text))


def _blank_comments(text: str) -> str:
    out: list[str] = []
    i, n, in_string = 0, len(text), False
    while i < n:
        c = text[i]
        if in_string:
            if c == "\\":
                out.append(text[i : i + 2])
                i += 2
                continue
            in_string = c != '"'
        elif c == '"':
            in_string = True
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _drop_trailing_commas(text: str) -> str:
    out = list(text)
    in_string, escaped = False, False
    for i, c in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == ",":
            j = i + 1
            while j < len(text) and text[j] in " \t\r\n":
                j += 1
            if j < len(text) and text[j] in "}]":
                out[i] = " "
    return "".join(out)


_VAR_RE = re.compile(r"\$\{([^}]*)\}")
_PATCHBAY_VAR = re.compile(r"^(?:env:)?[A-Za-z_][A-Za-z0-9_]*(?::-.*)?$")


class _Translation:
    """One client entry turned into a patchbay entry, with notes on what needs the user's attention."""

    def __init__(self, name: str, client: str, workspace: Path | None, inputs: Mapping[str, str]) -> None:
        self.name = name
        self.client = client
        self.workspace = workspace
        self.inputs = inputs
        self.warnings: list[dict[str, Any]] = []

    def warn(self, fld: str, message: str) -> None:
        self.warnings.append(
            {"server": self.name, "field": fld, "message": f"server {self.name!r}: {fld}: {message}"}
        )

    def value(self, fld: str, value: Any) -> Any:
        if not isinstance(value, str) or "${" not in value:
            return value

        def sub(m: re.Match[str]) -> str:
            var = m.group(1)
            if var == "userHome":
                return str(Path.home())
            if var in ("workspaceFolder", "workspaceFolderBasename") and self.workspace is not None:
                return str(self.workspace) if var == "workspaceFolder" else self.workspace.name
            if var in ("pathSeparator", "/"):
                return os.sep
            if var in ("workspaceFolder", "workspaceFolderBasename"):
                self.warn(fld, f"${{{var}}}: this config has no workspace folder; replace it with a path")
                return m.group(0)
            if var.startswith("input:"):
                about = self.inputs.get(var[6:])
                self.warn(
                    fld,
                    f"${{{var}}}{f' ({about})' if about else ''} is asked "
                    f"for by {CLIENTS[self.client]} when the server starts; patchbay cannot ask: put the "
                    "value (or a ${VARIABLE} placeholder) there",
                )
            elif not _PATCHBAY_VAR.match(var):
                self.warn(
                    fld, f"${{{var}}} is a {CLIENTS[self.client]} variable patchbay does not know; replace it"
                )
            return m.group(0)

        return _VAR_RE.sub(sub, value)

    def entry(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        entry = dict(raw)
        for key in ("command", "cwd", "url"):
            if key in entry:
                entry[key] = self.value(key, entry[key])
        if isinstance(entry.get("args"), list):
            entry["args"] = [self.value(f"args[{i}]", a) for i, a in enumerate(entry["args"])]
        for key in ("env", "headers"):
            if isinstance(entry.get(key), dict):
                entry[key] = {k: self.value(f"{key}.{k}", v) for k, v in entry[key].items()}
        if "envFile" in entry:
            self.warn(
                "envFile",
                "patchbay does not read env files; set those variables in "
                "patchbay's environment or list them under 'env'",
            )
        url = entry.get("url")
        if "type" not in entry and isinstance(url, str) and urlsplit(url).path.rstrip("/").endswith("/sse"):
            entry["type"] = "sse"  # Cursor's url entries may be legacy SSE endpoints
            self.warn("url", "it ends in /sse, so it is imported as type 'sse' (legacy SSE transport)")
        return entry


def read_client_config(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The servers (by name) of a client's config file, and its VS Code input prompts (id → description)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CliError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: cannot read: {exc}") from None
    try:
        doc = json.loads(strip_jsonc(text)) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise CliError(f"{path}: the top level must be a JSON object, got {type(doc).__name__}")
    mcp_settings = doc.get("mcp")  # VS Code's settings.json keeps them under "mcp"
    holder: dict[str, Any] = (
        mcp_settings if isinstance(mcp_settings, dict) and "servers" in mcp_settings else doc
    )
    key = next((k for k in ("mcpServers", "servers") if k in holder), None)
    if key is None:
        raise CliError(f"{path}: no 'mcpServers' or 'servers' in this file; is it an MCP client's config?")
    servers = holder[key] or {}
    if not isinstance(servers, dict):
        raise CliError(f"{path}: '{key}' must be an object mapping server names to their settings")
    inputs: dict[str, str] = {}
    for item in holder.get("inputs") or doc.get("inputs") or []:
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            inputs[item["id"]] = str(item.get("description") or "")
    return servers, inputs


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
        tr = _Translation(str(name), args.client, workspace, inputs)
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


# --- run, serve, agent ----------------------------------------------------------------------------------


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
    from patchbay.hub import Hub

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
        if not args.json:
            print("stopping…", flush=True)
    return 0


async def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from patchbay.config import auth_tokens
    from patchbay.hub import Hub
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


# --- the parser -----------------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line (exit 2) and examples kept as written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"patchbay: error: {message} (see '{self.prog} --help')\n")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _common_options() -> Parser:
    p = Parser(add_help=False)
    p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="logs and full tracebacks")
    return p


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
        help="config file used when no hub is reachable (default: ./patchbay.json; for reading, the "
        "bundled demo config if there is no ./patchbay.json)",
    )
    g.add_argument("--no-hub", action="store_true", help="use the config file even if a hub is running")
    return p


HUB_NOTE = (
    "With a hub running (patchbay serve) at --url / $PATCHBAY_URL / " + DEFAULT_URL + ", this goes through "
    "its API; otherwise it works on the config file directly. A line on stderr says which."
)


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
    parser.add_argument("--version", action="version", version=f"patchbay {__version__}")
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
    )
    agent.add_argument(
        "--hub", required=True, help="the hub's agent endpoint, ws://HOST:PORT/agents or wss://…"
    )
    agent.add_argument("--token", help="this agent's token (or PATCHBAY_AGENT_TOKEN)")
    agent.add_argument(
        "--config", type=Path, default=default_config_path(), help="config file (default: bundled)"
    )
    agent.set_defaults(func=_agent)

    _add_servers(sub, common, hubopts)
    _add_tools_and_call(sub, common, hubopts)
    _add_config(sub, common)
    _add_import(sub, common)
    return parser


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
    add.add_argument("--timeout", type=_seconds, help="seconds allowed per call")
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
        "  patchbay tools --format openai --json > tools.json",
        parents=[common, hubopts],
    )
    tools.add_argument("--server", metavar="NAME", help="only this server's tools")
    tools.add_argument("--format", choices=FORMATS, default="mcp", help="tool format (default: mcp)")
    tools.set_defaults(func=cmd_tools)

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
    call.add_argument("--timeout", type=_seconds, default=None, help="seconds to wait for the result")
    call.set_defaults(func=cmd_call)


def _add_config(sub: Any, common: argparse.ArgumentParser) -> None:
    config = sub.add_parser(
        "config",
        help="check a config file",
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
        "path", nargs="?", type=Path, help="the file (default: --config, else ./patchbay.json)"
    )
    check.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    check.set_defaults(func=cmd_config_check)


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


# --- main -----------------------------------------------------------------------------------------------


def _absorb_extras(parser: argparse.ArgumentParser, args: argparse.Namespace, extras: list[str]) -> None:
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

    def error(message: str) -> NoReturn:
        parser.exit(EXIT_USAGE, f"patchbay: error: {message} (see '{prog} --help')\n")

    if func is cmd_call and not stray:
        args.pairs = [*args.pairs, *before, *after]
        return
    if func is cmd_servers_add and not stray:
        args.command_line = [*args.command_line, *before, *after]
        return
    if func is cmd_servers_add and stray:
        error(
            f"unrecognized option {stray[0]!r}; put the server's command after '--': "
            "patchbay servers add NAME [OPTIONS] -- COMMAND [ARGS…]"
        )
    error(f"unrecognized arguments: {' '.join(extras)}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    _absorb_extras(parser, args, extras)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="replace")  # type: ignore[attr-defined,union-attr]
    debug = bool(getattr(args, "debug", False))
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    out = Output()
    try:
        code: int = asyncio.run(args.func(args))
        return code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except CliError as exc:
        if debug:
            raise
        out.error(str(exc))
        return exc.code
    except PatchbayError as exc:
        if debug:
            raise
        out.error(str(exc))
        return EXIT_USAGE if args.command in ("serve", "agent") else exit_code_for(exc)
    except BrokenPipeError:  # `patchbay tools | head`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:
        if debug:
            raise
        out.error(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return EXIT_FAILED
    finally:
        with contextlib.suppress(Exception):
            logging.shutdown()


if __name__ == "__main__":
    sys.exit(main())
