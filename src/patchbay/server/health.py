"""Liveness and readiness probes, served at the root without authentication (for orchestrators)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from patchbay.hub import Hub
from patchbay.supervisor import ServerState


class Liveness(BaseModel):
    status: str = Field(default="ok", description="Always `ok` while the process answers.")


class Readiness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"ready": False, "servers": {"github": "ready", "db": "backoff"}}]}
    )

    ready: bool = Field(description="Whether every enabled server is `ready`.")
    servers: dict[str, ServerState] = Field(
        description="The state of each enabled server (disabled ones are left out)."
    )
    cluster: dict[str, Any] | None = Field(
        default=None,
        description="Cluster mode only: this replica's id, whether Redis answered last, the config version "
        "it runs (`GET /api/cluster` has every replica). Redis being away does not make a replica unready: "
        "it keeps serving.",
    )


def build_health(hub: Hub) -> APIRouter:
    """``GET /healthz`` (always 200) and ``GET /readyz`` (200 if every enabled server is ready, else 503)."""
    router = APIRouter(tags=["health"])

    @router.get(
        "/healthz",
        summary="Liveness",
        description="200 whenever the process is up and serving; says nothing about the upstream servers.",
    )
    async def healthz() -> Liveness:
        return Liveness()

    @router.get(
        "/readyz",
        summary="Readiness",
        description="200 when every enabled server is `ready` (also when none is enabled), else 503; the "
        "body lists each enabled server's state either way.",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Some enabled server is not ready."}},
    )
    async def readyz() -> JSONResponse:
        servers = {name: s.state for name, s in hub.status().items() if s.enabled}
        body = Readiness(ready=all(state == ServerState.READY for state in servers.values()), servers=servers)
        if hub.cluster is not None:
            c = hub.cluster
            body.cluster = {"replica": c.id, "redis": c.redis_ok, "configVersion": c.version}
        content = body.model_dump(mode="json", exclude_none=True)
        return JSONResponse(content, status_code=200 if body.ready else 503)

    return router
