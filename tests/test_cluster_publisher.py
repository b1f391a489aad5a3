"""The pipelined publisher of forwarded calls (cluster/publisher.py) against a real ``redis-server``:
replies reach the right callers under concurrency, failures fail the waiting callers with a Redis error,
and the next publish reconnects."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from patchbay.cluster.publisher import Publisher
from tests.cluster_parts import RedisProc


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[RedisProc]:
    proc = RedisProc(tmp_path).start()
    try:
        yield proc
    finally:
        proc.stop()


def publisher(proc: RedisProc, timeout: float = 2.0, *, replies: bool = True) -> tuple[Publisher, Redis]:
    factory = Redis.from_url(proc.url, decode_responses=True, socket_connect_timeout=2)
    return Publisher(factory.connection_pool.make_connection, timeout, replies=replies), factory


@pytest.fixture
async def subscribed(redis_proc: RedisProc) -> AsyncIterator[dict[str, int]]:
    """Channels with 0, 1 and 2 subscribers: PUBLISH answers with that count."""
    subscriber = Redis.from_url(redis_proc.url, decode_responses=True)
    one, two_a, two_b = subscriber.pubsub(), subscriber.pubsub(), subscriber.pubsub()
    await one.subscribe("one")
    await two_a.subscribe("two")
    await two_b.subscribe("two")
    try:
        yield {"none": 0, "one": 1, "two": 2}
    finally:
        for p in (one, two_a, two_b):
            await p.aclose()  # type: ignore[no-untyped-call]
        await subscriber.aclose()


async def test_each_caller_gets_the_reply_to_its_own_publish(
    redis_proc: RedisProc, subscribed: dict[str, int]
) -> None:
    pub, factory = publisher(redis_proc)
    try:
        rng = random.Random(13)
        channels = [rng.choice(list(subscribed)) for _ in range(500)]
        counts = await asyncio.gather(*(pub.publish(ch, f"message {i}") for i, ch in enumerate(channels)))
        assert counts == [subscribed[ch] for ch in channels]
    finally:
        await pub.close()
        await factory.aclose()


async def test_a_cancelled_caller_leaves_the_others_in_step(
    redis_proc: RedisProc, subscribed: dict[str, int]
) -> None:
    pub, factory = publisher(redis_proc)
    try:
        tasks = [asyncio.ensure_future(pub.publish("two" if i % 2 else "one", "x")) for i in range(100)]
        await asyncio.sleep(0)  # every task has started and queued its PUBLISH
        for task in tasks[::3]:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for i, result in enumerate(results):
            if i % 3:
                assert result == (2 if i % 2 else 1)
        assert await pub.publish("two", "after") == 2
    finally:
        await pub.close()
        await factory.aclose()


async def test_redis_gone_fails_the_publish_and_its_return_reconnects(redis_proc: RedisProc) -> None:
    pub, factory = publisher(redis_proc)
    try:
        assert await pub.publish("nobody", "x") == 0
        redis_proc.stop()
        with pytest.raises(RedisError):
            for _ in range(3):  # the first write after the close may still be accepted by the kernel
                await pub.publish("nobody", "x")
        redis_proc.start()  # same port
        assert await pub.publish("nobody", "x") == 0
    finally:
        await pub.close()
        await factory.aclose()


async def test_a_redis_that_does_not_answer_fails_the_publish_after_the_timeout(
    redis_proc: RedisProc,
) -> None:
    pub, factory = publisher(redis_proc, timeout=1.0)  # ample for a loopback PUBLISH on a busy machine
    assert redis_proc.proc is not None
    try:
        assert await pub.publish("nobody", "x") == 0
        os.kill(redis_proc.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(RedisTimeoutError, match="did not take or answer a PUBLISH"):
                await pub.publish("nobody", "x")
        finally:
            os.kill(redis_proc.proc.pid, signal.SIGCONT)
        assert await pub.publish("nobody", "x") == 0  # a new connection, in step again
    finally:
        await pub.close()
        await factory.aclose()


async def test_after_close_a_publish_is_refused(redis_proc: RedisProc) -> None:
    pub, factory = publisher(redis_proc)
    try:
        assert await pub.publish("nobody", "x") == 0
        await pub.close()
        with pytest.raises(RedisError, match="leaving the cluster"):
            await pub.publish("nobody", "x")
    finally:
        await factory.aclose()


async def next_message(pubsub: PubSub) -> str:
    while True:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
        if message is not None:
            return str(message["data"])


async def test_posts_without_replies_arrive_in_order(redis_proc: RedisProc) -> None:
    poster, factory = publisher(redis_proc, replies=False)
    listener = Redis.from_url(redis_proc.url, decode_responses=True)
    pubsub = listener.pubsub()
    await pubsub.subscribe("answers")
    try:
        await poster.post("answers", "first")
        assert await next_message(pubsub) == "first"
        connections = (await listener.info("stats"))["total_connections_received"]
        for i in range(200):
            await poster.post("answers", f"answer {i}")
        assert [await next_message(pubsub) for _ in range(200)] == [f"answer {i}" for i in range(200)]
        await poster.post("answers", "last")
        assert await next_message(pubsub) == "last"
        # Had Redis replied, the reader would have dropped the connection and a post reconnected.
        assert (await listener.info("stats"))["total_connections_received"] == connections
    finally:
        await poster.close()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.aclose()
        await factory.aclose()


async def test_a_post_after_redis_came_back_reconnects(redis_proc: RedisProc) -> None:
    poster, factory = publisher(redis_proc, replies=False)
    try:
        await poster.post("nobody", "before")
        redis_proc.stop()
        with pytest.raises(RedisError):
            for _ in range(50):  # the reader sees the end of the connection; a write after it fails
                await poster.post("nobody", "while gone")
                await asyncio.sleep(0.05)
        redis_proc.start()  # same port
        listener = Redis.from_url(redis_proc.url, decode_responses=True)
        pubsub = listener.pubsub()
        await pubsub.subscribe("answers")
        try:
            await poster.post("answers", "after")
            assert await next_message(pubsub) == "after"
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await listener.aclose()
    finally:
        await poster.close()
        await factory.aclose()
