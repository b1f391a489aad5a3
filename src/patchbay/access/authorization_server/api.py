"""``/api/oauth/clients`` and ``/api/oauth/grants``: what the built-in authorization server knows, and
revoking it (admin only). Never a token, a digest or a client secret."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from patchbay.access.authorization_server.provider import PatchbayProvider
from patchbay.access.authorization_server.state import ClientRecord, GrantRecord
from patchbay.identity import Role, identity_of
from patchbay.server.api import ErrorBody, error_json


class ClientView(BaseModel):
    client_id: str
    client_name: str | None
    kind: Literal["registered", "metadata_document"]
    redirect_uris: list[str]
    registered_at: float
    grants: int


class GrantView(BaseModel):
    id: str
    client_id: str
    client_name: str | None
    role: Role
    profile: str | None
    scopes: list[str]
    resource: str
    approved_by: str
    created_at: float
    last_used_at: float | None
    refresh_expires_at: float | None
    live_access_tokens: int


_ERRORS: dict[int | str, dict[str, object]] = {403: {"model": ErrorBody}, 404: {"model": ErrorBody}}


def build_oauth_api(provider: PatchbayProvider) -> APIRouter:
    router = APIRouter(tags=["oauth"], responses=_ERRORS)
    state = provider.state

    def refused(request: Request) -> JSONResponse | None:
        if identity_of(request.scope).allows("admin"):
            return None
        return error_json(
            403, "forbidden", "the built-in authorization server's clients and grants need the admin role"
        )

    def client_view(record: ClientRecord) -> ClientView:
        info = record.info
        return ClientView(
            client_id=info.client_id,
            client_name=info.client_name,
            kind=record.kind,
            redirect_uris=[str(u) for u in info.redirect_uris or []],
            registered_at=record.registered_at,
            grants=sum(1 for g in state.grants.values() if g.client_id == info.client_id),
        )

    def grant_view(grant: GrantRecord) -> GrantView:
        client = state.clients.get(grant.client_id)
        now = provider.clock()
        return GrantView(
            id=grant.id,
            client_id=grant.client_id,
            client_name=client.info.client_name if client else None,
            role=grant.role,
            profile=grant.profile,
            scopes=grant.scopes,
            resource=grant.resource,
            approved_by=grant.approved_by,
            created_at=grant.created_at,
            last_used_at=grant.last_used_at,
            refresh_expires_at=grant.refresh_expires_at,
            live_access_tokens=sum(1 for exp in grant.access.values() if exp > now),
        )

    @router.get(
        "/oauth/clients", response_model=list[ClientView], summary="OAuth clients of the built-in server"
    )
    async def list_clients(request: Request) -> list[ClientView] | JSONResponse:
        if (denied := refused(request)) is not None:
            return denied
        await state.refresh()  # a cluster: what other replicas registered
        return [client_view(r) for r in state.clients.values()]

    @router.delete(
        "/oauth/clients/{client_id:path}",
        status_code=204,
        response_class=Response,
        summary="Forget a client, end its grants",
    )
    async def delete_client(client_id: str, request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        if state.remove_client(client_id) is None:
            return error_json(404, "not_found", f"no OAuth client {client_id!r}; see GET /api/oauth/clients")
        return Response(status_code=204)

    @router.get(
        "/oauth/grants", response_model=list[GrantView], summary="Grants approved on the consent page"
    )
    async def list_grants(request: Request) -> list[GrantView] | JSONResponse:
        if (denied := refused(request)) is not None:
            return denied
        await state.refresh()  # a cluster: what other replicas approved
        return [grant_view(g) for g in state.grants.values()]

    @router.delete(
        "/oauth/grants/{grant_id}",
        status_code=204,
        response_class=Response,
        summary="Revoke a grant and its tokens",
    )
    async def delete_grant(grant_id: str, request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        if state.remove_grant(grant_id) is None:
            return error_json(404, "not_found", f"no grant {grant_id!r}; see GET /api/oauth/grants")
        return Response(status_code=204)

    return router
