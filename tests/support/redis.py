"""pytest fixtures for tests that need a real Redis (imported by tests/conftest.py).

Why: the suite must run anywhere without a system Redis, yet never against an imitation. ``redis_url`` is
the ``REDIS_URL`` environment variable when set (CI's second pass points it at the machine's server),
otherwise one embedded valkey-server for the whole session. Each test gets a unique key prefix whose keys
are deleted afterwards, so tests can share one server, run in any order, and never touch real ``ivr:`` data.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis

from ivr.store.embedded import EmbeddedRedis
from ivr.store.keys import KeySchema

__all__ = ["delete_prefix", "embedded_redis", "redis_keys", "redis_prefix", "redis_url"]


def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key starting with ``prefix`` (SCAN + DEL); returns how many were deleted."""
    if not prefix or any(ch in prefix for ch in "*?[]\\"):
        raise ValueError(f"refusing to delete keys for the prefix {prefix!r}")
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
def redis_keys(redis_prefix: str) -> KeySchema:
    """A :class:`KeySchema` on the test's unique prefix."""
    return KeySchema(redis_prefix)


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
    """A ``redis.asyncio`` client (``decode_responses=True``) on the test Redis; closed afterwards."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()
