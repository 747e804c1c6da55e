"""The media stream endpoint: Twilio's ``/twilio/media`` socket, from the upgrade to the call's end.

The socket reaches it through :class:`ivr.telephony.media_socket.MediaSocket`: on ``ivr serve`` a lean
sans-I/O socket with no ASGI in between (the hot path of every call), under any other ASGI server Starlette's
``WebSocket``. What happens here is the same on both.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from .call.registry import CallRecord
from .call.resume import Resumed, history_from_store
from .call.session import CallSession
from .logs import redact
from .store import reattach
from .telephony import media_stream as tw
from .telephony.media_socket import BINARY, TOO_BIG, MediaSocket
from .telephony.stream_token import RESUME_PARAMETER, Refusal

if TYPE_CHECKING:
    from .app import AppState

log = logging.getLogger("ivr.app")

#: How long we wait for Twilio's ``connected``/``start`` after accepting the media socket.
START_TIMEOUT_S = 10.0
#: Seconds a resumed call waits for its history from Redis (the caller hears silence meanwhile).
RESUME_READ_TIMEOUT_S = 2.0


async def serve_media(ws: MediaSocket, state: AppState) -> None:
    """One media stream, from the upgrade to the call's end: signature, rate limit, ``start``, admission,
    the call. Runs on either carrier of the socket (ivr.telephony.media_socket)."""
    signed = not state.settings.verify_signatures or state.signatures.valid(
        state.settings.media_stream_url, {}, ws.headers.get("x-twilio-signature")
    )
    client = ws.client_host or "unknown"
    wait = state.admission.retry_after(client) if not signed else None  # blocked by its earlier failures?
    if not signed:
        state.admission.signature_failed(client)
    if wait is not None:
        state.count("rate_limited")
        state.admission.refuse("rate_limited")
        log.debug("refused a media stream: too many bad signatures from this client; retry in %d s", wait)
        await ws.deny(
            429, f"too many requests with a bad signature; retry in {wait} s\n", {"Retry-After": str(wait)}
        )
        return
    await ws.accept()
    if not signed:
        state.admission.refuse("bad_signature")
        log.warning("refused a media stream: invalid or missing x-twilio-signature")
        await ws.close(1008, "invalid signature")
        return
    start = await _await_start(ws, state)
    if start is None:
        return
    params = await state.admission.admit(start)
    if isinstance(params, Refusal):
        state.admission.refuse(params.reason)
        log.warning(
            "refused a media stream for call=%r: %s (%s); closing 1008",
            start.call_sid[:40],
            params.reason,
            params.detail,
        )
        await ws.close(1008, params.reason)
        return
    await _run_call(ws, start, state, params)


async def _too_big(ws: MediaSocket, state: AppState, where: str) -> None:
    state.count("ws_message_too_big")
    log.warning(
        "closed a media stream (1009): a message %s was over %d bytes (IVR_MAX_WS_MESSAGE_BYTES)",
        where,
        state.settings.max_ws_message_bytes,
    )
    await ws.close(1009, "message too big")


async def _await_start(ws: MediaSocket, state: AppState) -> tw.Start | None:
    """Read until Twilio's ``start`` (tolerating junk before it); None if the socket closed or timed out."""
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            while True:
                raw = await ws.receive(state.settings.max_ws_message_bytes)
                if raw is None:
                    return None
                if raw == TOO_BIG:
                    await _too_big(ws, state, "before start")
                    return None
                msg = tw.parse(raw) if raw != BINARY else tw.Malformed("binary frame", "")
                if isinstance(msg, tw.Start):
                    return msg
                if isinstance(msg, tw.Malformed):
                    state.count("malformed_twilio")
                    log.warning("ignored a malformed message before start: %s", msg.reason)
    except TimeoutError:
        log.warning("media stream sent no start within %.0f s; closing", START_TIMEOUT_S)
        state.admission.refuse("no_start")
        await ws.close(1008, "no start message")
        return None


#: Stream ``<Parameter>``s that are not the flow's call context.
_NOT_CONTEXT = frozenset({"flow", "caller", "called", RESUME_PARAMETER, "resumed_from"})


def _releaser(state: AppState, call_sid: str) -> Callable[[], Awaitable[bool]] | None:
    """What marks the call closed on purpose in Redis when it ends here (ivr.store.reattach.release)."""
    services = state.services
    redis, me = services.redis, services.instance_id
    if redis is None or not me or not state.settings.resume_calls:
        return None
    keys = services.keys

    async def release() -> bool:
        return await reattach.release(redis, keys, call_sid, me)

    return release


async def _resumed(state: AppState, call_sid: str, params: dict[str, str]) -> Resumed:
    """A call adopted from an instance that died: its stage, start and conversation, from Redis."""
    number = int(params.get(RESUME_PARAMETER, "0") or 0)
    previous = params.get("resumed_from", "")
    calls = state.services.calls
    if calls is None:
        return Resumed(number, previous)
    try:
        async with asyncio.timeout(RESUME_READ_TIMEOUT_S):
            stored = await calls.get_call(call_sid) or {}
            transcript = await calls.get_transcript(call_sid)
            events = await calls.get_events(call_sid)
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("call=%s resumed without its history: Redis did not answer (%s)", call_sid, exc)
        return Resumed(number, previous)
    started = stored.get("started_at")
    return Resumed(
        number,
        previous,
        history=history_from_store(transcript, events),
        stage=str(stored.get("stage") or "") or None,
        started_at=float(started) if isinstance(started, int | float) else None,
    )


async def _run_call(ws: MediaSocket, start: tw.Start, state: AppState, params: dict[str, str]) -> None:
    started_at = time.perf_counter()  # Twilio's start is in: the greeting's time to first audio runs from now
    settings = state.settings
    flow = state.flows.get(params.get("flow", "")) or state.flows.for_number(params.get("called", ""))
    resumed = await _resumed(state, start.call_sid, params) if params.get(RESUME_PARAMETER) else None
    record = CallRecord(
        call_sid=start.call_sid,
        account_sid=start.account_sid,
        stream_sid=start.stream_sid,
        flow_id=flow.id,
        caller=params.get("caller", ""),
        called=params.get("called", ""),
    )
    if resumed is not None and resumed.started_at:
        record.started_at = resumed.started_at
    feed = state.calls.open(record, state.services.sink(record) if state.services.calls else None)
    context = flow.call_context(
        caller_number=record.caller,
        called_number=record.called,
        call_sid=record.call_sid,
        now=datetime.now(UTC),
        parameters={k: v for k, v in params.items() if k not in _NOT_CONTEXT},
    )

    async def close(code: int) -> None:
        await ws.close(code)

    try:
        services = state.services
        session = CallSession(
            settings=settings,
            flow=flow,
            start=start,
            record=record,
            feed=feed,
            send_twilio=ws.send,
            close_twilio=close,
            controller=state.controller,
            context=context,
            gate=services.gate,
            redis=services.redis,
            keys=services.keys if services.redis is not None else None,
            metrics=state.metrics,
            started_at=started_at,
            resumed=resumed,
            release=_releaser(state, start.call_sid),
        )
    except ValueError as exc:  # a flow whose settings the model session cannot take
        log.error("call=%s cannot start: %s", start.call_sid, exc)
        state.metrics.call_started(flow.id, "none")
        state.metrics.call_ended(flow.id, "configuration-error")
        record.outcome, record.ended_at = "configuration-error", record.started_at
        feed.emit("call.ended", outcome=record.outcome)
        state.calls.close(start.call_sid)
        await close(1011)
        return
    state.sessions[start.call_sid] = session
    if resumed is not None and state.services.calls is not None:
        state.services.calls.call_updated(
            start.call_sid, {"stream_sid": start.stream_sid, "model": record.model, "engine": record.engine}
        )
    try:
        await session.begin()
        # Whoever ends the call from elsewhere (hang-up, status callback, drain) also closes this socket,
        # so a plain receive loop is enough: no per-message futures on the hot path.
        receive, limit = ws.receive, settings.max_ws_message_bytes
        while not session.ended.is_set():
            raw = await receive(limit)
            if raw is None:
                log.info("call=%s media socket closed by Twilio", start.call_sid)
                break
            if raw == TOO_BIG:
                record.count("ws_message_too_big")
                await _too_big(ws, state, "during the call")
                break
            msg = tw.parse(raw) if raw != BINARY else tw.Malformed("binary frame", "")
            await session.on_twilio(msg)
    except Exception as exc:  # a bug must not leave the model socket open or the record unfinished
        log.exception("call=%s failed: %s", start.call_sid, redact(repr(exc)))
        record.count("internal_errors")
    finally:
        await session.finish("completed")
        state.sessions.pop(start.call_sid, None)
        state.call_finished(record)
        state.calls.close(start.call_sid)
        await close(1000)
