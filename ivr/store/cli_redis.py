"""How the ``ivr`` sub-commands that work on Redis (``approvals``, ``operators``) reach it.

One place for the rules, so every command behaves alike: the Redis is ``REDIS_URL`` (required: an embedded
server lives inside ``ivr serve``, which logs its URL), keys live under ``IVR_REDIS_PREFIX``, configuration
errors exit with 2 and an unreachable Redis with 1, and messages never show the URL's password.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TextIO
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ivr.settings import Settings, SettingsError
from ivr.store.client import (
    RedisURLError,
    is_cluster_url,
    is_sentinel_url,
    open_redis,
    parse_cluster_url,
    parse_sentinel_url,
)
from ivr.store.keys import KeySchema, KeySchemaError

__all__ = [
    "NO_REDIS",
    "CliRedisError",
    "cli_settings",
    "open_client",
    "redacted",
    "run_on_redis",
    "unreachable",
]

NO_REDIS = (
    "REDIS_URL is not set: set REDIS_URL to the server's Redis (e.g. redis://host:6379/0); "
    "`ivr serve` prints the URL of its embedded one"
)


class CliRedisError(Exception):
    """The command cannot start; ``str()`` is the message, :attr:`code` the exit code (2: configuration)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def cli_settings(settings: Settings | None = None) -> tuple[Settings, KeySchema]:
    """Settings from the environment (unless given) with a Redis URL, and the key schema of their prefix."""
    if settings is None:
        try:
            settings = Settings.from_env()
        except SettingsError as exc:
            raise CliRedisError(str(exc)) from None
    if not settings.redis_url:
        raise CliRedisError(NO_REDIS)
    try:
        keys = KeySchema.for_url(settings.redis_url, getattr(settings, "redis_prefix", "ivr:"))
    except KeySchemaError as exc:
        raise CliRedisError(str(exc)) from None
    return settings, keys


def open_client(url: str) -> aioredis.Redis:
    """A client for ``url`` (no connection yet); :class:`CliRedisError` when the URL is no Redis URL."""
    try:
        return open_redis(url, decode_responses=True, socket_connect_timeout=5)
    except RedisURLError as exc:  # Sentinel, Cluster: the message names the problem and the form to use
        raise CliRedisError(str(exc)) from None
    except ValueError as exc:
        raise CliRedisError(f"REDIS_URL is not a valid Redis URL ({exc}); use redis://host:6379/0") from None


def redacted(url: str) -> str:
    """host:port/db only (a Sentinel URL: its sentinels, service and db; a Cluster URL: its nodes): the URL
    may carry a password."""
    try:
        if is_sentinel_url(url):
            return parse_sentinel_url(url).describe()
        if is_cluster_url(url):
            return parse_cluster_url(url).describe()
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = parts.port or 6379
    except ValueError:
        return "(the configured REDIS_URL)"
    return f"{host}:{port}{parts.path or ''}"


def unreachable(url: str, exc: BaseException) -> str:
    """The one-line message for a Redis that does not answer."""
    return (
        f"cannot reach Redis at {redacted(url)} ({type(exc).__name__}: {exc}); check that it is running "
        "and that REDIS_URL points at the same Redis as the servers"
    )


async def run_on_redis(
    url: str,
    err: TextIO,
    work: Callable[[aioredis.Redis], Awaitable[int]],
    refusals: Mapping[type[Exception], int],
) -> int:
    """Open a client for ``url``, return ``await work(client)``'s exit code, and close the client.

    What goes wrong is one ``error: …`` line on ``err`` and an exit code: an invalid URL 2, an exception
    of a type in ``refusals`` the code given for its first matching type, an unreachable Redis 1.
    """
    try:
        client = open_client(url)
    except CliRedisError as exc:
        print(f"error: {exc}", file=err)
        return exc.code
    try:
        return await work(client)
    except tuple(refusals) as exc:
        print(f"error: {exc}", file=err)
        return next(code for kind, code in refusals.items() if isinstance(exc, kind))
    except (RedisError, OSError) as exc:
        print(f"error: {unreachable(url, exc)}", file=err)
        return 1
    finally:
        await client.aclose()
