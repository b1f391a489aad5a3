"""What the hub routes to: one ``Source`` per upstream, kept in one registry in rank order.

A source is a supervised local or remote server (``supervisor.py``) or a dial-in agent (``dialin.py``).
The transport and the lifecycle differ; what the router and the catalog need is the same, and lives here:
a name, the live ``Connection`` (or none), the prefix of its exposed names, its rank, timeouts and an
in-flight limit, and a way to wait for it to come (back) up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from patchbay.errors import ServerUnavailableError

if TYPE_CHECKING:
    from patchbay.catalog import Listing
    from patchbay.config import ToolOverride
    from patchbay.identity import Identity
    from patchbay.upstream import Connection

Rank = tuple[int, int, str]


class SourceKind(StrEnum):
    SERVER = "server"
    AGENT = "agent"


class SourceHooks(Protocol):
    """How a source reports to its hub. The hub passes a small object, not itself."""

    def state_changed(self, source: Source, state: str, previous: str | None, error: str | None) -> None: ...
    def listing_changed(self, source: Source, listing: Listing | None) -> None: ...
    def notification(self, source: Source, method: str, params: dict[str, Any]) -> None: ...
    async def upstream_request(self, source: Source, method: str, params: dict[str, Any]) -> Any: ...


class Source:
    """Common state of every upstream; subclasses own the lifecycle that sets ``connection``."""

    kind: SourceKind

    def __init__(self, name: str, hooks: SourceHooks) -> None:
        self.name = name
        self.hooks = hooks
        self.connection: Connection | None = None  # set only while ready
        self.last_error: str | None = None
        self._changed = asyncio.Event()

    # --- what the router needs ---------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return self.name

    @property
    def hidden_tools(self) -> tuple[str, ...]:
        return ()

    @property
    def tool_overrides(self) -> Mapping[str, ToolOverride]:
        """Per upstream tool name: the user's rename, description, annotations or hiding."""
        return {}

    @property
    def call_timeout(self) -> float | None:
        return None

    @property
    def max_in_flight(self) -> int | None:
        return None

    @property
    def coming(self) -> bool:
        """Whether it is on its way (back) up by itself, so a call may wait for it."""
        return False

    @property
    def per_user(self) -> bool:
        """Whether each caller gets its own upstream connection (``connection_for``)."""
        return False

    async def connection_for(self, caller: Identity) -> tuple[Connection, str]:
        """The connection ``caller``'s calls go out on, and the name its upstream requests route by."""
        raise NotImplementedError

    def unavailable(self) -> ServerUnavailableError:
        """The error for a call that finds no connection: says why."""
        raise NotImplementedError

    def capabilities(self) -> dict[str, Any]:
        conn = self.connection
        return conn.capabilities if conn is not None else {}

    # --- waiting -----------------------------------------------------------------------------------

    def _notify_changed(self) -> None:
        """Wake everyone waiting in ``wait_connection`` (called on every state change)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_connection(self, timeout: float) -> Connection:
        """The live connection, waiting up to ``timeout`` s while the source is coming up.

        Raises the source's ``unavailable()`` error when it is not coming, or does not make it in time.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.connection is None and self.coming:
            left = deadline - loop.time()
            if left <= 0:
                break
            changed = self._changed
            try:
                async with asyncio.timeout(left):
                    await changed.wait()
            except TimeoutError:
                break
        if self.connection is None:
            raise self.unavailable()
        return self.connection


class SourceRegistry:
    """Every source by name, iterated in rank order: local servers in config order, then agents.

    The rank decides who keeps a contested exposed name, so it never depends on timing.
    """

    def __init__(self) -> None:
        self._servers: dict[str, Source] = {}
        self._agents: dict[str, Source] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._servers or name in self._agents

    def __iter__(self) -> Iterator[Source]:
        yield from self._servers.values()
        yield from self._agents.values()

    def get(self, name: str) -> Source | None:
        return self._servers.get(name) or self._agents.get(name)

    def servers(self) -> dict[str, Source]:
        return self._servers

    def agents(self) -> dict[str, Source]:
        return self._agents

    def add(self, source: Source) -> None:
        """Add ``source``, or put it in the place of the one with its name (keeping that rank)."""
        table = self._agents if source.kind is SourceKind.AGENT else self._servers
        table[source.name] = source

    def remove(self, name: str) -> Source | None:
        return self._servers.pop(name, None) or self._agents.pop(name, None)

    def reorder(self, servers: list[str], agents: list[str]) -> None:
        """Adopt a new config order (a reload); names not listed keep their place at the end."""
        self._servers = _ordered(self._servers, servers)
        self._agents = _ordered(self._agents, agents)

    def rank(self, source: Source) -> Rank:
        if source.kind is SourceKind.AGENT:
            return (1, _index(self._agents, source.name), source.name)
        return (0, _index(self._servers, source.name), source.name)

    def owner_of_name(self, exposed: str) -> Source | None:
        """The source whose prefix ``exposed`` carries (``<prefix>__tool``), first in rank order."""
        for source in self:
            prefix = source.prefix
            if prefix and exposed.startswith(prefix) and exposed[len(prefix) : len(prefix) + 2] == "__":
                return source
        return None


def _index(table: dict[str, Source], name: str) -> int:
    for i, key in enumerate(table):
        if key == name:
            return i
    return len(table)


def _ordered(table: dict[str, Source], order: list[str]) -> dict[str, Source]:
    out = {n: table[n] for n in order if n in table}
    out.update((n, s) for n, s in table.items() if n not in out)
    return out
