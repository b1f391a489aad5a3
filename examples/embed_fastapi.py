"""Patchbay inside your own FastAPI app: your routes at /, patchbay's under /hub.

    .venv/bin/python examples/embed_fastapi.py [--config patchbay.json] [--port 8000]

Then, next to this app's own routes:

- http://127.0.0.1:8000/hub/       the dashboard
- http://127.0.0.1:8000/hub/mcp    the aggregated MCP endpoint (and /hub/mcp/<profile>)
- http://127.0.0.1:8000/hub/api/…  the management API (docs at /hub/docs)
- ws://127.0.0.1:8000/hub/agents   where `patchbay agent --hub ws://…/hub/agents` dials in
- http://127.0.0.1:8000/tools?q=…  this app's own route, using the same hub from Python

The hub starts with the app and stops with it (Ctrl-C stops every server it started). Without --config it
serves a copy of the bundled demo config, so runtime changes (adding a server in the dashboard) are saved
to that copy, not to the package.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

import patchbay
from patchbay import Hub
from patchbay.config import BUNDLED_CONFIG
from patchbay.server.embed import ServeSettings

log = logging.getLogger("embed_fastapi")


def build_app(config: Path) -> FastAPI:
    """Your app, with patchbay mounted at /hub. Your own lifespan runs inside patchbay's: the hub is up
    (starting its servers) before your start-up code, and still up during your shutdown code."""
    hub = Hub.from_file(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("my app starts; patchbay is starting %d servers", len(hub.servers))
        yield
        log.info("my app stops; patchbay stops its servers next")

    app = FastAPI(title="my app", lifespan=lifespan)

    @app.get("/")
    async def home() -> dict[str, str]:
        return {"app": "mine", "dashboard": "/hub/", "mcp": "/hub/mcp"}

    @app.get("/tools")
    async def tools_for_a_turn(q: str, limit: int = 5) -> list[dict[str, Any]]:
        """The tools an LLM should get for this request (what you would pass as `tools=`)."""
        await hub.wait_started()
        return hub.tools(format="openai", query=q, limit=limit)

    # tokens=[...] would guard every patchbay path (not yours); allowed_hosts=[...] adds the Host names
    # your users reach this app by (loopback names are always allowed).
    patchbay.mount(app, hub, prefix="/hub", settings=ServeSettings())
    return app


@contextlib.contextmanager
def demo_config() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="patchbay-embed-") as tmp:
        path = Path(tmp) / "patchbay.json"
        shutil.copyfile(BUNDLED_CONFIG, path)
        yield path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="patchbay config file (default: a copy of the demo's)")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with contextlib.ExitStack() as stack:
        config = args.config or stack.enter_context(demo_config())
        uvicorn.run(build_app(config), host="127.0.0.1", port=args.port, log_level="info")


if __name__ == "__main__":
    main()
