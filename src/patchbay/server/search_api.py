"""REST for tool search and tool-definition pinning: a router of its own, mounted beside ``api.py``'s.

- ``GET /api/tools/search?q=&limit=&profile=``: the best-matching tools for a request (see
  ``patchbay.search``);
- ``GET /api/tools/changes``: tools whose definition differs from its pin, with the diff;
- ``POST /api/tools/{name}/approve``: pin a changed tool's current definition (in ``block`` mode it rejoins
  listings and calls).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from patchbay.identity import identity_of
from patchbay.search import DEFAULT_LIMIT, MAX_LIMIT
from patchbay.server.api import _errors, _HubErrorRoute

if TYPE_CHECKING:
    from patchbay.hub import Hub


def build_search_api(hub: Hub) -> APIRouter:
    """Mount with ``app.include_router(build_search_api(hub), prefix="/api")`` before ``build_api``'s."""
    router = APIRouter(route_class=_HubErrorRoute)

    @router.get(
        "/tools/search",
        tags=["tools"],
        summary="Search tools",
        description="The tools that best match a request in the user's own words, best first, each with "
        "its exposed name, score, server, description and input schema. Ranking is lexical (BM25F with "
        'light stemming and common synonyms), offline; with `"search": "hybrid"` fused with a sentence '
        "encoder's (see `GET /api/tools/search/status`).",
    )
    async def search_tools(
        q: Annotated[str, Query(min_length=1, description="What the tool should do, in plain words.")],
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="How many matches.")] = DEFAULT_LIMIT,
        profile: Annotated[str | None, Query(description="Only among this profile's tools.")] = None,
    ) -> JSONResponse:
        await hub.wait_started()
        try:
            matches = await hub.asearch_tools(q, limit, profile=profile)
        except ValueError as exc:
            return JSONResponse({"detail": str(exc), "error": "invalid"}, status_code=422)
        return JSONResponse([m.to_json() for m in matches])

    @router.get(
        "/tools/search/status",
        tags=["tools"],
        summary="Search mode",
        description="`lexical`, or `hybrid` with whether every tool is embedded yet (`ready`), how many "
        "are still waiting (`pending`; ranked lexically meanwhile) and why the model could not be "
        "loaded (`error`), if so.",
    )
    async def search_status() -> dict[str, Any]:
        return hub.search_status()

    @router.get(
        "/tools/changes",
        tags=["tools"],
        summary="Changed tools awaiting approval",
        description="Tools whose definition (description, schemas, annotations) differs from the one "
        "pinned when patchbay first saw them, with a unified diff. In `block` mode they are withheld.",
    )
    async def tool_changes(
        request: Request,
        server: Annotated[str | None, Query(description="Only this server's tools.")] = None,
    ) -> dict[str, Any]:
        changes = hub.tool_changes(server)
        bound = identity_of(request.scope).profile
        if bound is not None:  # a profile-bound token sees its profile's tools only
            view = hub.profile(bound)
            changes = [c for c in changes if view.admits(c.server, c.name)]
        return {"pinning": hub.pinning, "changes": [c.to_json() for c in changes]}

    @router.post(
        "/tools/{name:path}/approve",
        tags=["tools"],
        summary="Approve a changed tool",
        description="Pin the tool's current definition. In `block` mode the tool is listed and callable "
        "again at once (clients are told the list changed).",
        responses=_errors(404),
    )
    async def approve_tool(
        name: Annotated[str, Path(description="The exposed tool name (or `server/tool`).")],
    ) -> dict[str, Any]:
        return hub.approve_tool(name).to_json()

    return router
