"""The consent page: the operator signs in with an admin token and approves a client for a role (and
optionally a profile), or denies it.

CSRF: the form carries a per-request secret that must also come back in a ``SameSite=Strict`` cookie set
with the page, so a form posted from another site (which can know neither) is refused. The page cannot
be framed (clickjacking). A wrong token is answered on the page; five wrong tokens end the request.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterable
from html import escape
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from patchbay.access.authorization_server.provider import PatchbayProvider
from patchbay.access.authorization_server.state import Pending
from patchbay.identity import ROLES, Identity, Role

log = logging.getLogger(__name__)

CONSENT_PATH = "/authorize/consent"
COOKIE = "patchbay_consent"
MAX_FAILURES = 5
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; "
    "base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_STYLE = (
    "body{font:15px/1.5 system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#1b1f24}"
    "h1{font-size:1.3rem}dl{display:grid;grid-template-columns:auto 1fr;gap:.3rem 1rem}dt{color:#57606a}"
    "dd{margin:0;word-break:break-all}label{display:block;margin:.8rem 0 .2rem}input,select{width:100%;"
    "padding:.4rem;font:inherit;box-sizing:border-box}.buttons{display:flex;gap:.8rem;margin-top:1.2rem}"
    "button{padding:.5rem 1.2rem;font:inherit;cursor:pointer}.error{color:#b42318;font-weight:600}"
)


def _no_record(event: str, **fields: object) -> None:
    return None


class ConsentPage:
    """GET shows the request; POST approves or denies it. ``admin`` maps a presented token to its
    identity (the hub's static tokens); ``profiles`` lists the profiles a grant may be bound to."""

    def __init__(
        self,
        provider: PatchbayProvider,
        admin: Callable[[str], Identity | None],
        profiles: Callable[[], Iterable[str]],
        record: Callable[..., None] | None = None,
    ) -> None:
        self._provider = provider
        self._admin = admin
        self._profiles = profiles
        self._record = record or _no_record  # the audit trail's consent records

    async def show(self, request: Request) -> Response:
        pending = self._provider.take_pending(request.query_params.get("request", ""))
        if pending is None:
            return _message(
                400, "This sign-in request is unknown or has expired. Start again from the client."
            )
        return self._form(pending)

    async def submit(self, request: Request) -> Response:
        form = await request.form()

        def text(key: str) -> str:
            value = form.get(key)
            return value if isinstance(value, str) else ""

        pending = self._provider.take_pending(text("request"))
        if pending is None:
            return _message(
                400, "This sign-in request is unknown or has expired. Start again from the client."
            )
        cookie = request.cookies.get(COOKIE, "")
        if not (
            hmac.compare_digest(text("csrf").encode(), pending.csrf.encode())
            and hmac.compare_digest(cookie.encode(), pending.csrf.encode())
        ):
            log.warning("consent for client %s refused: CSRF check failed", pending.client.client_id)
            return _message(
                403, "This form did not come from this page (CSRF check failed). Reload the page."
            )
        if text("action") == "deny":
            denied = self._provider.deny(pending)
            if denied is None:
                return _answered()
            log.info("consent denied for client %s", pending.client.client_id)
            self._record("consent", client=pending.client.client_id, outcome="denied")
            return _redirect(denied)
        identity = self._admin(text("token").strip()) if text("token").strip() else None
        if identity is None or not identity.allows("admin"):
            pending.failures += 1
            self._record("consent", client=pending.client.client_id, outcome="refused", reason="bad token")
            if pending.failures >= MAX_FAILURES:
                self._provider.state.drop_pending(pending.id)
                return _message(403, "Too many wrong tokens; this sign-in request is closed.")
            self._provider.state.update_pending(pending)  # the count holds on every replica
            return self._form(pending, error="That is not an admin token of this hub.", status=401)
        role = text("role")
        if role not in ROLES:
            return self._form(pending, error=f"Unknown role {role!r}.", status=400)
        profile = text("profile") or None
        if profile is not None and profile not in set(self._profiles()):
            return self._form(pending, error=f"Unknown profile {profile!r}.", status=400)
        granted: Role = role  # type: ignore[assignment]  # checked against ROLES above
        approved = self._provider.approve(pending, role=granted, profile=profile, approved_by=identity.name)
        if approved is None:
            return _answered()
        log.info(
            "consent: %s approved client %s for role %s%s",
            identity.name,
            pending.client.client_id,
            role,
            f", profile {profile}" if profile else "",
        )
        self._record(
            "consent",
            client=pending.client.client_id,
            outcome="approved",
            identity=identity.name,
            granted_role=granted,
            granted_profile=profile,
        )
        return _redirect(approved)

    def _form(self, pending: Pending, *, error: str = "", status: int = 200) -> Response:
        client = pending.client
        redirect = urlsplit(str(pending.params.redirect_uri))
        scopes = " ".join(pending.params.scopes or []) or "mcp"
        kind = "metadata document" if client.client_id.startswith("https://") else "registered here"
        roles = "".join(
            f'<option value="{r}"{" selected" if r == "user" else ""}>{r}</option>' for r in reversed(ROLES)
        )
        # a client that asked for a profile's endpoint (/mcp/<name>) gets that profile preselected
        resource = pending.params.resource or self._provider.settings.resource
        asked = (
            resource.removeprefix(f"{self._provider.settings.resource}/")
            if resource != self._provider.settings.resource
            else ""
        )
        profiles = '<option value="">(all tools)</option>' + "".join(
            f'<option value="{escape(p)}"{" selected" if p == asked else ""}>{escape(p)}</option>'
            for p in sorted(self._profiles())
        )
        body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>Approve a client · patchbay</title>
<style>{_STYLE}</style></head><body>
<h1>Allow <span id="client-name">{escape(client.client_name or "an unnamed client")}</span>
to use this hub?</h1>
<dl><dt>Client ID</dt><dd id="client-id">{escape(client.client_id)} ({kind})</dd>
<dt>Returns to</dt><dd id="redirect-host">{escape(redirect.netloc)}</dd>
<dt>Scope</dt><dd id="scope">{escape(scopes)}</dd>
<dt>Resource</dt><dd>{escape(pending.params.resource or self._provider.settings.resource)}</dd></dl>
{f'<p class="error" id="error" role="alert">{escape(error)}</p>' if error else ""}
<form method="post" action="{CONSENT_PATH}">
<input type="hidden" name="request" value="{escape(pending.id)}">
<input type="hidden" name="csrf" value="{escape(pending.csrf)}">
<label for="token">Admin token of this hub</label>
<input id="token" name="token" type="password" autocomplete="current-password">
<label for="role">Role the client gets</label><select id="role" name="role">{roles}</select>
<label for="profile">Profile (limits which tools it sees)</label>
<select id="profile" name="profile">{profiles}</select>
<div class="buttons"><button id="approve" name="action" value="approve" type="submit">Approve</button>
<button id="deny" name="action" value="deny" type="submit" formnovalidate>Deny</button></div>
</form></body></html>"""
        response = HTMLResponse(body, status_code=status, headers=_HEADERS)
        secure = self._provider.settings.issuer.startswith("https://")
        response.set_cookie(
            COOKIE,
            pending.csrf,
            max_age=900,
            path=CONSENT_PATH,
            secure=secure,
            httponly=True,
            samesite="strict",
        )
        return response


def _message(status: int, text: str) -> Response:
    body = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>patchbay</title><style>{_STYLE}'
        f'</style></head><body><h1>Sign-in not possible</h1><p class="error" id="error">{escape(text)}</p>'
        "</body></html>"
    )
    return HTMLResponse(body, status_code=status, headers=_HEADERS)


def _redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def _answered() -> Response:
    """The request was approved or denied meanwhile (another tab, or the same form on another replica)."""
    return _message(409, "This sign-in request was answered already. Start again from the client if needed.")
