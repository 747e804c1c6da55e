"""``SimulatedCall`` against a small ivr stand-in served by uvicorn on a loopback socket.

The stand-in checks what real Twilio traffic must satisfy: the webhook and status-callback signatures and
the media-upgrade signature (with ``twilio.request_validator.RequestValidator``), every frame it receives
(with the §6.3 ``check_from_twilio`` oracle), and every frame it sends (``check_to_twilio``). Its TwiML is
built with the ``twilio`` package. Tests also run the oracles over every frame the call's observer saw.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from ivr.caller.client import CallEndedError, CallOptions, CallResult, SimulatedCall
from tests.support.oracles import ProtocolViolation, check_from_twilio, check_to_twilio

AUTH_TOKEN = "test-auth-token-0123456789"
OPERATOR_TOKEN = "op-token-abcdef"
FROM = "+15550100001"


# ----------------------------------------------------------------------------------------------------------
# the stand-in server
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Frame:
    at: float  # loop time when received
    raw: str
    msg: dict[str, Any]


class _Matcher:
    """Frames in arrival order plus ``wait_for(predicate)`` over past and future frames."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], asyncio.Future[Frame]]] = []

    def add(self, frame: Frame) -> None:
        self.frames.append(frame)
        for pred, fut in list(self._waiters):
            if not fut.done() and pred(frame.msg):
                fut.set_result(frame)

    async def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> Frame:
        for frame in self.frames:
            if pred(frame.msg):
                return frame
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        entry = (pred, fut)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._waiters.remove(entry)


class MediaConn:
    """The server end of one media WebSocket, handed to a test's script."""

    def __init__(self, ws: WebSocket, violations: list[str]) -> None:
        self.ws = ws
        self.got = _Matcher()
        self.sent: list[tuple[float, str]] = []
        self.closed = asyncio.Event()
        self._violations = violations

    @property
    def stream_sid(self) -> str:
        return self.got.frames[1].msg["streamSid"]

    async def send(self, message: dict[str, Any]) -> float:
        raw = json.dumps(message)
        check_to_twilio(raw)  # the stand-in only ever sends what Twilio accepts …
        return await self.send_raw(raw)

    async def send_raw(self, raw: str) -> float:  # … except when a test deliberately sends garbage
        at = asyncio.get_running_loop().time()
        self.sent.append((at, raw))
        await self.ws.send_text(raw)
        return at

    async def media(self, mulaw: bytes) -> float:
        payload = base64.b64encode(mulaw).decode()
        return await self.send(
            {"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}}
        )

    async def mark(self, name: str) -> float:
        return await self.send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def clear(self) -> float:
        return await self.send({"event": "clear", "streamSid": self.stream_sid})

    async def echo_of(self, name: str, timeout: float = 5.0) -> Frame:
        return await self.got.wait_for(lambda m: m["event"] == "mark" and m["mark"]["name"] == name, timeout)


Script = Callable[[MediaConn], Awaitable[None]]


class EventFeed:
    """Replays past events then follows new ones until ``call.ended`` (what /api/calls/{sid}/events does)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    def publish(self, call_sid: str, kind: str, **fields: Any) -> None:
        self.events.append({"type": kind, "ts": 1.7e9 + len(self.events), "call_sid": call_sid, **fields})
        self._changed.set()

    async def follow(self) -> AsyncIterator[str]:
        i = 0
        while True:
            while i < len(self.events):
                event = self.events[i]
                i += 1
                yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
                if event["type"] == "call.ended":
                    return
            self._changed.clear()
            await self._changed.wait()


@dataclass
class FakeIvr:
    """Webhook + media WebSocket + status callback + event feed, each verified like a production server."""

    host: str = "127.0.0.1"
    port: int = 0
    public_url: str = ""  # origin used to check webhook signatures (default http://127.0.0.1:PORT)
    stream_url: str = ""  # URL written into the TwiML and checked on the upgrade
    ws_token: str = AUTH_TOKEN  # token the upgrade is checked with (a different one forces a rejection)
    reject_with: str = "403"  # "403": refuse before accept; "1008": accept then close with 1008
    drain: bool = False
    script: Script | None = None
    sse_404_first: int = 0
    violations: list[str] = field(default_factory=list)
    webhooks: list[dict[str, str]] = field(default_factory=list)
    status_callbacks: list[dict[str, str]] = field(default_factory=list)
    conns: list[MediaConn] = field(default_factory=list)
    ws_hosts: list[str] = field(default_factory=list)
    ws_attempts: int = 0
    sse_requests: int = 0
    feeds: dict[str, EventFeed] = field(default_factory=dict)
    script_errors: list[BaseException] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/twilio/voice", self._voice, methods=["POST"]),
                Route("/twilio/status", self._status, methods=["POST"]),
                Route("/api/calls/{sid}/events", self._events, methods=["GET"]),
                WebSocketRoute("/twilio/media", self._media),
            ]
        )

    async def _signed_form(self, request: Request, path: str) -> dict[str, str] | None:
        params = dict(parse_qsl((await request.body()).decode()))
        signature = request.headers.get("x-twilio-signature", "")
        if not RequestValidator(AUTH_TOKEN).validate(self.public_url + path, params, signature):
            return None
        return params

    async def _voice(self, request: Request) -> Response:
        params = await self._signed_form(request, "/twilio/voice")
        if params is None:
            return Response("bad signature", status_code=403)
        self.webhooks.append(params)
        self.feeds[params["CallSid"]] = EventFeed()
        r = VoiceResponse()
        if self.drain:
            r.say("We are restarting. Please call again in a minute.")
            r.hangup()
        else:
            connect = Connect()
            stream = connect.stream(url=self.stream_url)
            stream.parameter(name="tenant", value="acme")
            r.append(connect)
        return Response(str(r), media_type="application/xml")

    async def _status(self, request: Request) -> Response:
        params = await self._signed_form(request, "/twilio/status")
        if params is None:
            return Response("bad signature", status_code=403)
        self.status_callbacks.append(params)
        return Response(status_code=204)

    async def _events(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {OPERATOR_TOKEN}":
            return Response(status_code=401)
        self.sse_requests += 1
        feed = self.feeds.get(request.path_params["sid"])
        if feed is None or self.sse_requests <= self.sse_404_first:
            return Response(status_code=404)
        return StreamingResponse(feed.follow(), media_type="text/event-stream")

    async def _media(self, ws: WebSocket) -> None:
        self.ws_attempts += 1
        signature = ws.headers.get("x-twilio-signature", "")
        if not RequestValidator(self.ws_token).validate(self.stream_url, {}, signature):
            if self.reject_with == "403":
                await ws.close(code=1008)  # before accept: uvicorn answers the upgrade with HTTP 403
            else:
                await ws.accept()
                await ws.close(code=1008, reason="invalid signature")
            return
        self.ws_hosts.append(ws.headers.get("host", ""))
        await ws.accept()
        conn = MediaConn(ws, self.violations)
        self.conns.append(conn)
        script_task = asyncio.create_task(self._run_script(conn)) if self.script else None
        loop = asyncio.get_running_loop()
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                raw = message.get("text")
                if raw is None:
                    self.violations.append("binary frame from the caller")
                    continue
                try:
                    check_from_twilio(raw)
                except ProtocolViolation as exc:
                    self.violations.append(str(exc))
                msg = json.loads(raw)
                conn.got.add(Frame(loop.time(), raw, msg))
                if msg["event"] == "start":
                    self.feeds[msg["start"]["callSid"]].publish(msg["start"]["callSid"], "call.started")
        finally:
            conn.closed.set()
            if script_task is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(script_task), 2.0)
                script_task.cancel()

    async def _run_script(self, conn: MediaConn) -> None:
        assert self.script is not None
        try:
            await conn.got.wait_for(lambda m: m["event"] == "start")
            await self.script(conn)
        except (Exception, asyncio.CancelledError) as exc:  # surfaced by the fixture teardown
            if not isinstance(exc, asyncio.CancelledError):
                self.script_errors.append(exc)
            raise

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def conn(self) -> MediaConn:
        return self.conns[0]


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # leave pytest's signal handlers alone
        yield


@contextlib.asynccontextmanager
async def serve(fake: FakeIvr) -> AsyncIterator[FakeIvr]:
    """Serve ``fake`` on a pre-bound loopback socket (listening before uvicorn starts: no startup race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((fake.host, 0))
    sock.listen(16)
    fake.port = sock.getsockname()[1]
    fake.public_url = fake.public_url or fake.base_url
    fake.stream_url = fake.stream_url or f"ws://{fake.host}:{fake.port}/twilio/media"
    config = uvicorn.Config(
        fake.app(), log_level="warning", lifespan="off", ws="websockets-sansio", timeout_graceful_shutdown=1
    )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield fake
    finally:
        server.should_exit = True
        await task
        sock.close()
    assert fake.script_errors == [], fake.script_errors
    assert fake.violations == [], fake.violations


def observed_checker() -> tuple[list[tuple[str, str]], Callable[[str, str], None]]:
    frames: list[tuple[str, str]] = []

    def observer(direction: str, raw: str) -> None:
        frames.append((direction, raw))

    return frames, observer


def check_observed(frames: list[tuple[str, str]], conn: MediaConn) -> None:
    """Every frame the observer saw passes its oracle, and it saw exactly what crossed the wire."""
    for direction, raw in frames:
        if direction == "sent":
            check_from_twilio(raw)
        else:
            assert direction == "received"
    assert [raw for d, raw in frames if d == "sent"] == [f.raw for f in conn.got.frames]
    assert [raw for d, raw in frames if d == "received"] == [raw for _, raw in conn.sent]


def options(fake: FakeIvr, **overrides: Any) -> CallOptions:
    values: dict[str, Any] = {
        "base_url": fake.base_url,
        "account_sid": "",  # a fresh AC… sid, whatever the environment says
        "auth_token": AUTH_TOKEN,
        "operator_token": "",
        "duration_s": 10.0,
    }
    values.update(overrides)
    return CallOptions(**values)


async def run_until(call: SimulatedCall, ready: Callable[[], Awaitable[Any]]) -> CallResult:
    task = asyncio.create_task(call.run())
    try:
        await ready()
    except BaseException:
        await call.hang_up()
        await task
        raise
    return await task


# ----------------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------------------

AGENT_AUDIO = bytes(range(0x10, 0x60)) * 20  # 1600 bytes = 200 ms, a recognisable pattern
CALLER_AUDIO = bytes(range(0x00, 0x7F)) * 5  # 635 bytes, not a whole number of frames


async def test_full_call_pacing_marks_dtmf_and_hang_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TWILIO_ACCOUNT_SID", raising=False)
    times: dict[str, float] = {}

    async def script(conn: MediaConn) -> None:
        times["empty"] = await conn.mark("empty")  # nothing queued: echoed right away
        await conn.echo_of("empty")
        times["audio"] = await conn.media(AGENT_AUDIO)
        await conn.mark("greeting-1")

    frames, observer = observed_checker()
    async with serve(FakeIvr(script=script)) as fake:
        call = SimulatedCall(
            options(fake, account_sid=None, caller_audio=CALLER_AUDIO, dtmf=[(0.1, "5")], observer=observer),
            printer=None,
        )

        async def drive() -> None:
            await call.wait_started()
            call.press("#")
            seen = await call.wait_for(lambda m: m["event"] == "mark" and m["mark"]["name"] == "greeting-1")
            assert seen["streamSid"] == call.stream_sid
            await fake.conn.echo_of("greeting-1", timeout=3)
            await fake.conn.got.wait_for(lambda m: m["event"] == "media" and m["media"]["chunk"] == "30", 3)
            await call.hang_up()

        result = await run_until(call, drive)
        await fake.conn.closed.wait()

    conn = fake.conn
    msgs = [f.msg for f in conn.got.frames]
    assert result.ended_by == "caller"
    assert result.errors == []
    assert result.webhook_status == 200

    # webhook: signed (the stand-in answers 403 otherwise), Twilio's inbound parameters
    hook = fake.webhooks[0]
    assert hook["CallSid"] == call.call_sid == result.call_sid
    assert hook["From"] == hook["Caller"] == FROM
    assert (hook["Direction"], hook["CallStatus"], hook["ApiVersion"]) == ("inbound", "ringing", "2010-04-01")
    assert hook["AccountSid"].startswith("AC") and len(hook["AccountSid"]) == 34

    # stream shape and numbering
    assert [m["event"] for m in msgs[:2]] == ["connected", "start"]
    assert msgs[1]["start"]["customParameters"] == {"tenant": "acme"}
    assert msgs[1]["start"]["callSid"] == call.call_sid
    assert [int(m["sequenceNumber"]) for m in msgs[1:]] == list(range(1, len(msgs)))
    assert msgs[-1]["event"] == "stop"
    assert msgs[-1]["stop"] == {"accountSid": hook["AccountSid"], "callSid": call.call_sid}

    # pacing: ~50 frames/s over the measured interval, timestamps on the 20 ms grid
    media = [f for f in conn.got.frames if f.msg["event"] == "media"]
    assert len(media) == result.frames_sent >= 30
    assert [f.msg["media"]["chunk"] for f in media] == [str(i) for i in range(1, len(media) + 1)]
    assert [f.msg["media"]["timestamp"] for f in media] == [str(20 * i) for i in range(len(media))]
    rate = (len(media) - 1) / (media[-1].at - media[0].at)
    assert 40 <= rate <= 60, rate
    first_half = [f for f in media if f.at - media[0].at < 0.3]
    assert 12 <= len(first_half) <= 18  # no burst at the start

    # caller audio goes out first, then silence
    sent = b"".join(base64.b64decode(f.msg["media"]["payload"]) for f in media)
    assert all(len(base64.b64decode(f.msg["media"]["payload"])) == 160 for f in media)
    assert sent[: len(CALLER_AUDIO)] == CALLER_AUDIO
    assert set(sent[len(CALLER_AUDIO) :]) == {0xFF}

    # marks: the empty-buffer mark comes back at once; greeting-1 only after its 200 ms had played
    empty_echo = await conn.echo_of("empty")
    assert empty_echo.at - times["empty"] < 0.1
    greeting_echo = await conn.echo_of("greeting-1")
    assert 0.17 <= greeting_echo.at - times["audio"] < 1.0
    assert result.marks_echoed == 2 and result.clears == 0
    assert result.agent_audio_ms == 200
    assert AGENT_AUDIO in call.played_audio
    # the heard timeline runs from stream start to the last tick, on the same clock as the caller's frames
    assert len(call.played_audio) == 160 * (len(media) - 1)

    # dtmf: the scheduled key after the 100 ms frame, the pressed key too
    events = [m["event"] for m in msgs]
    digits = [m["dtmf"]["digit"] for m in msgs if m["event"] == "dtmf"]
    assert sorted(digits) == ["#", "5"]
    five = next(i for i, m in enumerate(msgs) if m["event"] == "dtmf" and m["dtmf"]["digit"] == "5")
    assert any(m["event"] == "media" and m["media"]["timestamp"] == "100" for m in msgs[:five])
    assert events.count("stop") == 1

    # status callback: signed, completed
    assert len(fake.status_callbacks) == 1
    status = fake.status_callbacks[0]
    assert (status["CallSid"], status["CallStatus"]) == (call.call_sid, "completed")
    assert status["CallDuration"].isdigit()

    check_observed(frames, conn)
    assert call.received == [json.loads(raw) for _, raw in conn.sent]


async def test_clear_echoes_pending_marks_and_server_close_ends_call() -> None:
    times: dict[str, float] = {}

    async def script(conn: MediaConn) -> None:
        await conn.media(b"\x22" * 16000)  # 2 s
        await conn.mark("long")
        start_chunk = int(conn.got.frames[-1].msg.get("media", {}).get("chunk", "0"))
        await conn.got.wait_for(
            lambda m: m["event"] == "media" and int(m["media"]["chunk"]) >= start_chunk + 5
        )
        times["clear"] = await conn.clear()
        times["echo"] = (await conn.echo_of("long", timeout=0.5)).at
        await conn.ws.close(code=1000)

    frames, observer = observed_checker()
    async with serve(FakeIvr(script=script)) as fake:
        call = SimulatedCall(options(fake, observer=observer))
        result = await call.run()
        await fake.conn.closed.wait()

    assert result.ended_by == "server"
    assert result.close_code == 1000
    assert result.errors == []
    assert times["echo"] - times["clear"] < 0.1  # long before the 2 s of audio could have played
    assert (result.clears, result.marks_echoed) == (1, 1)
    assert 60 <= result.agent_audio_ms < 1000
    assert all(m["event"] != "stop" for m in (f.msg for f in fake.conn.got.frames))  # server hung up, not us
    assert fake.status_callbacks[0]["CallStatus"] == "completed"
    check_observed(frames, fake.conn)


async def test_duration_limit_hangs_up_with_stop() -> None:
    async with serve(FakeIvr()) as fake:
        result = await SimulatedCall(options(fake, duration_s=0.2)).run()
        await fake.conn.closed.wait()
    msgs = [f.msg for f in fake.conn.got.frames]
    assert result.ended_by == "timeout"
    assert result.frames_sent == 10 == sum(m["event"] == "media" for m in msgs)
    assert msgs[-1]["event"] == "stop"


@pytest.mark.parametrize("reject_with", ["403", "1008"])
async def test_bad_upgrade_signature_is_rejected(reject_with: str) -> None:
    async with serve(FakeIvr(ws_token="some-other-token", reject_with=reject_with)) as fake:
        result = await SimulatedCall(options(fake)).run()
    assert result.ended_by == "rejected"
    assert result.webhook_status == 200
    assert fake.ws_attempts == 1 and fake.conns == []
    assert len(result.errors) == 1
    assert ("HTTP 403" if reject_with == "403" else "1008") in result.errors[0]
    assert "auth token" in result.errors[0]
    assert "Traceback" not in result.errors[0]


async def test_bad_webhook_signature_is_rejected() -> None:
    lines: list[str] = []
    async with serve(FakeIvr()) as fake:
        result = await SimulatedCall(options(fake, auth_token="wrong-token"), printer=lines.append).run()
    assert result.ended_by == "rejected"
    assert result.webhook_status == 403
    assert fake.ws_attempts == 0 and fake.status_callbacks == []
    assert "HTTP 403" in result.errors[0] and "--auth-token" in result.errors[0]
    assert not any("wrong-token" in line for line in lines)


async def test_unsigned_call_warns() -> None:
    lines: list[str] = []
    async with serve(FakeIvr()) as fake:
        result = await SimulatedCall(options(fake, auth_token=""), printer=lines.append).run()
    assert result.ended_by == "rejected" and result.webhook_status == 403
    assert any("warning: no Twilio auth token" in line for line in lines)


async def test_draining_server_say_hangup() -> None:
    async with serve(FakeIvr(drain=True)) as fake:
        result = await SimulatedCall(options(fake)).run()
    assert result.ended_by == "server"
    assert "<Hangup />" in result.twiml and "restarting" in result.twiml
    assert fake.ws_attempts == 0
    assert result.frames_sent == 0
    assert fake.status_callbacks[0]["CallStatus"] == "completed"


async def test_connection_refused_says_what_to_do() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    result = await SimulatedCall(
        CallOptions(base_url=f"http://127.0.0.1:{port}", auth_token="t", operator_token="")
    ).run()
    assert result.ended_by == "rejected"
    assert result.webhook_status is None
    assert "is `ivr serve` running" in result.errors[0]


async def test_connect_to_dials_local_socket_but_signs_public_url() -> None:
    async def script(conn: MediaConn) -> None:
        await conn.ws.close(code=1000)

    fake = FakeIvr(
        public_url="https://agent.example.com",
        stream_url="wss://agent.example.com/twilio/media",
        script=script,
    )
    async with serve(fake):
        opts = options(fake, public_url="https://agent.example.com", connect_to=f"127.0.0.1:{fake.port}")
        result = await SimulatedCall(opts).run()
    assert result.errors == []
    assert result.ended_by == "server"
    assert fake.ws_hosts == ["agent.example.com"]  # like curl --connect-to: Host stays the TwiML host
    assert len(fake.status_callbacks) == 1  # signed over https://agent.example.com/twilio/status


async def test_live_transcript_with_retry_and_no_secrets_printed() -> None:
    async def script(conn: MediaConn) -> None:
        sid = conn.got.frames[1].msg["start"]["callSid"]
        feed = fake.feeds[sid]
        feed.publish(sid, "transcript", role="agent", text="Hello, how can I help?")
        await conn.mark("greeting")
        await conn.echo_of("greeting")
        feed.publish(sid, "tool.called", name="lookup", arguments={"id": 1}, ok=True, output={"found": True})
        await conn.ws.close(code=1000)
        feed.publish(sid, "call.ended", outcome="completed")

    lines: list[str] = []
    fake = FakeIvr(script=script, sse_404_first=1)
    async with serve(fake):
        call = SimulatedCall(options(fake, operator_token=OPERATOR_TOKEN), printer=lines.append)
        result = await call.run()
    assert fake.sse_requests >= 2  # the first answer was 404 and the client retried
    assert [e["type"] for e in result.transcript] == [
        "call.started",
        "transcript",
        "tool.called",
        "call.ended",
    ]
    assert all(e["call_sid"] == call.call_sid for e in result.transcript)
    assert any(line.endswith("agent: Hello, how can I help?") for line in lines)
    assert any("tool lookup(" in line and "→ ok" in line for line in lines)
    assert any("← mark greeting played" in line for line in lines)
    assert any("call ended by server" in line for line in lines)
    assert all(line.startswith("[00:0") for line in lines)
    text = "\n".join(lines)
    for secret in (AUTH_TOKEN, OPERATOR_TOKEN, FROM, "15550100001"):
        assert secret not in text
    assert result.errors == []


async def test_wrong_operator_token_reported() -> None:
    async def script(conn: MediaConn) -> None:
        await conn.ws.close(code=1000)

    async with serve(FakeIvr(script=script)) as fake:
        result = await SimulatedCall(options(fake, operator_token="nope")).run()
    assert result.ended_by == "server"
    assert any("401" in e and "--token" in e for e in result.errors)


async def test_bad_server_frame_is_reported_and_call_continues() -> None:
    async def script(conn: MediaConn) -> None:
        await conn.send_raw(
            json.dumps({"event": "media", "streamSid": conn.stream_sid, "media": {"payload": "@@"}})
        )
        await conn.send_raw(json.dumps({"event": "hello", "streamSid": conn.stream_sid}))
        await conn.mark("after")
        await conn.echo_of("after")
        await conn.ws.close(code=1000)

    async with serve(FakeIvr(script=script)) as fake:
        call = SimulatedCall(options(fake))
        result = await call.run()
    assert result.ended_by == "server"
    assert len(result.errors) == 2
    assert "not valid base64" in result.errors[0]
    assert "unknown event 'hello'" in result.errors[1]
    assert result.marks_echoed == 1
    assert [m["event"] for m in call.received] == ["mark"]  # only valid messages are recorded


async def test_wait_for_fails_fast_once_the_call_has_ended() -> None:
    async def script(conn: MediaConn) -> None:
        await conn.ws.close(code=1000)

    async with serve(FakeIvr(script=script)) as fake:
        call = SimulatedCall(options(fake))
        task = asyncio.create_task(call.run())
        await call.wait_started()
        with pytest.raises(CallEndedError):
            await call.wait_for(lambda m: m["event"] == "clear", timeout=5)
        await task
    with pytest.raises(CallEndedError):
        await call.wait_for(lambda m: True)
    with pytest.raises(RuntimeError, match="only be called once"):
        await call.run()


def test_bad_options_are_refused_with_clear_errors() -> None:
    with pytest.raises(ValueError, match="DTMF digit"):
        SimulatedCall(CallOptions(dtmf=[(1.0, "x")], auth_token="t"))
    with pytest.raises(ValueError, match="HOST:PORT"):
        SimulatedCall(CallOptions(connect_to="localhost", auth_token="t"))
    with pytest.raises(ValueError, match="base_url"):
        SimulatedCall(CallOptions(base_url="127.0.0.1:8000", auth_token="t"))
    with pytest.raises(ValueError, match="duration_s"):
        SimulatedCall(CallOptions(duration_s=0, auth_token="t"))
    call = SimulatedCall(CallOptions(auth_token="t"))
    with pytest.raises(ValueError, match="DTMF digit"):
        call.press("A")
