"""Is ``REDIS_URL`` a URL redis-py can open? Sans-I/O; messages never show the URL's password.

redis-py only says "Redis URL must specify one of the following schemes" from deep inside the server's
start-up, so a ``REDIS_URL=localhost:6379`` crashed ``ivr serve`` with a traceback. The settings check the
URL up front with :func:`redis_url_problem` and name the corrected URL to use instead.
"""

from __future__ import annotations

from urllib.parse import urlsplit

#: Schemes redis-py's ``from_url`` accepts.
SCHEMES = ("redis", "rediss", "unix")
_USAGE = "redis://host:6379/0 (rediss:// for TLS, unix:///path/to/redis.sock for a socket)"


def masked(text: str) -> str:
    """``text`` with the password of a ``user:password@`` part replaced by ``***``."""
    scheme, sep, rest = text.rpartition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return text
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


def redis_url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as ``REDIS_URL`` and the URL to use instead, or None when it is usable."""
    shown = masked(url)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        guess = masked(rest if sep else url).strip("/")
        suggestion = f"redis://{guess}" if guess else _USAGE
        return (
            f"REDIS_URL={shown!r} is not a Redis URL: it must start with redis://, rediss:// or unix://; "
            f"use {suggestion}"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number from 0 to 65535
    except ValueError as exc:
        return f"REDIS_URL={shown!r} is not a valid URL ({exc}); use {_USAGE}"
    if scheme.lower() == "unix" and not parts.path:
        return f"REDIS_URL={shown!r} names no socket path; use unix:///path/to/redis.sock"
    return None
