"""The web dashboard: a static page at ``/`` and its assets under ``/dashboard/``.

Plain HTML, CSS and JavaScript modules shipped as package data; no build step. The files hold no data (the
page fetches everything from ``/api`` with the user's bearer token), so they are served without a token:
the page itself asks for one when the API answers 401.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"
OPEN_PATHS = frozenset({"/"})  # exact paths served without a token
OPEN_PREFIXES = ("/dashboard/",)  # and every path under these

# The page shows what untrusted upstream servers say (tool descriptions, stderr): everything is inserted as
# text, and this policy stops any script but our own should that ever slip.
_HEADERS = {
    "Cache-Control": "no-cache",  # revalidate (ETag): a new patchbay version never runs stale scripts
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; media-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class _Assets(StaticFiles):
    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(_HEADERS)
        return response


async def _index(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", headers=_HEADERS)


def mount_dashboard(app: Starlette) -> None:
    """Serve the page at ``/`` and its assets at ``/dashboard/…`` (add :data:`OPEN_PATHS` and
    :data:`OPEN_PREFIXES` to the guard's open paths so it loads without a token)."""
    app.router.routes.append(Route("/", endpoint=_index, methods=["GET", "HEAD"], include_in_schema=False))
    app.mount("/dashboard", _Assets(directory=STATIC_DIR), name="dashboard")
