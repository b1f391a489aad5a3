"""``GET /api/cluster``: the replicas of a cluster (``patchbay serve --cluster``), their agents and health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from patchbay.hub import Hub


def build_cluster_api(hub: Hub) -> APIRouter:
    router = APIRouter(tags=["cluster"])

    @router.get(
        "/cluster",
        summary="The cluster this replica belongs to",
        description="Admins only (it names every agent and replica). Outside cluster mode: "
        '`{"enabled": false}`. In cluster mode: this replica\'s id, '
        "whether Redis answers, the config version it runs, where each agent is connected, which replica "
        'runs each `"replicas": "one"` server, and every live '
        "replica (address, start time, last heartbeat, config version, the agents it holds, `healthy` when "
        "it runs the same config version as this one).",
    )
    async def cluster() -> dict[str, Any]:
        if hub.cluster is None:
            return {"enabled": False}
        return {"enabled": True, **await hub.cluster.status()}

    return router
