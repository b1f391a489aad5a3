"""Wiring the built-in authorization server into ``create_app``: one call, and what the Guard needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI

from patchbay.access.authorization_server.api import build_oauth_api
from patchbay.access.authorization_server.authenticator import GrantAuthenticator
from patchbay.access.authorization_server.provider import PatchbayProvider
from patchbay.access.authorization_server.routes import (
    OPEN_PATHS,
    OPEN_PREFIXES,
    build_routes,
    resource_metadata_url,
)
from patchbay.access.authorization_server.settings import server_settings
from patchbay.access.authorization_server.state import ServerState
from patchbay.access.tokens import TokenTable
from patchbay.hub import Hub
from patchbay.identity import Authenticator


@dataclass(frozen=True)
class GuardHooks:
    """What ``Guard`` gets from the authorization server: its paths served without a token, the
    authenticator for its access tokens, and the 401 challenge pointing clients at the metadata."""

    open_paths: frozenset[str] = frozenset()
    open_prefixes: tuple[str, ...] = ()
    authenticators: tuple[Authenticator, ...] = ()
    resource_metadata: str | None = None  # the RFC 9728 URL every 401 names
    provider: PatchbayProvider | None = field(default=None, compare=False)


def mount_authorization_server(app: FastAPI, hub: Hub, tokens: TokenTable) -> GuardHooks:
    """Serve ``auth.server`` when it is enabled (ConfigError for a bad config); else nothing."""
    from patchbay.errors import ConfigError

    settings = server_settings(hub.config)
    if settings is None:
        return GuardHooks()
    if not tokens.required:  # the hub's own tokens: who may approve on the consent page
        raise ConfigError(
            "auth.server needs an admin token (PATCHBAY_TOKEN, --token or auth.tokens): the operator "
            "signs in with it on the consent page",
            field="auth.server",
        )
    provider = PatchbayProvider(settings, _state(hub, settings.state_directory))
    app.router.routes.extend(
        build_routes(provider, tokens.identify, lambda: hub.config.profiles, hub.audit.record)
    )
    app.include_router(build_oauth_api(provider), prefix="/api")
    app.state.authorization_server = provider
    return GuardHooks(
        open_paths=OPEN_PATHS,
        open_prefixes=OPEN_PREFIXES,
        authenticators=(GrantAuthenticator(provider),),
        resource_metadata=resource_metadata_url(provider),
        provider=provider,
    )


def _state(hub: Hub, directory: Path) -> ServerState:
    """The state file; in cluster mode, Redis (one sign-in crosses several replicas behind the balancer)."""
    from patchbay.errors import ConfigError

    cluster = hub.cluster
    if cluster is None:
        return ServerState(directory)
    if cluster.secret_key is None:
        raise ConfigError(
            "auth.server in cluster mode needs PATCHBAY_SECRET_KEY, the same Fernet key on every replica: "
            "a sign-in crosses several replicas, and its clients, codes and grants are shared encrypted",
            field="auth.server",
        )
    from patchbay.cluster.authz_store import SharedServerState

    return SharedServerState(directory, url=cluster.url, key=cluster.secret_key, async_redis=cluster.redis)
