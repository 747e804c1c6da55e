"""The async shell of ``ivr call``: plays Twilio against a running ivr server over real HTTP and WebSockets.

Why: the only honest way to know the phone path works without a phone is to do exactly what Twilio does —
POST the signed voice webhook, follow the TwiML to the media WebSocket with a signed upgrade, stream 20 ms
μ-law frames in real time, play the agent's audio through a playback queue that echoes marks when the audio
has been *heard*, and hang up with ``stop``. The protocol rules live in :mod:`ivr.caller.twilio_side`; this
module only moves bytes, keeps the clock, and follows the operator's live event feed (SSE) for a readable
transcript.

A call can outlive one media stream, as on Twilio: when a stream ends without the caller hanging up and its
``<Connect>`` has an ``action``, the caller requests that URL (signed like the voice webhook) and follows the
TwiML it returns — another ``<Connect><Stream>`` (a new stream, ``MZ…`` sid and numbering, same CallSid),
``<Hangup/>``, or an empty ``<Response/>``. Each stream is one :class:`StreamLeg` of the result, timed so a
test can measure the silence the caller heard between them. :class:`~ivr.caller.routing.Router` plays the
load balancer when ``CallOptions.backends`` names several servers behind one public URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar
from urllib.parse import urlencode, urlsplit

import httpx
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from ivr.caller.routing import Router, check_backends, split_host_port
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
    "MAX_STREAMS",
    "CallEndedError",
    "CallOptions",
    "CallResult",
    "LegEnd",
    "SimulatedCall",
    "StreamLeg",
    "resolve_options",
]

_T = TypeVar("_T")

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
#: How many times a broken live event feed is followed again (through the next backend that answers).
SSE_MAX_RECONNECTS = 5
#: At most this many media streams per call (each ``<Connect action>`` answer may start one more).
MAX_STREAMS = 5


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
    # The load balancer's pool behind public_url: base URLs such as "http://127.0.0.1:8001". Every HTTP
    # request and WebSocket connect goes to the first one that accepts the connection (overrides base_url
    # and connect_to); signatures still cover the public URLs. Empty: base_url / connect_to as usual.
    backends: tuple[str, ...] = ()


#: How a media stream ended: the server closed it (a close frame), it broke (no close frame: a killed server,
#: a reset), the caller hung up on it (``stop`` sent), or its WebSocket could not be opened at all.
LegEnd = Literal["server-closed", "connection-lost", "caller-hung-up", "refused"]


@dataclass
class StreamLeg:
    """One media stream of the call (Twilio's Stream resource).

    Times are seconds since :meth:`SimulatedCall.run` began, on the event loop's monotonic clock
    (``loop.time()``), so they can be subtracted from each other.
    """

    stream_sid: str
    url: str  # the TwiML <Stream url>
    parameters: dict[str, str] = field(
        default_factory=dict
    )  # its <Parameter>s (the start's customParameters)
    opened_at: float | None = None  # WebSocket open (None: it never opened)
    started_at: float | None = None  # ``start`` sent
    ended_at: float | None = None  # closed, lost, hung up on, or refused
    how_ended: LegEnd | None = None
    close_code: int | None = None  # the WebSocket close code (1006: lost without a close frame)
    close_reason: str = ""
    first_media_at: float | None = None  # first agent ``media`` received on this stream
    last_media_at: float | None = None  # last agent ``media`` received on this stream
    first_heard_at: float | None = None  # start of the first 20 ms tick that played agent audio from it
    last_heard_at: float | None = None  # end of the last 20 ms tick that played agent audio from it
    media_received: int = 0  # agent media messages with audio
    frames_sent: int = 0  # caller media frames sent on it
    action_status: int | None = None  # HTTP status of the <Connect action> request made after it (None: none)


@dataclass
class CallResult:
    """What happened on the call, for the CLI summary and for tests.

    Totals (frames, marks, clears, agent audio) cover every media stream; ``stream_sid`` is the first
    stream's, ``close_code`` the last opened one's. ``streams`` has one :class:`StreamLeg` per stream, in
    order.
    """

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
    streams: list[StreamLeg] = field(default_factory=list)
    frames_unsent: int = 0  # caller frames spoken while no stream was open (between streams): nobody got them

    @property
    def legs(self) -> int:
        """How many media streams the call had (including any whose WebSocket was refused)."""
        return len(self.streams)

    def gaps_ms(self, *, heard: bool = False) -> list[float]:
        """The silence between consecutive streams that carried agent audio, in milliseconds.

        By default from the last agent ``media`` *received* on one stream to the first received on the next
        (network view); ``heard=True`` measures what the caller's ear got instead: from the end of the last
        20 ms tick that played agent audio to the start of the first one on the next stream (±20 ms). Streams
        without agent audio are skipped, so a refused stream does not split a gap in two; an empty list means
        at most one stream carried audio.
        """
        gaps: list[float] = []
        previous_end: float | None = None
        for leg in self.streams:
            first, last = (
                (leg.first_heard_at, leg.last_heard_at) if heard else (leg.first_media_at, leg.last_media_at)
            )
            if first is None or last is None:
                continue
            if previous_end is not None:
                gaps.append(round((first - previous_end) * 1000, 1))
            previous_end = last
        return gaps


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
        split_host_port(options.connect_to)
    check_backends(options.backends)
    schedule: list[tuple[float, str]] = []
    for at, digit in options.dtmf:
        if digit not in DTMF_DIGITS:
            raise ValueError(f"DTMF digit must be one of 0-9, * or #, got {digit!r} (at {at} s)")
        if at < 0:
            raise ValueError(f"DTMF time must be >= 0 seconds, got {at} for digit {digit!r}")
        schedule.append((float(at), digit))
    return sorted(schedule, key=lambda item: item[0])


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` at most ``timeout`` seconds; True when it was set."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


@dataclass(eq=False)
class _Leg:
    """The live side of one open media stream: its socket, its message builder, its playback queue."""

    record: StreamLeg
    ws: ClientConnection
    sim: TwilioStreamSimulator
    playback: PlaybackBuffer = field(default_factory=PlaybackBuffer)
    first_tick: int | None = None  # the call tick that sent its first media frame (timestamp 0)
    broken: bool = False  # a send failed: the socket is gone, send nothing more on it
    closed: bool = False  # its receive loop has finished

    @property
    def live(self) -> bool:
        return not (self.broken or self.closed or self.sim.stopped)


class SimulatedCall:
    """One inbound phone call as Twilio would place it. Use :meth:`run` once; control it while it runs."""

    def __init__(self, options: CallOptions, printer: Callable[[str], None] | None = None) -> None:
        self.options = resolve_options(options)
        self._dtmf_schedule = _check_options(self.options)
        self._printer = printer
        self.account_sid: str = self.options.account_sid or new_sid("AC")
        self.call_sid: str = new_sid("CA")
        #: the first media stream's sid (later streams get their own: see :attr:`legs`)
        self.stream_sid: str = new_sid("MZ")
        #: every media stream of the call so far, in order (the first one's sid is :attr:`stream_sid`)
        self.legs: list[StreamLeg] = []
        #: every valid server message, parsed, from all streams (each carries its ``streamSid``)
        self.received: list[dict[str, Any]] = []
        #: agent audio as heard on the real-time timeline (μ-law, silence where nothing played — also between
        #: streams)
        self.played_audio = bytearray()
        #: caller audio, one 20 ms frame per tick (μ-law) on the same timeline; frames spoken while no stream
        #: was open are included (the caller said them, nobody received them)
        self.sent_audio = bytearray()
        #: events from the live transcript feed
        self.transcript: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._router = Router(
            public=(self.options.public_url or self.options.base_url).rstrip("/"),
            base=self.options.base_url.rstrip("/"),
            backends=check_backends(self.options.backends),
            connect_to=self.options.connect_to,
        )
        self._say = bytearray(self.options.caller_audio)
        self._pressed: list[str] = []
        self._started = asyncio.Event()
        self._legs_changed = asyncio.Event()
        self._stop = asyncio.Event()  # the call is over (whoever ended it): no more streams
        self._done = asyncio.Event()
        self._running = False
        self._end_reason: str | None = None
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], asyncio.Future[dict[str, Any]]]] = []
        self._send_lock = asyncio.Lock()
        self._t0: float | None = None
        self._frames_sent = 0
        self._frames_unsent = 0
        self._marks_echoed = 0
        self._clears = 0
        self._close_code: int | None = None
        self._all_legs: list[_Leg] = []  # every stream that opened, for the totals
        self._leg: _Leg | None = None  # the stream the caller's audio goes to now (None between streams)
        self._ticker: asyncio.Task[None] | None = None
        #: ms of real time since the agent's audio last played (0 while it plays)
        self.agent_quiet_ms = 0
        self._agent_spoke = False
        self._quiet_waiters: list[tuple[int, asyncio.Future[None]]] = []
        # the current (or last) stream's builder and socket; tests reach for them to inject raw frames
        self._sim = TwilioStreamSimulator(self.account_sid, self.call_sid, self.stream_sid, {})
        self._ws: ClientConnection | None = None

    # ------------------------------------------------------------------------------------------------------
    # live control
    # ------------------------------------------------------------------------------------------------------

    def say(self, mulaw: bytes) -> None:
        """Queue more caller audio; it is sent at real-time pace after whatever is already queued.

        The caller keeps talking between two media streams: audio due while no stream is open is lost.
        """
        self._say += mulaw

    def press(self, digit: str) -> None:
        """Press a key: the ``dtmf`` message goes out with the next 20 ms tick (lost if no stream is open)."""
        if digit not in DTMF_DIGITS:
            raise ValueError(f"DTMF digit must be one of 0-9, * or #, got {digit!r}")
        self._pressed.append(digit)

    async def hang_up(self) -> None:
        """Send ``stop``, close the socket, and return once :meth:`run` has finished.

        Between two streams (while the ``<Connect action>`` is requested or the next socket opens) the call
        just ends: Twilio does not go on with a completed call.
        """
        if self._end_reason is None:
            self._end_reason = "caller"
        self._stop.set()
        if self._running:
            await self._done.wait()

    async def wait_started(self, timeout: float = 5.0) -> None:
        """Return once ``start`` has been sent on the (first) media stream."""
        if not await _wait(self._started, timeout):
            raise TimeoutError(f"the media stream did not start within {timeout} s (errors: {self.errors})")

    async def wait_stream(self, number: int, timeout: float = 10.0) -> StreamLeg:
        """The ``number``-th media stream (1-based, counting refused ones) once ``start`` went out on it.

        Raises :class:`CallEndedError` if the call ends first, or if that stream ended without starting.
        """
        if number < 1:
            raise ValueError(f"stream numbers start at 1, got {number}")
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if len(self.legs) >= number:
                        leg = self.legs[number - 1]
                        if leg.started_at is not None:
                            return leg
                        if leg.how_ended is not None:
                            raise CallEndedError(
                                f"media stream {number} ended without starting ({leg.how_ended})"
                            )
                    if self._done.is_set():
                        raise CallEndedError(
                            f"call ended ({self._end_reason}) after {len(self.legs)} media stream(s)"
                        )
                    await self._legs_changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"media stream {number} did not start within {timeout} s "
                f"({len(self.legs)} so far; errors: {self.errors})"
            ) from None

    @property
    def current_stream_sid(self) -> str | None:
        """The sid of the stream that is open now (None between streams and after the call)."""
        return self._leg.record.stream_sid if self._leg is not None else None

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
        return self._router.public

    @property
    def _base(self) -> str:
        return self._router.base

    def _notify_legs(self) -> None:
        """Wake :meth:`wait_stream` callers: a stream started or ended, or the call ended."""
        changed, self._legs_changed = self._legs_changed, asyncio.Event()
        changed.set()

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
                        stream_connected = await self._media_streams(http, instruction)
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
            self._notify_legs()
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
            agent_audio_ms=sum(leg.playback.played_bytes for leg in self._all_legs) // 8,
            webhook_status=webhook_status,
            twiml=twiml,
            transcript=list(self.transcript),
            errors=list(self.errors),
            close_code=self._close_code,
            streams=[replace(leg, parameters=dict(leg.parameters)) for leg in self.legs],
            frames_unsent=self._frames_unsent,
        )

    # -- HTTP ---------------------------------------------------------------------------------------------

    def _call_params(self, status: str = "ringing") -> dict[str, str]:
        """The standard parameters of Twilio's voice requests (the webhook, and the ``<Connect action>``)."""
        o = self.options
        return {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": self.call_sid,
            "CallStatus": status,
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
        public_url = self._public + "/twilio/voice"
        url = self._router.http_targets(public_url)[0]
        params = self._call_params()
        headers = {"User-Agent": WEBHOOK_USER_AGENT, **self._signature(public_url, params)}
        try:
            response = await self._router.request(http, "POST", public_url, data=params, headers=headers)
        except httpx.ConnectError as exc:
            self._error(
                f"could not connect to {url} ({exc}); is `ivr serve` running at {self._router.describe()}?"
            )
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
            instruction = parse_twiml(body, public_url)
        except TwimlError as exc:
            self._error(f"webhook returned TwiML Twilio cannot stream: {exc}")
            return response.status_code, body, None
        if isinstance(instruction, StreamInstruction):
            self._print(f"webhook {response.status_code} → stream {instruction.url}")
            for text in instruction.says:
                self._print(f"twilio says: {text}")
        return response.status_code, body, instruction

    async def _request_action(
        self, http: httpx.AsyncClient, instruction: StreamInstruction, leg: StreamLeg
    ) -> StreamInstruction | SayHangup | None:
        """Request the ``<Connect action>`` after a stream ended, as Twilio does; None: the call must end.

        The parameters are the voice webhook's (``CallStatus=in-progress``), signed over the action URL the
        way Twilio signs it: for POST the URL plus the form, for GET the URL with the parameters in its query.
        Anything but HTTP 200 with TwiML Twilio can act on ends the call with an error (Twilio would play its
        "application error" message and hang up).
        """
        action, method = instruction.action, instruction.method
        assert action is not None
        params = self._call_params("in-progress")
        kwargs: dict[str, Any]
        if method == "GET":
            url = action + ("&" if urlsplit(action).query else "?") + urlencode(params)
            kwargs = {"headers": {"User-Agent": WEBHOOK_USER_AGENT, **self._signature(url, {})}}
        else:
            url = action
            kwargs = {
                "data": params,
                "headers": {"User-Agent": WEBHOOK_USER_AGENT, **self._signature(url, params)},
            }
        number = self.legs.index(leg) + 1
        self._print(
            f"webhook {method} {action} (media stream {number} {_ENDED_WORDS[leg.how_ended or 'refused']})"
        )
        try:
            response = await self._router.request(http, method, url, **kwargs)
        except httpx.HTTPError as exc:
            self._error(
                f"<Connect action> {method} {action} failed: {type(exc).__name__}: {exc} "
                f"(sent to {self._router.describe()}); the call ends"
            )
            return None
        leg.action_status = response.status_code
        body = response.text
        if response.status_code != 200:
            self._error(
                f"<Connect action> {method} {action} returned HTTP {response.status_code}: {body[:200]!r}; "
                "Twilio would say an application error occurred and hang up"
            )
            return None
        try:
            following = parse_twiml(body, action)
        except TwimlError as exc:
            self._error(f"<Connect action> {action} returned TwiML Twilio cannot act on: {exc}")
            return None
        if isinstance(following, StreamInstruction):
            self._print(f"webhook {response.status_code} → stream {following.url}")
            for text in following.says:
                self._print(f"twilio says: {text}")
        return following

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
        public_url = self._public + "/twilio/status"
        url = self._router.http_targets(public_url)[0]
        headers = {"User-Agent": WEBHOOK_USER_AGENT, **self._signature(public_url, params)}
        try:
            response = await self._router.request(http, "POST", public_url, data=params, headers=headers)
        except httpx.HTTPError as exc:
            self._error(f"status callback POST {url} failed: {type(exc).__name__}: {exc}")
            return
        if response.status_code >= 300:
            self._error(f"status callback POST {url} returned HTTP {response.status_code}")

    # -- live event feed (SSE) ----------------------------------------------------------------------------

    async def _follow_events(self, http: httpx.AsyncClient) -> None:
        """Follow the call's live events until ``call.ended``.

        The server replays a call's events from its start on every request, so when the feed breaks (its
        instance died) it is requested again — through the next backend that answers — and the events
        already seen are skipped.
        """
        public_url = f"{self._public}/api/calls/{self.call_sid}/events"
        url = self._router.http_targets(public_url)[0]
        headers = {"Authorization": f"Bearer {self.options.operator_token}", "Accept": "text/event-stream"}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SSE_RETRY_S
        timeout = httpx.Timeout(10.0, read=None)
        seen: set[str] = set()
        reconnects = 0
        while True:
            try:
                response = await self._router.request(
                    http, "GET", public_url, headers=headers, timeout=timeout, stream=True
                )
            except httpx.HTTPError as exc:
                self._error(f"live transcript stream failed: {type(exc).__name__}: {exc}")
                return
            try:
                status = response.status_code
                if status == 200:
                    try:
                        await self._read_events(response, seen)
                        return
                    except httpx.TransportError as exc:
                        if reconnects >= SSE_MAX_RECONNECTS:
                            self._error(f"live transcript stream failed: {type(exc).__name__}: {exc}")
                            return
                        reconnects += 1
                        deadline = loop.time() + SSE_RETRY_S
                        self._print(f"live transcript broke ({type(exc).__name__}); following it again")
                        continue
            finally:
                await response.aclose()
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

    async def _read_events(self, response: httpx.Response, seen: set[str]) -> None:
        data_lines: list[str] = []
        async for line in response.aiter_lines():
            if line == "":
                if data_lines and self._on_event("\n".join(data_lines), seen):
                    return
                data_lines = []
            elif line.startswith("data:"):
                data_lines.append(line[5:].removeprefix(" "))
            # "event:", "id:", "retry:" and ":" comments carry nothing the JSON does not

    def _on_event(self, data: str, seen: set[str]) -> bool:
        """Record and print one SSE event (once, even when a re-followed feed replays it); True once ended."""
        try:
            event = json.loads(data)
        except ValueError as exc:
            self._error(f"live transcript: event data is not JSON ({exc}): {data[:120]!r}")
            return False
        if not isinstance(event, dict):
            self._error(f"live transcript: event data is not an object: {data[:120]!r}")
            return False
        key = json.dumps(event, sort_keys=True)
        if key in seen:
            return False  # replayed by a feed followed again after a break
        seen.add(key)
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

    # -- media streams ------------------------------------------------------------------------------------

    async def _until_stop(self, awaitable: Awaitable[_T]) -> _T | None:
        """Await ``awaitable`` unless the call ends first (then cancel it and return None)."""
        task = asyncio.ensure_future(awaitable)
        stopper = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            await asyncio.gather(stopper, return_exceptions=True)
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        return task.result() if not task.cancelled() else None

    async def _media_streams(self, http: httpx.AsyncClient, instruction: StreamInstruction) -> bool:
        """Run the media part of the call — one stream, or several when ``<Connect action>`` says so.

        Returns False when no stream's WebSocket ever opened. Sets the end reason unless the caller's
        hang-up or the time limit already did.
        """
        try:
            while not self._stop.is_set():  # set here: hung up while the webhook was in flight
                leg = await self._run_leg(instruction)
                if self._stop.is_set():
                    break  # the caller hung up (or the time ran out): Twilio does not go on with the call
                if instruction.action is None:
                    self._end_without_action(leg)
                    break
                if leg.how_ended == "server-closed" and leg.close_code == 1008:
                    self._print(
                        f"server closed media stream {len(self.legs)} with 1008 "
                        f"({leg.close_reason or 'no reason given'})"
                    )
                following = await self._until_stop(self._request_action(http, instruction, leg))
                if self._stop.is_set():
                    break
                if following is None:
                    self._end_reason = self._end_reason or "server"
                    break
                if isinstance(following, SayHangup):
                    said = f"said {following.text!r} and " if following.text else ""
                    self._print(f"server {said}hung up (<Connect action> answer)")
                    self._end_reason = self._end_reason or "server"
                    break
                if len(self.legs) >= MAX_STREAMS:
                    self._error(
                        f"the server asked for media stream {len(self.legs) + 1}; a call may have at most "
                        f"{MAX_STREAMS}, so the simulated caller hangs up"
                    )
                    self._end_reason = self._end_reason or "server"
                    break
                instruction = following
        finally:
            self._stop.set()
            if self._ticker is not None:
                await asyncio.gather(self._ticker, return_exceptions=True)
        return any(leg.opened_at is not None for leg in self.legs)

    def _end_without_action(self, leg: StreamLeg) -> None:
        """Decide how the call ended when its last stream had no ``<Connect action>`` to go on with."""
        if self._end_reason is not None:
            return
        if leg.how_ended == "refused":
            self._end_reason = "rejected"
        elif leg.how_ended == "server-closed" and leg.close_code == 1008:
            self._end_reason = "rejected"
            self._error(
                f"server closed the media stream with 1008 (policy violation: "
                f"{leg.close_reason or 'no reason given'}); usually a wrong x-twilio-signature — "
                "check the auth token and --public-url"
            )
        else:
            self._end_reason = "server"

    async def _run_leg(self, instruction: StreamInstruction) -> StreamLeg:
        """Open one media stream, stream on it until it ends (or the call does); return its record."""
        sid = self.stream_sid if not self.legs else new_sid("MZ")
        record = StreamLeg(sid, instruction.url, dict(instruction.parameters))
        self.legs.append(record)
        number = len(self.legs)
        ws = await self._until_stop(self._open_socket(instruction.url))
        if ws is None:
            record.ended_at = self._elapsed()
            record.how_ended = "caller-hung-up" if self._stop.is_set() else "refused"
            self._notify_legs()
            return record
        record.opened_at = self._elapsed()
        sim = TwilioStreamSimulator(self.account_sid, self.call_sid, sid, instruction.parameters)
        leg = _Leg(record, ws, sim)
        self._all_legs.append(leg)
        self._ws, self._sim = ws, sim
        receiver: asyncio.Task[None] | None = None
        stopper = asyncio.create_task(self._stop.wait())
        try:
            if not self._stop.is_set():  # else hung up while the socket opened: nothing to stream on it
                self._print(
                    f"connected, streamSid {sid}" + (f" (media stream {number})" if number > 1 else "")
                )
                try:
                    await self._send(leg, sim.connected)
                    await self._send(leg, sim.start)
                    record.started_at = self._elapsed()
                    self._leg = leg
                    self._started.set()
                    self._notify_legs()
                    if self._ticker is None:
                        self._ticker = asyncio.create_task(self._tick_loop())
                except ConnectionClosed:
                    leg.broken = True  # closed before we could start; the receiver records how
                receiver = asyncio.create_task(self._receive_loop(leg))
                await asyncio.wait({receiver, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not (receiver is not None and receiver.done()):
                # The call is over while this stream is open: no more audio, then ``stop`` if the caller hung
                # up (Twilio's last message), then the close handshake.
                if self._ticker is not None:
                    await asyncio.gather(self._ticker, return_exceptions=True)
                if self._end_reason in ("caller", "timeout") and record.started_at is not None and leg.live:
                    with contextlib.suppress(ConnectionClosed):
                        await self._send(leg, sim.stop)
                await ws.close()
                if receiver is not None:
                    done, _ = await asyncio.wait({receiver}, timeout=5.0)
                    if not done:
                        self._error("the server did not finish the WebSocket close handshake within 5 s")
        finally:
            if self._leg is leg:
                self._leg = None
            stopper.cancel()
            tasks = [stopper] + ([receiver] if receiver is not None else [])
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await ws.close()
        record.ended_at = self._elapsed()
        record.close_code = ws.close_code
        record.close_reason = ws.close_reason or ""
        self._close_code = ws.close_code
        if sim.stopped:
            record.how_ended = "caller-hung-up"
        elif ws.protocol.close_rcvd is not None:
            record.how_ended = "server-closed"
        elif self._stop.is_set() and self._end_reason in ("caller", "timeout"):
            record.how_ended = "caller-hung-up"  # hung up before the stream started
        else:
            record.how_ended = "connection-lost"
        if record.how_ended == "connection-lost" and not self._stop.is_set():
            self._print(
                f"warning: media stream {number} lost (code {record.close_code}, "
                "no close frame from the server)"
            )
        self._notify_legs()
        return record

    async def _open_socket(self, url: str) -> ClientConnection | None:
        """Open the media WebSocket at the first target that accepts the connection; None (with an error)."""
        headers = self._signature(url, {})
        if headers:
            headers = {"x-twilio-signature": headers["X-Twilio-Signature"]}
        targets = self._router.ws_targets(url, await self._router.healthy_first())
        for i, target in enumerate(targets):
            kwargs: dict[str, Any] = {}
            if target.host is not None:
                kwargs.update(host=target.host, port=target.port, proxy=None)
            try:
                return await connect(
                    target.url,
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
                    f"media WebSocket upgrade to {url} refused with HTTP {status}"
                    f"{hint if status == 403 else ''}"
                )
                return None
            except OSError as exc:
                if not isinstance(exc, TimeoutError) and i < len(targets) - 1:
                    continue  # refused or reset: the load balancer tries the next backend
                if self._router.backends:
                    where = f" via {self._router.describe()}"
                elif self.options.connect_to:
                    where = f" via {self.options.connect_to}"
                else:
                    where = ""
                self._error(
                    f"could not open the media WebSocket {url}{where} ({type(exc).__name__}: {exc}); is the "
                    "server reachable at the host in the TwiML <Stream url>? (for a local server use "
                    "--connect-to HOST:PORT)"
                )
                return None
            except (InvalidHandshake, InvalidURI) as exc:
                self._error(f"media WebSocket handshake with {url} failed: {type(exc).__name__}: {exc}")
                return None
        raise AssertionError("unreachable: ws_targets() is never empty")

    async def _send(self, leg: _Leg, build: Callable[[], str]) -> None:
        """Build and send one message on ``leg`` under a lock, so sequence numbers hit the wire in order."""
        async with self._send_lock:
            text = build()
            self._observe("sent", text)
            try:
                await leg.ws.send(text)
            except ConnectionClosed:
                leg.broken = True
                raise

    def _observe(self, direction: str, raw: str) -> None:
        if self.options.observer is None:
            return
        try:
            self.options.observer(direction, raw)
        except Exception as exc:  # an observer must never take the call down
            self.errors.append(f"observer raised on a {direction} frame: {type(exc).__name__}: {exc}")

    def _live_leg(self) -> _Leg | None:
        leg = self._leg
        return leg if leg is not None and leg.live else None

    async def _tick_loop(self) -> None:
        """The call's clock: every 20 ms on an absolute schedule, play what was heard and send one frame.

        One clock for the whole call, started with the first stream: the time limit and the DTMF schedule
        count from there, and it keeps running between streams (the caller's frames then reach nobody). Each
        stream gets its own media timestamps, from 0 at its first frame.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        duration_ms = self.options.duration_s * 1000
        n = 0
        try:
            while not self._stop.is_set():
                delay = start + n * FRAME_MS / 1000 - loop.time()
                if delay > 0 and await _wait(self._stop, delay):
                    break
                leg = self._live_leg()
                await self._play(leg, n)  # the 20 ms since the previous tick have been heard
                now_ms = n * FRAME_MS
                if now_ms >= duration_ms:
                    if self._end_reason is None:
                        self._end_reason = "timeout"
                    self._stop.set()
                    break
                frame = bytes(self._say[:FRAME_BYTES])
                del self._say[:FRAME_BYTES]
                frame += bytes([MULAW_SILENCE]) * (FRAME_BYTES - len(frame))
                while self._dtmf_schedule and self._dtmf_schedule[0][0] * 1000 <= now_ms:
                    self._pressed.append(self._dtmf_schedule.pop(0)[1])
                leg = self._live_leg()
                if leg is not None and leg.first_tick is not None:
                    await self._stream_tick(leg, frame, (n - leg.first_tick) * FRAME_MS)
                else:
                    self._frames_unsent += 1
                    for digit in self._pressed:
                        self._print(f"→ dtmf {digit} lost: no media stream is open")
                    self._pressed.clear()
                self.sent_audio += frame
                n += 1
        except Exception as exc:  # a bug here must end the call with a message, not a traceback
            self._error(f"internal error while sending audio: {type(exc).__name__}: {exc}")
            self._stop.set()

    async def _stream_tick(self, leg: _Leg, frame: bytes, timestamp_ms: int) -> None:
        """Send this tick's caller frame and pressed keys on ``leg``; a closed socket just stops the leg."""
        try:
            await self._send(leg, lambda: leg.sim.media(frame, timestamp_ms))
            self._frames_sent += 1
            leg.record.frames_sent += 1
            while self._pressed:
                digit = self._pressed.pop(0)
                await self._send(leg, lambda digit=digit: leg.sim.dtmf(digit))
                self._print(f"→ dtmf {digit}")
        except ConnectionClosed:
            pass  # the stream is gone; its receive loop records how, and the call goes on without it

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

    async def _play(self, leg: _Leg | None, n: int) -> None:
        """Advance the playback clock by one tick (0 ms on the call's first tick, else 20 ms).

        A stream's first tick hears the 20 ms before it as silence (it was not playing yet) and only flushes
        marks that were due at once; between streams the caller hears silence.
        """
        ms = FRAME_MS if n else 0
        if leg is None or leg.first_tick is None:
            self.played_audio += bytes([MULAW_SILENCE]) * (ms * FRAME_BYTES // FRAME_MS)
            self._heard(False, ms)
            if leg is None:
                return
            leg.first_tick = n
            ms = 0
        playing = leg.playback.queued_bytes > 0
        heard, marks = leg.playback.advance(ms)
        if ms:
            self.played_audio += heard
            if playing:
                now = self._elapsed()
                if leg.record.first_heard_at is None:
                    leg.record.first_heard_at = now - ms / 1000
                leg.record.last_heard_at = now
            self._heard(playing, ms)
        for name in marks:
            await self._echo_mark(leg, name, "played")

    def _heard(self, playing: bool, ms: int) -> None:
        """Keep :attr:`agent_quiet_ms` and wake :meth:`wait_agent_quiet` callers."""
        if playing:
            self.agent_quiet_ms, self._agent_spoke = 0, True
        else:
            self.agent_quiet_ms += ms
        if self._agent_spoke:
            for quiet_ms, future in self._quiet_waiters:
                if self.agent_quiet_ms >= quiet_ms and not future.done():
                    future.set_result(None)

    async def _echo_mark(self, leg: _Leg, name: str, why: str) -> None:
        if not leg.live:
            return
        try:
            await self._send(leg, lambda: leg.sim.mark(name))
        except ConnectionClosed:
            return
        self._marks_echoed += 1
        self._print(f"← mark {name} {why}")

    async def _receive_loop(self, leg: _Leg) -> None:
        ws = leg.ws
        try:
            async for raw in ws:
                await self._on_frame(leg, raw)
        except ConnectionClosed:
            pass
        except Exception as exc:  # a bug here must end the call with a message, not a traceback
            self._error(f"internal error while receiving: {type(exc).__name__}: {exc}")
            await ws.close()
        finally:
            leg.closed = True

    async def _on_frame(self, leg: _Leg, raw: str | bytes) -> None:
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        self._observe("received", text)
        message = parse_server_message(raw, leg.record.stream_sid)
        if isinstance(message, ServerMessageError):
            self._error(f"server sent a bad frame: {message}")
            return
        data = json.loads(text)
        self.received.append(data)
        try:
            if isinstance(message, Media):
                if message.payload:
                    now = self._elapsed()
                    record = leg.record
                    if record.first_media_at is None:
                        record.first_media_at = now
                    record.last_media_at = now
                    record.media_received += 1
                leg.playback.push_media(message.payload)
            elif isinstance(message, Mark):
                leg.playback.push_mark(message.name)
            elif isinstance(message, Clear):
                self._clears += 1
                pending = leg.playback.clear()
                self._print(
                    f"← clear (barge-in){f', {len(pending)} pending mark(s) echoed' if pending else ''}"
                )
                for name in pending:
                    await self._echo_mark(leg, name, "cleared")
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


#: Words for StreamLeg.how_ended in the live log.
_ENDED_WORDS: dict[str, str] = {
    "server-closed": "closed by the server",
    "connection-lost": "lost",
    "caller-hung-up": "hung up by the caller",
    "refused": "could not be opened",
}
