"""What the role gate costs per request: the ``RoleGate`` middleware in process (no sockets), against the
same scope handed straight to the app, in interleaved rounds (``bench/rounds.py``).

Rows: the bare app; the gate on ``/mcp`` for a user (the hot path: one dict lookup); for a profile-bound user
(``/mcp`` rewritten to ``/mcp/<profile>``); on a parameterised REST route (a regex); and for a profile-bound
user on ``/api/tools`` (the ``profile`` query parameter forced).

Run with ``python -m bench.roles [--rounds N] [--requests N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from bench.rounds import run_async
from patchbay.access.roles import RoleGate
from patchbay.identity import Identity, attach


async def _app(scope: Any, receive: Any, send: Any) -> None:
    return None


def _scope(identity: Identity, path: str, method: str = "POST") -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": b"",
        "headers": [],
    }
    attach(scope, identity)
    return scope


async def main(ns: argparse.Namespace) -> None:
    gate = RoleGate(_app)
    user, bound = Identity("u", "user"), Identity("c", "user", "coding")
    cases: dict[str, tuple[Callable[..., Awaitable[None]], dict[str, Any]]] = {
        "bare app": (_app, _scope(user, "/mcp")),
        "gate /mcp, user": (gate, _scope(user, "/mcp")),
        "gate /mcp, profile-bound": (gate, _scope(bound, "/mcp")),
        "gate POST /api/tools/{name}/call": (gate, _scope(user, "/api/tools/gh__echo/call")),
        "gate GET /api/tools, profile-bound": (gate, _scope(bound, "/api/tools", "GET")),
    }

    def row(
        app: Callable[..., Awaitable[None]], scope: dict[str, Any]
    ) -> Callable[[int], Awaitable[Mapping[str, float]]]:
        async def measure(rnd: int) -> Mapping[str, float]:
            started = time.perf_counter()
            for _ in range(ns.requests):
                await app(dict(scope), None, None)
            return {"us_per_request": (time.perf_counter() - started) / ns.requests * 1e6}

        return measure

    results = await run_async({k: row(*v) for k, v in cases.items()}, ns.rounds, verbose=False)
    print(f"python -m bench.roles --rounds {ns.rounds} --requests {ns.requests}")
    for label in cases:
        stat = results.stat(label, "us_per_request")
        extra = results.ratio(label, "bare app", "us_per_request")
        print(
            f"  {label:<38} {stat.median:7.2f} us/request ({stat.min:.2f}-{stat.max:.2f})"
            f"  {extra.median:5.2f}x the bare app"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    parser.add_argument("--requests", type=int, default=20000, help="requests per row and round")
    asyncio.run(main(parser.parse_args()))
