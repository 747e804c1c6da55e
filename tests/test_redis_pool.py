"""The Redis client's connection pool waits for a free connection instead of failing (a real server).

redis-py's default asyncio pool raises ``MaxConnectionsError`` as soon as its connections are all out. Under
load (hundreds of calls ending at once, each marking itself closed) that lost writes: the call was then taken
for one whose instance died. :func:`ivr.store.client.open_redis` gives plain URLs a blocking pool.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import BlockingConnectionPool
from redis.exceptions import MaxConnectionsError

from ivr.store.client import POOL_CONNECTIONS, open_redis
from tests.support.redis import embedded_redis, redis_url

__all__ = ["embedded_redis", "redis_url"]


async def _busy(url: str, commands: int, **options: object) -> float:
    """Run ``commands`` commands that each hold a connection for 0.2 s, all at once; seconds taken."""
    client = open_redis(url, **options)
    try:
        started = time.monotonic()
        results = await asyncio.gather(
            *(client.blpop([f"ivr-test:pool:empty:{n}"], timeout=0.2) for n in range(commands))
        )
        assert results == [None] * commands  # every command ran and timed out on its empty list
        return time.monotonic() - started
    finally:
        await client.aclose()


async def test_more_commands_than_connections_wait_their_turn(redis_url: str) -> None:
    if redis_url.startswith(("redis+", "rediss+")):
        pytest.skip("the blocking pool is for plain Redis URLs (Sentinel and Cluster pools are redis-py's)")
    client = open_redis(redis_url)
    assert isinstance(client.connection_pool, BlockingConnectionPool)
    assert client.connection_pool.max_connections == POOL_CONNECTIONS
    await client.aclose()
    taken = await _busy(redis_url, 30, max_connections=10)
    assert taken >= 0.55  # three rounds of 0.2 s: the last 20 waited for a connection, none failed


async def test_the_pool_that_fails_fast_is_what_this_replaces(redis_url: str) -> None:
    """The control: redis-py's own asyncio pool with the same cap fails instead of waiting."""
    if redis_url.startswith(("redis+", "rediss+")):
        pytest.skip("plain Redis URLs only")
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url, max_connections=10)
    try:
        waits = [client.blpop([f"ivr-test:pool:empty:{n}"], timeout=0.2) for n in range(30)]
        results = await asyncio.gather(*waits, return_exceptions=True)
    finally:
        await client.aclose()
    assert sum(isinstance(r, MaxConnectionsError) for r in results) == 20
