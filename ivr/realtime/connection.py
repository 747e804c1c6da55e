"""Opening the model WebSocket: URL, headers, the connect call, its errors, and the reconnect policy.

Only :func:`open_realtime` does I/O; it opens :class:`~ivr.realtime.transport.RealtimeSocket` (our lean shell
over the ``websockets`` sans-I/O client) with the options the OpenAI SDK uses (no message size limit, no
compression) plus no proxy, and it turns every way a connect can fail into one :class:`RealtimeConnectError`
whose message says what failed and what to check. The API key is never part of any message.
:class:`LinkFailures` is the sans-I/O reconnect policy: it counts a call's failures over a window (a
handshake that then closes is a failure too), returns the wait before the next attempt (the caller sleeps)
and says when to give up.
"""

from __future__ import annotations

import logging
import random
import re
import socket
import ssl
from collections import deque
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from ivr.logs import RedactingFilter
from ivr.realtime.dialect import Dialect
from ivr.realtime.transport import RealtimeSocket, connect_realtime

AZURE_HOST_SUFFIXES: tuple[str, ...] = (
    ".openai.azure.com",
    ".cognitiveservices.azure.com",
    ".services.ai.azure.com",
)
USER_AGENT = "ivr-phone-agent (Python websockets)"
#: websockets logs handshake headers (the Authorization header among them) at DEBUG level; its records go
#: through this logger, whose filter scrubs secrets before any handler sees them.
_WS_LOG = logging.getLogger("ivr.realtime.ws")
_WS_LOG.addFilter(RedactingFilter())


class RealtimeConnectError(Exception):
    """The model socket could not be opened. ``status`` is the HTTP status when the server answered."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def realtime_ws_url(base_url: str, model: str) -> str:
    """The URL to dial: ``base_url`` with ``model=<model>`` added to its query.

    ``IVR_REALTIME_URL`` may already carry a query (Azure: ``?api-version=…&deployment=…``); the model is
    appended to it, the existing text is kept byte for byte, and a ``model`` already present wins.
    """
    parts = urlsplit(base_url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(
            f"realtime URL {_safe_url(base_url)!r} must be ws:// or wss:// with a host (IVR_REALTIME_URL)"
        )
    if not isinstance(model, str) or not model.strip():
        raise ValueError("realtime model name is empty (IVR_REALTIME_MODEL)")
    existing = parse_qsl(parts.query, keep_blank_values=True)
    if any(key == "model" for key, _ in existing):
        return urlunsplit(parts._replace(fragment=""))
    added = urlencode({"model": model.strip()})
    query = f"{parts.query}&{added}" if parts.query else added
    return urlunsplit(parts._replace(query=query, fragment=""))


def is_azure_host(url: str) -> bool:
    """True for Azure OpenAI / AI Foundry hosts, which authenticate with an ``api-key`` header."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    return any(host.endswith(suffix) for suffix in AZURE_HOST_SUFFIXES)


def realtime_headers(api_key: str, dialect: Dialect, url: str) -> dict[str, str]:
    """Handshake headers: Bearer auth (plus ``api-key`` on Azure hosts), and ``OpenAI-Beta`` for beta."""
    if not isinstance(api_key, str) or not api_key.strip():
        raise ValueError("the OpenAI API key is empty; set OPENAI_API_KEY")
    if any(ch in api_key for ch in "\r\n\0"):
        raise ValueError("the OpenAI API key contains a line break or NUL; check OPENAI_API_KEY")
    if dialect not in ("ga", "beta"):
        raise ValueError(f"dialect={dialect!r}: use 'ga' or 'beta'")
    key = api_key.strip()
    headers = {"Authorization": f"Bearer {key}"}
    if is_azure_host(url):
        headers["api-key"] = key
    if dialect == "beta":
        headers["OpenAI-Beta"] = "realtime=v1"
    return headers


_SENSITIVE_QUERY = re.compile(r"key|token|secret|sig|auth|password", re.IGNORECASE)
_KEY_LIKE = re.compile(r"\b(sk|rk|pk)-[A-Za-z0-9_\-\*]{4,}")


def _safe_url(url: str) -> str:
    """The URL for messages and logs: no user info, sensitive query values replaced by ``***``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        query = urlencode(
            [
                (k, "***" if _SENSITIVE_QUERY.search(k) else v)
                for k, v in parse_qsl(parts.query, keep_blank_values=True)
            ]
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return "<unparseable URL>"


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _KEY_LIKE.sub("***", text)


_STATUS_HINTS: dict[int, str] = {
    400: "the request was refused; check IVR_REALTIME_URL (path, api-version) and IVR_REALTIME_MODEL",
    401: "the API key was rejected; check OPENAI_API_KEY",
    403: "the API key may not use this model or endpoint; check OPENAI_API_KEY and IVR_REALTIME_MODEL",
    404: "no realtime endpoint or model there; check IVR_REALTIME_URL and IVR_REALTIME_MODEL",
    429: "rate limit or quota exceeded; check the account's usage and limits",
}


def _status_message(exc: InvalidStatus, where: str, secrets: list[str]) -> RealtimeConnectError:
    response = exc.response
    status = response.status_code
    hint = _STATUS_HINTS.get(status) or (
        "the model service had a server error; it is usually temporary, retry"
        if status >= 500
        else "check IVR_REALTIME_URL and OPENAI_API_KEY"
    )
    body = bytes(response.body or b"")[:300].decode("utf-8", "replace").strip()
    detail = f" Server said: {_redact(body, secrets)!r}." if body else ""
    reason = f" {response.reason_phrase}" if response.reason_phrase else ""
    return RealtimeConnectError(
        f"Realtime handshake with {where} was refused with HTTP {status}{reason}: {hint}.{detail}",
        status=status,
    )


async def open_realtime(url: str, headers: dict[str, str], *, open_timeout: float = 10.0) -> RealtimeSocket:
    """Open the model WebSocket, or raise :class:`RealtimeConnectError` saying why and what to check.

    The socket offers what the call session uses of ``websockets``' ``ClientConnection`` (``send``,
    ``async for``, ``recv``, ``close``, ``transport``) at a fraction of its cost per message.
    """
    where = _safe_url(url)
    secrets = [
        v.removeprefix("Bearer ").strip()
        for k, v in headers.items()
        if k.lower() in ("authorization", "api-key")
    ]
    try:
        return await connect_realtime(
            url,
            headers,
            open_timeout=open_timeout,
            user_agent=USER_AGENT,
            logger=_WS_LOG,
            max_size=None,
        )
    except InvalidStatus as exc:
        raise _status_message(exc, where, secrets) from None
    except InvalidURI:
        raise RealtimeConnectError(
            f"realtime URL {where!r} is not a valid WebSocket URL; check IVR_REALTIME_URL"
        ) from None
    except InvalidHandshake as exc:
        raise RealtimeConnectError(
            f"Realtime handshake with {where} failed ({type(exc).__name__}: {_redact(str(exc), secrets)}); "
            "check that IVR_REALTIME_URL points at a realtime WebSocket endpoint"
        ) from None
    except TimeoutError:
        raise RealtimeConnectError(
            f"connecting to {where} timed out after {open_timeout:g}s; "
            "check network access and IVR_REALTIME_URL"
        ) from None
    except socket.gaierror as exc:
        raise RealtimeConnectError(
            f"cannot resolve the host of {where} ({exc.strerror or exc}); check IVR_REALTIME_URL and DNS"
        ) from None
    except ssl.SSLError as exc:
        raise RealtimeConnectError(
            f"TLS with {where} failed ({exc.reason or exc}); "
            "check IVR_REALTIME_URL and the system CA certificates"
        ) from None
    except OSError as exc:
        raise RealtimeConnectError(
            f"cannot connect to {where} ({exc.strerror or exc}); check IVR_REALTIME_URL and network access"
        ) from None


class LinkFailures:
    """Failures of one call's model link over a sliding window — connect errors and drops alike — and the
    wait before the next attempt. Sans-I/O: the caller passes ``now`` (a monotonic clock) and sleeps.

    A handshake proves nothing: an endpoint that accepts and then hangs up (quota exhausted, a key refused
    behind a proxy) must count as a failure every time, or one call dials it thousands of times a second.
    So every failure is remembered for ``window_s`` seconds whether or not a socket had opened, and
    :meth:`failed` returns ``None`` (give up: fall back or apologise) once ``max_failures`` of them fall in
    the window, or once the link has been down for ``max_outage_s`` (the caller hears nothing meanwhile).
    The first failure after a working spell is retried at once; the next ones wait ``initial``, ×``factor``
    each, capped at ``max_delay``, scaled down by up to ``jitter`` (drawn from ``rng``) so that the calls
    of one shared outage do not all redial together. :meth:`healthy` ends an outage (the model answered);
    it does not forget failures, so a link that flaps is still given up on.
    """

    __slots__ = (
        "_down_since",
        "_failures",
        "_rng",
        "factor",
        "initial",
        "jitter",
        "max_delay",
        "max_failures",
        "max_outage_s",
        "window_s",
    )

    def __init__(
        self,
        max_failures: int = 6,
        *,
        window_s: float = 60.0,
        max_outage_s: float = 8.0,
        initial: float = 0.25,
        factor: float = 2.0,
        max_delay: float = 4.0,
        jitter: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 1:
            raise ValueError(f"LinkFailures max_failures={max_failures!r} must be a whole number >= 1")
        if not window_s > 0 or not max_outage_s > 0:
            raise ValueError(
                f"LinkFailures window_s={window_s!r} and max_outage_s={max_outage_s!r} must be > 0"
            )
        if not initial > 0 or not factor >= 1 or not max_delay >= initial:
            raise ValueError(
                f"LinkFailures delays: initial={initial!r} must be > 0, factor={factor!r} >= 1, "
                f"max_delay={max_delay!r} >= initial"
            )
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"LinkFailures jitter={jitter!r} must be between 0 and 1")
        self.max_failures = max_failures
        self.window_s = float(window_s)
        self.max_outage_s = float(max_outage_s)
        self.initial = float(initial)
        self.factor = float(factor)
        self.max_delay = float(max_delay)
        self.jitter = float(jitter)
        self._rng = rng if rng is not None else random.Random()
        self._failures: deque[float] = deque()
        self._down_since: float | None = None

    def _forget_old(self, now: float) -> None:
        while self._failures and now - self._failures[0] >= self.window_s:
            self._failures.popleft()

    def count(self, now: float) -> int:
        """Failures within the window ending at ``now``."""
        self._forget_old(now)
        return len(self._failures)

    @property
    def down(self) -> bool:
        """True from a failure until :meth:`healthy`."""
        return self._down_since is not None

    def failed(self, now: float) -> float | None:
        """Record a failure at ``now``: seconds to wait before the next attempt, or ``None`` to give up."""
        self._forget_old(now)
        self._failures.append(now)
        if self._down_since is None:
            self._down_since = now
        n = len(self._failures)
        if n >= self.max_failures or now - self._down_since >= self.max_outage_s:
            return None
        if n == 1:
            return 0.0
        nominal = min(self.max_delay, self.initial * self.factor ** min(n - 2, 64))
        delay = nominal * (1.0 - self.jitter * self._rng.random()) if self.jitter else nominal
        # Never wait past the outage limit: give the last attempt the time that is left.
        return min(delay, max(0.0, self._down_since + self.max_outage_s - now))

    def time_left(self, now: float, default: float) -> float:
        """How long the next attempt may take (its connect timeout): ``default``, or less during an outage."""
        if self._down_since is None:
            return default
        return max(0.5, min(default, self._down_since + self.max_outage_s - now))

    def outage_from(self, now: float) -> None:
        """The link is down from ``now`` unless an outage began earlier: a call whose model has not answered
        yet (its caller waits from the start, so the time before the first failure counts too)."""
        if self._down_since is None:
            self._down_since = now

    def healthy(self) -> None:
        """The model answered on the current socket: the outage (if any) is over."""
        self._down_since = None
