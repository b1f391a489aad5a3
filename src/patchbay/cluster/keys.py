"""Every Redis key and channel patchbay uses, in one place (all under ``patchbay:``)."""

from __future__ import annotations

PREFIX = "patchbay:"
CONFIG_DOC = PREFIX + "config:doc"  # the config of record, as JSON text
CONFIG_VERSION = PREFIX + "config:version"  # bumped by every change (compare-and-set)
AGENT_SERIAL = PREFIX + "agent-serial"  # orders the connections of one agent across replicas
EVENTS = PREFIX + "events"  # pub/sub: config versions, agents arriving and leaving, replicas leaving

HEARTBEAT_EVERY = 1.0  # seconds between a replica's heartbeats (and its check of the others)
HEARTBEAT_TTL_MS = 5000  # a replica (and the agents it holds) is gone once its key is this old


def replica_key(replica: str) -> str:
    return f"{PREFIX}replica:{replica}"


def agent_key(name: str) -> str:
    return f"{PREFIX}agent:{name}"


def rpc_channel(replica: str) -> str:
    """Each replica's own channel: calls forwarded to it and the answers to the calls it forwarded."""
    return f"{PREFIX}rpc:{replica}"


AUDIT_STREAM = PREFIX + "audit"  # every replica's audit records (a capped stream, newest last)


def rate_key(identity: str, tool: str | None) -> str:
    """One token bucket: an identity's, or an identity's for one tool (names hashed: any text is safe)."""
    import hashlib

    who = hashlib.sha256(identity.encode()).hexdigest()[:32]
    if tool is None:
        return f"{PREFIX}rate:{who}"
    return f"{PREFIX}rate:{who}:{hashlib.sha256(tool.encode()).hexdigest()[:32]}"
