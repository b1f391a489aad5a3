"""The smallest, fastest stdio MCP server we can write by hand: the latency floor for benchmarks.

Why it exists: benchmarks compare the hub against this server driven by a raw JSON-RPC client, so that the
cost of the hub itself (and of the SDK) can be separated from process and pipe overhead. Standard library
only, sequential and single-threaded on purpose; it answers just enough of MCP for an `echo` tool call.

``--tools N`` adds N more tools (``tool_000`` ...) for large-catalog benchmarks (bench/catalog.py), and a
``relist`` tool that sends ``notifications/tools/list_changed`` before answering, so a benchmark can make
the hub re-list this server on demand.
"""

import json
import sys

TOOLS: list[dict[str, object]] = [
    {
        "name": "echo",
        "description": "Echo the text back.",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    }
]
INIT = {
    "protocolVersion": "2025-11-25",
    "capabilities": {"tools": {"listChanged": True}},
    "serverInfo": {"name": "floor", "version": "1.0"},
}


RELIST: dict[str, object] = {
    "name": "relist",
    "description": "Send notifications/tools/list_changed, then answer.",
    "inputSchema": {"type": "object", "properties": {}},
}
LIST_CHANGED = b'{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}\n'


def extra_tools(n: int) -> list[dict[str, object]]:
    return [
        {
            "name": f"tool_{i:03d}",
            "description": f"Benchmark tool number {i}: echoes its text.",
            "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}},
        }
        for i in range(n)
    ]


def main() -> None:
    tools = TOOLS
    if "--tools" in sys.argv:
        tools = [*TOOLS, RELIST, *extra_tools(int(sys.argv[sys.argv.index("--tools") + 1]))]
    loads = json.loads
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    read = sys.stdin.buffer.readline
    out = sys.stdout.buffer
    while line := read():
        msg = loads(line)
        if "id" not in msg:
            continue  # notifications (and stray responses) are ignored
        method = msg.get("method")
        reply: dict[str, object] = {"jsonrpc": "2.0", "id": msg["id"]}
        if method == "tools/call" and msg["params"]["name"] == "echo":
            text = msg["params"].get("arguments", {}).get("text", "")
            reply["result"] = {"content": [{"type": "text", "text": text}], "isError": False}
        elif method == "tools/call" and msg["params"]["name"] == "relist":
            out.write(LIST_CHANGED)
            reply["result"] = {"content": [{"type": "text", "text": "relisted"}], "isError": False}
        elif method == "initialize":
            reply["result"] = INIT
        elif method == "tools/list":
            reply["result"] = {"tools": tools}
        elif method == "ping":
            reply["result"] = {}
        else:
            reply["error"] = {"code": -32601, "message": f"Method not found: {method}"}
        out.write(dumps(reply).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    main()
