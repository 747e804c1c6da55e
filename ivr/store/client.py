"""The one place ivr turns ``REDIS_URL`` into a ``redis.asyncio`` client: a single server, Redis Sentinel or
Redis Cluster.

Why one factory: every part of ivr that talks to Redis (the app's shared client, the console's event hub,
``ivr approvals``/``operators``/``data``, the demo) must accept the same URLs, pass the same options, and
follow a Sentinel failover the same way.

* ``redis://``, ``rediss://``, ``unix://``: exactly ``redis.asyncio.Redis.from_url(url, decode_responses=…,
  **kwargs)``, as before.
* ``redis+sentinel://``, ``rediss+sentinel://`` (grammar in :mod:`ivr.redis_url`): a client of the service's
  *current primary* from ``redis.asyncio.sentinel.Sentinel(...).master_for(service)``. Each new connection
  asks the sentinels where the primary is; a connection that meets a demoted primary (``READONLY``, or a
  blocking read unblocked by the role change) is dropped with a ``ConnectionError``, so the next attempt —
  redis-py's retry, then the resilient writer's — finds the new primary. Scripts, pipelines, MULTI/WATCH and
  pub/sub work unchanged: it is a plain ``Redis`` on a Sentinel-aware connection pool.

* ``redis+cluster://``, ``rediss+cluster://`` (grammar in :mod:`ivr.redis_url`): a
  ``redis.asyncio.cluster.RedisCluster`` started from the URL's nodes; it learns the slot map from them and
  follows ``MOVED``/``ASK``. Its API differs where it matters to ivr: no ``connection_pool``, a pipeline per
  node (``ClusterPipeline``: no ``command_stack``, and a failed node's commands come back as error objects),
  MULTI and scripts only within one hash slot (hence :class:`~ivr.store.keys.KeySchema` ``hash_tags``), and
  sharded pub/sub (``SPUBLISH``/``SSUBSCRIBE``, an exact receiver count). :func:`is_cluster` tells callers
  which client they hold. Connection options are mapped onto the ``RedisCluster`` constructor; one it does
  not take raises ``TypeError`` naming it, rather than being dropped silently.

redis-py's ``Sentinel.aclose()`` closes only the sentinel connections and leaves ``master_for`` clients open,
while closing a ``master_for`` client leaves the sentinel connections open. The client returned here
(:class:`SentinelRedis`) owns its ``Sentinel`` and closes both in ``aclose()``, so callers keep their usual
``await client.aclose()``.
"""

from __future__ import annotations

import inspect
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

from ivr.redis_url import (
    CLUSTER_SCHEMES,
    DEFAULT_SENTINEL_PORT,
    SENTINEL_SCHEMES,
    ClusterURL,
    RedisURLError,
    SentinelURL,
    is_cluster_url,
    is_sentinel_url,
    masked,
    parse_cluster_url,
    parse_sentinel_url,
)

__all__ = [
    "CLUSTER_SCHEMES",
    "DEFAULT_SENTINEL_PORT",
    "SENTINEL_SCHEMES",
    "ClusterURL",
    "RedisCluster",
    "RedisURLError",
    "SentinelRedis",
    "SentinelURL",
    "describe_redis_url",
    "is_cluster",
    "is_cluster_url",
    "is_sentinel_url",
    "open_redis",
    "parse_cluster_url",
    "parse_sentinel_url",
]

#: Connection options that also apply to the connections to the sentinels (redis-py's own rule is the
#: ``socket_*`` ones; ``client_name`` makes ivr's connections recognisable in the sentinels' CLIENT LIST).
_SENTINEL_SHARED = ("client_name",)


class SentinelRedis(aioredis.Redis):
    """A client of a Sentinel-managed primary that also closes its sentinel connections on :meth:`aclose`.

    Built by :func:`open_redis` through ``Sentinel.master_for(..., redis_class=SentinelRedis)``; otherwise a
    plain ``redis.asyncio.Redis``. :attr:`sentinel` is the ``Sentinel`` it asks for the primary's address.
    """

    sentinel: Sentinel | None = None
    target: SentinelURL | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the client and, when its pool closes too (the default, as ``Redis.aclose`` decides), the
        connections to the sentinels."""
        closing_pool = close_connection_pool or (
            close_connection_pool is None and self.auto_close_connection_pool
        )
        try:
            await super().aclose(close_connection_pool)
        finally:
            sentinel = self.sentinel
            if closing_pool and sentinel is not None:
                self.sentinel = None
                await sentinel.aclose()

    def __repr__(self) -> str:
        where = self.target.describe() if self.target is not None else "Sentinel"
        return f"<{type(self).__name__}({where})>"


#: Options of ``RedisCluster(...)`` (connection options it hands every node, and its own).
_CLUSTER_OPTIONS = frozenset(inspect.signature(RedisCluster.__init__).parameters) - {
    "self",
    "host",
    "port",
    "startup_nodes",
    "db",
    "path",
}


#: Connections one client keeps to a plain Redis at most, and how long a command waits for one to be free.
POOL_CONNECTIONS = 100
POOL_WAIT_S = 5.0


def open_redis(url: str, *, decode_responses: bool = True, **kwargs: Any) -> aioredis.Redis:
    """A ``redis.asyncio`` client for ``url``; no connection is made until the first command.

    ``kwargs`` are connection options (``socket_timeout``, ``health_check_interval``, …) for the data nodes;
    with Sentinel, the ``socket_*`` ones and ``client_name`` apply to the sentinels too. For a Cluster URL the
    result is a ``RedisCluster`` (typed as ``Redis`` for the callers, which use the commands both share;
    :func:`is_cluster` tells them apart). A Sentinel or Cluster URL that cannot be parsed raises
    :class:`RedisURLError` (a ``ValueError``) whose message names the problem and never a password; a
    malformed plain URL raises redis-py's ``ValueError`` as before.
    """
    if is_cluster_url(url):
        cluster: Any = _open_cluster(parse_cluster_url(url), decode_responses=decode_responses, **kwargs)
        return cluster  # a RedisCluster: duck-typed as Redis by every caller (see is_cluster)
    if not is_sentinel_url(url):
        # A pool that waits for a free connection: redis-py's default pool raises MaxConnectionsError once
        # its 100 connections are out, which hundreds of calls ending at once (a drain) did reach.
        kwargs.setdefault("max_connections", POOL_CONNECTIONS)
        kwargs.setdefault("timeout", POOL_WAIT_S)
        pool = aioredis.BlockingConnectionPool.from_url(url, decode_responses=decode_responses, **kwargs)
        return aioredis.Redis.from_pool(pool)
    return _open_sentinel(parse_sentinel_url(url), decode_responses=decode_responses, **kwargs)


def is_cluster(client: object) -> bool:
    """True for a Redis Cluster client (what :func:`open_redis` returns for a ``redis+cluster://`` URL)."""
    return isinstance(client, RedisCluster)


def describe_redis_url(url: str) -> str:
    """``url`` for a message or a log line: a Sentinel URL as its sentinels, service and db, a Cluster URL as
    its nodes; any other URL with its passwords masked."""
    try:
        if is_sentinel_url(url):
            return parse_sentinel_url(url).describe()
        if is_cluster_url(url):
            return parse_cluster_url(url).describe()
    except RedisURLError:
        pass
    return masked(url)


def _open_cluster(target: ClusterURL, *, decode_responses: bool, **kwargs: Any) -> RedisCluster:
    """A ``RedisCluster`` on the URL's nodes with the caller's connection options (those it takes)."""
    unknown = sorted(set(kwargs) - _CLUSTER_OPTIONS)
    if unknown:
        raise TypeError(f"open_redis: {', '.join(unknown)} is not an option of a Redis Cluster client")
    options: dict[str, Any] = {**kwargs, "decode_responses": decode_responses}
    if target.username is not None:
        options["username"] = target.username
    if target.password is not None:
        options["password"] = target.password
    if target.tls:
        options["ssl"] = True
    nodes = [ClusterNode(host, port) for host, port in target.nodes]
    return RedisCluster(startup_nodes=nodes, **options)


def _open_sentinel(target: SentinelURL, *, decode_responses: bool, **kwargs: Any) -> SentinelRedis:
    sentinel_kwargs: dict[str, Any] = {
        k: v for k, v in kwargs.items() if k.startswith("socket_") or k in _SENTINEL_SHARED
    }
    if target.sentinel_password is not None:
        sentinel_kwargs["password"] = target.sentinel_password
    if target.tls:
        sentinel_kwargs["ssl"] = True
    node_kwargs: dict[str, Any] = {**kwargs, "db": target.db, "decode_responses": decode_responses}
    if target.username is not None:
        node_kwargs["username"] = target.username
    if target.password is not None:
        node_kwargs["password"] = target.password
    if target.tls:
        node_kwargs["ssl"] = True  # SentinelConnectionPool picks its TLS connection class from this flag
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)
    client = sentinel.master_for(target.service, redis_class=SentinelRedis, **node_kwargs)
    assert isinstance(client, SentinelRedis)
    client.sentinel = sentinel
    client.target = target
    return client
