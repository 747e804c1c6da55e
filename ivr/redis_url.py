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
opens it. The parser lives here rather than beside the factory so that checking the settings does not import
the Redis client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = [
    "DEFAULT_SENTINEL_PORT",
    "SCHEMES",
    "SENTINEL_SCHEMES",
    "RedisURLError",
    "SentinelURL",
    "is_sentinel_url",
    "masked",
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

_USAGE = "redis://host:6379/0 (rediss:// for TLS, unix:///path/to/redis.sock for a socket)"
_SENTINEL_EXAMPLE = "redis+sentinel://host:26379/mymaster"
_SECRET_QUERY = re.compile(r"(?i)([?&][^=&#]*password[^=&#]*=)[^&#]*")


class RedisURLError(ValueError):
    """A ``REDIS_URL`` that cannot work; ``str()`` names the problem and the form to use, never a password."""


class _Problem(Protocol):
    """The error factory :func:`parse_sentinel_url` hands its helpers: the problem, then the form expected."""

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
    sentinels = _parse_hosts(hostlist, problem)
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


def redis_url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as ``REDIS_URL`` and the URL to use instead, or None when it is usable."""
    shown = masked(url)
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in SENTINEL_SCHEMES:
        try:
            parse_sentinel_url(url)
        except RedisURLError as exc:
            return str(exc)
        return None
    if not sep or scheme.lower() not in SCHEMES:
        guess = masked(rest if sep else url).strip("/")
        suggestion = f"redis://{guess}" if guess else _USAGE
        return (
            f"REDIS_URL={shown!r} is not a Redis URL: it must start with redis://, rediss:// or unix:// "
            f"(redis+sentinel:// or rediss+sentinel:// for Sentinel); use {suggestion}"
        )
    try:
        parts = urlsplit(url)
        if scheme.lower() != "unix" and "," in parts.netloc.rpartition("@")[2]:
            hosts = parts.netloc.rpartition("@")[2]
            names = ",".join(h.rpartition(":")[0] if h.count(":") == 1 else h for h in hosts.split(","))
            return (
                f"REDIS_URL={shown!r} lists several hosts ({hosts}), which a {scheme}:// URL cannot: for "
                f"Redis Sentinel use {scheme.lower()}+sentinel://{names}/<service-name> with the sentinels' "
                "addresses (their port defaults to 26379)"
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


def _parse_hosts(hostlist: str, problem: _Problem) -> tuple[tuple[str, int], ...]:
    """``h1[:port],[::1]:port,…`` → ``((host, port), …)``, the port defaulting to 26379."""
    if not hostlist:
        raise problem("no sentinel host before the service name")
    sentinels: list[tuple[str, int]] = []
    for position, item in enumerate(hostlist.split(","), start=1):
        if not item:
            raise problem(f"sentinel number {position} in the host list {hostlist!r} is empty")
        if item.startswith("["):
            host, bracket, after = item[1:].partition("]")
            if not bracket or not host:
                raise problem(f"the IPv6 address in {item!r} is not closed with ']'", "[::1]:26379")
            if after and not after.startswith(":"):
                raise problem(f"unexpected {after!r} after the IPv6 address in {item!r}", "[::1]:26379")
            port_text = after[1:] if after else None
        else:
            host, colon, port_text_raw = item.partition(":")
            if ":" in port_text_raw:
                raise problem(f"sentinel {item!r} has more than one ':' (an IPv6 address goes in brackets)")
            port_text = port_text_raw if colon else None
            if not host:
                raise problem(f"sentinel {item!r} has no host name before the ':'")
        port = DEFAULT_SENTINEL_PORT
        if port_text is not None:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise problem(f"the port {port_text!r} of sentinel {item!r} is not a number from 1 to 65535")
            port = int(port_text)
        sentinels.append((unquote(host), port))
    return tuple(sentinels)


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
