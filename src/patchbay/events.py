"""Events: server state changes, catalog changes and (on request) tool calls, fanned out to subscribers.

Each subscriber has its own bounded queue; a subscriber that stops reading loses its oldest events (and
is told how many) instead of slowing the hub down or growing without bound.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any, Literal

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


class AgentEvent(Event):
    """A dial-in agent arrived (``connected``) or left (``disconnected``, with the reason)."""

    type: Literal["agent"] = "agent"
    agent: str
    state: str
    address: str | None = None
    error: str | None = None


class CatalogEvent(Event):
    type: Literal["catalog"] = "catalog"
    version: int
    server: str | None = None
    added: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)


class ConfigEvent(Event):
    type: Literal["config"] = "config"
    action: Literal["added", "removed", "updated", "enabled", "disabled", "agent_added", "agent_revoked"]
    server: str


class ConfigReloadEvent(Event):
    type: Literal["config_reload"] = "config_reload"
    ok: bool
    error: str | None = None
    added: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    changed: list[str] = Field(default_factory=list)


class CallStartedEvent(Event):
    """A tool call began (only sent to subscribers that asked for calls: ``hub.events(calls=True)``).
    Never carries the arguments."""

    type: Literal["call_started"] = "call_started"
    id: int
    tool: str
    server: str | None = None
    identity: str
    client: str | None = None


class CallFinishedEvent(Event):
    """A tool call ended: ``outcome`` is ``ok``, ``tool_error`` or the error's kind (``timeout``, ...)."""

    type: Literal["call_finished"] = "call_finished"
    id: int
    tool: str
    server: str | None = None
    identity: str
    client: str | None = None
    duration_ms: float
    outcome: str


class EventsDropped(Event):
    type: Literal["events_dropped"] = "events_dropped"
    count: int


class Subscription:
    """An async iterator of events that is registered from the moment it is created.

    (An async generator would only subscribe on its first ``__anext__``, losing what happens between
    ``hub.events()`` and the first iteration.)
    """

    def __init__(self, bus: EventBus, size: int, calls: bool = False) -> None:
        self._bus = bus
        self.queue: asyncio.Queue[Event] = asyncio.Queue(size)
        self.dropped = 0
        bus._subs.add(self)
        if calls:
            bus._call_subs.add(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        if self.dropped:  # tell the reader it missed some, before what is still queued
            count, self.dropped = self.dropped, 0
            return EventsDropped(count=count)
        return await self.queue.get()

    def close(self) -> None:
        self._bus._subs.discard(self)
        self._bus._call_subs.discard(self)


class CallFeed:
    """``call_started`` / ``call_finished`` for the call-event subscribers, built off the call path.

    Why batched: two pydantic events and two queue wake-ups per call cost about as much as the call
    itself. The call path only appends a tuple here (and schedules one flush per ``interval``); the
    events are built and published together, at most ``interval`` seconds later."""

    def __init__(self, bus: EventBus, interval: float = 0.1) -> None:
        self._bus = bus
        self._interval = interval
        self._pending: list[tuple[Any, ...]] = []
        self._timer: asyncio.TimerHandle | None = None

    def started(self, call_id: int, tool: str, server: str | None, identity: str, client: str | None) -> None:
        self._add((call_id, tool, server, identity, client, time.time(), None, None))

    def finished(
        self,
        call_id: int,
        tool: str,
        server: str | None,
        identity: str,
        client: str | None,
        seconds: float,
        outcome: str,
    ) -> None:
        self._add((call_id, tool, server, identity, client, time.time(), seconds, outcome))

    def _add(self, item: tuple[Any, ...]) -> None:
        self._pending.append(item)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self._flush)

    def _flush(self) -> None:
        self._timer = None
        pending, self._pending = self._pending, []
        for call_id, tool, server, identity, client, when, seconds, outcome in pending:
            fields = {"id": call_id, "tool": tool, "server": server, "identity": identity, "client": client}
            if seconds is None:
                self._bus.publish_call(CallStartedEvent(time=when, **fields))
            else:
                self._bus.publish_call(
                    CallFinishedEvent(
                        time=when, duration_ms=round(seconds * 1000, 3), outcome=outcome, **fields
                    )
                )


class EventBus:
    def __init__(self, queue_size: int = 1000) -> None:
        # Weak: a subscription nobody holds any more is collected and stops receiving (and queueing).
        self._subs: weakref.WeakSet[Subscription] = weakref.WeakSet()
        # The subscribers that want call events too: the call path builds them only when there is one.
        self._call_subs: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._size = queue_size

    def publish(self, event: Event) -> None:
        self._send(tuple(self._subs), event)

    def publish_call(self, event: Event) -> None:
        """A call event, to the subscribers that asked for them only."""
        self._send(tuple(self._call_subs), event)

    @staticmethod
    def _send(subs: tuple[Subscription, ...], event: Event) -> None:
        for sub in subs:
            if sub.queue.full():
                sub.queue.get_nowait()
                sub.dropped += 1
            sub.queue.put_nowait(event)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    @property
    def wants_calls(self) -> bool:
        return bool(self._call_subs)

    def subscribe(self, calls: bool = False) -> Subscription:
        return Subscription(self, self._size, calls)
