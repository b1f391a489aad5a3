"""The HTTP floor for bench/http.py: a bare ASGI app that answers every POST like an echo ``tools/call``.

No MCP, no framework, no upstream process: it reads the body, parses it, and answers the JSON-RPC result
patchbay would give for ``floor__echo`` (same ``id``, same ``content``), as ``application/json``. It runs on
uvicorn with the settings ``patchbay serve`` uses (see ``patchbay.cli._serve``), so the difference between
it and patchbay is the cost of the MCP layer and the stdio hop.
Run: ``python bench/bare_asgi.py PORT [h11|httptools] [asyncio|uvloop]`` (default h11, asyncio).
"""

from __future__ import annotations

import json
import sys
from typing import Any

HEADERS = [(b"content-type", b"application/json")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["method"] != "POST":
        await send({"type": "http.response.start", "status": 405, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    request = json.loads(body)
    text = (request.get("params") or {}).get("arguments", {}).get("text", "")
    reply = {
        "jsonrpc": "2.0",
        "id": request.get("id"),
        "result": {"content": [{"type": "text", "text": text}], "isError": False},
    }
    out = json.dumps(reply, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*HEADERS, (b"content-length", str(len(out)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": out})


def main() -> None:
    import uvicorn

    port = int(sys.argv[1])
    # uvicorn's HTTP implementation and event loop, as `patchbay serve --http/--loop` (bench/http.py --stacks)
    http = sys.argv[2] if len(sys.argv) > 2 else "h11"
    loop = sys.argv[3] if len(sys.argv) > 3 else "asyncio"
    # The same settings as `patchbay serve` (patchbay.cli._serve).
    uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            http=http,  # type: ignore[arg-type]
            loop=loop,  # type: ignore[arg-type]
            log_level="warning",
            ws="websockets-sansio",
            timeout_graceful_shutdown=5,
            lifespan="on",
        )
    ).run()


if __name__ == "__main__":
    main()
