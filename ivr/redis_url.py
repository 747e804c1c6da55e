"""Is ``REDIS_URL`` a URL ivr can open, and what does a Sentinel URL say? Sans-I/O; messages never show a
password.

redis-py only says "Redis URL must specify one of the following schemes" from deep inside the server's
start-up, so a ``REDIS_URL=localhost:6379`` crashed ``ivr serve`` with a traceback. The settings check the
URL up front with :func:`redis_url_problem` and name the corrected URL to use instead.

redis-py has no URL form for Redis Sentinel, so ivr defines one (docs/redis.md, "Sentinel")::

    redis+sentinel://[user:password@]host1[:port][,host2[:port]…]/<service-name>[/<db>][?sentinel_password=…]
    rediss+sentinel://…   (TLS to the sentinels and to the primary)

The port of a sentinel defaults to 26379; ``user:password`` are the credentials of the data nodes (primary
and replicas), ``sentinel_password`` those of the sentinels when they have their own.
:func:`parse_sentinel_url` turns such a URL into a :class:`SentinelURL`; :func:`ivr.store.client.open_redis`
opens it.

Nor has it one for Redis Cluster; ivr's (docs/redis.md, "Cluster") names some of the cluster's nodes, from
which the client learns the rest::

    redis+cluster://[user:password@]host1[:port][,host2[:port]…][/0]
    rediss+cluster://…   (TLS to every node)

A node's port defaults to 6379; a Cluster has only database 0, so any other is refused (a URL that names
one was meant for a single server). Why a scheme rather than a flag beside ``REDIS_URL``: the URL alone says
how to reach the data, so every consumer of ``REDIS_URL`` (the servers, ``ivr approvals``/``operators``/
``data``, the demo) opens it the same way, and a host list cannot be mistaken for one server.
:func:`parse_cluster_url` turns it into a :class:`ClusterURL`.

The parsers live here rather than beside the factory so that checking the settings does not import the Redis
client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = [
    "CLUSTER_SCHEMES",
    "DEFAULT_CLUSTER_PORT",
    "DEFAULT_SENTINEL_PORT",
    "SCHEMES",
    "SENTINEL_SCHEMES",
    "ClusterURL",
    "RedisURLError",
    "SentinelURL",
    "is_cluster_url",
    "is_sentinel_url",
    "masked",
    "parse_cluster_url",
    "parse_sentinel_url",
    "redis_url_problem",
]

#: Schemes redis-py's ``from_url`` accepts.
SCHEMES = ("redis", "rediss", "unix")
#: Schemes of a Redis reached through Sentinel (ivr's own; ``rediss+`` is TLS).
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
#: The port of a sentinel when the URL names none.
DEFAULT_SENTINEL_PORT = 26379
#: The query parameters a Sentinel URL may carry.
SENTINEL_QUERY = ("sentinel_password",)
#: Schemes of a Redis Cluster (ivr's own; ``rediss+`` is TLS).
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
#: The port of a cluster node when the URL names none.
DEFAULT_CLUSTER_PORT = 6379

_USAGE = "redis://host:6379/0 (rediss:// for TLS, unix:///path/to/redis.sock for a socket)"
_SENTINEL_EXAMPLE = "redis+sentinel://host:26379/mymaster"
_CLUSTER_EXAMPLE = "redis+cluster://node1:6379,node2:6379,node3:6379"
_SECRET_QUERY = re.compile(r"(?i)([?&][^=&#]*password[^=&#]*=)[^&#]*")


class RedisURLError(ValueError):
    """A ``REDIS_URL`` that cannot work; ``str()`` names the problem and the form to use, never a password."""


class _Problem(Protocol):
    """The error factory a parser hands its helpers: the problem, then the form expected."""

    def __call__(self, what: str, expected: str = ..., /) -> RedisURLError: ...


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``redis+sentinel://`` / ``rediss+sentinel://`` URL.

    ``sentinels`` are ``(host, port)`` pairs in the URL's order (redis-py asks them in turn); ``username``
    and ``password`` authenticate to the data nodes, ``sentinel_password`` to the sentinels. The passwords
    are left out of ``repr()`` so that logging the object never shows them.
    """

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
    tls: bool = False

    @property
    def scheme(self) -> str:
        return "rediss+sentinel" if self.tls else "redis+sentinel"

    def describe(self) -> str:
        """Where the URL leads, without credentials: ``sentinels h1:26379,h2:26379, service m, db 0``."""
        hosts = ",".join(_host_port(host, port) for host, port in self.sentinels)
        tls = " (TLS)" if self.tls else ""
        return f"sentinels {hosts}, service {self.service}, db {self.db}{tls}"


@dataclass(frozen=True)
class ClusterURL:
    """A parsed ``redis+cluster://`` / ``rediss+cluster://`` URL.

    ``nodes`` are ``(host, port)`` pairs in the URL's order: the client asks them for the cluster's layout
    (any one that answers will do) and then talks to every primary. ``username`` and ``password``
    authenticate to every node; the password is left out of ``repr()``.
    """

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False

    @property
    def scheme(self) -> str:
        return "rediss+cluster" if self.tls else "redis+cluster"

    def describe(self) -> str:
        """Where the URL leads, without credentials: ``cluster nodes h1:6379,h2:6379``."""
        hosts = ",".join(_host_port(host, port) for host, port in self.nodes)
        tls = " (TLS)" if self.tls else ""
        return f"cluster nodes {hosts}{tls}"


def is_cluster_url(url: str) -> bool:
    """Does ``url`` use one of :data:`CLUSTER_SCHEMES` (any letter case)?"""
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme.lower() in CLUSTER_SCHEMES


def is_sentinel_url(url: str) -> bool:
    """Does ``url`` use one of :data:`SENTINEL_SCHEMES` (any letter case)?"""
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme.lower() in SENTINEL_SCHEMES


def masked(text: str) -> str:
    """``text`` with every password replaced by ``***``: that of a ``user:password@`` part and the value of
    any query parameter whose name contains ``password`` (``sentinel_password=…``, redis-py's ``password=…``).

    The query is masked first, so an ``@`` inside a password there cannot be mistaken for the end of the
    userinfo; when in doubt more is hidden, never less.
    """
    text = _SECRET_QUERY.sub(r"\1***", text)
    scheme, sep, rest = text.rpartition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return text
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse a Sentinel URL; :class:`RedisURLError` says what is wrong (naming the URL with its passwords
    masked) and which form to use."""
    shown = masked(url)

    def problem(what: str, expected: str = _SENTINEL_EXAMPLE) -> RedisURLError:
        return RedisURLError(f"REDIS_URL={shown!r}: {what}; expected {expected}")

    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SENTINEL_SCHEMES:
        raise problem("not a Sentinel URL (it must start with redis+sentinel:// or rediss+sentinel://)")
    rest, hash_, _fragment = rest.partition("#")
    if hash_:
        raise problem("a Sentinel URL takes no #fragment")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon and secret else None
    sentinels = _parse_hosts(hostlist, problem, noun="sentinel", default_port=DEFAULT_SENTINEL_PORT)
    parts = path.split("/") if slash else []
    if parts and parts[-1] == "":
        parts.pop()  # a trailing slash: redis+sentinel://h/mymaster/
    if not parts or not parts[0]:
        raise problem("no service name after the host list")
    service = unquote(parts[0])
    if any(ch.isspace() for ch in service):
        raise problem(f"the service name {service!r} contains whitespace")
    if len(parts) > 2:
        raise problem(
            f"too many path parts after the host list ({'/'.join(parts)!r}); only /<service-name>[/<db>]",
            "redis+sentinel://host:26379/mymaster/0",
        )
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise problem(
                f"the database {parts[1]!r} after the service name is not a number",
                "redis+sentinel://host:26379/mymaster/0",
            )
        db = int(parts[1])
    sentinel_password = _parse_query(query, problem)
    return SentinelURL(
        sentinels=sentinels,
        service=service,
        db=db,
        username=username,
        password=password,
        sentinel_password=sentinel_password,
        tls=scheme.lower() == "rediss+sentinel",
    )


def parse_cluster_url(url: str) -> ClusterURL:
    """Parse a Cluster URL; :class:`RedisURLError` says what is wrong (naming the URL with its password
    masked) and which form to use."""
    shown = masked(url)

    def problem(what: str, expected: str = _CLUSTER_EXAMPLE) -> RedisURLError:
        return RedisURLError(f"REDIS_URL={shown!r}: {what}; expected {expected}")

    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in CLUSTER_SCHEMES:
        raise problem("not a Cluster URL (it must start with redis+cluster:// or rediss+cluster://)")
    rest, hash_, _fragment = rest.partition("#")
    if hash_:
        raise problem("a Cluster URL takes no #fragment")
    rest, question, query = rest.partition("?")
    if question:
        raise problem(
            f"a Cluster URL takes no query parameters (got {masked('?' + query)!r}); put the password in "
            "the user:password@ part",
            "redis+cluster://:password@node1:6379,node2:6379",
        )
    netloc, _slash, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon and secret else None
    nodes = _parse_hosts(hostlist, problem, noun="node", default_port=DEFAULT_CLUSTER_PORT)
    path = path.rstrip("/")
    if path:
        if not path.isdigit():
            raise problem(
                f"{path!r} after the host list is not a database number (a Cluster URL names no service)",
                f"{_CLUSTER_EXAMPLE}/0",
            )
        if int(path) != 0:
            raise problem(
                f"database {int(path)} is not available: Redis Cluster has only database 0",
                f"{_CLUSTER_EXAMPLE}/0",
            )
    return ClusterURL(
        nodes=nodes, username=username, password=password, tls=scheme.lower() == "rediss+cluster"
    )


def redis_url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as ``REDIS_URL`` and the URL to use instead, or None when it is usable."""
    shown = masked(url)
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in SENTINEL_SCHEMES + CLUSTER_SCHEMES:
        try:
            (parse_sentinel_url if scheme.lower() in SENTINEL_SCHEMES else parse_cluster_url)(url)
        except RedisURLError as exc:
            return str(exc)
        return None
    if not sep or scheme.lower() not in SCHEMES:
        guess = masked(rest if sep else url).strip("/")
        suggestion = f"redis://{guess}" if guess else _USAGE
        return (
            f"REDIS_URL={shown!r} is not a Redis URL: it must start with redis://, rediss:// or unix:// "
            "(redis+sentinel:// or rediss+sentinel:// for Sentinel, redis+cluster:// or rediss+cluster:// "
            f"for Cluster); use {suggestion}"
        )
    try:
        parts = urlsplit(url)
        if scheme.lower() != "unix" and "," in parts.netloc.rpartition("@")[2]:
            hosts = parts.netloc.rpartition("@")[2]
            names = ",".join(h.rpartition(":")[0] if h.count(":") == 1 else h for h in hosts.split(","))
            return (
                f"REDIS_URL={shown!r} lists several hosts ({hosts}), which a {scheme}:// URL cannot: for "
                f"Redis Sentinel use {scheme.lower()}+sentinel://{names}/<service-name> with the sentinels' "
                f"addresses (their port defaults to 26379); for Redis Cluster use "
                f"{scheme.lower()}+cluster://{hosts} with some of its nodes"
            )
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number from 0 to 65535
    except ValueError as exc:
        return f"REDIS_URL={shown!r} is not a valid URL ({exc}); use {_USAGE}"
    if scheme.lower() == "unix" and not parts.path:
        return f"REDIS_URL={shown!r} names no socket path; use unix:///path/to/redis.sock"
    return None


# -- internals ----------------------------------------------------------------------------------------------


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_hosts(
    hostlist: str, problem: _Problem, *, noun: str, default_port: int
) -> tuple[tuple[str, int], ...]:
    """``h1[:port],[::1]:port,…`` → ``((host, port), …)``, the port defaulting to ``default_port``; ``noun``
    ("sentinel", "node") names an entry in messages."""
    if not hostlist:
        after = "before the service name" if noun == "sentinel" else "in the host list"
        raise problem(f"no {noun} host {after}")
    ipv6 = f"[::1]:{default_port}"
    hosts: list[tuple[str, int]] = []
    for position, item in enumerate(hostlist.split(","), start=1):
        if not item:
            raise problem(f"{noun} number {position} in the host list {hostlist!r} is empty")
        if item.startswith("["):
            host, bracket, after = item[1:].partition("]")
            if not bracket or not host:
                raise problem(f"the IPv6 address in {item!r} is not closed with ']'", ipv6)
            if after and not after.startswith(":"):
                raise problem(f"unexpected {after!r} after the IPv6 address in {item!r}", ipv6)
            port_text = after[1:] if after else None
        else:
            host, colon, port_text_raw = item.partition(":")
            if ":" in port_text_raw:
                raise problem(f"{noun} {item!r} has more than one ':' (an IPv6 address goes in brackets)")
            port_text = port_text_raw if colon else None
            if not host:
                raise problem(f"{noun} {item!r} has no host name before the ':'")
        port = default_port
        if port_text is not None:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise problem(f"the port {port_text!r} of {noun} {item!r} is not a number from 1 to 65535")
            port = int(port_text)
        hosts.append((unquote(host), port))
    return tuple(hosts)


def _parse_query(query: str, problem: _Problem) -> str | None:
    """The ``sentinel_password`` of the query (None when absent); anything else is refused."""
    if not query:
        return None
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise problem("the query after '?' is not name=value pairs joined by '&'") from None
    found: dict[str, str] = {}
    for name, value in pairs:
        if name not in SENTINEL_QUERY:
            raise problem(
                f"unknown query parameter {name!r} (a Sentinel URL accepts only sentinel_password)",
                f"{_SENTINEL_EXAMPLE}?sentinel_password=…",
            )
        if name in found:
            raise problem(f"the query parameter {name!r} is given twice")
        if not value:
            raise problem(f"the query parameter {name!r} is empty")
        found[name] = value
    return found.get("sentinel_password")
