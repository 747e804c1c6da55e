"""The FastAPI application: Twilio webhooks, the media WebSocket, health and the operator API.

Routes (public contract, see README.md):

- ``POST /twilio/voice``   — voice webhook; answers ``<Connect><Stream>`` TwiML for the called number's flow.
- ``POST /twilio/status``  — call-status callback; records the call's end.
- ``WS   /twilio/media``   — Twilio Media Streams; one :class:`~ivr.call.session.CallSession` per stream.
- ``GET  /healthz``        — liveness; ``GET /readyz`` — 503 while draining.
- ``GET  /metrics``        — Prometheus metrics (docs/metrics.md); operators only, unless
  ``IVR_METRICS_PUBLIC=true``.
- ``GET  /api/calls``, ``GET /api/calls/{sid}``, ``GET /api/calls/{sid}/events`` (server-sent events) —
  operator API: ``Authorization: Bearer <token>`` (from ``ivr operators add``, or ``IVR_OPERATOR_TOKEN``) or
  a console session cookie; any role (:mod:`ivr.console.auth`).
- ``/ops/…``               — the operations console (:mod:`ivr.console.web`, docs/console.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import Depends, FastAPI, HTTPException, Request, WebSocket
from fastapi.responses import JSONResponse, Response, StreamingResponse
from redis.exceptions import RedisError
from starlette.datastructures import ImmutableMultiDict

from .admission import StreamAdmission, client_address
from .approvals.api import approvals_router
from .call.registry import CallRecord, CallRegistry
from .call.session import CallSession
from .console.auth import Auth
from .console.commands import Action
from .console.operators import Operator
from .console.web import console_router
from .flows import FlowSet
from .flows.hours import after_hours_decision
from .limits import BodyLimit
from .logs import mask_number
from .media_endpoint import serve_media
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .settings import Settings
from .state import RedisServices
from .store import reattach
from .store.keys import KeySchema, KeySchemaError
from .telephony.media_socket import MEDIA_PATH, StarletteMediaSocket
from .telephony.rest import CallController
from .telephony.signature import SignatureChecker
from .telephony.stream_token import (
    TOKEN_PARAMETER,
    StreamBinding,
)
from .telephony.twiml import connect_stream, dial, hang_up, say_and_hang_up
from .tools.datasets import load_missing as load_missing_datasets

log = logging.getLogger("ivr.app")

DRAINING_MESSAGE = "Sorry, we can't take your call right now. Please call again in a minute. Goodbye."
_TERMINAL_STATUSES = {"completed", "busy", "failed", "no-answer", "canceled"}
#: Seconds a draining instance stays up, after closing its last streams, for Twilio's <Connect action>.
ACTION_GRACE_S = 3.0
#: Seconds a draining instance waits for its writes to reach Redis before it hands its calls over.
HAND_OVER_FLUSH_S = 2.0
#: Seconds the ``<Connect action>`` handler waits for a live holder of the call to mark it closed on purpose
#: (an instance whose own socket dropped marks it within milliseconds; a killed one never does).
CLOSE_MARK_WAIT_S = 0.5
#: Ended calls whose record and events stay in this instance's memory (the rest are read from Redis).
KEEP_ENDED_CALLS = 50
#: A bootstrap admin token shorter than this draws a start-up warning.
MIN_OPERATOR_TOKEN = 24
#: An IVR_STREAM_SECRET shorter than this draws a start-up warning.
MIN_STREAM_SECRET = 32
#: Counters (the app's and each call's) that count errors: the heartbeat's ``errors`` (the fleet page).
ERROR_COUNTERS = (
    "bad_signatures",
    "stream_refused",
    "malformed_twilio",
    "unexpected_twilio",
    "malformed_model",
    "model_errors",
    "model_connect_failures",
    "internal_errors",
    "transfer_failures",
)


class AppState:
    """Everything the routes share; one per application instance."""

    def __init__(self, settings: Settings, flows: FlowSet) -> None:
        self.settings = settings
        self.flows = flows
        # Ended calls are in Redis (the API and the console read them there): keep only a few in memory.
        self.calls = CallRegistry(keep_ended=KEEP_ENDED_CALLS)
        self.sessions: dict[str, CallSession] = {}
        self.signatures = SignatureChecker(settings.twilio_auth_token)
        self.controller = CallController(
            settings.twilio_account_sid, settings.twilio_auth_token, settings.twilio_api_base
        )
        self.counters: dict[str, int] = {}
        self._ended_errors: dict[str, int] = {}
        self.services = RedisServices(settings, stats=self.instance_stats, on_command=self.on_command)
        #: Operators' tokens and console sessions; the store comes with the Redis services at start-up.
        self.auth = Auth(settings, lambda: self.services.operators)
        #: Prometheus metrics of this instance, in their own registry (GET /metrics).
        self.metrics = Metrics()
        self.metrics.bind(live_calls=lambda: len(self.calls.live), writer=lambda: self.services.writer)
        #: Which media streams may run a call (tokens, once-per-sid claims, the bad-signature limiter).
        self.admission = StreamAdmission(
            settings, self.metrics.registry, count=self.count, services=self.services, live=self.sessions
        )
        #: Set by the server running the app (:class:`ivr.server.DrainingServer`): start its SIGTERM drain.
        self.drain_hook: Callable[[], None] | None = None
        #: Calls whose stream the drain closed: set once their ``<Connect action>`` was answered here.
        self.actions_answered: dict[str, asyncio.Event] = {}
        self._drain_task: asyncio.Future[bool] | None = None

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def call_finished(self, record: CallRecord) -> None:
        """Fold an ended call's error counters into the instance's (the heartbeat's ``errors``)."""
        for name in ERROR_COUNTERS:
            if record.counters.get(name):
                self._ended_errors[name] = self._ended_errors.get(name, 0) + record.counters[name]

    def error_counters(self) -> dict[str, int]:
        """Errors since start-up: the app's own (bad signatures…) plus every call's, ended or live."""
        live = [session.record.counters for session in self.sessions.values()]
        return {
            name: self.counters.get(name, 0)
            + self._ended_errors.get(name, 0)
            + sum(counters.get(name, 0) for counters in live)
            for name in ERROR_COUNTERS
        }

    def instance_stats(self) -> dict[str, Any]:
        """This instance's figures for its Redis heartbeat (the console's fleet page)."""
        return {
            "live_calls": len(self.calls.live),
            "draining": self.calls.draining,
            "errors": self.error_counters(),
        }

    async def on_command(self, call_sid: str, action: Action, by: str) -> None:
        """An operator command from the console (through Redis) for a call this instance may run."""
        session = self.sessions.get(call_sid)
        if session is None:
            log.info("call=%s %s by %s: the call is not live on this instance (ended?)", call_sid, action, by)
            return
        if action == "hangup":
            await session.operator_hangup(by)
        else:
            await session.operator_transfer(by)

    def request_drain(self) -> bool:
        """Start draining as SIGTERM does (``POST /api/drain``, ``ivr drain``); False if already draining.

        Under ``ivr serve`` the server drains and then exits, exactly as after SIGTERM (:attr:`drain_hook`);
        an app served some other way drains and keeps serving its health and operator endpoints.
        """
        if self.calls.draining or self._drain_task is not None:
            return False
        if self.drain_hook is not None:
            self.drain_hook()
        else:
            self._drain_task = asyncio.ensure_future(self.drain(self.settings.drain_timeout_s))
        self.calls.draining = True  # /readyz answers 503 from now on, whoever runs the drain
        return True

    async def drain(self, timeout: float) -> bool:
        """Stop taking calls; let live ones finish, then hand the rest over to other instances (or end them).
        True if all ended on their own."""
        self.calls.draining = True
        self.services.beat_now()  # the fleet page shows the draining at once
        log.info("draining: %d live call(s), waiting up to %.0f s", len(self.calls.live), timeout)
        finished = await self.calls.wait_idle(timeout)
        if not finished:
            sessions = list(self.sessions.values())
            answered = [self.actions_answered.setdefault(s.call_sid, asyncio.Event()) for s in sessions]
            if await self.can_hand_over():
                log.warning("drain timeout: handing %d live call(s) over to other instances", len(sessions))
                await self.hand_over(sessions)
            else:
                log.warning("drain timeout: ending %d call(s) still live", len(sessions))
                for session in sessions:
                    await session.end("server-shutdown", 1001)
            # Twilio asks the <Connect action> of each closed stream what next: stay up to answer it, when
            # it comes here (a call handed over usually asks another instance).
            if answered and self.settings.resume_calls:
                pending = [asyncio.ensure_future(event.wait()) for event in answered]
                await asyncio.wait(pending, timeout=ACTION_GRACE_S)
                for waiter in pending:
                    waiter.cancel()
        return finished

    async def can_hand_over(self) -> bool:
        """Live calls can move to another instance: resuming is on, the calls' state is in Redis, and
        another instance beats and is not draining itself (with none, handing over would leave Twilio's
        ``<Connect action>`` request without an answer)."""
        services = self.services
        redis, me = services.redis, services.instance_id
        if not (self.settings.resume_calls and redis is not None and me):
            return False
        try:
            async with asyncio.timeout(2.0):
                since = time.time() - self.settings.instance_lost_after_s
                peers = await redis.zrangebyscore(services.keys.instances(), since, "+inf")
                for peer in peers:
                    if peer != me and await redis.hget(services.keys.instance(peer), "draining") != "true":
                        return True
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("drain: cannot see the other instances (%s); ending the calls instead", exc)
        return False

    async def hand_over(self, sessions: list[CallSession]) -> None:
        """Close the streams of ``sessions`` without ending their calls: Twilio's ``<Connect action>`` then
        has another instance resume each (ivr.store.reattach). What they said is flushed to Redis first."""
        for session in sessions:
            await session.detach()
        writer = self.services.writer
        if writer is not None:
            await writer.flush(HAND_OVER_FLUSH_S)
        for session in sessions:
            await session.close_stream(1000)


def startup_warnings(settings: Settings) -> list[str]:
    warnings = []
    if not settings.verify_signatures:
        warnings.append(
            "IVR_VERIFY_SIGNATURES=false: Twilio signatures are NOT checked. Never do this in production."
        )
    elif not settings.twilio_auth_token:
        warnings.append(
            "TWILIO_AUTH_TOKEN is not set: every Twilio request will be refused (403). Set it to your "
            "account's auth token (for `ivr call` against this server, any secret both sides share)."
        )
    if settings.stream_secret and len(settings.stream_secret) < MIN_STREAM_SECRET:
        warnings.append(
            f"IVR_STREAM_SECRET is {len(settings.stream_secret)} characters long: use at least "
            f"{MIN_STREAM_SECRET} random ones (the same on every instance), e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
        )
    if settings.engine == "openai" and not settings.openai_api_key:
        warnings.append("OPENAI_API_KEY is not set: the model will refuse connections.")
    elif settings.uses_local_engine:
        why = "IVR_ENGINE=local" if settings.engine == "local" else "OPENAI_API_KEY is not set"
        warnings.append(
            f"{why}: every call runs on the offline engine (local speech recognition, the flows' offline "
            "dialogue, local voice). Set OPENAI_API_KEY to use the flows' OpenAI models."
        )
    if settings.public_url.startswith("http://"):
        warnings.append(
            f"IVR_PUBLIC_URL={settings.public_url} is plain http: real Twilio needs an https origin."
        )
    if not settings.operator_token:
        warnings.append(
            "IVR_OPERATOR_TOKEN is not set: no bootstrap admin token; only operators added with "
            "`ivr operators add NAME --role …` can log in to the console and the operator API (/api/...)."
        )
    elif len(settings.operator_token) < MIN_OPERATOR_TOKEN:
        warnings.append(
            f"IVR_OPERATOR_TOKEN is {len(settings.operator_token)} characters long: a short bootstrap token "
            f"can be guessed (it logs in as the admin): use at least {MIN_OPERATOR_TOKEN}, e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
        )
    return warnings


async def _preload_offline_engine(settings: Settings, flows: FlowSet) -> None:
    """Load the offline engine's models before the first call when calls may use it (no silent pause)."""
    wanted = [f for f in flows if settings.uses_local_engine or f.model.fallback == "local"]
    if not wanted:
        return
    from .engines.local import LocalResources

    for flow in wanted:
        log.info("loading the offline engine's speech models for flow %s …", flow.id)
        try:
            await asyncio.to_thread(LocalResources.for_flow, flow)
        except Exception as exc:  # the first call will try again and report it
            log.error("could not load the offline engine for flow %s: %s", flow.id, exc)


async def _prepare_local_lines(flows: FlowSet) -> None:
    """Load the local voice and synthesise each flow's hold phrase and the apology before the first call
    needs them (in a worker thread, at start-up, when no call's audio shares the event loop)."""
    from .call.audio_out import prepare_local_lines
    from .call.model_link import APOLOGY

    for flow in flows:
        try:
            await asyncio.to_thread(prepare_local_lines, flow, [flow.hold_phrase or "", APOLOGY])
        except Exception as exc:  # the first call that needs them will synthesise them
            log.warning("could not prepare the local voice's lines for flow %s: %s", flow.id, exc)


def create_app(settings: Settings, flows: FlowSet | None = None) -> FastAPI:
    if not settings.public_url:
        raise ValueError("settings.public_url is required (IVR_PUBLIC_URL)")
    flowset = flows if flows is not None else FlowSet.load(settings.flows_dir)
    # Numbers no flow claims get the built-in assistant: give it a voice this deployment's model can take.
    flowset = flowset.fitted_to(settings.realtime_model, settings.realtime_dialect)
    state = AppState(settings, flowset)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for warning in startup_warnings(settings):
            log.warning("%s", warning)
        await state.services.start()
        assert state.services.redis is not None
        # A fresh Redis (the embedded one starts empty) gets the flows' lookup datasets; existing ones stay.
        await load_missing_datasets(state.services.redis, state.services.keys, flowset)
        await _preload_offline_engine(settings, flowset)
        lines = asyncio.create_task(_prepare_local_lines(flowset), name="local-lines")
        # Start-up objects live for the whole process: keep them out of the cyclic GC's generations, whose
        # full collections otherwise pause every live call for tens of milliseconds.
        gc.collect()
        gc.freeze()
        assert state.services.approvals is not None
        app.include_router(approvals_router(state.services.approvals, state.auth))
        log.info(
            "ready: %d flow(s); webhook %s/twilio/voice; stream %s",
            len(flowset),
            settings.public_url,
            settings.media_stream_url,
        )
        try:
            yield
        finally:
            lines.cancel()
            for session in list(state.sessions.values()):
                await session.finish("server-shutdown")
            await console.aclose()
            await state.services.stop()

    app = FastAPI(title="ivr", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ivr = state
    # Every HTTP body is capped before anything reads it (413); media messages are capped in _receive.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    # The operations console (/ops/…): built now so its routes exist; it finds Redis lazily once started.
    console = console_router(state)
    app.include_router(console)
    app.state.console = console

    # ------------------------------------------------------------------ Twilio webhooks

    async def signed_form(request: Request, path: str) -> ImmutableMultiDict[str, str]:
        body = await request.body()  # at most IVR_MAX_BODY_BYTES: BodyLimit answered 413 beyond
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise HTTPException(400, "body is not UTF-8 form data") from None
        form = ImmutableMultiDict(pairs)
        if settings.verify_signatures:
            url = settings.public_url + path
            if request.url.query:
                url += "?" + request.url.query
            signature = request.headers.get("x-twilio-signature")
            if not state.signatures.valid(
                url, form, signature, request.headers.get("x-twilio-webhooks-signature-settings")
            ):
                # A correctly signed request is never refused (Twilio's egress addresses are shared by every
                # Twilio account, so someone else's bad requests must not block ours); a client that keeps
                # failing gets 429 with Retry-After instead of 403, and the log says so once per block.
                client = client_address(request.client)
                wait = state.admission.retry_after(client)  # blocked by its earlier failures?
                state.admission.signature_failed(client)
                if wait is not None:
                    state.count("rate_limited")
                    raise HTTPException(
                        429,
                        f"too many requests with a bad signature; retry in {wait} s",
                        {"Retry-After": str(wait)},
                    )
                log.warning("refused %s: %s X-Twilio-Signature", path, "invalid" if signature else "missing")
                raise HTTPException(403, "invalid or missing X-Twilio-Signature")
        return form

    def _record_after_hours(
        form: ImmutableMultiDict[str, str], flow_id: str, said: str, outcome: str
    ) -> None:
        """A call answered without a media stream (the flow is closed) is in the console's history all the
        same: its record, what it was told, and ``outcome`` (``after-hours`` or ``transferred``)."""
        calls = state.services.calls
        if calls is None:
            return
        record = CallRecord(
            call_sid=form.get("CallSid", ""),
            account_sid=form.get("AccountSid", ""),
            flow_id=flow_id,
            caller=form.get("From", ""),
            called=form.get("To", ""),
            engine="none",
            stage="after_hours",
        )
        calls.call_started(record.summary())
        if said:
            calls.transcript(record.call_sid, "agent", said)
        record.outcome = outcome
        record.ended_at = time.time()
        record.duration_s = 0.0
        calls.call_ended(record.call_sid, record.summary())

    @app.post("/twilio/voice")
    async def voice(request: Request) -> Response:
        form = await signed_form(request, "/twilio/voice")
        call_sid = form.get("CallSid", "")
        caller, called = form.get("From", ""), form.get("To", "")
        if not call_sid:
            raise HTTPException(400, "webhook is missing CallSid")
        if state.calls.draining:
            log.info("call=%s refused politely: server is draining", call_sid)
            return Response(say_and_hang_up(DRAINING_MESSAGE), media_type="application/xml")
        flow = flowset.for_number(called)
        log.info(
            "call=%s incoming from=%s to=%s → flow %s",
            call_sid,
            mask_number(caller),
            mask_number(called),
            flow.id,
        )
        closed = after_hours_decision(flow, datetime.now(UTC))
        if closed is not None and closed.action != "continue":
            context = flow.call_context(
                caller_number=caller, called_number=called, call_sid=call_sid, now=datetime.now(UTC)
            )
            message = flow.render(closed.message, context) if closed.message else None
            log.info("call=%s after hours for flow %s: %s", call_sid, flow.id, closed.action)
            transfer = closed.action == "transfer" and bool(closed.number)
            said = message or ("" if transfer else DRAINING_MESSAGE)
            _record_after_hours(form, flow.id, said, "transferred" if transfer else "after-hours")
            if transfer:
                return Response(dial(closed.number or "", message), media_type="application/xml")
            return Response(say_and_hang_up(said), media_type="application/xml")
        binding = StreamBinding(call_sid, flow.id, caller, called)
        params = {**binding.parameters(), TOKEN_PARAMETER: state.admission.tokens.issue(binding, time.time())}
        if state.services.calls is not None:
            # So the media socket may land on another instance; the <Parameter>s carry the same essentials.
            context = {
                **binding.parameters(),
                "account_sid": form.get("AccountSid", ""),
                "direction": form.get("Direction", ""),
            }
            try:
                await state.services.calls.save_context(call_sid, context)
            except (RedisError, OSError) as exc:
                log.warning(
                    "call=%s context not saved to Redis (%s); relying on stream parameters", call_sid, exc
                )
        twiml = connect_stream(settings.media_stream_url, params, action=stream_ended_url())
        return Response(twiml, media_type="application/xml")

    def stream_ended_url() -> str | None:
        """The ``<Connect action>`` Twilio requests when a stream ends (None: IVR_RESUME_CALLS=false)."""
        return settings.public_url + "/twilio/stream-ended" if settings.resume_calls else None

    @app.post("/twilio/stream-ended")
    async def stream_ended(request: Request) -> Response:
        """Twilio's ``<Connect action>``: a call's media stream ended. A call ended on purpose (or over, or
        unknown) is hung up; one whose stream dropped with its instance gets its next stream, which the
        instance receiving it resumes from Redis (docs/reliability.md, "A call outlives its instance")."""
        form = await signed_form(request, "/twilio/stream-ended")
        call_sid = form.get("CallSid", "")
        if not call_sid:
            raise HTTPException(400, "webhook is missing CallSid")
        try:
            return await _after_stream(call_sid, form.get("CallStatus", ""))
        finally:
            answered = state.actions_answered.pop(call_sid, None)
            if answered is not None:
                answered.set()  # a draining instance may exit now

    async def _after_stream(call_sid: str, call_status: str) -> Response:
        hang_up_now = Response(hang_up(), media_type="application/xml")
        here = state.sessions.get(call_sid)
        if call_status in _TERMINAL_STATUSES or (here is not None and not here.handed_over):
            return hang_up_now  # over, or ended here on purpose (this instance still finishing it)
        services = state.services
        if services.redis is None or not settings.resume_calls:
            return hang_up_now
        try:
            resumable = await _next_stream(services.redis, services.keys, call_sid)
        except (RedisError, OSError, TimeoutError, KeySchemaError) as exc:
            log.warning("call=%s stream ended; not resumed: Redis did not answer (%s)", call_sid, exc)
            return hang_up_now
        if isinstance(resumable, str):
            log.info("call=%s stream ended; not resumed: %s", call_sid, resumable)
            return hang_up_now
        binding = StreamBinding(
            call_sid, resumable.flow_id, resumable.caller, resumable.called, resume=resumable.number
        )
        params = {**binding.parameters(), TOKEN_PARAMETER: state.admission.tokens.issue(binding, time.time())}
        log.warning(
            "call=%s its media stream dropped with the instance carrying it: resuming it (stream %d)",
            call_sid,
            resumable.number,
        )
        state.count("calls_resumed")
        return Response(
            connect_stream(settings.media_stream_url, params, action=stream_ended_url()),
            media_type="application/xml",
        )

    async def _next_stream(redis: Any, keys: KeySchema, call_sid: str) -> reattach.Resumable | str:
        """Issue the call's next stream, unless it was closed on purpose. While the instance holding it still
        beats, that instance may be about to mark it closed (its socket dropped, not itself): give it a
        moment."""
        deadline = time.monotonic() + CLOSE_MARK_WAIT_S
        async with asyncio.timeout(CLOSE_MARK_WAIT_S + 2.0):
            while await reattach.holder_alive(
                redis, keys, call_sid, now=time.time(), lost_after_s=settings.instance_lost_after_s
            ) and not await reattach.closed(redis, keys, call_sid):
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.05)
            return await reattach.issue_resume(redis, keys, call_sid, now=time.time())

    @app.post("/twilio/status")
    async def status(request: Request) -> Response:
        form = await signed_form(request, "/twilio/status")
        call_sid = form.get("CallSid", "")
        call_status = form.get("CallStatus", "")
        feed = state.calls.get(call_sid)
        log.info(
            "call=%s status %s (duration %s s)", call_sid, call_status or "?", form.get("CallDuration", "?")
        )
        if feed is not None:
            feed.record.twilio_status = call_status
            duration = form.get("CallDuration")
            if duration and duration.isdigit():
                feed.record.counters["twilio_duration_s"] = int(duration)
            feed.emit("call.status", status=call_status)
        session = state.sessions.get(call_sid)
        if session is not None and call_status in _TERMINAL_STATUSES:
            await session.end("completed", 1000)
        return Response(status_code=204)

    # ------------------------------------------------------------------ media stream

    @app.websocket(MEDIA_PATH)
    async def media(ws: WebSocket) -> None:
        """Twilio's media stream under any ASGI server; ``ivr serve`` carries it without ASGI
        (ivr.telephony.media_socket) and runs the same endpoint."""
        await serve_media(StarletteMediaSocket(ws), state)

    # ------------------------------------------------------------------ health and operator API

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "live_calls": len(state.calls.live)}

    @app.get("/readyz")
    async def readyz() -> Response:
        if state.calls.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return JSONResponse({"status": "ready", "live_calls": len(state.calls.live)})

    # Every operator route needs a logged-in operator of any role (401 / 403 / 503: ivr.console.auth).
    viewer = state.auth.require("viewer")

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        """Prometheus text format; an operator token (any role) unless IVR_METRICS_PUBLIC=true."""
        if not settings.metrics_public:
            await viewer(request)
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    admin = Depends(state.auth.require("admin"))

    @app.post("/api/drain", status_code=202)
    async def start_drain(operator: Operator = admin) -> dict[str, Any]:
        """Drain this instance as SIGTERM would (a Kubernetes preStop runs ``ivr drain``): /readyz turns 503,
        new calls are refused politely, live ones go on up to IVR_DRAIN_TIMEOUT; then ``ivr serve`` exits."""
        started = state.request_drain()
        if started:
            log.info("drain requested by operator %s", operator.name)
        return {
            "status": "draining",
            "started": started,
            "instance": state.services.instance_id,
            "live_calls": len(state.calls.live),
            "drain_timeout_s": settings.drain_timeout_s,
        }

    @app.get("/api/calls", dependencies=[Depends(viewer)])
    async def list_calls() -> dict[str, Any]:
        live = [state.calls.get(sid) for sid in state.calls.live]
        active: list[str] | None = None
        if state.services.calls is not None:
            with contextlib.suppress(RedisError, OSError):
                active = await state.services.calls.active_calls()
        return {
            "live": [f.record.to_dict() for f in live if f is not None],
            "active_everywhere": active,
            "instance": state.services.instance_id,
            "counters": state.counters,
            "redis_writer": state.services.writer.counters() if state.services.writer else None,
        }

    @app.get("/api/calls/{call_sid}", dependencies=[Depends(viewer)])
    async def get_call(call_sid: str) -> dict[str, Any]:
        """The call record: from this instance's memory while it runs here, else from Redis."""
        feed = state.calls.get(call_sid)
        if feed is not None:
            return feed.record.to_dict()
        calls = state.services.calls
        if calls is not None:
            try:
                record = await calls.get_call(call_sid)
                if record is not None:
                    record["transcript"] = await calls.get_transcript(call_sid)
                    return record
            except (RedisError, OSError) as exc:
                raise HTTPException(503, f"Redis is unreachable ({exc}); try again shortly") from None
        raise HTTPException(404, f"no call {call_sid}")

    @app.get("/api/calls/{call_sid}/events", dependencies=[Depends(viewer)])
    async def call_events(call_sid: str, request: Request) -> StreamingResponse:
        """Server-sent events of one call: replayed from its start, then live, until ``call.ended``.

        Served from memory when the call runs on this instance, else from the call's Redis stream. Ends
        early once the request's credentials stop holding (re-checked every ``Auth.recheck_s`` seconds).
        """
        feed = state.calls.get(call_sid)
        events: AsyncIterator[dict[str, Any]]
        if feed is not None and not feed.handed_over:
            events = feed.follow()
        else:
            calls = state.services.calls
            known = False
            if calls is not None:
                with contextlib.suppress(RedisError, OSError):
                    known = await calls.get_call(call_sid) is not None
            if not known or calls is None:
                raise HTTPException(404, f"no call {call_sid} (yet)")
            events = _flatten(calls.follow_call_events(call_sid))

        async def stream() -> AsyncIterator[bytes]:
            async for event in events:
                yield b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"

        return StreamingResponse(
            state.auth.while_allowed(request, stream()),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return app


async def _flatten(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """Redis stream entries → the shape of in-memory feed events (type, ts, call_sid, data fields)."""
    async for entry in events:
        data = entry.get("data")
        yield {
            "type": entry["type"],
            "ts": entry["ts"],
            "call_sid": entry["call_sid"],
            **(data if isinstance(data, dict) else {}),
        }
