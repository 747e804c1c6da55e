"""A call that outlives its media stream: ``<Connect action>`` re-attach in the simulated Twilio caller.

A small stand-in server (Starlette + uvicorn on loopback) answers the voice webhook with
``<Connect action><Stream>``, verifies every webhook, action request, status callback and WebSocket upgrade
with ``twilio.request_validator.RequestValidator`` over the *public* URL, checks every frame it receives with
the §6.3 oracle and the per-stream order checker, and plays scripted streams. A TCP proxy in front of it plays
the load balancer's link and can drop one media connection abruptly (no close frame), like a killed instance.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
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

from ivr.caller.cli import register, run_call
from ivr.caller.client import MAX_STREAMS, CallOptions, CallResult, SimulatedCall, StreamLeg
from ivr.caller.routing import Router
from ivr.caller.twilio_side import TwilioStreamSimulator, new_sid
from tests.support.calls import TwilioOracle
from tests.support.oracles import (
    ProtocolViolation,
    TwilioCallSequence,
    check_from_twilio,
    check_to_twilio,
)

AUTH_TOKEN = "reattach-auth-token-0123456789"
OPERATOR_TOKEN = "reattach-operator-token"
PUBLIC = "https://ivr.example.test"
STREAM_URL = "wss://ivr.example.test/twilio/media"
ACTION_URL = PUBLIC + "/twilio/stream-ended"
AGENT_1 = bytes(range(0x10, 0x50)) * 40  # 2560 bytes = 320 ms, recognisable
AGENT_2 = bytes(range(0x50, 0x90)) * 40
#: the standard voice parameters every action request must carry, as the webhook does
VOICE_KEYS = {
    "AccountSid",
    "ApiVersion",
    "CallSid",
    "CallStatus",
    "Called",
    "Caller",
    "Direction",
    "From",
    "FromCountry",
    "To",
    "ToCountry",
}


# ----------------------------------------------------------------------------------------------------------
# the load balancer's link: a TCP proxy that can drop a connection without a close frame
# ------------------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Link:
    request_line: str
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter

    def abort(self) -> None:
        self.client.transport.abort()
        self.upstream.transport.abort()


class TcpProxy:
    """Forwards loopback connections to ``target_port``; :meth:`drop` aborts chosen ones (no WS close)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.links: list[_Link] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for link in self.links:
            link.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def drop(self, request_prefix: str) -> int:
        """Abort every open connection whose latest request line starts with ``request_prefix``."""
        dropped = 0
        for link in self.links:
            if link.request_line.startswith(request_prefix) and not link.client.transport.is_closing():
                link.abort()
                dropped += 1
        return dropped

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Connect upstream and pump both ways until either side closes (or :meth:`drop` aborts both)."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        first = await reader.read(65536)  # a request's head arrives in one read on loopback
        link = _Link(first.split(b"\r\n", 1)[0].decode("latin-1"), writer, up_writer)
        self.links.append(link)
        up_writer.write(first)
        await asyncio.gather(
            self._pump(reader, up_writer, link), self._pump(up_reader, writer, None), return_exceptions=True
        )
        link.abort()

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, link: _Link | None) -> None:
        """Copy one direction; on the client's side, note each new request on a kept-alive connection."""
        while data := await source.read(65536):
            if link is not None and data.startswith((b"GET ", b"POST ")):
                link.request_line = data.split(b"\r\n", 1)[0].decode("latin-1")
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof() and not sink.transport.is_closing():
            sink.write_eof()


# ----------------------------------------------------------------------------------------------------------
# the stand-in server
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Frame:
    at: float
    msg: dict[str, Any]


class StreamConn:
    """The server end of one media stream, handed to that stream's script."""

    def __init__(self, ws: WebSocket, number: int) -> None:
        self.ws = ws
        self.number = number
        self.frames: list[Frame] = []
        self.sent_at: list[float] = []  # loop time of each agent media sent
        self._changed = asyncio.Event()

    def add(self, msg: dict[str, Any]) -> None:
        self.frames.append(Frame(asyncio.get_running_loop().time(), msg))
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> Frame:
        async with asyncio.timeout(timeout):
            while True:
                for frame in self.frames:
                    if pred(frame.msg):
                        return frame
                await self._changed.wait()

    @property
    def start(self) -> dict[str, Any]:
        return next(f.msg for f in self.frames if f.msg["event"] == "start")

    @property
    def stream_sid(self) -> str:
        return self.start["streamSid"]

    async def send(self, message: dict[str, Any]) -> None:
        raw = json.dumps(message)
        check_to_twilio(raw)
        await self.ws.send_text(raw)

    async def media(self, mulaw: bytes) -> None:
        payload = base64.b64encode(mulaw).decode()
        await self.send({"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}})
        self.sent_at.append(asyncio.get_running_loop().time())

    async def mark(self, name: str) -> None:
        await self.send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def speak(self, mulaw: bytes, name: str) -> None:
        """Agent audio plus a mark; returns once the caller echoed the mark (the audio has been heard)."""
        await self.media(mulaw)
        await self.mark(name)
        await self.wait_for(lambda m: m["event"] == "mark" and m["mark"]["name"] == name)


Script = Callable[[StreamConn], Awaitable[None]]


@dataclass
class ActionHit:
    method: str
    url: str  # the public URL as Twilio requested it (query included)
    params: dict[str, str]
    valid: bool  # the X-Twilio-Signature matched


def connect_twiml(stream_url: str, action: str | None, gen: int, method: str | None = None) -> str:
    """``<Connect action method><Stream><Parameter gen>`` built with the twilio package."""
    response = VoiceResponse()
    kwargs = {k: v for k, v in (("action", action), ("method", method)) if v is not None}
    connect = Connect(**kwargs)
    connect.stream(url=stream_url).parameter(name="gen", value=str(gen))
    response.append(connect)
    return str(response)


def hangup_twiml() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response)


Answer = Callable[["ReattachIvr", ActionHit], Awaitable[str] | str]


@dataclass
class ReattachIvr:
    """Webhook, ``<Connect action>``, media, status and event feed, each verified like a real server."""

    public_url: str = PUBLIC
    stream_url: str = STREAM_URL
    first_action: str | None = ACTION_URL  # the action attribute in the webhook's TwiML (may be relative)
    scripts: list[Script] = field(default_factory=list)  # the n-th stream's script (default: leave it open)
    answers: list[Answer] = field(default_factory=list)  # the n-th action's answer (default: <Hangup/>)
    refuse_streams: frozenset[int] = frozenset()  # stream attempts (1-based) answered with HTTP 403
    port: int = 0
    webhooks: list[dict[str, str]] = field(default_factory=list)
    actions: list[ActionHit] = field(default_factory=list)
    status_callbacks: list[dict[str, str]] = field(default_factory=list)
    sse_requests: int = 0
    ws_attempts: int = 0
    ws_hosts: list[str] = field(default_factory=list)
    conns: list[StreamConn] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    script_errors: list[BaseException] = field(default_factory=list)
    sequence: TwilioCallSequence = field(default_factory=TwilioCallSequence)  # the server's own order check
    events: list[dict[str, Any]] = field(default_factory=list)
    events_changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/twilio/voice", self._voice, methods=["POST"]),
                Route("/twilio/stream-ended", self._action, methods=["POST", "GET"]),
                Route("/twilio/next", self._action, methods=["POST", "GET"]),
                Route("/twilio/status", self._status, methods=["POST"]),
                Route("/api/calls/{sid}/events", self._events, methods=["GET"]),
                WebSocketRoute("/twilio/media", self._media),
            ]
        )

    def publish(self, kind: str, **fields: Any) -> None:
        self.events.append({"type": kind, "n": len(self.events), **fields})
        changed, self.events_changed = self.events_changed, asyncio.Event()
        changed.set()

    def _public(self, request: Request) -> str:
        query = request.url.query
        return self.public_url + request.url.path + (f"?{query}" if query else "")

    async def _voice(self, request: Request) -> Response:
        params = dict(parse_qsl((await request.body()).decode()))
        signature = request.headers.get("x-twilio-signature", "")
        if not RequestValidator(AUTH_TOKEN).validate(self._public(request), params, signature):
            return Response("bad signature", status_code=403)
        self.webhooks.append(params)
        return Response(connect_twiml(self.stream_url, self.first_action, 1), media_type="application/xml")

    async def _action(self, request: Request) -> Response:
        url = self._public(request)
        if request.method == "POST":
            params = dict(parse_qsl((await request.body()).decode()))
            signed: dict[str, str] = params
        else:
            params, signed = dict(request.query_params), {}
        valid = RequestValidator(AUTH_TOKEN).validate(
            url, signed, request.headers.get("x-twilio-signature", "")
        )
        hit = ActionHit(request.method, url, params, valid)
        self.actions.append(hit)
        if not valid:
            return Response("bad signature", status_code=403)
        n = len(self.actions)
        answer = self.answers[n - 1] if n <= len(self.answers) else None
        twiml = hangup_twiml() if answer is None else answer(self, hit)
        if not isinstance(twiml, str):
            twiml = await twiml
        return Response(twiml, media_type="application/xml")

    async def _status(self, request: Request) -> Response:
        params = dict(parse_qsl((await request.body()).decode()))
        signature = request.headers.get("x-twilio-signature", "")
        if not RequestValidator(AUTH_TOKEN).validate(self._public(request), params, signature):
            return Response("bad signature", status_code=403)
        self.status_callbacks.append(params)
        return Response(status_code=204)

    async def _events(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {OPERATOR_TOKEN}":
            return Response(status_code=401)
        self.sse_requests += 1

        async def follow() -> AsyncIterator[str]:
            i = 0
            while True:
                while i < len(self.events):
                    event = self.events[i]
                    i += 1
                    yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
                    if event["type"] == "call.ended":
                        return
                await self.events_changed.wait()

        return StreamingResponse(follow(), media_type="text/event-stream")

    async def _media(self, ws: WebSocket) -> None:
        self.ws_attempts += 1
        number = self.ws_attempts
        signature = ws.headers.get("x-twilio-signature", "")
        if number in self.refuse_streams or not RequestValidator(AUTH_TOKEN).validate(
            self.stream_url, {}, signature
        ):
            await ws.close(code=1008)  # before accept: uvicorn answers the upgrade with HTTP 403
            return
        self.ws_hosts.append(ws.headers.get("host", ""))
        await ws.accept()
        conn = StreamConn(ws, number)
        self.conns.append(conn)
        script = self.scripts[len(self.conns) - 1] if len(self.conns) <= len(self.scripts) else None
        task = asyncio.create_task(self._run_script(conn, script)) if script is not None else None
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
                    self.sequence.from_twilio(check_from_twilio(raw))
                except ProtocolViolation as exc:
                    self.violations.append(f"stream {number}: {exc}")
                conn.add(json.loads(raw))
        finally:
            if task is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task), 2.0)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _run_script(self, conn: StreamConn, script: Script) -> None:
        try:
            await conn.wait_for(lambda m: m["event"] == "start")
            await script(conn)
        except Exception as exc:  # surfaced when the server stops
            self.script_errors.append(exc)


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # leave pytest's signal handlers alone
        yield


@contextlib.asynccontextmanager
async def serve(fake: ReattachIvr) -> AsyncIterator[ReattachIvr]:
    """Serve ``fake`` on a pre-bound loopback socket (listening before uvicorn starts: no startup race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    fake.port = sock.getsockname()[1]
    config = uvicorn.Config(
        fake.app(), log_level="warning", lifespan="off", ws="websockets-sansio", timeout_graceful_shutdown=1
    )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield fake
    finally:
        fake.publish("call.ended", outcome="test-over")  # let any open event feed finish
        server.should_exit = True
        await task
        sock.close()
    assert fake.script_errors == [], fake.script_errors
    assert fake.violations == [], fake.violations


def dead_port() -> int:
    """A loopback port nothing listens on (bound, then closed): connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def options(proxy_or_port: TcpProxy | int, oracle: TwilioOracle, **overrides: Any) -> CallOptions:
    """A call to the public URL, reaching the stand-in through ``proxy_or_port`` (base_url + connect_to)."""
    port = proxy_or_port.port if isinstance(proxy_or_port, TcpProxy) else proxy_or_port
    values: dict[str, Any] = {
        "base_url": f"http://127.0.0.1:{port}",
        "public_url": PUBLIC,
        "connect_to": f"127.0.0.1:{port}",
        "account_sid": "",
        "auth_token": AUTH_TOKEN,
        "operator_token": "",
        "duration_s": 15.0,
        "observer": oracle,
    }
    values.update(overrides)
    return CallOptions(**values)


def another_stream(action: str | None = ACTION_URL, method: str | None = None) -> Answer:
    """An action answer: a new ``<Connect action><Stream>`` whose ``gen`` parameter counts the streams."""

    def answer(fake: ReattachIvr, hit: ActionHit) -> str:
        return connect_twiml(fake.stream_url, action, len(fake.actions) + 1, method)

    return answer


async def close_at_once(conn: StreamConn) -> None:
    await conn.ws.close(code=1000)


def assert_streams_valid(fake: ReattachIvr, result: CallResult, oracle: TwilioOracle) -> None:
    """Both ends saw Twilio's per-stream order; the oracle and the server agree on the streams."""
    assert oracle.violations == [], oracle.violations
    opened = [leg.stream_sid for leg in result.streams if leg.opened_at is not None]
    assert oracle.sequence.stream_sids == fake.sequence.stream_sids == [c.stream_sid for c in fake.conns]
    assert opened == [c.stream_sid for c in fake.conns]
    for conn in fake.conns:
        msgs = [f.msg for f in conn.frames]
        assert [m["event"] for m in msgs[:2]] == ["connected", "start"]
        assert [int(m["sequenceNumber"]) for m in msgs[1:]] == list(range(1, len(msgs)))
        media = [m for m in msgs if m["event"] == "media"]
        assert [m["media"]["chunk"] for m in media] == [str(i) for i in range(1, len(media) + 1)]
        assert [m["media"]["timestamp"] for m in media] == [str(20 * i) for i in range(len(media))]
        assert msgs[1]["start"]["callSid"] == result.call_sid


# ----------------------------------------------------------------------------------------------------------
# re-attach after a broken stream
# ------------------------------------------------------------------------------------------------------------


async def test_dropped_stream_reattaches_then_server_hangs_up() -> None:
    """Stream 1 breaks (no close frame) → signed action → stream 2 → server closes → action → <Hangup/>."""
    proxy_box: list[TcpProxy] = []
    dropped_at: list[float] = []

    async def first(conn: StreamConn) -> None:
        await conn.speak(AGENT_1, "one")
        await conn.wait_for(lambda m: m["event"] == "media" and int(m["media"]["chunk"]) >= 30)
        dropped_at.append(asyncio.get_running_loop().time())
        assert proxy_box[0].drop("GET /twilio/media") == 1

    async def second(conn: StreamConn) -> None:
        await conn.speak(AGENT_2, "two")
        await conn.ws.close(code=1000)

    oracle = TwilioOracle()
    fake = ReattachIvr(scripts=[first, second], answers=[another_stream(), lambda f, h: hangup_twiml()])
    async with serve(fake), TcpProxy(fake.port) as proxy:
        proxy_box.append(proxy)
        call = SimulatedCall(options(proxy, oracle))
        task = asyncio.create_task(call.run())
        leg2 = await call.wait_stream(2)
        assert call.current_stream_sid == leg2.stream_sid != call.stream_sid
        result = await asyncio.wait_for(task, 20)

    assert result.errors == []
    assert result.ended_by == "server"
    assert result.legs == 2
    one, two = result.streams
    assert one.stream_sid == result.stream_sid == call.stream_sid
    assert one.stream_sid != two.stream_sid and two.stream_sid.startswith("MZ")
    assert (one.how_ended, one.close_code) == ("connection-lost", 1006)
    assert (two.how_ended, two.close_code) == ("server-closed", 1000)
    assert result.close_code == 1000  # the last stream's
    assert (one.parameters, two.parameters) == ({"gen": "1"}, {"gen": "2"})
    assert fake.conns[1].start["start"]["customParameters"] == {"gen": "2"}
    assert_streams_valid(fake, result, oracle)

    # one signed action request per ended stream, with the webhook's parameters and CallStatus=in-progress
    assert [(hit.method, hit.url, hit.valid) for hit in fake.actions] == [("POST", ACTION_URL, True)] * 2
    hook = fake.webhooks[0]
    for hit in fake.actions:
        assert set(hit.params) == set(hook) == VOICE_KEYS
        assert hit.params["CallStatus"] == "in-progress"
        assert {k: v for k, v in hit.params.items() if k != "CallStatus"} == {
            k: v for k, v in hook.items() if k != "CallStatus"
        }
    assert (one.action_status, two.action_status) == (200, 200)
    assert len(fake.status_callbacks) == 1 and fake.status_callbacks[0]["CallStatus"] == "completed"

    # the caller heard both streams' audio; its frames went to whichever stream was open
    assert AGENT_1 in call.played_audio and AGENT_2 in call.played_audio
    assert result.agent_audio_ms == (len(AGENT_1) + len(AGENT_2)) // 8
    assert [leg.frames_sent for leg in result.streams] == [
        sum(f.msg["event"] == "media" for f in c.frames) for c in fake.conns
    ]
    assert result.frames_sent == one.frames_sent + two.frames_sent
    assert len(call.sent_audio) == 160 * (result.frames_sent + result.frames_unsent)

    # the gap: from the last agent media on stream 1 to the first on stream 2, measured by the caller
    t = [one.opened_at, one.last_media_at, one.ended_at, two.opened_at, two.started_at, two.first_media_at]
    assert None not in t and t == sorted(t), t  # one stream after the other on the call's clock
    assert one.last_media_at is not None and two.first_media_at is not None
    (gap,) = result.gaps_ms()
    assert gap == round((two.first_media_at - one.last_media_at) * 1000, 1)
    server_gap_ms = (fake.conns[1].sent_at[0] - fake.conns[0].sent_at[-1]) * 1000
    assert abs(gap - server_gap_ms) < 500, (gap, server_gap_ms)
    (heard_gap,) = result.gaps_ms(heard=True)
    assert 0 < heard_gap <= gap + 40  # the last stream-1 audio played after it arrived (±1 tick)
    assert dropped_at and fake.conns[0].sent_at[-1] < dropped_at[0]  # its audio went out before the drop


async def test_server_close_with_action_reattaches_with_relative_urls_and_get() -> None:
    """A relative action resolves against the document that named it; GET is signed over URL + query."""

    async def speak_and_close(conn: StreamConn) -> None:
        await conn.speak(AGENT_1[:800], f"s{conn.number}")
        await conn.ws.close(code=1000)

    def relative_get(fake: ReattachIvr, hit: ActionHit) -> str:
        return connect_twiml(fake.stream_url, "next?leg=2", 2, "GET")  # relative to /twilio/stream-ended

    oracle = TwilioOracle()
    fake = ReattachIvr(
        first_action="/twilio/stream-ended",  # relative to the webhook URL
        scripts=[speak_and_close, speak_and_close],
        answers=[relative_get, lambda f, h: hangup_twiml()],
    )
    async with serve(fake), TcpProxy(fake.port) as proxy:
        result = await asyncio.wait_for(SimulatedCall(options(proxy, oracle)).run(), 20)

    assert result.errors == []
    assert (result.ended_by, result.legs) == ("server", 2)
    assert [leg.how_ended for leg in result.streams] == ["server-closed", "server-closed"]
    first, second = fake.actions
    assert (first.method, first.url, first.valid) == ("POST", ACTION_URL, True)
    assert second.method == "GET" and second.valid
    assert second.url.startswith(PUBLIC + "/twilio/next?leg=2&")  # the parameters follow the action's query
    assert second.params["leg"] == "2" and second.params["CallStatus"] == "in-progress"
    assert set(second.params) == VOICE_KEYS | {"leg"}
    assert len(result.gaps_ms()) == 1
    assert_streams_valid(fake, result, oracle)


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ("<Response/>", ""),
        ("<Response><Hangup/></Response>", ""),
        ("<Response><Say>Goodbye.</Say><Hangup/></Response>", "Goodbye."),
    ],
)
async def test_action_answer_without_a_stream_ends_the_call(answer: str, said: str) -> None:
    oracle = TwilioOracle()
    lines: list[str] = []
    fake = ReattachIvr(scripts=[close_at_once], answers=[lambda f, h: answer])
    async with serve(fake), TcpProxy(fake.port) as proxy:
        result = await asyncio.wait_for(SimulatedCall(options(proxy, oracle), printer=lines.append).run(), 20)
    assert result.errors == []
    assert (result.ended_by, result.legs, len(fake.actions), fake.ws_attempts) == ("server", 1, 1, 1)
    assert result.streams[0].action_status == 200
    assert result.gaps_ms() == []  # one stream: no gap
    assert any(f"server {f'said {said!r} and ' if said else ''}hung up" in line for line in lines)
    assert len(fake.status_callbacks) == 1
    assert_streams_valid(fake, result, oracle)


@pytest.mark.parametrize("how", ["hang_up", "time_limit"])
async def test_caller_hang_up_sends_stop_and_does_not_request_the_action(how: str) -> None:
    oracle = TwilioOracle()
    fake = ReattachIvr(answers=[another_stream()])
    async with serve(fake), TcpProxy(fake.port) as proxy:
        duration = 0.4 if how == "time_limit" else 15.0
        call = SimulatedCall(options(proxy, oracle, duration_s=duration))
        task = asyncio.create_task(call.run())
        await call.wait_started()
        if how == "hang_up":
            await call.hang_up()
        result = await asyncio.wait_for(task, 20)
        await fake.conns[0].wait_for(lambda m: m["event"] == "stop")
    assert result.errors == []
    assert result.ended_by == ("caller" if how == "hang_up" else "timeout")
    assert fake.actions == [] and fake.ws_attempts == 1
    (leg,) = result.streams
    assert leg.how_ended == "caller-hung-up" and leg.action_status is None
    assert fake.conns[0].frames[-1].msg["event"] == "stop"
    assert len(fake.status_callbacks) == 1
    assert_streams_valid(fake, result, oracle)


async def test_hang_up_while_the_action_is_pending_ends_the_call_without_a_new_stream() -> None:
    action_arrived = asyncio.Event()
    release = asyncio.Event()

    async def slow_answer(fake: ReattachIvr, hit: ActionHit) -> str:
        action_arrived.set()
        await release.wait()
        return connect_twiml(fake.stream_url, ACTION_URL, 2)

    oracle = TwilioOracle()
    fake = ReattachIvr(scripts=[close_at_once], answers=[slow_answer])
    async with serve(fake), TcpProxy(fake.port) as proxy:
        call = SimulatedCall(options(proxy, oracle))
        task = asyncio.create_task(call.run())
        await asyncio.wait_for(action_arrived.wait(), 10)
        await call.hang_up()
        result = await asyncio.wait_for(task, 10)
        release.set()
    assert result.ended_by == "caller"
    assert result.legs == 1 and fake.ws_attempts == 1
    assert result.streams[0].how_ended == "server-closed"
    assert result.streams[0].action_status is None  # the answer never arrived
    assert len(fake.actions) == 1
    assert result.errors == []


async def test_refused_stream_counts_as_ended_and_requests_the_action() -> None:
    async def speak_and_close(conn: StreamConn) -> None:
        await conn.speak(AGENT_2[:800], "after-refusal")
        await conn.ws.close(code=1000)

    oracle = TwilioOracle()
    fake = ReattachIvr(
        refuse_streams=frozenset({1}),
        scripts=[speak_and_close],
        answers=[another_stream(), lambda f, h: hangup_twiml()],
    )
    async with serve(fake), TcpProxy(fake.port) as proxy:
        call = SimulatedCall(options(proxy, oracle))
        result = await asyncio.wait_for(call.run(), 20)
    assert result.ended_by == "server"
    assert [leg.how_ended for leg in result.streams] == ["refused", "server-closed"]
    refused, served = result.streams
    assert refused.opened_at is None and refused.started_at is None and refused.action_status == 200
    assert len(result.errors) == 1 and "HTTP 403" in result.errors[0]
    assert len(fake.actions) == 2 and all(hit.valid for hit in fake.actions)
    assert fake.ws_attempts == 2 and len(fake.conns) == 1
    assert served.stream_sid == fake.conns[0].stream_sid != result.stream_sid
    assert result.gaps_ms() == []  # only one stream carried agent audio
    assert_streams_valid(fake, result, oracle)


async def test_refused_stream_without_action_is_still_a_rejected_call() -> None:
    oracle = TwilioOracle()
    fake = ReattachIvr(first_action=None, refuse_streams=frozenset({1}))
    async with serve(fake), TcpProxy(fake.port) as proxy:
        result = await asyncio.wait_for(SimulatedCall(options(proxy, oracle)).run(), 20)
    assert result.ended_by == "rejected"
    assert [leg.how_ended for leg in result.streams] == ["refused"]
    assert fake.actions == []


async def test_at_most_five_streams_per_call() -> None:
    oracle = TwilioOracle()
    fake = ReattachIvr(scripts=[close_at_once] * 6, answers=[another_stream()] * 6)
    async with serve(fake), TcpProxy(fake.port) as proxy:
        result = await asyncio.wait_for(SimulatedCall(options(proxy, oracle)).run(), 30)
    assert result.legs == MAX_STREAMS == 5
    assert fake.ws_attempts == 5 and len(fake.actions) == 5  # the 5th stream's action asked for a 6th
    assert result.ended_by == "server"
    assert len(result.errors) == 1 and "at most 5" in result.errors[0]
    assert len({leg.stream_sid for leg in result.streams}) == 5
    assert [leg.parameters["gen"] for leg in result.streams] == ["1", "2", "3", "4", "5"]
    assert_streams_valid(fake, result, oracle)


# ----------------------------------------------------------------------------------------------------------
# several backends behind one public URL
# ------------------------------------------------------------------------------------------------------------


async def test_backends_skip_a_dead_one_and_sign_over_the_public_url() -> None:
    async def first(conn: StreamConn) -> None:
        fake.publish("call.started", stream=conn.number)
        await conn.speak(AGENT_1[:800], "a")
        await conn.ws.close(code=1000)

    async def second(conn: StreamConn) -> None:
        await conn.speak(AGENT_2[:800], "b")
        await conn.ws.close(code=1000)

    def last_answer(fake: ReattachIvr, hit: ActionHit) -> str:
        fake.publish("call.ended", outcome="completed")
        return hangup_twiml()

    oracle = TwilioOracle()
    fake = ReattachIvr(scripts=[first, second], answers=[another_stream(), last_answer])
    dead = f"http://127.0.0.1:{dead_port()}"
    async with serve(fake):
        opts = CallOptions(
            base_url=dead,  # ignored: the backends carry every request
            public_url=PUBLIC,
            backends=(dead, fake.base_url + "/"),
            account_sid="",
            auth_token=AUTH_TOKEN,
            operator_token=OPERATOR_TOKEN,
            duration_s=15.0,
            observer=oracle,
        )
        call = SimulatedCall(opts)
        result = await asyncio.wait_for(call.run(), 20)
    assert result.errors == []
    assert (result.ended_by, result.legs) == ("server", 2)
    # every request reached the live backend, and each signature (checked over PUBLIC) held
    assert len(fake.webhooks) == 1 and len(fake.status_callbacks) == 1
    assert [hit.valid for hit in fake.actions] == [True, True]
    assert fake.ws_attempts == 2 and fake.ws_hosts == ["ivr.example.test"] * 2
    assert fake.sse_requests == 1
    assert [e["type"] for e in result.transcript] == ["call.started", "call.ended"]
    assert_streams_valid(fake, result, oracle)


async def test_every_backend_dead_reports_where_it_tried() -> None:
    dead = (f"http://127.0.0.1:{dead_port()}", f"http://127.0.0.1:{dead_port()}")
    result = await SimulatedCall(
        CallOptions(public_url=PUBLIC, backends=dead, auth_token="t", operator_token="")
    ).run()
    assert result.ended_by == "rejected" and result.webhook_status is None
    assert f"running at backends {dead[0]}, {dead[1]}" in result.errors[0]


async def test_live_transcript_broken_mid_call_is_followed_again_without_duplicates() -> None:
    proxy_box: list[TcpProxy] = []

    async def script(conn: StreamConn) -> None:
        fake.publish("call.started")
        fake.publish("transcript", role="agent", text="Hello.")
        await conn.speak(AGENT_1[:400], "hello")
        assert proxy_box[0].drop("GET /api/calls/") == 1
        fake.publish("transcript", role="agent", text="Still here.")
        await conn.ws.close(code=1000)

    def last_answer(fake: ReattachIvr, hit: ActionHit) -> str:
        fake.publish("call.ended", outcome="completed")
        return hangup_twiml()

    oracle = TwilioOracle()
    fake = ReattachIvr(scripts=[script], answers=[last_answer])
    async with serve(fake), TcpProxy(fake.port) as proxy:
        proxy_box.append(proxy)
        result = await asyncio.wait_for(
            SimulatedCall(options(proxy, oracle, operator_token=OPERATOR_TOKEN)).run(), 20
        )
    assert result.errors == []
    assert fake.sse_requests == 2  # followed again after the break
    assert [e.get("text", e["type"]) for e in result.transcript] == [
        "call.started",
        "Hello.",
        "Still here.",
        "call.ended",
    ]


async def test_ivr_call_summary_counts_the_media_streams(tmp_path: Path) -> None:
    async def speak_and_close(conn: StreamConn) -> None:
        await conn.speak(AGENT_1[:800], f"s{conn.number}")
        await conn.ws.close(code=1000)

    fake = ReattachIvr(scripts=[speak_and_close] * 2, answers=[another_stream()])
    lines: list[str] = []
    async with serve(fake), TcpProxy(fake.port) as proxy:
        top = argparse.ArgumentParser(prog="ivr")
        register(top.add_subparsers(dest="command", required=True))
        args = top.parse_args(
            [
                *("call", proxy.base_url, "--public-url", PUBLIC, "--connect-to", f"127.0.0.1:{proxy.port}"),
                *("--auth-token", AUTH_TOKEN, "--token", "", "--out", str(tmp_path / "agent.wav")),
                *("--duration", "15", "--quiet"),
            ]
        )
        code = await asyncio.wait_for(run_call(args, out=lines.append), 20)
    assert code == 0, lines
    (summary,) = [line for line in lines if "media streams:" in line]
    assert re.fullmatch(r"  media streams: 2, silence between them \d+ ms", summary), summary
    assert len(fake.actions) == 2


# ----------------------------------------------------------------------------------------------------------
# pieces: the order checker, the router, the gap arithmetic
# ------------------------------------------------------------------------------------------------------------

AC, CA = new_sid("AC"), new_sid("CA")


def _stream(sid: str, call_sid: str = CA, frames: int = 2) -> list[str]:
    sim = TwilioStreamSimulator(AC, call_sid, sid, {"gen": "x"})
    out = [sim.connected(), sim.start()]
    out += [sim.media(b"\xff" * 160, 20 * i) for i in range(frames)]
    out.append(sim.mark("m"))
    return out


def _feed(checker: TwilioCallSequence, raws: list[str]) -> None:
    for raw in raws:
        checker.from_twilio(check_from_twilio(raw))


def test_sequence_checker_accepts_streams_with_their_own_numbering() -> None:
    checker = TwilioCallSequence()
    one, two = new_sid("MZ"), new_sid("MZ")
    _feed(checker, _stream(one))
    checker.to_twilio(check_to_twilio({"event": "clear", "streamSid": one}))
    _feed(checker, _stream(two, frames=3))  # a new connected + start: numbering starts again at 1
    checker.to_twilio(check_to_twilio({"event": "clear", "streamSid": two}))
    assert checker.stream_sids == [one, two] and checker.call_sid == CA


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda one, two: _stream(one) + _stream(one), "already used"),
        (lambda one, two: _stream(one) + _stream(two, call_sid=new_sid("CA")), "differs from this call"),
        (lambda one, two: _stream(one) + _stream(two)[1:], "must follow connected"),
        (lambda one, two: _stream(one)[:2] + _stream(one)[3:], "sequenceNumber 3 after 1"),
        (lambda one, two: [*_stream(one)[:2], _stream(two)[2]], "but the open stream is MZ"),
        (lambda one, two: [_stream(one)[2]], "only between start and stop"),
    ],
)
def test_sequence_checker_rejects_what_twilio_never_sends(
    mutate: Callable[[str, str], list[str]], fragment: str
) -> None:
    one, two = new_sid("MZ"), new_sid("MZ")
    with pytest.raises(ProtocolViolation, match=fragment.replace("(", r"\(")):
        _feed(TwilioCallSequence(), mutate(one, two))


def test_sequence_checker_rejects_app_frames_for_a_stream_that_is_not_open() -> None:
    checker = TwilioCallSequence()
    one, two = new_sid("MZ"), new_sid("MZ")
    with pytest.raises(ProtocolViolation, match="before any stream started"):
        checker.to_twilio(check_to_twilio({"event": "clear", "streamSid": one}))
    _feed(checker, _stream(one) + _stream(two))
    with pytest.raises(ProtocolViolation, match=f"names stream {one}"):
        checker.to_twilio(check_to_twilio({"event": "clear", "streamSid": one}))


def test_router_maps_public_urls_to_backends_or_base() -> None:
    pool = Router(PUBLIC, "http://unused:1", ("http://a:1", "http://b:2"))
    assert pool.http_targets(PUBLIC + "/twilio/voice?x=1") == [
        "http://a:1/twilio/voice?x=1",
        "http://b:2/twilio/voice?x=1",
    ]
    assert pool.http_targets("https://elsewhere.test/cb") == ["http://a:1/cb", "http://b:2/cb"]
    ws = pool.ws_targets(STREAM_URL)
    assert [(t.url, t.host, t.port) for t in ws] == [
        ("ws://ivr.example.test/twilio/media", "a", 1),
        ("ws://ivr.example.test/twilio/media", "b", 2),
    ]
    single = Router(PUBLIC, "http://127.0.0.1:9", connect_to="127.0.0.1:9")
    assert single.http_targets(ACTION_URL) == ["http://127.0.0.1:9/twilio/stream-ended"]
    assert single.http_targets("https://elsewhere.test/cb") == ["https://elsewhere.test/cb"]
    assert [(t.url, t.host, t.port) for t in single.ws_targets(STREAM_URL)] == [
        ("ws://ivr.example.test/twilio/media", "127.0.0.1", 9)
    ]
    assert [(t.url, t.host) for t in Router(PUBLIC, PUBLIC).ws_targets(STREAM_URL)] == [(STREAM_URL, None)]


@pytest.mark.parametrize(
    "backends",
    [("127.0.0.1:8000",), "http://127.0.0.1:8000", ("http://h:1/?q=1",), (8000,)],
)
def test_bad_backends_are_refused(backends: Any) -> None:
    with pytest.raises(ValueError, match="backend"):
        SimulatedCall(CallOptions(backends=backends, auth_token="t"))


def test_gaps_skip_streams_without_agent_audio() -> None:
    def leg(media: tuple[float, float] | None, heard: tuple[float, float] | None = None) -> StreamLeg:
        first, last = media or (None, None)
        heard_first, heard_last = heard or (None, None)
        return StreamLeg(
            new_sid("MZ"),
            STREAM_URL,
            first_media_at=first,
            last_media_at=last,
            first_heard_at=heard_first,
            last_heard_at=heard_last,
        )

    result = CallResult(
        call_sid=CA,
        stream_sid="",
        ended_by="server",
        duration_s=9.0,
        frames_sent=0,
        marks_echoed=0,
        clears=0,
        agent_audio_ms=0,
        webhook_status=200,
        twiml="",
        transcript=[],
        errors=[],
        streams=[leg((1.0, 2.0), (1.02, 2.5)), leg(None), leg((3.25, 4.0), (3.3, 4.1)), leg((4.5, 5.0))],
    )
    assert result.legs == 4
    assert result.gaps_ms() == [1250.0, 500.0]
    assert result.gaps_ms(heard=True) == [800.0]
