"""A hand-written stdio MCP server that misbehaves on demand, for testing the hub.

Why it exists: the official SDK servers are well behaved, so they cannot exercise the hub's handling of
crashes, garbage on stdout, stderr floods, huge responses, slow or missing handshakes, ignored SIGTERM,
grandchild processes, sloppy schemas, pagination and cancellation. This server speaks the handshake-era
protocol (newline-delimited JSON-RPC 2.0 on stdin/stdout) with the standard library only, so it starts in
~40 ms.
Each bad behaviour is switched on by a command-line flag (see ``--help``); flags can be combined.

Concurrency: the main thread reads stdin and answers quick requests itself; every ``tools/call`` runs in its
own daemon thread, so a slow call never blocks the others. One lock serialises stdout, so messages never
interleave.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time

TYPE_CHECKING = False  # avoid importing typing at runtime: startup time matters
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable
    from typing import Any, NoReturn, TypeAlias, TypeGuard

    JsonObj: TypeAlias = dict[str, Any]
    RequestId: TypeAlias = int | str

HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_VERSION = "2025-11-25"

METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INVALID_REQUEST = -32600
PARSE_ERROR = -32700
RESOURCE_NOT_FOUND = -32002
DELIBERATE_ERROR = -32050

PER_RESPONSE_FLOOD = 64 * 1024
DEFAULT_BIG = 8 * 1024 * 1024

CAPABILITIES: JsonObj = {
    "tools": {"listChanged": True},
    "resources": {"listChanged": True},
    "prompts": {"listChanged": True},
    "logging": {},
}


def _obj(properties: JsonObj | None = None, required: list[str] | None = None) -> JsonObj:
    schema: JsonObj = {"type": "object", "properties": properties or {}}
    if required:
        schema["required"] = required
    return schema


TEXT_SCHEMA = _obj({"text": {"type": "string"}}, ["text"])

BASE_TOOLS: list[JsonObj] = [
    {"name": "echo", "description": "Echo the text back.", "inputSchema": TEXT_SCHEMA},
    {
        "name": "add",
        "description": "Add two numbers.",
        "inputSchema": _obj({"a": {"type": "number"}, "b": {"type": "number"}}, ["a", "b"]),
        "outputSchema": _obj({"result": {"type": "number"}}, ["result"]),
    },
    {
        "name": "sleep",
        "description": "Sleep, sending progress every 0.1 s if a progressToken was given.",
        "inputSchema": _obj({"seconds": {"type": "number", "minimum": 0}}, ["seconds"]),
    },
    {
        "name": "crash",
        "description": "Exit the process immediately with the given code, without answering.",
        "inputSchema": _obj({"code": {"type": "integer", "default": 3}}),
    },
    {
        "name": "big",
        "description": "Return one text block of `bytes` 'x' characters.",
        "inputSchema": _obj({"bytes": {"type": "integer", "minimum": 0, "default": DEFAULT_BIG}}),
    },
    {
        "name": "stderr",
        "description": "Write `bytes` bytes to stderr, then answer 'ok'.",
        "inputSchema": _obj({"bytes": {"type": "integer", "minimum": 0}}, ["bytes"]),
    },
    {"name": "fail", "description": "Return a tool error (isError: true).", "inputSchema": _obj()},
    {"name": "rpc_error", "description": "Answer with a JSON-RPC error.", "inputSchema": _obj()},
    {
        "name": "set_tools",
        "description": "Replace the dynamic extra tools (echo-like) and send tools/list_changed.",
        "inputSchema": _obj({"names": {"type": "array", "items": {"type": "string"}}}, ["names"]),
    },
    {"name": "whoami", "description": "Return the pid and the --echo-env variable.", "inputSchema": _obj()},
    {
        "name": "spawn_child",
        "description": "Start a grandchild `sleep 300` in our process group and return its pid.",
        "inputSchema": _obj({"inherit_stdio": {"type": "boolean", "default": False}}),
    },
]
BASE_TOOL_NAMES = frozenset(t["name"] for t in BASE_TOOLS)

RESOURCES: list[JsonObj] = [
    {"uri": "test://hello", "name": "hello", "description": "Says hello.", "mimeType": "text/plain"}
]
RESOURCE_TEMPLATES: list[JsonObj] = [
    {
        "uriTemplate": "test://echo/{value}",
        "name": "echo",
        "description": "Echoes the value.",
        "mimeType": "text/plain",
    }
]
PROMPTS: list[JsonObj] = [
    {
        "name": "greet",
        "description": "Greet someone.",
        "arguments": [{"name": "name", "description": "Who to greet.", "required": True}],
    }
]


class RpcError(Exception):
    """Raised by a handler to answer with a JSON-RPC error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Pending:
    """An in-flight tools/call, so notifications/cancelled can find it."""

    __slots__ = ("cancelled", "event")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.cancelled = False


def _text(text: str) -> JsonObj:
    return {"content": [{"type": "text", "text": text}], "isError": False}


def _jsonl(message: JsonObj) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def _tool_error(text: str) -> JsonObj:
    return {"content": [{"type": "text", "text": text}], "isError": True}


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _write_stderr_lines(nbytes: int, char: str = "e") -> None:
    """Write exactly `nbytes` bytes to stderr, in lines of 100 bytes (the last one may be shorter)."""
    line = (char * 99 + "\n").encode()
    chunk = line * 655  # ~64 KiB per write
    remaining = nbytes
    while remaining > 0:
        piece = chunk[:remaining]
        try:
            _write_all(2, piece)
        except OSError:
            return
        remaining -= len(piece)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _log(message: str) -> None:
    try:
        _write_all(2, (message + "\n").encode())
    except OSError:
        return


class Server:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.failed_a_list = False
        self.out_lock = threading.Lock()
        self.stdout_broken = False
        self.pending: dict[RequestId, Pending] = {}
        self.pending_lock = threading.Lock()
        self.dynamic_tools: list[str] = []
        self.children: list[subprocess.Popen[bytes]] = []
        self.bogus_progress = 0
        width = max(2, len(str(max(args.tools - 1, 0))))
        self.extra_tools = [f"t{i:0{width}d}" for i in range(args.tools)]

    # ----- output -----------------------------------------------------------------------------------------

    def _emit_locked(self, data: bytes) -> None:
        if self.stdout_broken:
            return
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except (BrokenPipeError, OSError):
            self.stdout_broken = True

    def send(self, message: JsonObj) -> None:
        data = _jsonl(message)
        with self.out_lock:
            self._emit_locked(data)

    def notify(self, method: str, params: JsonObj) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def respond(self, message: JsonObj) -> None:
        """Send a response, preceded by whatever misbehaviour the flags ask for."""
        if self.args.flood_stderr:
            _write_stderr_lines(PER_RESPONSE_FLOOD, "f")
        data = _jsonl(message)
        with self.out_lock:
            if self.args.garbage_stdout:
                self._emit_locked(b"this is not json {\n[1,2,3]\n")
            if self.args.log_before_response:
                self.bogus_progress += 1
                pre = [
                    {
                        "jsonrpc": "2.0",
                        "method": "notifications/message",
                        "params": {
                            "level": "info",
                            "logger": "misbehaving",
                            "data": f"about to answer {message.get('id')}",
                        },
                    },
                    {
                        "jsonrpc": "2.0",
                        "method": "notifications/progress",
                        "params": {"progressToken": f"made-up-{self.bogus_progress}", "progress": 1},
                    },
                ]
                self._emit_locked(b"".join(_jsonl(m) for m in pre))
            self._emit_locked(data)

    def reply(self, rid: RequestId, result: JsonObj) -> None:
        self.respond({"jsonrpc": "2.0", "id": rid, "result": result})

    def reply_error(self, rid: RequestId | None, code: int, message: str) -> None:
        self.respond({"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}})

    # ----- main loop --------------------------------------------------------------------------------------

    def serve(self) -> None:
        stdin = sys.stdin.buffer
        while True:
            line = stdin.readline()
            if not line:
                break
            if line.strip():
                self.handle_line(line)
        _log("stdin closed")
        if self.args.ignore_eof:
            while True:
                time.sleep(3600)

    def handle_line(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            self.reply_error(None, PARSE_ERROR, "Parse error")
            return
        if not isinstance(msg, dict):
            self.reply_error(None, INVALID_REQUEST, "Invalid Request (batches are not supported)")
            return
        method = msg.get("method")
        if not isinstance(method, str):
            return  # a response to something we never asked: ignore
        params = msg.get("params")
        if not isinstance(params, dict):
            params = {}
        if "id" not in msg:
            self.handle_notification(method, params)
            return
        rid: RequestId = msg["id"]
        if method == "tools/call":
            with self.pending_lock:
                self.pending[rid] = Pending()
            threading.Thread(target=self.run_tool_call, args=(rid, params), daemon=True).start()
            return
        try:
            result = self.handle_request(method, params)
        except RpcError as exc:
            self.reply_error(rid, exc.code, exc.message)
            return
        if result is not None:
            self.reply(rid, result)

    def handle_notification(self, method: str, params: JsonObj) -> None:
        if method == "notifications/initialized":
            if self.args.exit_after_init is not None:
                _log(f"fatal: exiting after init with {self.args.exit_after_init}")
                os._exit(self.args.exit_after_init)
            if self.args.list_changed_at_init:
                self.notify("notifications/tools/list_changed", {})
        elif method == "notifications/cancelled":
            rid = params.get("requestId")
            with self.pending_lock:
                pending = self.pending.get(rid) if isinstance(rid, int | str) else None
                if pending is not None:
                    pending.cancelled = True
                    pending.event.set()
            _log(f"CANCELLED {rid}" if pending is not None else f"CANCEL-IGNORED {rid}")

    def handle_request(self, method: str, params: JsonObj) -> JsonObj | None:
        """Answer a non-tools/call request; None means "do not answer"."""
        if method == "initialize":
            return self.initialize(params)
        if method == "ping" or method == "logging/setLevel":
            return {}
        if method == "tools/list":
            if self.args.fail_first_list and not self.failed_a_list:
                self.failed_a_list = True
                raise RpcError(-32603, "the first tools/list fails (--fail-first-list)")
            return self.paginate(params, "tools", self.list_tools())
        if method == "resources/list":
            return self.paginate(params, "resources", RESOURCES)
        if method == "resources/templates/list":
            return self.paginate(params, "resourceTemplates", RESOURCE_TEMPLATES)
        if method == "resources/read":
            return self.read_resource(params)
        if method == "prompts/list":
            return self.paginate(params, "prompts", PROMPTS)
        if method == "prompts/get":
            return self.get_prompt(params)
        raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")

    # ----- handlers ---------------------------------------------------------------------------------------

    def initialize(self, params: JsonObj) -> JsonObj | None:
        if self.args.slow_start:
            time.sleep(self.args.slow_start)
        if self.args.never_initialize:
            _log("never answering initialize")
            return None
        requested = params.get("protocolVersion")
        if self.args.protocol_version is not None:
            version = self.args.protocol_version
        elif requested in HANDSHAKE_VERSIONS:
            version = requested
        else:
            version = LATEST_VERSION
        return {
            "protocolVersion": version,
            "capabilities": CAPABILITIES,
            "serverInfo": {"name": self.args.name, "version": "1.0"},
        }

    def paginate(self, params: JsonObj, key: str, items: list[JsonObj]) -> JsonObj:
        size: int | None = self.args.page_size
        if not size:
            return {key: items}
        cursor = params.get("cursor")
        try:
            start = int(cursor) if cursor is not None else 0
        except (TypeError, ValueError):
            raise RpcError(INVALID_PARAMS, f"Invalid cursor: {cursor!r}") from None
        if start < 0 or start > len(items):
            raise RpcError(INVALID_PARAMS, f"Invalid cursor: {cursor!r}")
        page: JsonObj = {key: items[start : start + size]}
        if start + size < len(items):
            page["nextCursor"] = str(start + size)
        return page

    def list_tools(self) -> list[JsonObj]:
        tools = [dict(t) for t in BASE_TOOLS]
        if self.args.sloppy_schemas:
            for tool in tools:
                if tool["name"] == "echo":
                    tool["inputSchema"] = {}
                elif tool["name"] == "add":
                    tool["inputSchema"] = {k: v for k, v in tool["inputSchema"].items() if k != "type"}
            tools.append({"name": "weird", "description": "A tool with no inputSchema at all."})
        if self.args.echo_description is not None:
            for tool in tools:
                if tool["name"] == "echo":
                    tool["description"] = self.args.echo_description
        for name in [*self.extra_tools, *self.dynamic_tools]:
            tools.append({"name": name, "description": f"Echo-like tool {name}.", "inputSchema": TEXT_SCHEMA})
        return tools

    def read_resource(self, params: JsonObj) -> JsonObj:
        uri = params.get("uri")
        if uri == "test://hello":
            text = "hello"
        elif isinstance(uri, str) and uri.startswith("test://echo/"):
            from urllib.parse import unquote

            text = unquote(uri[len("test://echo/") :])
        else:
            raise RpcError(RESOURCE_NOT_FOUND, f"Resource not found: {uri}")
        return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": text}]}

    def get_prompt(self, params: JsonObj) -> JsonObj:
        if params.get("name") != "greet":
            raise RpcError(INVALID_PARAMS, f"Unknown prompt: {params.get('name')}")
        arguments = params.get("arguments") or {}
        name = arguments.get("name") if isinstance(arguments, dict) else None
        if not isinstance(name, str):
            raise RpcError(INVALID_PARAMS, "Missing required argument: name")
        return {
            "description": "A greeting",
            "messages": [{"role": "user", "content": {"type": "text", "text": f"Hello, {name}!"}}],
        }

    # ----- tools ------------------------------------------------------------------------------------------

    def run_tool_call(self, rid: RequestId, params: JsonObj) -> None:
        error: RpcError | None = None
        result: JsonObj | None = None
        try:
            result = self.call_tool(rid, params)
        except RpcError as exc:
            error = exc
        except Exception as exc:  # a bug in a tool must still produce an answer
            result = _tool_error(f"{type(exc).__name__}: {exc}")
        with self.pending_lock:
            pending = self.pending.pop(rid, None)
        if pending is not None and pending.cancelled:
            return
        if error is not None:
            self.reply_error(rid, error.code, error.message)
        elif result is not None:
            self.reply(rid, result)

    def call_tool(self, rid: RequestId, params: JsonObj) -> JsonObj:
        name = params.get("name")
        args = params.get("arguments") or {}
        if not isinstance(args, dict):
            raise RpcError(INVALID_PARAMS, "arguments must be an object")
        simple: dict[str, Callable[[JsonObj], JsonObj]] = {
            "echo": self.tool_echo,
            "add": self.tool_add,
            "crash": self.tool_crash,
            "big": self.tool_big,
            "stderr": self.tool_stderr,
            "fail": self.tool_fail,
            "rpc_error": self.tool_rpc_error,
            "set_tools": self.tool_set_tools,
            "whoami": self.tool_whoami,
            "spawn_child": self.tool_spawn_child,
        }
        if name == "sleep":
            return self.tool_sleep(rid, params, args)
        if isinstance(name, str) and name in simple:
            return simple[name](args)
        if name == "weird" and self.args.sloppy_schemas:
            return _text("weird")
        if name in self.extra_tools or name in self.dynamic_tools:
            return self.tool_echo(args)
        raise RpcError(INVALID_PARAMS, f"Unknown tool: {name}")

    @staticmethod
    def tool_echo(args: JsonObj) -> JsonObj:
        return _text(str(args.get("text", "")))

    @staticmethod
    def tool_add(args: JsonObj) -> JsonObj:
        a, b = args.get("a"), args.get("b")
        if not _is_number(a) or not _is_number(b):
            return _tool_error("a and b must be numbers")
        total = a + b
        return {"content": [{"type": "text", "text": str(total)}], "structuredContent": {"result": total}}

    def tool_sleep(self, rid: RequestId, params: JsonObj, args: JsonObj) -> JsonObj:
        seconds = args.get("seconds", 1)
        if not _is_number(seconds) or seconds < 0:
            return _tool_error("seconds must be a number >= 0")
        meta = params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        with self.pending_lock:
            pending = self.pending.get(rid)
        event = pending.event if pending is not None else threading.Event()
        start = time.monotonic()
        deadline = start + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if event.wait(min(0.1, remaining)):
                return {}  # cancelled: the caller drops the answer
            if token is not None and time.monotonic() < deadline:
                elapsed = round(time.monotonic() - start, 3)
                self.notify(
                    "notifications/progress", {"progressToken": token, "progress": elapsed, "total": seconds}
                )
        return _text(f"slept {seconds}")

    @staticmethod
    def tool_crash(args: JsonObj) -> NoReturn:
        code = args.get("code", 3)
        code = code if isinstance(code, int) else 3
        _log(f"fatal: crashing with exit code {code}")
        os._exit(code)

    @staticmethod
    def tool_big(args: JsonObj) -> JsonObj:
        size = args.get("bytes", DEFAULT_BIG)
        return _text("x" * (size if isinstance(size, int) else DEFAULT_BIG))

    @staticmethod
    def tool_stderr(args: JsonObj) -> JsonObj:
        size = args.get("bytes", 0)
        _write_stderr_lines(size if isinstance(size, int) else 0, "s")
        return _text("ok")

    @staticmethod
    def tool_fail(args: JsonObj) -> JsonObj:
        return _tool_error("tool failed on purpose")

    @staticmethod
    def tool_rpc_error(args: JsonObj) -> JsonObj:
        raise RpcError(DELIBERATE_ERROR, "deliberate upstream error")

    def tool_set_tools(self, args: JsonObj) -> JsonObj:
        names = args.get("names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return _tool_error("names must be an array of strings")
        self.dynamic_tools = list(dict.fromkeys(n for n in names if n not in BASE_TOOL_NAMES))
        self.notify("notifications/tools/list_changed", {})
        return _text("ok")

    def tool_whoami(self, args: JsonObj) -> JsonObj:
        env = os.environ.get(self.args.echo_env) if self.args.echo_env else None
        return _text(json.dumps({"pid": os.getpid(), "env": env}))

    def tool_spawn_child(self, args: JsonObj) -> JsonObj:
        # Same session and process group as us. By default the grandchild gets /dev/null for stdio, so it
        # cannot hold the hub's pipes open; inherit_stdio=true makes it hold them, like `npx` grandchildren.
        import subprocess

        stdio = None if args.get("inherit_stdio") is True else subprocess.DEVNULL
        child = subprocess.Popen(["sleep", "300"], stdin=stdio, stdout=stdio, stderr=stdio)
        self.children.append(child)
        return _text(str(child.pid))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--name", default="misbehaving", help="serverInfo.name")
    p.add_argument("--page-size", type=int, default=None, help="paginate list results, N per page")
    p.add_argument("--tools", type=int, default=0, help="add N extra echo-like tools t00, t01, ...")
    p.add_argument("--never-initialize", action="store_true", help="never answer initialize")
    p.add_argument("--exit-at-start", type=int, metavar="CODE", help="exit with CODE before reading stdin")
    p.add_argument("--exit-after-init", type=int, metavar="CODE", help="exit with CODE on initialized")
    p.add_argument("--flood-stderr", type=int, metavar="BYTES", default=0, help="stderr flood at start")
    p.add_argument("--garbage-stdout", action="store_true", help="non-JSON-RPC lines before each response")
    p.add_argument("--log-before-response", action="store_true", help="log + bogus progress before responses")
    p.add_argument("--sloppy-schemas", action="store_true", help="publish sloppy tool input schemas")
    p.add_argument("--ignore-sigterm", action="store_true", help="ignore SIGTERM")
    p.add_argument("--ignore-eof", action="store_true", help="keep running after stdin closes")
    p.add_argument("--slow-start", type=float, metavar="SECONDS", default=0.0, help="delay initialize")
    p.add_argument("--protocol-version", metavar="V", help="always answer initialize with this version")
    p.add_argument(
        "--list-changed-at-init", action="store_true", help="send tools/list_changed on initialized"
    )
    p.add_argument("--fail-first-list", action="store_true", help="answer the first tools/list with an error")
    p.add_argument("--echo-env", metavar="VAR", help="environment variable reported by whoami")
    p.add_argument("--echo-description", metavar="TEXT", help="publish the echo tool with this description")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.exit_at_start is not None:
        _log("fatal: exiting at start")
        sys.exit(args.exit_at_start)
    if args.ignore_sigterm:
        # A Python-level handler rather than SIG_IGN: SIG_IGN would be inherited by spawn_child's grandchild.
        signal.signal(signal.SIGTERM, lambda signum, frame: _log("SIGTERM ignored"))
    server = Server(args)
    if args.flood_stderr:
        _write_stderr_lines(args.flood_stderr, "F")
    if args.garbage_stdout:
        with server.out_lock:
            server._emit_locked(b"this is not json {\n[1,2,3]\n")
    try:
        server.serve()
    except KeyboardInterrupt:
        return


if __name__ == "__main__":
    main()
