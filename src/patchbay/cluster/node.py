"""One replica's membership of the cluster: ties the hub to Redis.

It keeps four things true, each by an immediate reaction (pub/sub, hub events) backed by a check every
``HEARTBEAT_EVERY`` seconds that repairs whatever a lost message or a Redis restart left behind:
- the hub runs the config of record (``configstore``); a change made here is written there first;
- the agents connected here are registered, with their listings, and renewed (``registry``);
- every other configured agent that is connected to a live replica is adopted here as a
  ``RemoteConnection`` (``forward``), and dropped, failing its waiting calls, when it or its replica goes;
- calls forwarded here are answered (``forward.Responder``).
When Redis is unreachable the replica keeps serving what it has and refuses config changes; when Redis
returns (even empty) the replica re-subscribes, re-registers and re-synchronises.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from patchbay.cluster.audit import SharedAudit
from patchbay.cluster.configstore import ConfigStore
from patchbay.cluster.forward import Forwarder, RemoteConnection, Responder
from patchbay.cluster.keys import EVENTS, HEARTBEAT_EVERY, HEARTBEAT_TTL_MS, rpc_channel
from patchbay.cluster.lease import LeasedServer, Leases, replicas_setting
from patchbay.cluster.publisher import Publisher
from patchbay.cluster.registry import Holder, Registry, listing_from_json, listing_to_json
from patchbay.config import HubConfig, ServerSpec, parse_config, redact_url
from patchbay.errors import ClusterUnavailableError, ConfigError
from patchbay.events import AgentEvent, CatalogEvent
from patchbay.supervisor import ServerState
from patchbay.upstream import Connection

if TYPE_CHECKING:
    from patchbay.dialin import DialInAgent
    from patchbay.hub import Hub

log = logging.getLogger(__name__)

REPLACED = "replaced by a newer connection of the same agent on another replica"
REDIS_TIMEOUT = 2.0  # seconds for any one Redis command: a change is refused quickly when Redis is gone


class _Held:
    """An agent connected here, as registered."""

    __slots__ = ("conn", "listing", "lv", "serial")

    def __init__(self, conn: Connection, serial: int) -> None:
        self.conn = conn
        self.serial = serial
        self.lv = 0
        self.listing: object = None  # the Listing object last published (a re-listing replaces it)


class Cluster:
    def __init__(self, url: str, hub: Hub, *, address: str) -> None:
        self.url = url
        self.where = redact_url(url)
        self.hub = hub
        self.address = address
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.started = time.time()
        self.redis = Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
        # The subscription waits for messages indefinitely: no read timeout (a Redis that stops closes the
        # socket; TCP keep-alive covers a link that dies silently).
        self._subscriber = Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=REDIS_TIMEOUT,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
        )
        self.store = ConfigStore(self.redis)
        self.registry = Registry(self.redis, self.id)
        # Forwarded calls, pipelined on a connection of their own; the answers to calls forwarded here on
        # another, which Redis does not reply on (publisher.py).
        connection = self._subscriber.connection_pool.make_connection
        self.publisher = Publisher(connection, REDIS_TIMEOUT)
        self.answers = Publisher(connection, REDIS_TIMEOUT, replies=False)
        self.forwarder = Forwarder(self.id, self.publisher.publish, lambda name: hub._clients.get(name, ()))
        self.leases = Leases(self.redis, self.id)
        self.responder = Responder(hub, self.id, self.answers.post, self.leases.fence)
        self.version = 0  # the config version this replica runs
        self.redis_ok = False
        self.redis_error: str | None = None
        self.config_error: str | None = None  # the config of record could not be applied here
        self._held: dict[str, _Held] = {}
        self._remote: dict[str, tuple[DialInAgent, RemoteConnection]] = {}
        self._missing: set[str] = set()  # adopted agents not found in Redis at the last check
        self._redis_back = 0.0  # when Redis last came back (monotonic): its keys are being re-registered
        self._sync_lock = asyncio.Lock()
        self._agents_lock = asyncio.Lock()
        self._config_dirty = asyncio.Event()
        self._agents_dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._chores: set[asyncio.Task[None]] = set()  # short jobs started by a message
        self._events = hub.events()
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._served: dict[str, object] = {}  # leased server -> the Listing last published
        self._served_lv: dict[str, int] = {}
        self.secret_key: bytes | None = None  # PATCHBAY_SECRET_KEY, once checked
        self.oauth_shared = self._share_oauth()

    def _share_oauth(self) -> bool:
        """Remote servers' OAuth tokens and pending sign-ins in Redis, if every replica has the key."""
        from cryptography.fernet import Fernet

        from patchbay.cluster.oauth_store import KEY_ENV, SharedPending, SharedTokenStore
        from patchbay.oauth.client import PENDING_TTL

        raw = os.environ.get(KEY_ENV, "").strip()
        if not raw:
            log.warning(
                "cluster: %s is not set, so OAuth sign-ins to remote servers stay on each replica; give "
                "every replica the same Fernet key to share them",
                KEY_ENV,
            )
            return False
        try:
            Fernet(raw.encode())
        except ValueError as exc:
            raise ConfigError(
                f"{KEY_ENV} is not a Fernet key (32 url-safe base64-encoded bytes; make one with "
                "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
            ) from exc
        self.secret_key = raw.encode()
        manager = self.hub.oauth
        manager.store = SharedTokenStore(self.url, raw.encode(), self.redis)
        manager.shared_pending = SharedPending(raw.encode(), self.redis, PENDING_TTL)
        return True

    # --- lifecycle -----------------------------------------------------------------------------------

    async def join(self) -> None:
        """Adopt (or seed) the config of record before the hub starts its servers, then keep in step."""
        try:
            await self._sync_config()
            self._up()
        except RedisError as exc:
            self._down(exc)
            log.warning("cluster: serving the local config until Redis is back")
        self.hub.adopt_limits()  # shared buckets (cluster/ratelimits.py), even while Redis is away
        self.hub.share_pins(self.url)  # one pin of record per tool, one approval for all (cluster/pins.py)
        self.hub.audit.share(SharedAudit(self.url, self.id))  # every replica's records in one stream
        for name, sup in list(self.hub._supervisors().items()):  # built before the hub joined
            try:
                leased = self.supervisor(name, sup.spec)
            except ConfigError as exc:
                log.error("cluster: %s; it runs on every replica", exc)
                continue
            if leased is not None and not isinstance(sup, LeasedServer):
                self.hub._sources.add(leased)  # in its place: same rank
        with contextlib.suppress(RedisError):
            await self._tick_leases()  # so the first holder starts its server with the hub
        log.info("cluster: replica %s joined %s (config version %d)", self.id, self.where, self.version)
        for job in (self._listen, self._tick, self._config_loop, self._agents_loop, self._watch_hub):
            task = asyncio.create_task(job(), name=f"patchbay-cluster-{job.__name__.strip('_')}")
            task.add_done_callback(self._finished)
            self._tasks.append(task)

    # --- "replicas": "one" (lease.py) -----------------------------------------------------------------

    def supervisor(self, name: str, spec: ServerSpec) -> LeasedServer | None:
        """The source for a ``"replicas": "one"`` server (the hub asks for every new supervisor)."""
        if replicas_setting(name, spec) != "one":
            return None
        hub = self.hub
        return LeasedServer(
            name, spec, hooks=hub._hooks, base_dir=hub.config.base_dir, oauth=lambda: hub.oauth,
            leases=self.leases,
        )  # fmt: skip

    async def _tick_leases(self) -> None:
        servers = self.hub._supervisors()
        for name in [n for n in self.leases.held if not isinstance(servers.get(n), LeasedServer)]:
            await self.leases.release(name)  # removed, or no longer "replicas": "one"
        for name, sup in list(servers.items()):
            if not isinstance(sup, LeasedServer):
                continue
            if not sup.spec.is_enabled:
                await self.leases.release(name)
                continue
            if name in self.leases.held:
                if await self.leases.renew(name):
                    await self._publish_served(name, sup)
                    continue
                log.warning("cluster: server %r: this replica lost its lease; stopping it here", name)
                await self._hand_over(sup)
                continue
            holder = await self.leases.holder(name)
            if holder is None:
                if await self.leases.try_acquire(name):
                    log.info("cluster: server %r: this replica holds its lease; starting it here", name)
                    sup.remote = None
                    await self._hand_over(sup)
                continue
            got = await self.leases.served(name)
            remote = sup.remote
            if got is None:  # the holder has not published it (yet), or lost its lease
                if remote is not None and (remote.holder, remote.serial) != holder:
                    self._unserve(sup, f"moved from replica {remote.holder}")
                continue
            served, record = got
            if remote is not None and (remote.holder, remote.serial) == (served.replica, served.serial):
                if remote.lv != served.lv:
                    remote.lv = served.lv
                    remote.listing = listing_from_json(record.get("listing") or {}, name)
                    if sup.connection is cast(Any, remote):
                        sup.hooks.listing_changed(sup, remote.listing)
                continue
            if remote is not None:
                self._unserve(sup, f"moved from replica {remote.holder}")
            listing = listing_from_json(record.get("listing") or {}, name)
            sup.remote = RemoteConnection(
                name, served.replica, served.serial, served.lv, record, listing, self.forwarder, fenced=True
            )
            sup.hand_over()
            if sup.state in (ServerState.STOPPED, ServerState.FAILED) and self.hub._started:
                sup.start()

    async def _hand_over(self, sup: LeasedServer) -> None:
        await sup.stop()
        if self.hub._started:
            sup.start()

    def _unserve(self, sup: LeasedServer, why: str) -> None:
        sup.remote = None
        self.forwarder.fail(f"server {sup.name!r} {why}; the call did not complete", agent=sup.name)
        sup.hand_over()

    async def _publish_served(self, name: str, sup: LeasedServer) -> None:
        conn = sup.connection
        if not isinstance(conn, Connection):
            return
        if self._served.get(name) is conn.listing:
            await self.leases.keep(name)
            return
        info = conn.server_info
        lv = self._served_lv.get(name, 0) + 1
        self._served_lv[name] = lv
        record = {
            "address": self.address,
            "since": sup.ready_since,
            "protocolVersion": conn.protocol_version,
            "serverInfo": info.model_dump(mode="json", exclude_none=True) if info is not None else None,
            "capabilities": conn.capabilities,
            "listing": listing_to_json(conn.listing),
        }
        await self.leases.publish(name, lv, record)
        self._served[name] = conn.listing

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Run ``closer`` when the replica leaves (before the Redis connections close)."""
        self._closers.append(closer)

    async def close(self) -> None:
        for closer in self._closers:
            await closer()
        for task in [*self._tasks, *self._chores]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._chores, return_exceptions=True)
        self._events.close()
        await self.responder.close()
        await self.forwarder.close()
        await self.publisher.close()
        await self.answers.close()
        for name in list(self.leases.held):  # stopped here first, then released: another replica takes over
            sup = self.hub._supervisors().get(name)
            if sup is not None:
                await sup.stop()
        with contextlib.suppress(RedisError):
            for name in list(self.leases.held):
                await self.leases.release(name)
            for name, held in list(self._held.items()):
                await self.registry.withdraw(name, held.serial)
            await self.registry.leave()
        await self.redis.aclose()
        await self._subscriber.aclose()

    def _chore(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._chores.add(task)
        task.add_done_callback(self._chore_done)

    def _chore_done(self, task: asyncio.Task[None]) -> None:
        self._chores.discard(task)
        self._finished(task)

    def _finished(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("cluster job %s failed", task.get_name(), exc_info=task.exception())

    def _up(self) -> None:
        if not self.redis_ok:
            if self.redis_error is not None:
                log.warning("cluster: Redis at %s is back", self.where)
            self.redis_ok, self.redis_error = True, None
            self._redis_back = time.monotonic()

    def _down(self, exc: BaseException) -> None:
        if self.redis_ok or self.redis_error is None:
            log.warning("cluster: Redis at %s is unreachable: %s", self.where, exc)
        self.redis_ok, self.redis_error = False, f"{type(exc).__name__}: {exc}"

    # --- the config of record ------------------------------------------------------------------------

    async def save_config(self, candidate: HubConfig) -> None:
        """Write a validated change (called by ``RuntimeChanges`` under its lock, instead of the file)."""
        for name, spec in candidate.servers.items():  # before anything is written
            replicas_setting(name, spec)
        try:
            document = candidate.to_document()
            self.version = await self.store.save(document, self.version)
        except ValueError as exc:
            raise ConfigError(f"not saved: {exc} (JSON has no NaN or Infinity)") from None
        except RedisError as exc:
            self._down(exc)
            raise ClusterUnavailableError(
                f"Redis at {self.where}, which holds the cluster's config, is unreachable ({exc}); the "
                "change was not made. Replicas keep serving the current config; try again once Redis is back"
            ) from None
        except ConfigError:
            raise
        except Exception:
            self._config_dirty.set()
            raise

    async def _sync_config(self) -> None:
        """Run the config of record: apply Redis' version, or seed an empty store with ours."""
        async with self._sync_lock:
            for _ in range(10):
                got = await self.store.read()
                if got is None:
                    if await self.store.seed(self.hub.config.to_document(), self.version + 1):
                        self.version += 1
                        log.info("cluster: seeded the config of record from this replica (version %d)",
                                 self.version)  # fmt: skip
                        return
                    continue
                version, text = got
                if version == self.version:
                    return
                try:
                    source = f"the cluster's config (version {version})"
                    new = parse_config(text, source, self.hub.config.path)
                    changes = await self.hub._runtime.apply_config(new)
                    self.hub.adopt_limits()  # the cluster's rateLimits, with buckets in Redis
                except ConfigError as exc:
                    self.config_error = str(exc)
                    self.version = version
                    log.error("cluster: cannot run config version %d here: %s", version, exc)
                    return
                self.config_error = None
                self.version = version
                log.info("cluster: now on config version %d %s", version, changes)

    async def _config_loop(self) -> None:
        while True:
            await self._config_dirty.wait()
            self._config_dirty.clear()
            try:
                await self._sync_config()
            except RedisError as exc:
                self._down(exc)
            except Exception:  # a bug must not end the replica's membership: the next change retries
                log.exception("cluster: synchronising the config failed")

    # --- agents --------------------------------------------------------------------------------------

    def _local(self, agent: DialInAgent) -> Connection | None:
        conn = agent.connection
        return conn if isinstance(conn, Connection) else None

    async def _sync_agents(self) -> None:
        """Register the agents connected here, adopt those connected elsewhere, drop the ones gone."""
        async with self._agents_lock:
            agents = self.hub._dialins()
            for name in list(self._held):
                agent = agents.get(name)
                if agent is None or self._local(agent) is not self._held[name].conn:
                    held = self._held.pop(name)
                    await self.registry.withdraw(name, held.serial)
            for name, agent in agents.items():
                conn = self._local(agent)
                if conn is None:
                    continue
                stale = self._remote.pop(name, None)  # it was elsewhere before it connected here
                if stale is not None:
                    self._missing.discard(name)
                    moved = f"agent {name!r} moved here from replica {stale[1].holder}"
                    self.forwarder.fail(f"{moved}; the call did not complete", agent=name)
                known = self._held.get(name)
                if known is None:
                    known = self._held[name] = _Held(conn, await self.registry.next_serial())
                held = known
                if held.listing is not conn.listing:
                    await self._publish_agent(name, agent, held)
            for name in [n for n in self._remote if n not in agents]:  # removed from the config
                self._remote.pop(name)
                self._missing.discard(name)
            await self._adopt_remotes(agents)

    async def _publish_agent(self, name: str, agent: DialInAgent, held: _Held) -> None:
        conn = held.conn
        info = conn.server_info
        held.lv += 1
        record = {
            "address": self.address,
            "since": agent.connected_since,
            "protocolVersion": conn.protocol_version,
            "serverInfo": info.model_dump(mode="json", exclude_none=True) if info is not None else None,
            "capabilities": conn.capabilities,
            "listing": listing_to_json(conn.listing),
        }
        listing = conn.listing
        if await self.registry.register(name, held.serial, held.lv, record):
            held.listing = listing
        else:  # a newer connection of this agent is on another replica: that one wins
            await agent.disconnect(REPLACED, replaced=True)

    async def _adopt_remotes(self, agents: dict[str, DialInAgent]) -> None:
        names = [n for n, a in agents.items() if self._local(a) is None]
        holders = await self.registry.holders(names)
        for name in names:
            agent = agents[name]
            holder = holders.get(name)
            current = self._remote.get(name)
            if current is not None and current[0] is not agent:  # the agent was replaced by a reload
                self._remote.pop(name)
                current = None
            if holder is None or holder.replica == self.id:
                # Gone from Redis: dropped when seen twice in a row (one check may fall between a Redis
                # restart and the holder's next heartbeat); an explicit goodbye drops it at once.
                # A Redis that came back empty holds no holder until the holder's next heartbeat reaches it,
                # which may take a Redis timeout and a heartbeat: no drop within a heartbeat TTL of that.
                settled = time.monotonic() - self._redis_back > HEARTBEAT_TTL_MS / 1000
                if current is not None:
                    if name in self._missing and settled:
                        self._drop(name, f"was on replica {current[1].holder}, whose heartbeat stopped")
                    else:
                        self._missing.add(name)
                continue
            self._missing.discard(name)
            conn = current[1] if current is not None else None
            if conn is not None and conn.holder == holder.replica and conn.serial == holder.serial:
                if conn.lv != holder.lv:
                    await self._refresh_listing(name, agent, conn)
                continue
            await self._adopt(name, agent, holder)

    async def _adopt(self, name: str, agent: DialInAgent, holder: Holder) -> None:
        got = await self.registry.record(name)
        if got is None:
            return
        holder, record = got
        old = self._remote.pop(name, None)
        if old is not None and old[1].holder != holder.replica:
            self.forwarder.fail(
                f"agent {name!r} moved to replica {holder.replica}; the call did not complete", agent=name
            )
        listing = listing_from_json(record.get("listing") or {}, name)
        conn = RemoteConnection(
            name, holder.replica, holder.serial, holder.lv, record, listing, self.forwarder
        )
        self._remote[name] = (agent, conn)
        agent.adopt(conn, f"replica {holder.replica} ({conn.address})", conn.since)
        log.info("cluster: agent %r is on replica %s, %d tools", name, holder.replica, len(listing.tools))

    async def _refresh_listing(self, name: str, agent: DialInAgent, conn: RemoteConnection) -> None:
        got = await self.registry.record(name)
        if got is None or got[0].serial != conn.serial:
            return
        conn.lv = got[0].lv
        conn.listing = listing_from_json(got[1].get("listing") or {}, name)
        if agent.connection is cast(Any, conn):
            agent.hooks.listing_changed(agent, conn.listing)

    def _drop(self, name: str, reason: str) -> None:
        """Forget an adopted agent; ``reason`` follows its name ("left replica R")."""
        self._missing.discard(name)
        entry = self._remote.pop(name, None)
        if entry is None:
            return
        agent, conn = entry
        self.forwarder.fail(f"agent {name!r} {reason}; the call did not complete", agent=name)
        agent.release(conn, reason)

    def _replica_gone(self, replica: str) -> None:
        self.forwarder.fail(f"replica {replica} has stopped; the call did not complete", holder=replica)
        for name, (_, conn) in list(self._remote.items()):
            if conn.holder == replica:
                self._drop(name, f"was on replica {replica}, which has stopped")

    async def _agents_loop(self) -> None:
        while True:
            await self._agents_dirty.wait()
            self._agents_dirty.clear()
            try:
                await self._sync_agents()
            except RedisError as exc:
                self._down(exc)
            except Exception:
                log.exception("cluster: synchronising the agents failed")

    async def _watch_hub(self) -> None:
        """Agents arriving, leaving or re-listing here: publish at once (the tick would within a second)."""
        agents = self.hub._dialins
        async for event in self._events:
            catalog = isinstance(event, CatalogEvent) and event.server in agents()
            if catalog or isinstance(event, AgentEvent):
                self._agents_dirty.set()

    # --- pub/sub and the heartbeat -------------------------------------------------------------------

    async def _listen(self) -> None:
        pause = 0.1
        while True:
            pubsub: PubSub = self._subscriber.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(EVENTS, rpc_channel(self.id))
                self._config_dirty.set()  # whatever was missed while not subscribed
                self._agents_dirty.set()
                pause = 0.1
                conn = pubsub.connection
                assert conn is not None  # subscribe() connected it
                while True:  # the hot path of forwarded calls: the connection's replies as they come
                    reply = await conn.read_response()  # no timer per read; PubSub.listen's wrappers cost
                    if not (isinstance(reply, list) and len(reply) == 3 and reply[0] == "message"):
                        continue  # the subscriptions' confirmations
                    try:
                        self._dispatch(reply[1], reply[2])
                    except Exception:  # one bad message must not end the subscription
                        log.exception("cluster: handling a message on %s failed", reply[1])
            except RedisError as exc:
                self._down(exc)
                # answers to the calls forwarded from here come on this subscription: they are lost
                self.forwarder.fail(f"the link to Redis, which carries the answer, was lost ({exc})")
            finally:
                with contextlib.suppress(RedisError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)

    def _dispatch(self, channel: str, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("cluster: dropped an unreadable message on %s", channel)
            return
        kind = message.get("t") if isinstance(message, dict) else None
        if channel != EVENTS:
            if kind in ("call", "cancel", "told"):
                self.responder.handle(message)
            else:
                self.forwarder.answer(message)
        elif kind == "config":
            if message.get("v") != self.version:
                self._config_dirty.set()
        elif kind == "agent":
            name = message.get("name")
            agent = self.hub._dialins().get(name) if isinstance(name, str) else None
            if agent is not None and message.get("replica") != self.id:
                held = self._held.get(str(name))
                if held is not None and int(message.get("serial") or 0) > held.serial:
                    self._chore(agent.disconnect(REPLACED, replaced=True))
            self._agents_dirty.set()
        elif kind == "agent_gone":
            name = str(message.get("name"))
            entry = self._remote.get(name)
            if entry is not None and entry[1].holder == message.get("replica"):
                self._drop(name, f"disconnected from replica {entry[1].holder}")
            self._agents_dirty.set()
        elif kind == "pins":  # a tool was approved somewhere: re-screen what this replica lists
            self.hub.rescreen()
        elif kind == "replica_gone":
            replica = str(message.get("replica"))
            if replica != self.id:
                self._replica_gone(replica)

    async def _tick(self) -> None:
        while True:
            try:
                serials = {n: h.serial for n, h in self._held.items()}
                renewed = await self.registry.heartbeat(self._info(), serials)
                was_down = not self.redis_ok
                self._up()
                for name, state in renewed.items():
                    held = self._held.get(name)
                    if held is None:
                        continue
                    if state == 0:  # Redis lost it (restarted): register again
                        held.listing = None
                    elif state == -1:
                        agent = self.hub._dialins().get(name)
                        if agent is not None:
                            await agent.disconnect(REPLACED, replaced=True)
                await self._sync_agents()
                await self._tick_leases()
                if was_down or await self.store.version() != self.version:
                    await self._sync_config()
            except RedisError as exc:
                self._down(exc)
            except Exception:  # the heartbeat goes on whatever failed: stopping it would look like death
                log.exception("cluster: the periodic check failed")
            await asyncio.sleep(HEARTBEAT_EVERY)

    def _info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "address": self.address,
            "started": self.started,
            "configVersion": self.version,
            "configError": self.config_error,
            "agents": sorted(self._held),
        }

    # --- status --------------------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """This replica, Redis, and every live replica with the agents it holds."""
        replicas: list[dict[str, Any]] = []
        try:
            replicas = await self.registry.replicas()
            self._up()
        except RedisError as exc:
            self._down(exc)
        return {
            "replica": self.id,
            "address": self.address,
            "redis": {"url": self.where, "ok": self.redis_ok, "error": self.redis_error},
            "configVersion": self.version,
            "configError": self.config_error,
            "agents": {
                **{n: c.holder for n, (_, c) in self._remote.items()},
                **{n: self.id for n in self._held},
            },
            "servers": {  # "replicas": "one" servers: the replica that runs each (None: nobody yet)
                n: (self.id if n in self.leases.held else (s.remote.holder if s.remote is not None else None))
                for n, s in self.hub._supervisors().items()
                if isinstance(s, LeasedServer)
            },
            "forwardedInFlight": self.forwarder.in_flight,
            "oauthShared": self.oauth_shared,  # remote servers' sign-ins in Redis (PATCHBAY_SECRET_KEY set)
            "replicas": [
                {
                    "id": r.get("id"),
                    "address": r.get("address"),
                    "started": r.get("started"),
                    "lastSeen": r.get("seen"),
                    "configVersion": r.get("configVersion"),
                    "configError": r.get("configError"),
                    "agents": r.get("agents") or [],
                    "healthy": r.get("configVersion") == self.version and not r.get("configError"),
                }
                for r in replicas
            ],
        }
