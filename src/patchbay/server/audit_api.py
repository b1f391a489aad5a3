"""The audit log over HTTP: ``GET /api/audit`` (admin only), and the middleware that attributes changes.

``AuditMiddleware`` sits inside the gate: for each request it makes the gate's identity the one
management changes are recorded under (``audit.ACTING``), and it records every mutating request to the
REST API (``event: api``: method, path, status, duration; never the body or the query string). Tool calls
through the REST API are recorded by the hub as ``tool_call`` instead.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from patchbay.audit import (
    ACTING,
    MAX_QUERY_LIMIT,
    AuditLog,
    AuditQuery,
    identity_fields,
    parse_time,
)
from patchbay.errors import ConfigError
from patchbay.hub import Hub
from patchbay.identity import identity_of
from patchbay.server.api import ErrorBody
from patchbay.server.security import route_path

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class AuditMiddleware:
    """ASGI middleware (inside the gate): sets ``ACTING`` per request, records mutating ``/api`` requests."""

    def __init__(self, app: ASGIApp, *, audit: AuditLog, prefix: str = "/api/") -> None:
        self.app = app
        self.audit = audit
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.audit.active:
            await self.app(scope, receive, send)
            return
        identity = identity_of(scope)
        token = ACTING.set(identity)
        path = route_path(scope)  # less a host app's mount prefix (embed.py)
        method: str = scope.get("method", "GET")
        record = method not in READ_METHODS and path.startswith(self.prefix) and not _is_call(path)
        status = 500
        started = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending if record else send)
        finally:
            ACTING.reset(token)
            if record:
                self.audit.record(
                    "api",
                    **identity_fields(identity),
                    method=method,
                    path=path,
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 3),
                )


def _is_call(path: str) -> bool:
    """``/api/tools/<name>/call``: audited by the hub as a tool call."""
    return path.startswith("/api/tools/") and path.endswith("/call")


def build_audit_api(hub: Hub) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/audit",
        tags=["audit"],
        summary="Read the audit log (admin)",
        description="The most recent records of the audit log (and its rotated files), oldest first: tool "
        "calls, resource reads, prompt gets, management changes, mutating API requests, sign-ins and "
        "refusals. Filters combine. Times are ISO 8601 (`2026-12-01T17:00:00Z`), epoch seconds, or an age "
        "(`15m`, `2h`, `1d`). Needs the admin role. Arguments appear only as `arguments_sha256` unless the "
        "config sets `audit.arguments`.",
        responses={
            403: {"model": ErrorBody, "description": "The caller is not an admin."},
            409: {"model": ErrorBody, "description": "The audit log is off (`audit: false`)."},
        },
    )
    async def read_audit(
        request: Request,
        since: Annotated[str | None, Query(description="Only records after this time (or age).")] = None,
        until: Annotated[str | None, Query(description="Only records up to this time (or age).")] = None,
        identity: Annotated[str | None, Query(description="Only this identity's records.")] = None,
        tool: Annotated[str | None, Query(description="Only calls of this tool (exposed name).")] = None,
        outcome: Annotated[
            str | None, Query(description="Only this outcome: ok, tool_error, timeout, rate_limited, ...")
        ] = None,
        event: Annotated[
            str | None,
            Query(
                description="Only this kind: tool_call, resource_read, prompt_get, change, api, refused, …"
            ),
        ] = None,
        limit: Annotated[
            int, Query(ge=1, le=MAX_QUERY_LIMIT, description="At most this many records.")
        ] = 100,
    ) -> Any:
        caller = identity_of(request.scope)
        if not caller.allows("admin"):
            detail = f"needs the admin role ({caller.name!r} is {caller.role})"
            hub.audit.record("refused", **identity_fields(caller), method="GET", path="/api/audit",
                             status=403, detail=detail)  # fmt: skip
            return JSONResponse(
                {"detail": f"reading the audit log needs the admin role ({caller.name!r} is {caller.role})",
                 "error": "forbidden"},
                status_code=403,
            )  # fmt: skip
        try:
            query = AuditQuery(
                since=parse_time(since, "since") if since is not None else None,
                until=parse_time(until, "until") if until is not None else None,
                identity=identity,
                tool=tool,
                outcome=outcome,
                event=event,
                limit=limit,
            )
        except ConfigError as exc:
            return JSONResponse(
                {"detail": f"query parameter {exc}", "error": "invalid_request", "field": exc.field},
                status_code=422,
            )
        audit = hub.audit
        if not audit.active:
            return JSONResponse(
                {"detail": "the audit log is off (the config sets audit: false, or the hub has no config "
                 "file and no audit.path)", "error": "audit_off"},
                status_code=409,
            )  # fmt: skip
        await audit.aflush()  # what happened up to now, including what is still queued
        records, scope = await asyncio.to_thread(audit.read, query)
        return JSONResponse(records, headers={"X-Patchbay-Audit-Scope": scope})

    return router
