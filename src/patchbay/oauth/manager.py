"""Sign-in for every remote server of a hub: one ``OAuthClient`` per server, the pending authorizations.

The redirect comes back either to the hub's own route (``callback_url``, set by ``patchbay serve``) or,
for a bare ``Hub``, to a loopback listener this manager starts on demand and closes when nothing waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patchbay.config import ServerSpec
from patchbay.oauth.callback import LoopbackCallback
from patchbay.oauth.client import OAuthClient, PendingAuthorization
from patchbay.oauth.errors import NotOAuthServerError, OAuthError
from patchbay.oauth.settings import oauth_settings
from patchbay.oauth.store import TokenRecord, TokenStore

if TYPE_CHECKING:
    from patchbay.identity import Identity

log = logging.getLogger(__name__)


def wants_oauth(spec: ServerSpec, headers: Mapping[str, str]) -> bool:
    """A remote server gets OAuth unless the user set a static ``Authorization`` header (and no ``oauth``)."""
    from patchbay.oauth.settings import raw_oauth

    if spec.transport not in ("http", "sse"):
        return False
    if raw_oauth(spec) is not None:
        return True
    return not any(k.lower() == "authorization" for k in headers)


class OAuthManager:
    """Owns the clients, the pending sign-ins and the on-demand loopback listener."""

    def __init__(self, store: TokenStore | None = None, *, callback_url: str | None = None) -> None:
        self.store = store or TokenStore()
        self.callback_url = callback_url
        self.clients: dict[str, OAuthClient] = {}
        self.labels: dict[str, str] = {}  # a per-user client's store name → "server (for identity)"
        self._pending: dict[str, PendingAuthorization] = {}
        self.shared_pending: Any = None  # cluster mode: cluster/oauth_store.py's SharedPending
        self._loopback: LoopbackCallback | None = None
        self._closing: asyncio.Task[None] | None = None  # owned: awaited by close() and the next listener

    def client(self, name: str, url: str, spec: ServerSpec, base_dir: Path | None = None) -> OAuthClient:
        """The client for ``name`` (kept across restarts of the server while its settings stay the same)."""
        settings = oauth_settings(name, spec, base_dir)
        existing = self.clients.get(name)
        if (
            existing is not None
            and existing.server_url == url
            and existing.settings == (settings or existing.settings.__class__())
        ):
            return existing
        client = OAuthClient(name, url, settings, self.store)
        self.clients[name] = client
        return client

    def user_client(self, server: str, identity: Identity) -> OAuthClient:
        """``identity``'s own client for a per-user server: the server's settings, its own tokens.

        A client registration the server's shared sign-in already made (dynamic registration) is reused,
        so each person does not register patchbay again; the tokens are never shared.
        """
        from patchbay.oauth.per_user import store_name

        shared = self.get(server)
        name = store_name(server, identity)
        existing = self.clients.get(name)
        if (
            existing is not None
            and existing.server_url == shared.server_url
            and existing.settings == shared.settings
        ):
            return existing
        if not self.store.records(name):
            registered = self.store.get(server)
            if registered is not None and registered.client is not None:
                self.store.save(
                    name,
                    TokenRecord(
                        issuer=registered.issuer,
                        resource=registered.resource,
                        client=registered.client,
                        grant=registered.grant,
                    ),
                )
        client = OAuthClient(
            name, shared.server_url, shared.settings if shared.configured else None, self.store
        )
        self.clients[name] = client
        self.labels[name] = f"{server} (for {identity.name})"
        return client

    async def sign_in_user(self, server: str, identity: Identity, *, redirect_uri: str | None = None) -> str:
        """The authorization URL for ``identity``'s own sign-in (a pending one is reused while it lasts)."""
        client = self.user_client(server, identity)
        for pending in self._pending.values():
            if (
                pending.server == client.name
                and not pending.expired
                and (redirect_uri is None or pending.redirect_uri == redirect_uri)
            ):
                return pending.url
        return await self.sign_in(client.name, redirect_uri=redirect_uri)

    def get(self, name: str) -> OAuthClient:
        client = self.clients.get(name)
        if client is None:
            raise NotOAuthServerError(name)
        return client

    async def sign_in(self, name: str, *, redirect_uri: str | None = None) -> str:
        """The authorization URL to open; tokens arrive through ``complete``. '' for client credentials."""
        client = self.get(name)
        if client.grant == "client_credentials":
            await client.fetch_client_credentials()
            return ""
        if redirect_uri is None:
            redirect_uri = self.callback_url or (await self._listener()).redirect_uri
        pending = await client.begin(redirect_uri)
        pending.label = self.labels.get(name, "")
        self._pending = {s: p for s, p in self._pending.items() if not p.expired}
        self._pending[pending.state] = pending
        if self.shared_pending is not None:  # the redirect may come back to another replica
            await self.shared_pending.put(pending)
        return pending.url

    async def complete(self, params: Mapping[str, str]) -> str:
        """Handle a redirect: the server it was for, signed in; ``OAuthError`` if it is refused."""
        state = params.get("state") or ""
        pending = self._pending.pop(state, None)
        if self.shared_pending is not None:  # one use, on whichever replica the redirect reached
            shared = await self.shared_pending.take(state)
            pending = pending or shared
        if pending is None or pending.expired:
            raise OAuthError(
                "(unknown)",
                "the sign-in response matches no pending sign-in (unknown or expired state): refusing it",
            )
        try:
            await self._client_of(pending).complete(pending, params)
            return self.labels.get(pending.server, pending.server)
        finally:
            if not self._pending and self._loopback is not None and self._closing is None:
                # Not awaited here: this may run inside the listener's own request, which must finish first.
                self._closing = asyncio.create_task(
                    self._close_listener(), name="patchbay-oauth-listener-close"
                )

    def _client_of(self, pending: PendingAuthorization) -> OAuthClient:
        """The client a sign-in was for. In a cluster, a per-user sign-in begun on another replica may end
        here, where that person's client was never made: it is made as ``user_client`` would."""
        from patchbay.oauth.per_user import SEPARATOR

        client = self.clients.get(pending.server)
        server, per_user, _ = pending.server.partition(SEPARATOR)
        if client is not None or not per_user:
            return self.get(pending.server)
        shared = self.get(server)
        client = OAuthClient(
            pending.server, shared.server_url, shared.settings if shared.configured else None, self.store
        )
        self.clients[pending.server] = client
        if pending.label:
            self.labels[pending.server] = pending.label
        return client

    async def logout(self, name: str) -> bool:
        return await self.get(name).logout()

    async def forget(self, name: str) -> None:
        """The server was removed: revoke and delete its tokens."""
        client = self.clients.pop(name, None)
        if client is not None:
            await client.logout()
        else:
            self.store.delete(name)
        from patchbay.oauth.per_user import SEPARATOR

        users = {n for n in self.clients if n.startswith(f"{name}{SEPARATOR}")}
        users |= set(self.store.names(f"{name}{SEPARATOR}"))
        for user in sorted(users):  # every identity's own tokens go with the server
            self.labels.pop(user, None)
            held = self.clients.pop(user, None)
            if held is not None:
                await held.logout()
            else:
                self.store.delete(user)

    async def _listener(self) -> LoopbackCallback:
        if self._closing is not None:
            closing, self._closing = self._closing, None
            await closing
        if self._loopback is None:

            async def handle(params: dict[str, str]) -> str:
                server = await self.complete(params)
                return f"patchbay is signed in to {server!r}."

            self._loopback = await LoopbackCallback(handle).start()
        return self._loopback

    async def _close_listener(self) -> None:
        listener, self._loopback = self._loopback, None
        if listener is not None:
            await listener.close()

    async def close(self) -> None:
        self._pending.clear()
        if self._closing is not None:
            closing, self._closing = self._closing, None
            await closing
        await self._close_listener()
