"""Tool pins shared by every replica: one definition of record per tool, one approval for all.

Why: with pins per replica, a tool whose definition changed and was approved on replica A would stay
withheld on B and C (``"pinning": "block"``), and each replica would pin whatever definition it happened
to see first. In cluster mode the pins live in one Redis hash (``patchbay:pins``, a field per
``server`` + tool): a tool seen for the first time is pinned with ``HSETNX`` (the first replica to see it
wins; the others compare against that pin), an approval overwrites its field and is announced on
``patchbay:events``, and every replica then re-screens the listings it holds, so the tool rejoins
listings and calls everywhere.

The screen is synchronous (it runs when a server's listing arrives, not per call), so this store reads
Redis with a blocking client: one ``HGETALL`` per listing screened. When Redis is unreachable the
replica screens against the pins it last read, and pins new tools locally, to be written on the next
listing after Redis returns.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis
from redis.exceptions import RedisError

from patchbay.cluster.keys import EVENTS, PREFIX
from patchbay.errors import ClusterUnavailableError
from patchbay.pinning import PinStore

log = logging.getLogger(__name__)

PINS = PREFIX + "pins"
SEP = "\x1f"  # between server and tool in a field name (neither may contain it)


class SharedPinStore(PinStore):
    """``PinStore`` over Redis: ``refresh`` before a screen, ``put`` first-seen pins with ``HSETNX``."""

    def __init__(self, url: str) -> None:
        super().__init__(None)
        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._failing = False
        self._unsaved: dict[tuple[str, str], dict[str, Any]] = {}

    def refresh(self) -> None:
        """Read every pin of record (and write the ones pinned here while Redis was away)."""
        try:
            for (server, tool), pin in list(self._unsaved.items()):
                self._redis.hsetnx(PINS, f"{server}{SEP}{tool}", json.dumps(pin))
            self._unsaved.clear()
            raw: dict[bytes, bytes] = self._redis.hgetall(PINS)  # type: ignore[assignment]
        except RedisError as exc:
            if not self._failing:
                self._failing = True
                log.error("tool pins: Redis is unreachable (%s); screening against the last pins read", exc)
            return
        if self._failing:
            self._failing = False
            log.warning("tool pins: shared through Redis again")
        pins: dict[str, dict[str, dict[str, Any]]] = {}
        for field, value in raw.items():
            server, _, tool = field.decode().partition(SEP)
            try:
                pins.setdefault(server, {})[tool] = json.loads(value)
            except ValueError:
                continue
        self.pins = pins

    def put(self, server: str, tool: str, defn: dict[str, Any], dig: str) -> None:
        """A first-seen tool: pinned unless another replica pinned it first (then theirs stands)."""
        pin = {"digest": dig, "definition": defn, "pinnedAt": time.time()}
        try:
            if not self._redis.hsetnx(PINS, f"{server}{SEP}{tool}", json.dumps(pin)):
                stored = self._redis.hget(PINS, f"{server}{SEP}{tool}")
                if isinstance(stored, bytes):
                    pin = json.loads(stored)
        except RedisError:
            self._unsaved[(server, tool)] = pin
        self.pins.setdefault(server, {})[tool] = pin

    def approve(self, server: str, tool: str, defn: dict[str, Any], dig: str) -> None:
        """An admin approved the current definition: it replaces the pin of record (RedisError if down)."""
        pin = {"digest": dig, "definition": defn, "pinnedAt": time.time()}
        try:
            self._redis.hset(PINS, f"{server}{SEP}{tool}", json.dumps(pin))
            self._redis.publish(EVENTS, json.dumps({"t": "pins"}))  # every replica re-screens its listings
        except RedisError as exc:
            raise ClusterUnavailableError(
                f"cannot approve {server}/{tool} while Redis is unreachable ({exc}): every replica must "
                "see the approval; try again when Redis is back"
            ) from exc
        self.pins.setdefault(server, {})[tool] = pin

    def adopt(self, local: PinStore) -> None:
        """Pins made before cluster mode (the replica's pins file) join the cluster's, where new."""
        try:
            for server, tools in local.pins.items():
                for tool, pin in tools.items():
                    self._redis.hsetnx(PINS, f"{server}{SEP}{tool}", json.dumps(pin))
        except RedisError as exc:
            log.warning("tool pins: the local pins could not be added to the cluster's (%s)", exc)
        self.refresh()

    def save(self) -> None:
        """Nothing to write: every pin went to Redis as it was made."""
