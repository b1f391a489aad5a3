"""What replicas share besides config and agents: rate limits, tokens (roles) and the audit trail.

A real Redis, three real ``patchbay serve --cluster`` replicas (each with its own copy of the seed file,
so each writes its own audit file) and a real haproxy, round-robin, with no stickiness. Bearer tokens
guard every replica; ``ci`` may make 3 calls an hour.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from patchbay.audit import digest
from tests.cluster_parts import Haproxy, RedisProc, Replica
from tests.conftest import bad
from tests.test_agents import eventually

ADMIN = "admin-cluster-token-0123456789abcdef"
CI = "ci-cluster-token-0123456789abcdefgh"


class Shared:
    def __init__(self, redis: RedisProc, replicas: dict[str, Replica], lb: Haproxy, dirs: dict[str, Path]):
        self.redis, self.replicas, self.lb, self.dirs = redis, replicas, lb, dirs

    def http(self, base: str, token: str) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(base_url=base, timeout=30, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    workdir = tmp_path_factory.mktemp("cluster-shared")
    doc = {
        "mcpServers": {"mb": bad()},
        "auth": {
            "tokens": [
                {"name": "admin", "token": ADMIN, "role": "admin"},
                {"name": "ci", "token": CI, "role": "user"},
            ]
        },
        "rateLimits": {"identities": {"ci": "3/hour"}},
    }
    redis = RedisProc(workdir).start()
    dirs, replicas = {}, {}
    for name in ("a", "b", "c"):
        dirs[name] = workdir / name
        dirs[name].mkdir()
        (dirs[name] / "patchbay.json").write_text(json.dumps(doc))
        replicas[name] = Replica(name, dirs[name] / "patchbay.json", workdir, redis.url)
    lb = Haproxy(workdir, {"all": list(replicas.values())})
    try:
        for r in replicas.values():
            r.start()
        lb.start()
        yield Shared(redis, replicas, lb, dirs)
    finally:
        lb.stop()
        for r in replicas.values():
            r.stop()
        redis.stop()


@pytest.fixture
async def shared(parts: Shared) -> AsyncIterator[Shared]:
    """Every replica ready, and each answering through haproxy (readiness needs a token here)."""
    for replica in parts.replicas.values():
        await replica.ready(token=ADMIN)
    await parts.lb.ready("all", 3, token=ADMIN)
    yield parts


async def call(http: httpx2.AsyncClient, text: str) -> httpx2.Response:
    return await http.post("/api/tools/mb__echo/call", json={"arguments": {"text": text}})


async def test_a_rate_limit_holds_across_replicas(shared: Shared) -> None:
    """Round-robin would let ``ci`` through three times as often with buckets per replica."""
    async with shared.http(shared.lb.url("all"), CI) as http:
        for i in range(3):
            r = await call(http, f"ci-{i}")
            assert r.status_code == 200, r.text
        refused = await call(http, "ci-3")
        assert refused.status_code == 429, refused.text
        assert "3/hour" in refused.text and int(refused.headers["retry-after"]) > 0
    for replica in shared.replicas.values():  # every replica, asked directly, agrees
        async with shared.http(replica.base, CI) as http:
            assert (await call(http, "direct")).status_code == 429
        async with shared.http(replica.base, ADMIN) as http:
            assert (await call(http, "admin is not limited")).status_code == 200


async def test_a_token_added_on_one_replica_works_on_all_and_so_does_its_removal(shared: Shared) -> None:
    a, b, c = (shared.replicas[n] for n in "abc")
    async with shared.http(a.base, ADMIN) as http:
        r = await http.post("/api/tokens", json={"name": "dash", "role": "viewer"})
        assert r.status_code == 201, r.text
        new = r.json()["token"]

    async def status_on(replica: Replica) -> int:
        async with shared.http(replica.base, new) as http:
            return (await http.get("/api/tools")).status_code

    async def works_on_c() -> bool:
        return await status_on(c) == 200

    await eventually(works_on_c, 10, "the new token on replica C")
    async with shared.http(c.base, new) as http:
        assert (await call(http, "a viewer may not call")).status_code == 403
    async with shared.http(b.base, ADMIN) as http:
        assert (await http.delete("/api/tokens/dash")).status_code == 204

    async def refused_on_a() -> bool:
        return await status_on(a) == 401

    await eventually(refused_on_a, 10, "the removed token refused on replica A")


async def test_the_audit_trail_of_every_replica_is_read_on_any(shared: Shared) -> None:
    marker = "audit-marker"
    for replica in shared.replicas.values():
        async with shared.http(replica.base, ADMIN) as http:
            assert (await call(http, f"{marker}-{replica.name}")).status_code == 200
    ids = {}
    for name, replica in shared.replicas.items():
        async with shared.http(replica.base, ADMIN) as http:
            status = (await http.get("/api/cluster")).json()
            ids[name] = status["replica"]
            assert status["oauthShared"] is False  # no PATCHBAY_SECRET_KEY here: sign-ins stay per replica
    async with shared.http(shared.replicas["c"].base, ADMIN) as http:

        async def all_three() -> list[dict[str, Any]] | None:
            r = await http.get("/api/audit", params={"identity": "admin", "tool": "mb__echo", "limit": 50})
            assert r.status_code == 200, r.text
            assert r.headers["x-patchbay-audit-scope"] == "cluster"
            found = [x for x in r.json() if x.get("outcome") == "ok"]
            return found if {x["replica"] for x in found} >= set(ids.values()) else None

        records = await eventually(all_three, 15, "records of all three replicas")
        limited = await http.get("/api/audit", params={"identity": "ci", "outcome": "rate_limited"})
        assert limited.status_code == 200 and len(limited.json()) >= 1
    # each replica's own file holds only its own records
    for name, folder in shared.dirs.items():
        lines = [json.loads(x) for x in (folder / "patchbay.audit.jsonl").read_text().splitlines()]
        assert {x.get("replica") for x in lines} == {ids[name]}
    assert len(records) >= 3


async def test_without_redis_each_replica_answers_from_its_own_file_and_keeps_serving(shared: Shared) -> None:
    """Last in the module: Redis goes down, and comes back empty (no persistence)."""
    shared.redis.stop()
    a = shared.replicas["a"]
    async with shared.http(a.base, ADMIN) as http:
        assert (await call(http, "redis is gone")).status_code == 200
        r = await http.get("/api/audit", params={"identity": "admin", "limit": 20})
        assert r.status_code == 200 and r.headers["x-patchbay-audit-scope"] == "replica"
        ids = {x["replica"] for x in r.json()}
        assert len(ids) == 1  # only this replica's
    async with shared.http(a.base, CI) as http:
        # the replica's own bucket for ci starts full: a limit is still enforced, per replica
        codes = [(await call(http, f"local-{i}")).status_code for i in range(4)]
        assert codes == [200, 200, 200, 429]
    # Redis returns: what A recorded meanwhile is copied to the stream, so any replica's answer has it
    shared.redis.start()
    b = shared.replicas["b"]

    async def backfilled() -> list[dict[str, Any]] | None:
        async with shared.http(b.base, ADMIN) as http:
            r = await http.get("/api/audit", params={"tool": "mb__echo", "limit": 50})
        if r.status_code != 200 or r.headers["x-patchbay-audit-scope"] != "cluster":
            return None
        gone = digest({"text": "redis is gone"})  # arguments are kept as their digest only
        records = r.json()
        return records if any(x.get("arguments_sha256") == gone for x in records) else None

    records = await eventually(backfilled, 30, "A's records made without Redis, in the stream")
    assert [x["time"] for x in records] == sorted(x["time"] for x in records)
