"""Real parts for the cluster tests: Debian's ``redis-server``, ``patchbay serve --cluster`` replicas and
Debian's ``haproxy`` (round-robin, no stickiness) in front, each started and stopped by its owner here.

Missing Redis or haproxy fails loudly: they are part of ``make test`` (``tests/.stamp-servers``). Standard
library, psutil, redis-py and httpx2 only: ``bench/cluster.py`` runs the same parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import psutil
import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kill_tree(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """``sig`` to the process, its group and every descendant (servers run in sessions of their own)."""
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        kids = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    for kid in kids:
        with contextlib.suppress(psutil.NoSuchProcess):
            kid.send_signal(sig)
    if sig == signal.SIGKILL:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


def need(program: str) -> str:
    path = shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}", f"/usr/bin/{program}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        raise RuntimeError(f"{program} is not installed: `make test` installs it (apt-get install {program})")
    return path


class RedisProc:
    """``redis-server`` on a loopback port, without persistence: a restart loses everything."""

    def __init__(self, workdir: Path) -> None:
        self.binary = need("redis-server")
        self.port = free_port()
        self.workdir = workdir
        self.log = workdir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProc:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                 "no", "--dir", str(self.workdir)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 15
        while True:
            assert self.proc.poll() is None, f"redis-server exited:\n{self.log.read_text()}"
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    client.close()
                    return self
            if time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not answer PING:\n{self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            kill_tree(self.proc)
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)


class Replica:
    """``patchbay serve --cluster`` (or, without a Redis URL, a plain ``patchbay serve``) as a subprocess on
    a port chosen once (restarts reuse it)."""

    def __init__(
        self, name: str, config: Path, workdir: Path, redis_url: str | None, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.env = env or {}
        self.config = config
        self.log = workdir / f"replica-{name}.log"
        self.redis_url = redis_url
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Replica:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "patchbay", "serve", "--config", str(self.config), "--port",
                 str(self.port), "--agent-ping", "1", "--no-reload",
                 *(["--cluster", self.redis_url] if self.redis_url else [])],
                env={**os.environ, **self.env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return self

    def http(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(base_url=self.base, timeout=30)

    async def ready(self, timeout: float = 60, token: str | None = None) -> None:
        """Until ``/readyz`` answers 200 (``token``: when the replica wants one)."""
        assert self.proc is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http() as http, asyncio.timeout(timeout):
            while True:
                assert self.proc.poll() is None, f"replica {self.name} exited:\n{self.log.read_text()}"
                with contextlib.suppress(httpx2.TransportError):
                    if (await http.get("/readyz", headers=headers)).status_code == 200:
                        return
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no goodbye to Redis, no clean close of anything."""
        if self.proc is not None:
            kill_tree(self.proc)
            self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
        kill_tree(self.proc)
        self.proc = None


HAPROXY_CONFIG = """\
global
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout tunnel 1h
    option redispatch
    retries 3
    retry-on conn-failure
    http-reuse safe
{frontends}
"""


class Haproxy:
    """haproxy in front of the replicas: one frontend per named group, each round-robin over its group,
    health-checked on /healthz, no stickiness of any kind; ``X-Replica`` says who answered."""

    def __init__(
        self, workdir: Path, groups: dict[str, list[Replica]], check: str = "inter 200ms fall 1 rise 1"
    ) -> None:
        self.binary = need("haproxy")
        self.check = check
        self.workdir = workdir
        self.groups = groups
        self.ports = {g: free_port() for g in groups}
        self.cfg = workdir / "haproxy.cfg"
        self.log = workdir / "haproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, group: str) -> str:
        return f"http://127.0.0.1:{self.ports[group]}"

    def ws(self, group: str) -> str:
        return f"ws://127.0.0.1:{self.ports[group]}/agents"

    def config_text(self) -> str:
        parts = []
        for group, replicas in self.groups.items():
            servers = "\n".join(
                f"    server {r.name} 127.0.0.1:{r.port} check {self.check}" for r in replicas
            )
            parts.append(
                f"frontend {group}\n    bind 127.0.0.1:{self.ports[group]}\n    default_backend be_{group}\n"
                f"backend be_{group}\n    balance roundrobin\n    option httpchk\n"
                "    http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host 127.0.0.1\n"
                f"    http-response set-header X-Replica %s\n{servers}\n"
            )
        return HAPROXY_CONFIG.format(frontends="\n".join(parts))

    def start(self) -> Haproxy:
        self.cfg.write_text(self.config_text())
        check = subprocess.run([self.binary, "-c", "-f", str(self.cfg)], capture_output=True, text=True)
        assert check.returncode == 0, f"haproxy refused its config:\n{check.stdout}{check.stderr}"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [self.binary, "-db", "-f", str(self.cfg)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return self

    async def ready(self, group: str, count: int, timeout: float = 30, token: str | None = None) -> None:
        """Until ``count`` different replicas have answered through ``group``'s frontend."""
        seen: set[str] = set()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx2.AsyncClient(base_url=self.url(group), timeout=5, headers=headers)
        async with client as http, asyncio.timeout(timeout):
            while len(seen) < count:
                assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
                with contextlib.suppress(httpx2.TransportError):
                    r = await http.get("/readyz")
                    if r.status_code == 200 and "x-replica" in r.headers:
                        seen.add(r.headers["x-replica"])
                        continue
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            kill_tree(self.proc, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            kill_tree(self.proc)
            self.proc = None
