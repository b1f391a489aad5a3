"""Shared fixtures: hubs over real subprocesses, and helpers to wait on real conditions."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from patchbay import Event, Hub

MISBEHAVING = Path(__file__).parent / "servers" / "misbehaving_server.py"


def bad(*flags: str, **settings: Any) -> dict[str, Any]:
    """A config entry for the misbehaving test server with the given flags."""
    return {"command": sys.executable, "args": [str(MISBEHAVING), *flags], **settings}


HubFactory = Callable[..., Awaitable[Hub]]


class _UnretrievedExceptions(logging.Handler):
    """Records asyncio's "exception was never retrieved" reports: every task must have an owner."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "never retrieved" in message:
            self.found.append(f"{message}: {record.exc_info[1]!r}" if record.exc_info else message)


_unretrieved = _UnretrievedExceptions()
logging.getLogger("asyncio").addHandler(_unretrieved)


@pytest.fixture(autouse=True)
def no_unretrieved_task_exceptions() -> Iterator[None]:
    """Fail the test if any task or future it left behind had an exception nobody retrieved."""
    gc.collect()
    _unretrieved.found.clear()
    yield
    gc.collect()
    found, _unretrieved.found[:] = list(_unretrieved.found), []
    if found:
        pytest.fail("asyncio reported unretrieved exceptions:\n" + "\n".join(found), pytrace=False)


@pytest.fixture
async def make_hub() -> AsyncIterator[HubFactory]:
    """Start hubs over ``{"mcpServers": servers}``; every hub is closed at the end of the test."""
    hubs: list[Hub] = []

    async def make(servers: dict[str, Any], **kwargs: Any) -> Hub:
        hub = Hub.from_dict({"mcpServers": servers}, **kwargs)
        hubs.append(hub)
        await hub.start()
        return hub

    yield make
    for hub in hubs:
        await hub.close()


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class EventLog:
    """Collects a hub's events in the background."""

    def __init__(self, hub: Hub) -> None:
        self.events: list[Event] = []
        self._sub = hub.events()
        self._task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        async for ev in self._sub:
            self.events.append(ev)

    def of(self, type_: str, **fields: Any) -> list[Event]:
        return [
            e for e in self.events if e.type == type_ and all(getattr(e, k) == v for k, v in fields.items())
        ]

    async def close(self) -> None:
        self._task.cancel()
        self._sub.close()
