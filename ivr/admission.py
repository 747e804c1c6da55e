"""Which media streams may run a call, and which clients are refused for a while (finding 1 of issue 9).

Twilio signs the media upgrade over a URL that is the same for every call, and its ``start`` message is not
signed at all. So a stream runs a call only with the per-call token the signed voice webhook handed out
(:mod:`ivr.telephony.stream_token`), for exactly the call sid, flow and numbers it was issued for, and a
call sid streams once: claimed in this process and in Redis, so on every instance. A client that keeps
failing Twilio's signature check is answered 429 for a while (:class:`~ivr.limits.FailureLimiter`). Every
refusal is counted (``stream_refused``, ``ivr_media_streams_refused_total{reason}``); docs/security.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Callable, Container
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from redis.exceptions import RedisError

from .limits import FailureLimiter
from .settings import Settings
from .state import RedisServices
from .store import reattach
from .store.keys import KeySchemaError
from .telephony import media_stream as tw
from .telephony.stream_token import (
    TOKEN_PARAMETER,
    OnceClaims,
    Refusal,
    StreamBinding,
    StreamTokens,
    derive_key,
)

__all__ = ["CLAIM_LEEWAY_S", "STREAM_CLAIM_TIMEOUT_S", "StreamAdmission", "client_address"]

log = logging.getLogger("ivr.app")

#: Longest wait for Redis to confirm a stream claim (beyond it, this instance's own claim holds).
STREAM_CLAIM_TIMEOUT_S = 0.5
#: Seconds a resumed stream waits for Redis to hand it the call (the caller hears silence meanwhile).
ADOPT_TIMEOUT_S = 2.0
#: A stream claim outlives its token by this much (clocks of a fleet's hosts drift a little).
CLAIM_LEEWAY_S = 30.0


class StreamAdmission:
    """Stream tokens, once-per-sid claims and the bad-signature limiter of one app instance.

    ``count`` bumps one of the instance's counters; ``live``: the sids of calls running here.
    """

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry,
        *,
        count: Callable[[str], None],
        services: RedisServices,
        live: Container[str],
    ) -> None:
        self.settings = settings
        self.services = services
        self._count = count
        self._live = live
        self._warned_unbound = False
        self.refused = Counter(
            "ivr_media_streams_refused",
            "Media streams closed (1008) before a call started, by reason (docs/security.md).",
            ["reason"],
            registry=registry,
        )
        #: Per-call media-stream tokens. Without any secret (only possible with IVR_VERIFY_SIGNATURES=false)
        #: a random key: tokens then verify on this process only.
        key = derive_key(settings.stream_secret, settings.twilio_auth_token) or secrets.token_bytes(32)
        self.tokens = StreamTokens(key, settings.stream_token_ttl_s)
        self.claims = OnceClaims()
        #: Clients that keep failing Twilio's signature check get 429 for a while.
        self.limiter = FailureLimiter(settings.signature_failure_limit, settings.signature_failure_window_s)

    def refuse(self, reason: str) -> None:
        """Count a stream refused before its call started (``stream_refused`` and the metric by reason)."""
        self._count("stream_refused")
        self.refused.labels(reason=reason).inc()

    def signature_failed(self, client: str) -> None:
        self._count("bad_signatures")
        now = time.monotonic()
        was_free = self.limiter.retry_after(client, now) is None
        self.limiter.failed(client, now)
        wait = self.limiter.retry_after(client, now)
        if was_free and wait is not None:  # once per block, not per refused request (no log flood)
            log.warning(
                "client %s sent %d bad Twilio signatures within %.0f s: answering 429 for %.0f s "
                "(IVR_SIGNATURE_FAILURE_LIMIT / IVR_SIGNATURE_FAILURE_WINDOW)",
                client,
                self.limiter.limit,
                self.limiter.window_s,
                wait,
            )

    def retry_after(self, client: str) -> int | None:
        """Whole seconds a client that failed signatures too often must wait; None when it may go on."""
        if not self.settings.verify_signatures:
            return None
        wait = self.limiter.retry_after(client, time.monotonic())
        return None if wait is None else max(1, math.ceil(wait))

    async def claim(self, call_sid: str, until: float, resume: int = 0) -> bool:
        """Claim ``call_sid`` for one stream (its ``resume``-th resumed one when > 0): here (always) and in
        Redis (when up), until ``until`` (wall clock). False when it was claimed already, on this instance or
        any other."""
        now = time.time()
        if not self.claims.claim(f"{call_sid}/{resume}" if resume else call_sid, until, now):
            return False
        redis = self.services.redis
        if redis is None:
            return True
        try:
            keys = self.services.keys
            key = keys.resumed_stream_claim(call_sid, resume) if resume else keys.stream_claim(call_sid)
            # The caller is waiting for the greeting: a Redis that does not answer must not delay it.
            async with asyncio.timeout(STREAM_CLAIM_TIMEOUT_S):
                claimed = await redis.set(
                    key, self.services.instance_id or "-", nx=True, ex=max(1, math.ceil(until - now))
                )
        except KeySchemaError:
            return True  # not a sid Redis can key (only reachable unbound, in dev mode): this process decides
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning(
                "call=%s stream claim not checked in Redis (%s); this instance's claim holds",
                call_sid,
                exc or type(exc).__name__,
            )
            return True
        return bool(claimed)

    async def admit(self, start: tw.Start) -> dict[str, str] | Refusal:
        """The call's parameters if this stream may run it, else why not.

        With signatures on, only a valid token from the signed webhook admits a stream, and then only the
        values it covers (flow, caller, called) are used. With IVR_VERIFY_SIGNATURES=false an unbound stream
        is admitted with a warning, with its ``start`` parameters (and the webhook's saved context). Either
        way a call sid streams once: never beside or instead of a live call.
        """
        now = time.time()
        verdict = self.tokens.verify(start.custom_parameters, start.call_sid, now)
        resume = 0
        if isinstance(verdict, StreamBinding):
            params = verdict.parameters()
            resume = verdict.resume
            until = self.tokens.expires_at(start.custom_parameters[TOKEN_PARAMETER]) + CLAIM_LEEWAY_S
        elif self.settings.verify_signatures:
            return verdict
        else:
            # Loudly once per instance (load tests run this way), then quietly for each call.
            level = logging.DEBUG if self._warned_unbound else logging.WARNING
            self._warned_unbound = True
            self._count("unbound_streams")
            log.log(
                level,
                "call=%r: accepting an unbound media stream (%s) because IVR_VERIFY_SIGNATURES=false",
                start.call_sid[:40],
                verdict.reason,
            )
            params = {k: v for k, v in start.custom_parameters.items() if k != TOKEN_PARAMETER}
            if "flow" not in params and self.services.calls is not None:
                with contextlib.suppress(RedisError, OSError, KeySchemaError):
                    params.update(await self.services.calls.load_context(start.call_sid) or {})
            until = now + self.settings.stream_token_ttl_s + CLAIM_LEEWAY_S
        if start.call_sid in self._live:
            return Refusal("replayed", "this call sid is live on this instance")
        if not await self.claim(start.call_sid, until, resume):
            return Refusal("replayed", "this call sid already had its media stream")
        if resume:
            return await self._adopt(start.call_sid, resume, params)
        return params

    async def _adopt(self, call_sid: str, resume: int, params: dict[str, str]) -> dict[str, str] | Refusal:
        """A resumed stream: take the call over from the instance it dropped with (ivr.store.reattach)."""
        redis, me = self.services.redis, self.services.instance_id
        if redis is None or not me:
            return Refusal("not_resumable", "resuming a call needs Redis")
        try:
            async with asyncio.timeout(ADOPT_TIMEOUT_S):
                adoption = await reattach.adopt(redis, self.services.keys, call_sid, me, resume)
        except (RedisError, OSError, TimeoutError) as exc:
            return Refusal("not_resumable", f"Redis did not answer ({exc or type(exc).__name__})")
        if not adoption.adopted:
            return Refusal("not_resumable", f"stream {resume} cannot resume the call: {adoption.why}")
        log.info("call=%s resumed here (stream %d; it was on %s)", call_sid, resume, adoption.previous or "?")
        return {**params, "resumed_from": adoption.previous}


def client_address(address: Any) -> str:
    """The peer's address, the key of the signature-failure limiter (uvicorn resolves X-Forwarded-For for
    the proxies it trusts: ``FORWARDED_ALLOW_IPS``)."""
    return str(address.host) if address is not None and address.host else "unknown"
