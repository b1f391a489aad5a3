"""An in-process hub for one command (``tools``, ``call``) when no hub is running: the config's servers
started here, each shown on stderr as it becomes ready or fails."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from patchbay.cli.output import STATE_STYLE, Output, error_suffix

if TYPE_CHECKING:  # the hub (and the MCP SDK under it) is imported only when servers are started
    from patchbay.hub import Hub


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
    import asyncio

    from patchbay.events import ServerStateEvent  # its models are built only when servers start

    enabled = [n for n in hub.servers if hub.server_spec(n).is_enabled]
    if not enabled:
        out.note("no enabled servers in the config")
        return
    out.note(f"starting {len(enabled)} server(s)…")
    shown: set[str] = set()

    def show(name: str, state: str, error: str | None) -> None:
        if name in shown or state not in ("ready", "backoff", "failed", "needs_auth"):
            return
        shown.add(name)
        label = {"ready": "ready", "needs_auth": "needs sign-in"}.get(state, "failed")
        why = error_suffix(name, error) if state != "ready" else ""
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
