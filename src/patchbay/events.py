"""Events: server state changes and catalog changes, fanned out to any number of subscribers.

Each subscriber has its own bounded queue; a subscriber that stops reading loses its oldest events (and
is told how many) instead of slowing the hub down or growing without bound.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Literal

from pydantic import BaseModel, Field


class Event(BaseModel):
    type: str
    time: float = Field(default_factory=time.time)


class ServerStateEvent(Event):
    type: Literal["server_state"] = "server_state"
    server: str
    state: str
    previous: str | None = None
    error: str | None = None


class CatalogEvent(Event):
    type: Literal["catalog"] = "catalog"
    version: int
    server: str | None = None
    added: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)


class ConfigEvent(Event):
    type: Literal["config"] = "config"
    action: Literal["added", "removed", "updated", "enabled", "disabled"]
    server: str


class EventsDropped(Event):
    type: Literal["events_dropped"] = "events_dropped"
    count: int


class EventBus:
    def __init__(self, queue_size: int = 1000) -> None:
        self._queues: set[asyncio.Queue[Event]] = set()
        self._dropped: dict[asyncio.Queue[Event], int] = {}
        self._size = queue_size

    def publish(self, event: Event) -> None:
        for q in self._queues:
            if q.full():
                q.get_nowait()
                self._dropped[q] = self._dropped.get(q, 0) + 1
            q.put_nowait(event)

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    async def subscribe(self) -> AsyncIterator[Event]:
        q: asyncio.Queue[Event] = asyncio.Queue(self._size)
        self._queues.add(q)
        try:
            while True:
                event = await q.get()
                dropped = self._dropped.pop(q, 0)
                if dropped:
                    yield EventsDropped(count=dropped)
                yield event
        finally:
            self._queues.discard(q)
            self._dropped.pop(q, None)
