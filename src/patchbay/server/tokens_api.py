"""REST for the hub's bearer tokens (admin only, see ``access/roles.py``): ``GET/POST /api/tokens``,
``DELETE /api/tokens/{name}``.

A created token is returned once and stored only as its SHA-256 (``tokenSha256`` in ``auth.tokens``,
saved atomically through the runtime change path); the gate's table follows the config at once, so a new
token works on the next request and a removed one stops working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Path, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from patchbay.access.tokens import DuplicateTokenError, TokenTable, UnknownTokenError, is_auto_name
from patchbay.identity import Role
from patchbay.server.api import ErrorBody, _errors, _HubErrorRoute, error_json

if TYPE_CHECKING:
    from patchbay.hub import Hub


class TokenInfo(BaseModel):
    """A token as the API shows it: who holds it, never the token."""

    name: str
    role: Role
    profile: str | None = None
    source: str = Field(
        description="`config` (removable here) or `command line` (`--token`, `PATCHBAY_TOKEN`)."
    )


class CreatedToken(TokenInfo):
    token: str = Field(description="The bearer token. Shown only in this answer: patchbay keeps its SHA-256.")


class AddTokenRequest(BaseModel):
    """A new token: a name (what the audit log and rate limits key on), a role and, optionally, a profile."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "ci", "role": "user", "profile": "coding"}]},
    )

    name: str = Field(description="1-64 letters, digits, `_`, `-` or `.`; unique among the tokens.")
    role: Role = Field(description="`admin`, `user` (MCP and tool calls) or `viewer` (read-only).")
    profile: str | None = Field(default=None, description="Bind the token to this profile (every surface).")


def build_tokens_api(hub: Hub, table: TokenTable) -> APIRouter:
    """Mount with ``app.include_router(build_tokens_api(hub, table), prefix="/api")``."""
    router = APIRouter(route_class=_HubErrorRoute)
    conflict: dict[int | str, dict[str, Any]] = {
        409: {"model": ErrorBody, "description": "A token of that name exists, or it cannot be removed."}
    }

    @router.get(
        "/tokens",
        tags=["tokens"],
        summary="List tokens",
        description="Every static bearer token the hub accepts: name, role, profile and where it was "
        "given. Never the token or its digest.",
    )
    async def list_tokens() -> list[TokenInfo]:
        return [TokenInfo(**e.to_json()) for e in table.entries]

    @router.post(
        "/tokens",
        tags=["tokens"],
        status_code=201,
        summary="Create a token",
        description="Generate a token, save its SHA-256 to the config's `auth.tokens`, and return the "
        "token once. It works at once (no restart).",
        response_model=CreatedToken,
        responses={**_errors(422), **conflict},
    )
    async def add_token(body: AddTokenRequest) -> Response:
        try:
            token = await hub.add_token(body.name, body.role, body.profile)
        except DuplicateTokenError as exc:
            return error_json(409, "duplicate_token", str(exc), field="name")
        entry = table.find(body.name)
        assert entry is not None  # the table follows hub.config, which now has it
        created = CreatedToken(**entry.to_json(), token=token)
        return JSONResponse(created.model_dump(mode="json"), status_code=201)

    @router.delete(
        "/tokens/{name}",
        tags=["tokens"],
        status_code=204,
        summary="Revoke a token",
        description="Remove a config token: it stops working at once. Tokens given on the command line "
        "cannot be removed here, nor the last admin token.",
        responses={**conflict, 404: {"model": ErrorBody, "description": "No token of that name."}},
    )
    async def remove_token(
        name: Annotated[str, Path(description="The token's name.")],
    ) -> Response:
        entry = table.find(name)
        if entry is not None and entry.source != "config":
            return error_json(
                409, "error", f"token {name!r} was given on the command line; restart the hub without it"
            )
        if entry is not None and is_auto_name(name):
            return error_json(
                409, "error", f"token {name!r} is a plain string in the config file; remove it there"
            )
        admins = [e for e in table.entries if e.identity.role == "admin"]
        if entry is not None and admins == [entry]:
            return error_json(
                409, "error", f"token {name!r} is the last admin token; add another admin token first"
            )
        try:
            await hub.remove_token(name)
        except UnknownTokenError as exc:
            return error_json(404, "unknown_token", str(exc))
        return Response(status_code=204)

    return router
