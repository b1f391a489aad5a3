"""REST for profiles: ``GET /api/profiles`` (a router of its own, mounted beside ``api.py``'s).

The tools of one profile are ``GET /api/tools?profile=``; its MCP endpoint is ``/mcp/<profile>``.
``PUT`` and ``DELETE /api/profiles/{name}`` change them at runtime, saved to the config file atomically.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Path, Request, Response

from patchbay.errors import UnknownProfileError
from patchbay.identity import identity_of
from patchbay.server.api import _errors, _HubErrorRoute

if TYPE_CHECKING:
    from patchbay.hub import Hub


def build_profiles_api(hub: Hub) -> APIRouter:
    """Mount with ``app.include_router(build_profiles_api(hub), prefix="/api")``."""
    router = APIRouter(route_class=_HubErrorRoute)

    @router.get(
        "/profiles",
        tags=["profiles"],
        summary="List profiles",
        description="Every configured profile: its `servers` and `tools` patterns, how many tools it has "
        "now, and the servers it names that are not configured. Each is served at `/mcp/<name>`.",
    )
    async def list_profiles(request: Request) -> list[dict[str, Any]]:
        await hub.wait_started()
        bound = identity_of(request.scope).profile  # a profile-bound token sees its own profile only
        return [info.to_json() for n, info in hub.profiles().items() if bound in (None, n)]

    @router.get(
        "/profiles/{name}",
        tags=["profiles"],
        summary="One profile",
        description="One profile, as in the list, with its tools' exposed names.",
        responses=_errors(404),
    )
    async def get_profile(
        request: Request, name: Annotated[str, Path(description="The profile's name.")]
    ) -> dict[str, Any]:
        await hub.wait_started()
        bound = identity_of(request.scope).profile
        if bound is not None and name != bound:
            raise UnknownProfileError(name, [bound])
        view = hub.profile(name)  # UnknownProfileError: 404 naming the known ones
        info = hub.profiles()[name].to_json()
        info["tool_names"] = [n for n in hub.catalog.tools if n in view.names(hub.catalog)]
        return info

    @router.put(
        "/profiles/{name}",
        tags=["profiles"],
        summary="Add or replace a profile",
        description="Body: the profile as in the config (`servers`, `tools`). Saved to the config file "
        "first; `/mcp/<name>` serves it at once.",
        responses=_errors(422),
    )
    async def put_profile(
        name: Annotated[str, Path(description="The profile's name (`[A-Za-z0-9_-]+`).")],
        body: Annotated[dict[str, Any], Body()],
    ) -> dict[str, Any]:
        return (await hub.set_profile(name, body)).to_json()

    @router.delete(
        "/profiles/{name}",
        tags=["profiles"],
        summary="Remove a profile",
        status_code=204,
        responses=_errors(404),
    )
    async def delete_profile(name: Annotated[str, Path(description="The profile's name.")]) -> Response:
        await hub.remove_profile(name)
        return Response(status_code=204)

    return router
