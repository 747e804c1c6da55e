"""pytest fixtures for tests that need a real Redis (imported by tests/conftest.py).

Why: the suite must run anywhere without a system Redis, yet never against an imitation. ``redis_url`` is
the ``REDIS_URL`` environment variable when set (CI's second pass points it at the machine's server),
otherwise one embedded valkey-server for the whole session. Each test gets a unique key prefix whose keys
are deleted afterwards, so tests can share one server, run in any order, and never touch real ``ivr:`` data.
A ``redis+cluster://`` ``REDIS_URL`` works too: the key schema then uses hash tags and the clean-up walks
every primary of the cluster.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis
from redis.cluster import ClusterNode, RedisCluster

from ivr.redis_url import is_cluster_url, parse_cluster_url
from ivr.store.client import open_redis
from ivr.store.embedded import EmbeddedRedis
from ivr.store.keys import KeySchema

__all__ = ["delete_prefix", "embedded_redis", "redis_keys", "redis_prefix", "redis_url"]


def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key starting with ``prefix`` (SCAN + DEL); returns how many were deleted. On a Redis
    Cluster URL every primary is scanned (a SCAN on one node sees only that node's keys)."""
    if not prefix or any(ch in prefix for ch in "*?[]\\"):
        raise ValueError(f"refusing to delete keys for the prefix {prefix!r}")
    if is_cluster_url(url):
        return _delete_prefix_on_cluster(url, prefix)
    deleted = 0
    with redis.Redis.from_url(url, decode_responses=True) as client:
        batch: list[str] = []
        for key in client.scan_iter(match=prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(client.delete(*batch))
    return deleted


def _delete_prefix_on_cluster(url: str, prefix: str) -> int:
    target = parse_cluster_url(url)
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        username=target.username,
        password=target.password,
        ssl=target.tls,
        decode_responses=True,
        socket_timeout=5.0,
        socket_connect_timeout=5.0,
    )
    try:
        # scan_iter walks every primary in turn (RedisCluster's SCAN goes to all of them).
        found = list(client.scan_iter(match=prefix + "*", count=1000))
        deleted = 0
        for start in range(0, len(found), 500):
            pipe = client.pipeline()
            for key in found[start : start + 500]:
                pipe.delete(key)  # one key per command: keys of many slots, routed one by one
            deleted += sum(int(n) for n in pipe.execute())
        return deleted
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``REDIS_URL`` if set, else the URL of an embedded valkey-server started once for the session."""
    url = os.environ.get("REDIS_URL", "").strip()
    if url:
        yield url
        return
    server = EmbeddedRedis()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A unique ``ivr-test-<hex>:`` key prefix; every key under it is deleted after the test."""
    prefix = f"ivr-test-{secrets.token_hex(6)}:"
    try:
        yield prefix
    finally:
        delete_prefix(redis_url, prefix)


@pytest.fixture
def redis_keys(redis_url: str, redis_prefix: str) -> KeySchema:
    """A :class:`KeySchema` on the test's unique prefix (hash-tagged when ``redis_url`` is a Cluster)."""
    return KeySchema.for_url(redis_url, redis_prefix)


@pytest.fixture
def embedded_redis() -> Iterator[EmbeddedRedis]:
    """A private, started embedded server for tests that stop or restart Redis; stopped afterwards."""
    server = EmbeddedRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A ``redis.asyncio`` client (``decode_responses=True``) on the test Redis; closed afterwards (a
    ``RedisCluster`` for a Cluster URL, from :func:`ivr.store.client.open_redis`)."""
    client = open_redis(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()
