"""The smallest, fastest stdio MCP server we can write by hand: the latency floor for benchmarks.

Why it exists: benchmarks compare the hub against this server driven by a raw JSON-RPC client, so that the
cost of the hub itself (and of the SDK) can be separated from process and pipe overhead. Standard library
only, sequential and single-threaded on purpose; it answers just enough of MCP for an `echo` tool call.
"""

import json
import sys

TOOLS = [
    {
        "name": "echo",
        "description": "Echo the text back.",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    }
]
INIT = {
    "protocolVersion": "2025-11-25",
    "capabilities": {"tools": {}},
    "serverInfo": {"name": "floor", "version": "1.0"},
}


def main() -> None:
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
        elif method == "initialize":
            reply["result"] = INIT
        elif method == "tools/list":
            reply["result"] = {"tools": TOOLS}
        elif method == "ping":
            reply["result"] = {}
        else:
            reply["error"] = {"code": -32601, "message": f"Method not found: {method}"}
        out.write(dumps(reply).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    main()
