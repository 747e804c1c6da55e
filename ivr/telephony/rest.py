"""Live-call control through Twilio's REST API (hang up, redirect to a transfer).

The ``twilio`` client is synchronous (``requests``), so calls run in a worker thread. ``IVR_TWILIO_API_BASE``
can point the client at a regional proxy or a local stand-in: requests keep their path and query and go
to that origin instead of ``https://api.twilio.com``.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit, urlunsplit

from twilio.base.exceptions import TwilioException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from ..logs import redact

log = logging.getLogger("ivr.twilio")


class TwilioRestError(Exception):
    pass


class _RebasedHttpClient(TwilioHttpClient):
    def __init__(self, base: str, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self._base = urlsplit(base)

    def request(self, method, url, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        parts = urlsplit(url)
        rebased = urlunsplit((self._base.scheme, self._base.netloc, parts.path, parts.query, ""))
        return super().request(method, rebased, *args, **kwargs)


class CallController:
    """Updates live calls. One per process; thread-safe because each call builds its own request."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        api_base: str = "https://api.twilio.com",
        timeout: float = 10.0,
    ) -> None:
        self.configured = bool(account_sid and auth_token)
        http_client = None
        if api_base.rstrip("/") != "https://api.twilio.com":
            http_client = _RebasedHttpClient(api_base, timeout)
        else:
            http_client = TwilioHttpClient(timeout=timeout)
        self._client = Client(account_sid or "AC" + "0" * 32, auth_token or "unset", http_client=http_client)

    async def hang_up(self, call_sid: str) -> None:
        await self._update(call_sid, status="completed")

    async def redirect(self, call_sid: str, twiml: str) -> None:
        await self._update(call_sid, twiml=twiml)

    async def _update(self, call_sid: str, **fields: str) -> None:
        if not self.configured:
            raise TwilioRestError(
                "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not set; cannot update the call"
            )

        def _do() -> None:
            self._client.calls(call_sid).update(**fields)

        try:
            await asyncio.to_thread(_do)
        except TwilioException as exc:
            raise TwilioRestError(redact(str(exc))) from None
        except OSError as exc:
            raise TwilioRestError(f"cannot reach the Twilio API: {redact(str(exc))}") from None
