"""Config reload: watch the file and apply what changed, without restarting what did not.

Polling (one ``stat`` a second) rather than inotify: it works on every filesystem and editor (atomic
renames, network mounts), costs nothing measurable, and needs no dependency. The hub's own saves are
recognised by content and ignored. An invalid file is reported and ignored: the running set is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from patchbay.config import load_config
from patchbay.errors import ConfigError
from patchbay.events import ConfigReloadEvent
from patchbay.hub import Hub

log = logging.getLogger(__name__)


class ConfigWatcher:
    def __init__(self, hub: Hub, path: Path, interval: float = 1.0) -> None:
        self.hub = hub
        self.path = path
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="patchbay-config-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            stamp = self._stat()
            if stamp is None or stamp == self._stamp:
                continue
            self._stamp = stamp
            try:
                await self.check()
            except Exception as exc:  # the watcher outlives any bad file or failed reload
                log.exception("config reload failed; keeping the running configuration")
                self.hub.publish(ConfigReloadEvent(ok=False, error=f"{type(exc).__name__}: {exc}"))

    async def check(self) -> None:
        """Reload now if the file differs from what the hub last read or wrote."""
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            log.warning("config reload: cannot read %s: %s", self.path, exc)
            return
        if data == self.hub.config.source_bytes:
            return
        try:
            new = load_config(self.path)
        except ConfigError as exc:
            log.error("config reload: %s; keeping the running configuration", exc)
            self.hub.publish(ConfigReloadEvent(ok=False, error=str(exc)))
            return
        try:
            changes = await self.hub.apply_config(new)
        except ConfigError as exc:
            log.error("config reload: %s; keeping the running configuration", exc)
            self.hub.publish(ConfigReloadEvent(ok=False, error=str(exc)))
            return
        log.info("config reload: %s", ", ".join(f"{k} {v}" for k, v in changes.items() if v) or "no changes")
        self.hub.publish(
            ConfigReloadEvent(
                ok=True, added=changes["added"], removed=changes["removed"], changed=changes["changed"]
            )
        )
