"""The smallest hand-written JSON-RPC client for a stdio MCP server: the latency floor for benchmarks.

Why it exists: timing `tools/call` echo round-trips with no SDK and no hub in between gives the floor that the
hub's (and the SDK's) numbers are compared against. Standard library only.
"""

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

STREAM_LIMIT = 64 * 1024 * 1024


def _encode(msg: dict[str, object]) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def _call(rid: int) -> bytes:
    params = {"name": "echo", "arguments": {"text": f"hello {rid}"}}
    return _encode({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params})


class FloorSession:
    """One handshaken floor connection kept open, so benchmarks can time it in interleaved rounds."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.rid = 0

    async def __aenter__(self) -> "FloorSession":
        proc = self.proc = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=STREAM_LIMIT,
        )
        assert proc.stdin is not None and proc.stdout is not None
        self.stdin, self.stdout = proc.stdin, proc.stdout
        init_params = {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "floor-client", "version": "1.0"},
        }
        self.stdin.write(_encode({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init_params}))
        await self.stdin.drain()
        json.loads(await self.stdout.readline())
        self.stdin.write(_encode({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        return self

    async def call(self) -> None:
        """One echo ``tools/call``, answered before the next is sent."""
        self.rid += 1
        self.stdin.write(_call(self.rid))
        await self.stdin.drain()
        reply = json.loads(await self.stdout.readline())
        assert reply["id"] == self.rid, reply

    async def __aexit__(self, *exc: object) -> None:
        self.stdin.close()
        await self.proc.wait()


async def floor_latencies(command: list[str], n: int, concurrency: int = 1) -> list[float]:
    """Spawn `command`, handshake, then time `n` echo calls; returns per-call latencies in seconds.

    With concurrency > 1, up to that many requests are in flight at once and responses are matched by id.
    """
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        limit=STREAM_LIMIT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout
    init_params = {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "floor-client", "version": "1.0"},
    }
    stdin.write(_encode({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init_params}))
    await stdin.drain()
    json.loads(await stdout.readline())
    stdin.write(_encode({"jsonrpc": "2.0", "method": "notifications/initialized"}))

    latencies: list[float] = []
    if concurrency <= 1:
        for rid in range(1, n + 1):
            start = time.perf_counter()
            stdin.write(_call(rid))
            await stdin.drain()
            reply = json.loads(await stdout.readline())
            latencies.append(time.perf_counter() - start)
            assert reply["id"] == rid, reply
    else:
        waiting: dict[int, asyncio.Future[float]] = {}
        loop = asyncio.get_running_loop()

        async def reader() -> None:
            while line := await stdout.readline():
                reply = json.loads(line)
                fut = waiting.pop(reply.get("id"), None)
                if fut is not None:
                    fut.set_result(time.perf_counter())
            for fut in waiting.values():  # the server went away: fail the callers instead of hanging
                fut.set_exception(ConnectionError("server closed stdout"))

        ids = iter(range(1, n + 1))

        async def worker() -> None:
            for rid in ids:  # the shared iterator hands each id to exactly one worker
                fut = waiting[rid] = loop.create_future()
                start = time.perf_counter()
                stdin.write(_call(rid))
                await stdin.drain()
                latencies.append(await fut - start)

        read_task = asyncio.create_task(reader())
        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        finally:
            read_task.cancel()

    stdin.close()
    await proc.wait()
    return latencies


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    server = Path(__file__).with_name("floor_server.py")
    lat = asyncio.run(floor_latencies([sys.executable, str(server)], n, concurrency))
    ms = sorted(x * 1000 for x in lat)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(f"floor: n={n} concurrency={concurrency} median={statistics.median(ms):.3f} ms p99={p99:.3f} ms")


if __name__ == "__main__":
    main()
