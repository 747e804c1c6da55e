"""The async shell of ``ivr call``: plays Twilio against a running ivr server over real HTTP and WebSockets.

Why: the only honest way to know the phone path works without a phone is to do exactly what Twilio does —
POST the signed voice webhook, follow the TwiML to the media WebSocket with a signed upgrade, stream 20 ms
μ-law frames in real time, play the agent's audio through a playback queue that echoes marks when the audio
has been *heard*, and hang up with ``stop``. The protocol rules live in :mod:`ivr.caller.twilio_side`; this
module only moves bytes, keeps the clock, and follows the operator's live event feed (SSE) for a readable
transcript.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from ivr.caller.twilio_side import (
    DTMF_DIGITS,
    FRAME_BYTES,
    FRAME_MS,
    MULAW_SILENCE,
    Clear,
    Mark,
    Media,
    PlaybackBuffer,
    SayHangup,
    ServerMessageError,
    StreamInstruction,
    TwilioStreamSimulator,
    TwimlError,
    new_sid,
    parse_server_message,
    parse_twiml,
)

__all__ = [
    "ENDED_PHRASES",
    "CallEndedError",
    "CallOptions",
    "CallResult",
    "SimulatedCall",
    "resolve_options",
]

#: Header values real Twilio sends; servers sometimes log or route on them.
WEBHOOK_USER_AGENT = "TwilioProxy/1.1"
MEDIA_USER_AGENT = "Twilio.TmeWs/1.0"
#: Human wording for CallResult.ended_by, shared by the live log and the CLI summary.
ENDED_PHRASES = {
    "server": "call ended by server",
    "caller": "call ended by caller (hang-up)",
    "timeout": "call ended: time limit reached, hung up",
    "rejected": "call refused",
}
#: How long to keep retrying the live event feed while the server has not registered the call yet (HTTP 404).
SSE_RETRY_S = 2.0
#: How long to keep reading the event feed after the media stream ended, waiting for ``call.ended``.
SSE_GRACE_S = 3.0


@dataclass
class CallOptions:
    """Everything one simulated call needs; ``None`` credentials are filled from the environment."""

    base_url: str = "http://127.0.0.1:8000"  # where the webhook is POSTed
    public_url: str | None = None  # origin Twilio would have signed (default: base_url)
    from_number: str = "+15550100001"
    to_number: str = "+15550100002"
    account_sid: str | None = None  # None → TWILIO_ACCOUNT_SID, else a fresh AC… sid
    auth_token: str | None = None  # None → TWILIO_AUTH_TOKEN; empty → unsigned requests + a warning
    caller_audio: bytes = b""  # μ-law 8 kHz spoken by the caller (then silence)
    dtmf: list[tuple[float, str]] = field(default_factory=list)  # (seconds from stream start, digit)
    duration_s: float = 30.0  # hang up (stop) after this long if the server hasn't ended the call
    # "host:port" to dial instead of the TwiML url's host (wss→ws); the signature still covers the TwiML url
    connect_to: str | None = None
    operator_token: str | None = None  # for the live transcript; None → IVR_OPERATOR_TOKEN
    observer: Callable[[str, str], None] | None = None  # observer("sent"|"received", raw) for every WS frame
    on_event: Callable[[dict[str, Any]], None] | None = None  # each live-transcript (SSE) event on arrival
    send_status_callback: bool = True


@dataclass
class CallResult:
    """What happened on the call, for the CLI summary and for tests."""

    call_sid: str
    stream_sid: str
    ended_by: str  # "server" | "caller" | "timeout" | "rejected"
    duration_s: float
    frames_sent: int
    marks_echoed: int
    clears: int
    agent_audio_ms: int
    webhook_status: int | None
    twiml: str
    transcript: list[dict[str, Any]]
    errors: list[str]
    close_code: int | None = None  # how the server closed the media WebSocket, if it did


class CallEndedError(RuntimeError):
    """``wait_for`` gave up because the call ended before a matching server message arrived."""


def resolve_options(options: CallOptions, env: Mapping[str, str] | None = None) -> CallOptions:
    """Fill the ``None`` credentials from ``env`` (default ``os.environ``), as the CLI documents.

    The variable names are the same ones :class:`ivr.settings.Settings` reads for the server, so one shell
    environment serves both ``ivr serve`` and ``ivr call``.
    """
    env = os.environ if env is None else env
    return replace(
        options,
        account_sid=options.account_sid
        if options.account_sid is not None
        else env.get("TWILIO_ACCOUNT_SID", ""),
        auth_token=options.auth_token if options.auth_token is not None else env.get("TWILIO_AUTH_TOKEN", ""),
        operator_token=(
            options.operator_token
            if options.operator_token is not None
            else env.get("IVR_OPERATOR_TOKEN", "")
        ),
    )


def _check_options(options: CallOptions) -> list[tuple[float, str]]:
    """Validate what a user can get wrong; return the DTMF schedule sorted by time."""
    for name in ("base_url", "public_url"):
        value = getattr(options, name)
        if value is None:
            continue
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{name}={value!r} must be an http(s) URL such as http://127.0.0.1:8000")
    if options.account_sid:
        sid = options.account_sid
        if len(sid) != 34 or not sid.startswith("AC"):
            raise ValueError(f"account_sid {sid!r} must be AC followed by 32 hex characters")
    if not options.duration_s > 0:
        raise ValueError(f"duration_s must be positive, got {options.duration_s!r}")
    if options.connect_to is not None:
        _split_host_port(options.connect_to)
    schedule: list[tuple[float, str]] = []
    for at, digit in options.dtmf:
        if digit not in DTMF_DIGITS:
            raise ValueError(f"DTMF digit must be one of 0-9, * or #, got {digit!r} (at {at} s)")
        if at < 0:
            raise ValueError(f"DTMF time must be >= 0 seconds, got {at} for digit {digit!r}")
        schedule.append((float(at), digit))
    return sorted(schedule, key=lambda item: item[0])


def _split_host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"connect_to={value!r} must be HOST:PORT, e.g. 127.0.0.1:8000")
    return host.strip("[]"), int(port)


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` at most ``timeout`` seconds; True when it was set."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


class SimulatedCall:
    """One inbound phone call as Twilio would place it. Use :meth:`run` once; control it while it runs."""

    def __init__(self, options: CallOptions, printer: Callable[[str], None] | None = None) -> None:
        self.options = resolve_options(options)
        self._dtmf_schedule = _check_options(self.options)
        self._printer = printer
        self.account_sid: str = self.options.account_sid or new_sid("AC")
        self.call_sid: str = new_sid("CA")
        self.stream_sid: str = new_sid("MZ")
        #: every valid server message, parsed
        self.received: list[dict[str, Any]] = []
        #: agent audio as heard on the real-time timeline (μ-law, silence where nothing played)
        self.played_audio = bytearray()
        #: caller audio as sent, one 20 ms frame per tick (μ-law)
        self.sent_audio = bytearray()
        #: events from the live transcript feed
        self.transcript: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._say = bytearray(self.options.caller_audio)
        self._pressed: list[str] = []
        self._started = asyncio.Event()
        self._stop = asyncio.Event()
        self._done = asyncio.Event()
        self._running = False
        self._end_reason: str | None = None
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], asyncio.Future[dict[str, Any]]]] = []
        self._send_lock = asyncio.Lock()
        self._t0: float | None = None
        self._frames_sent = 0
        self._marks_echoed = 0
        self._clears = 0
        self._close_code: int | None = None
        self._playback = PlaybackBuffer()
        #: ms of real time since the agent's audio last played (0 while it plays)
        self.agent_quiet_ms = 0
        self._agent_spoke = False
        self._quiet_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._sim = TwilioStreamSimulator(self.account_sid, self.call_sid, self.stream_sid, {})
        self._ws: ClientConnection | None = None

    # ------------------------------------------------------------------------------------------------------
    # live control
    # ------------------------------------------------------------------------------------------------------

    def say(self, mulaw: bytes) -> None:
        """Queue more caller audio; it is sent at real-time pace after whatever is already queued."""
        self._say += mulaw

    def press(self, digit: str) -> None:
        """Press a key: the ``dtmf`` message goes out with the next 20 ms tick."""
        if digit not in DTMF_DIGITS:
            raise ValueError(f"DTMF digit must be one of 0-9, * or #, got {digit!r}")
        self._pressed.append(digit)

    async def hang_up(self) -> None:
        """Send ``stop``, close the socket, and return once :meth:`run` has finished."""
        if self._end_reason is None:
            self._end_reason = "caller"
        self._stop.set()
        if self._running:
            await self._done.wait()

    async def wait_started(self, timeout: float = 5.0) -> None:
        """Return once ``start`` has been sent on the media stream."""
        if not await _wait(self._started, timeout):
            raise TimeoutError(f"the media stream did not start within {timeout} s (errors: {self.errors})")

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        """The first server message (already received or still to come) for which ``predicate`` is true."""
        for message in self.received:
            if predicate(message):
                return message
        if self._done.is_set():
            raise CallEndedError(f"call ended ({self._end_reason}) and no received message matched")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            events = [m.get("event") for m in self.received[-10:]]
            raise TimeoutError(
                f"no matching server message within {timeout} s "
                f"({len(self.received)} received; last events: {events})"
            ) from None
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    # ------------------------------------------------------------------------------------------------------
    # the call
    # ------------------------------------------------------------------------------------------------------

    def _elapsed(self) -> float:
        if self._t0 is None:
            return 0.0
        return asyncio.get_running_loop().time() - self._t0

    def _print(self, text: str) -> None:
        if self._printer is None:
            return
        elapsed = self._elapsed()
        minutes, seconds = divmod(elapsed, 60)
        self._printer(f"[{int(minutes):02d}:{seconds:04.1f}] {text}")

    def _error(self, text: str) -> None:
        self.errors.append(text)
        self._print(f"error: {text}")

    def _signature(self, url: str, params: Mapping[str, str]) -> dict[str, str]:
        token = self.options.auth_token
        if not token:
            return {}
        return {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, dict(params))}

    @property
    def _public(self) -> str:
        return (self.options.public_url or self.options.base_url).rstrip("/")

    @property
    def _base(self) -> str:
        return self.options.base_url.rstrip("/")

    async def run(self) -> CallResult:
        """Place the call and return when it has ended (by the server, the caller, a timeout or a refusal)."""
        if self._running or self._done.is_set():
            raise RuntimeError("SimulatedCall.run() can only be called once")
        self._running = True
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        webhook_status: int | None = None
        twiml = ""
        sse_task: asyncio.Task[None] | None = None
        stream_connected = False
        if not self.options.auth_token:
            self._print(
                "warning: no Twilio auth token (--auth-token or TWILIO_AUTH_TOKEN): requests are unsigned "
                "and a server that verifies signatures will refuse them"
            )
        try:
            async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as http:
                try:
                    webhook_status, twiml, instruction = await self._post_webhook(http)
                    if instruction is None:
                        self._end_reason = "rejected"
                        return self._result(webhook_status, twiml)
                    if self.options.operator_token:
                        sse_task = asyncio.create_task(self._follow_events(http))
                    if isinstance(instruction, SayHangup):
                        self._print(f"server said {instruction.text!r} and hung up (no media stream)")
                        self._end_reason = "server"
                    else:
                        stream_connected = await self._media_stream(instruction)
                    ended = self._end_reason or "server"
                    self._print(ENDED_PHRASES.get(ended, f"call ended ({ended})"))
                    if self.options.send_status_callback and ended != "rejected":
                        await self._post_status(http)
                    if sse_task is not None:
                        grace = SSE_GRACE_S if stream_connected else 0.5
                        await asyncio.wait({sse_task}, timeout=grace)
                    return self._result(webhook_status, twiml)
                finally:
                    if sse_task is not None:
                        sse_task.cancel()
                        await asyncio.gather(sse_task, return_exceptions=True)
        finally:
            self._running = False
            self._done.set()
            self._stop.set()
            for _predicate, future in self._waiters:
                if not future.done():
                    future.set_exception(CallEndedError(f"call ended ({self._end_reason}) before a match"))
            for _quiet, future in self._quiet_waiters:
                if not future.done():
                    future.set_exception(CallEndedError(f"call ended ({self._end_reason}) while waiting"))

    def _result(self, webhook_status: int | None, twiml: str) -> CallResult:
        return CallResult(
            call_sid=self.call_sid,
            stream_sid=self.stream_sid,
            ended_by=self._end_reason or "server",
            duration_s=round(self._elapsed(), 3),
            frames_sent=self._frames_sent,
            marks_echoed=self._marks_echoed,
            clears=self._clears,
            agent_audio_ms=self._playback.played_bytes // 8,
            webhook_status=webhook_status,
            twiml=twiml,
            transcript=list(self.transcript),
            errors=list(self.errors),
            close_code=self._close_code,
        )

    # -- HTTP ---------------------------------------------------------------------------------------------

    def _call_params(self) -> dict[str, str]:
        o = self.options
        return {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": self.call_sid,
            "CallStatus": "ringing",
            "Called": o.to_number,
            "Caller": o.from_number,
            "Direction": "inbound",
            "From": o.from_number,
            "FromCountry": "US",
            "To": o.to_number,
            "ToCountry": "US",
        }

    async def _post_webhook(
        self, http: httpx.AsyncClient
    ) -> tuple[int | None, str, StreamInstruction | SayHangup | None]:
        url = self._base + "/twilio/voice"
        params = self._call_params()
        headers = {
            "User-Agent": WEBHOOK_USER_AGENT,
            **self._signature(self._public + "/twilio/voice", params),
        }
        try:
            response = await http.post(url, data=params, headers=headers)
        except httpx.ConnectError as exc:
            self._error(f"could not connect to {url} ({exc}); is `ivr serve` running at {self._base}?")
            return None, "", None
        except httpx.HTTPError as exc:
            self._error(f"webhook POST {url} failed: {type(exc).__name__}: {exc}")
            return None, "", None
        body = response.text
        if response.status_code != 200:
            hint = ""
            if response.status_code == 403:
                hint = (
                    " — the server refused the signature: use the server's auth token (--auth-token or "
                    "TWILIO_AUTH_TOKEN) and pass --public-url equal to its IVR_PUBLIC_URL"
                )
            self._error(f"webhook POST {url} returned HTTP {response.status_code}: {body[:200]!r}{hint}")
            return response.status_code, body, None
        try:
            instruction = parse_twiml(body)
        except TwimlError as exc:
            self._error(f"webhook returned TwiML Twilio cannot stream: {exc}")
            return response.status_code, body, None
        if isinstance(instruction, StreamInstruction):
            self._print(f"webhook {response.status_code} → stream {instruction.url}")
            for text in instruction.says:
                self._print(f"twilio says: {text}")
        return response.status_code, body, instruction

    async def _post_status(self, http: httpx.AsyncClient) -> None:
        o = self.options
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": self.call_sid,
            "CallStatus": "completed",
            "CallDuration": str(round(self._elapsed())),
            "Called": o.to_number,
            "Caller": o.from_number,
            "Direction": "inbound",
            "From": o.from_number,
            "To": o.to_number,
        }
        url = self._base + "/twilio/status"
        headers = {
            "User-Agent": WEBHOOK_USER_AGENT,
            **self._signature(self._public + "/twilio/status", params),
        }
        try:
            response = await http.post(url, data=params, headers=headers)
        except httpx.HTTPError as exc:
            self._error(f"status callback POST {url} failed: {type(exc).__name__}: {exc}")
            return
        if response.status_code >= 300:
            self._error(f"status callback POST {url} returned HTTP {response.status_code}")

    # -- live event feed (SSE) ----------------------------------------------------------------------------

    async def _follow_events(self, http: httpx.AsyncClient) -> None:
        url = f"{self._base}/api/calls/{self.call_sid}/events"
        headers = {"Authorization": f"Bearer {self.options.operator_token}", "Accept": "text/event-stream"}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SSE_RETRY_S
        timeout = httpx.Timeout(10.0, read=None)
        try:
            while True:
                async with http.stream("GET", url, headers=headers, timeout=timeout) as response:
                    status = response.status_code
                    if status == 200:
                        await self._read_events(response)
                        return
                if status == 404 and loop.time() < deadline:
                    await asyncio.sleep(0.1)  # retry backoff: the server may not have registered the call yet
                    continue
                if status == 401:
                    self._error("live transcript refused (HTTP 401): check --token / IVR_OPERATOR_TOKEN")
                elif status == 404:
                    self._error(f"live transcript: the server does not know call {self.call_sid} (HTTP 404)")
                else:
                    self._error(f"live transcript GET {url} returned HTTP {status}")
                return
        except httpx.HTTPError as exc:
            self._error(f"live transcript stream failed: {type(exc).__name__}: {exc}")

    async def _read_events(self, response: httpx.Response) -> None:
        data_lines: list[str] = []
        async for line in response.aiter_lines():
            if line == "":
                if data_lines and self._on_event("\n".join(data_lines)):
                    return
                data_lines = []
            elif line.startswith("data:"):
                data_lines.append(line[5:].removeprefix(" "))
            # "event:", "id:", "retry:" and ":" comments carry nothing the JSON does not

    def _on_event(self, data: str) -> bool:
        """Record and print one SSE event; True once the call has ended."""
        try:
            event = json.loads(data)
        except ValueError as exc:
            self._error(f"live transcript: event data is not JSON ({exc}): {data[:120]!r}")
            return False
        if not isinstance(event, dict):
            self._error(f"live transcript: event data is not an object: {data[:120]!r}")
            return False
        self.transcript.append(event)
        if self.options.on_event is not None:
            try:
                self.options.on_event(event)
            except Exception as exc:  # a broken listener must not stop the transcript
                self._error(f"on_event raised: {type(exc).__name__}: {exc}")
        kind = event.get("type")
        if kind == "transcript":
            self._print(f"{event.get('role', '?')}: {event.get('text', '')}")
        elif kind == "tool.called":
            status = "ok" if event.get("ok") else "failed"
            output = json.dumps(event.get("output"))[:120]
            self._print(
                f"tool {event.get('name')}({json.dumps(event.get('arguments'))[:120]}) → {status}: {output}"
            )
        elif kind == "barge_in":
            self._print("server: caller barged in")
        elif kind == "dtmf":
            self._print(f"server got dtmf {event.get('digit')}")
        elif kind == "turn.latency":
            if event.get("kind") == "greeting":
                self._print(f"server: greeting audio {event.get('latency_ms')} ms after the stream started")
            else:
                ms, n = event.get("latency_ms"), event.get("turn")
                self._print(f"server: reply {n} audio {ms} ms after the caller stopped speaking")
        elif kind == "usage.updated":
            pass  # running token totals, for dashboards; the final usage is in the call record
        elif kind == "error":
            self._print(f"server error: {event.get('message')}")
        elif kind == "call.ended":
            self._print(f"server: call ended ({event.get('outcome')})")
            return True
        else:
            self._print(f"server: {kind}")
        return False

    # -- media stream -------------------------------------------------------------------------------------

    async def _media_stream(self, instruction: StreamInstruction) -> bool:
        """Run the WebSocket part of the call; False when the upgrade was refused."""
        if self._stop.is_set():  # hung up while the webhook was in flight
            return False
        self._sim = TwilioStreamSimulator(
            self.account_sid, self.call_sid, self.stream_sid, instruction.parameters
        )
        ws = await self._open_socket(instruction.url)
        if ws is None:
            self._end_reason = "rejected"
            return False
        self._print(f"connected, streamSid {self.stream_sid}")
        try:
            await self._send(self._sim.connected)
            await self._send(self._sim.start)
            self._started.set()
        except ConnectionClosed:
            self._stop.set()  # closed before we could start; the receiver records how
        receiver = asyncio.create_task(self._receive_loop(ws))
        ticker = asyncio.create_task(self._tick_loop())
        try:
            await self._stop.wait()
            await ticker
            if self._end_reason in ("caller", "timeout") and not self._sim.stopped:
                with contextlib.suppress(ConnectionClosed):
                    await self._send(self._sim.stop)
                await ws.close()
            done, _ = await asyncio.wait({receiver}, timeout=5.0)
            if not done:
                self._error("the server did not finish the WebSocket close handshake within 5 s")
        finally:
            for task in (ticker, receiver):
                if not task.done():
                    task.cancel()
            await asyncio.gather(ticker, receiver, return_exceptions=True)
            if self._ws is not None:
                await self._ws.close()
        return True

    async def _open_socket(self, url: str) -> ClientConnection | None:
        headers = self._signature(url, {})
        if headers:
            headers = {"x-twilio-signature": headers["X-Twilio-Signature"]}
        dial = url
        kwargs: dict[str, Any] = {}
        if self.options.connect_to:
            host, port = _split_host_port(self.options.connect_to)
            parts = urlsplit(url)
            dial = urlunsplit(("ws", parts.netloc, parts.path or "/", parts.query, ""))
            kwargs.update(host=host, port=port, proxy=None)
        try:
            self._ws = await connect(
                dial,
                additional_headers=headers,
                user_agent_header=MEDIA_USER_AGENT,
                open_timeout=10,
                max_size=None,
                **kwargs,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            hint = " — the server refused the upgrade signature; check the auth token and public URL"
            self._error(
                f"media WebSocket upgrade to {url} refused with HTTP {status}{hint if status == 403 else ''}"
            )
            return None
        except (OSError, TimeoutError) as exc:
            where = f" via {self.options.connect_to}" if self.options.connect_to else ""
            self._error(
                f"could not open the media WebSocket {url}{where} ({type(exc).__name__}: {exc}); is the "
                "server reachable at the host in the TwiML <Stream url>? (for a local server use "
                "--connect-to HOST:PORT)"
            )
            return None
        except (InvalidHandshake, InvalidURI) as exc:
            self._error(f"media WebSocket handshake with {url} failed: {type(exc).__name__}: {exc}")
            return None
        return self._ws

    async def _send(self, build: Callable[[], str]) -> None:
        """Build and send one message under a lock, so sequence numbers hit the wire in order."""
        ws = self._ws
        assert ws is not None
        async with self._send_lock:
            text = build()
            self._observe("sent", text)
            await ws.send(text)

    def _observe(self, direction: str, raw: str) -> None:
        if self.options.observer is None:
            return
        try:
            self.options.observer(direction, raw)
        except Exception as exc:  # an observer must never take the call down
            self.errors.append(f"observer raised on a {direction} frame: {type(exc).__name__}: {exc}")

    async def _tick_loop(self) -> None:
        """Send one 20 ms frame per tick on an absolute schedule and let the playback queue advance."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        duration_ms = self.options.duration_s * 1000
        n = 0
        try:
            while not self._stop.is_set():
                delay = start + n * FRAME_MS / 1000 - loop.time()
                if delay > 0 and await _wait(self._stop, delay):
                    break
                await self._play(FRAME_MS if n else 0)  # the 20 ms since the previous tick have been heard
                now_ms = n * FRAME_MS
                if now_ms >= duration_ms:
                    if self._end_reason is None:
                        self._end_reason = "timeout"
                    self._stop.set()
                    break
                frame = bytes(self._say[:FRAME_BYTES])
                del self._say[:FRAME_BYTES]
                frame += bytes([MULAW_SILENCE]) * (FRAME_BYTES - len(frame))
                await self._send(lambda frame=frame, ts=now_ms: self._sim.media(frame, ts))
                self.sent_audio += frame
                self._frames_sent += 1
                while self._dtmf_schedule and self._dtmf_schedule[0][0] * 1000 <= now_ms:
                    self._pressed.append(self._dtmf_schedule.pop(0)[1])
                while self._pressed:
                    digit = self._pressed.pop(0)
                    await self._send(lambda digit=digit: self._sim.dtmf(digit))
                    self._print(f"→ dtmf {digit}")
                n += 1
        except ConnectionClosed:
            self._stop.set()  # the receiver records who closed it
        except Exception as exc:  # a bug here must end the call with a message, not a traceback
            self._error(f"internal error while sending audio: {type(exc).__name__}: {exc}")
            self._stop.set()

    @property
    def ended(self) -> bool:
        return self._done.is_set() or self._stop.is_set()

    async def wait_ended(self) -> None:
        """Return once the call is over (whoever ended it)."""
        await self._done.wait()

    @property
    def queued_caller_bytes(self) -> int:
        """Caller audio queued by :meth:`say` and not sent yet."""
        return len(self._say)

    async def wait_agent_quiet(self, quiet_ms: int = 800, timeout: float = 60.0) -> None:
        """Return once the agent has spoken since this call and then been silent for ``quiet_ms``."""
        self._agent_spoke = False
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (quiet_ms, future)
        self._quiet_waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            raise TimeoutError(f"the agent did not speak and finish within {timeout:g} s") from None
        finally:
            if entry in self._quiet_waiters:
                self._quiet_waiters.remove(entry)

    async def _play(self, ms: int) -> None:
        playing = self._playback.queued_bytes > 0
        heard, marks = self._playback.advance(ms)
        self.played_audio += heard
        if playing:
            self.agent_quiet_ms, self._agent_spoke = 0, True
        else:
            self.agent_quiet_ms += ms
        if self._agent_spoke:
            for quiet_ms, future in self._quiet_waiters:
                if self.agent_quiet_ms >= quiet_ms and not future.done():
                    future.set_result(None)
        for name in marks:
            await self._echo_mark(name, "played")

    async def _echo_mark(self, name: str, why: str) -> None:
        if self._sim.stopped:
            return
        await self._send(lambda: self._sim.mark(name))
        self._marks_echoed += 1
        self._print(f"← mark {name} {why}")

    async def _receive_loop(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                await self._on_frame(raw)
        except ConnectionClosed:
            pass
        except Exception as exc:  # a bug here must end the call with a message, not a traceback
            self._error(f"internal error while receiving: {type(exc).__name__}: {exc}")
            await ws.close()
        finally:
            self._close_code = ws.close_code
            if self._end_reason is None:
                if ws.close_code == 1008:
                    self._end_reason = "rejected"
                    self._error(
                        f"server closed the media stream with 1008 (policy violation: "
                        f"{ws.close_reason or 'no reason given'}); usually a wrong x-twilio-signature — "
                        "check the auth token and --public-url"
                    )
                else:
                    self._end_reason = "server"
            self._stop.set()

    async def _on_frame(self, raw: str | bytes) -> None:
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        self._observe("received", text)
        message = parse_server_message(raw, self.stream_sid)
        if isinstance(message, ServerMessageError):
            self._error(f"server sent a bad frame: {message}")
            return
        data = json.loads(text)
        self.received.append(data)
        try:
            if isinstance(message, Media):
                self._playback.push_media(message.payload)
            elif isinstance(message, Mark):
                self._playback.push_mark(message.name)
            elif isinstance(message, Clear):
                self._clears += 1
                pending = self._playback.clear()
                self._print(
                    f"← clear (barge-in){f', {len(pending)} pending mark(s) echoed' if pending else ''}"
                )
                for name in pending:
                    await self._echo_mark(name, "cleared")
        finally:
            self._wake_waiters(data)

    def _wake_waiters(self, data: dict[str, Any]) -> None:
        for predicate, future in list(self._waiters):
            if future.done():
                continue
            try:
                matched = predicate(data)
            except Exception as exc:  # a broken predicate fails its own wait_for, not the call
                future.set_exception(exc)
                continue
            if matched:
                future.set_result(data)
