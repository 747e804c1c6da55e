"""Point the real ``twilio`` SDK at a local stand-in (PROTOCOLS.md §5.4).

Why: ``edge``/``region`` only rewrite ``*.twilio.com`` host names, so the only way to send the SDK's real
requests to 127.0.0.1 is an HTTP client that swaps scheme and host while keeping path and query. Tests use
these to prove that what the SDK puts on the wire is what the fake Twilio REST API accepts.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

__all__ = ["LocalAsyncTwilioHttpClient", "LocalTwilioHttpClient", "local_twilio_client", "rebase_url"]


def rebase_url(url: str, base: str) -> str:
    """``url`` with the scheme and host of ``base`` (e.g. https://api.twilio.com/... → http://127.0.0.1:P/...)."""
    target, origin = urlsplit(url), urlsplit(base)
    if not origin.scheme or not origin.netloc:
        raise ValueError(f"base URL {base!r} needs a scheme and host, e.g. http://127.0.0.1:8080")
    return urlunsplit((origin.scheme, origin.netloc, target.path, target.query, ""))


class LocalTwilioHttpClient(TwilioHttpClient):
    """Blocking SDK HTTP client that sends every request to ``base`` instead of *.twilio.com."""

    def __init__(self, base: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base = base

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        return super().request(method, rebase_url(url, self.base), *args, **kwargs)


class LocalAsyncTwilioHttpClient(AsyncTwilioHttpClient):
    """aiohttp SDK client for ``*_async`` calls; create it in a running loop and ``close()`` it.

    The SDK hands credentials to ``aiohttp.BasicAuth``, which aiohttp 3.14 deprecates with a warning (fatal
    under ``-W error``); this client sends the identical ``Authorization: Basic`` header itself instead.
    """

    def __init__(self, base: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base = base

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers = {**(headers or {}), "Authorization": f"Basic {token}"}
        return await super().request(
            method, rebase_url(url, self.base), params, data, headers, None, timeout, allow_redirects
        )


def local_twilio_client(
    account_sid: str, auth_token: str, base: str, *, asynchronous: bool = False
) -> Client:
    """A real ``twilio.rest.Client`` whose requests all reach ``base`` (a FakeTwilioRest ``base_url``)."""
    http: TwilioHttpClient | AsyncTwilioHttpClient
    http = LocalAsyncTwilioHttpClient(base) if asynchronous else LocalTwilioHttpClient(base)
    return Client(account_sid, auth_token, http_client=http)
