"""Placing simulated calls at the real app, with the Twilio oracle on every frame in both directions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets

from ivr.audio import pcm16_to_ulaw, tone
from ivr.caller.client import CallOptions, CallResult, SimulatedCall
from ivr.settings import Settings
from tests.support.fake_realtime import FakeRealtimeServer
from tests.support.fake_twilio_rest import FakeTwilioRest
from tests.support.oracles import ProtocolViolation, TwilioCallSequence, check_from_twilio, check_to_twilio
from tests.support.server import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    OPERATOR_TOKEN,
    RunningServer,
    make_settings,
    running_server,
)


@dataclass
class TwilioOracle:
    """Observer for :class:`SimulatedCall`: validates every frame, remembers marks the caller echoed.

    Each frame is checked alone (:func:`check_from_twilio` / :func:`check_to_twilio`) and in order
    (:class:`TwilioCallSequence`: per-stream numbering, one CallSid, the app answering on the open stream),
    so a call that re-attaches to new streams is held to Twilio's rules on every one of them.
    """

    violations: list[str] = field(default_factory=list)
    marks_echoed: list[str] = field(default_factory=list)
    mark_echoed: asyncio.Event = field(default_factory=asyncio.Event)
    sequence: TwilioCallSequence = field(default_factory=TwilioCallSequence)

    def __call__(self, direction: str, raw: str) -> None:
        try:
            if direction == "sent":
                message = check_from_twilio(raw)
                self.sequence.from_twilio(message)
                if message.event == "mark":
                    self.marks_echoed.append(message.mark.name)
                    self.mark_echoed.set()
            else:
                self.sequence.to_twilio(check_to_twilio(raw))
        except ProtocolViolation as exc:
            self.violations.append(f"{direction}: {exc} in {raw[:120]}")


@asynccontextmanager
async def app_for(
    fake: FakeRealtimeServer, rest: FakeTwilioRest | None = None, *, media: str = "direct", **overrides: Any
) -> AsyncIterator[RunningServer]:
    """The app on loopback with the fake model; ``media``: the media socket's carrier (running_server)."""
    settings: Settings = make_settings(realtime_url=fake.url, **overrides)
    if rest is not None:
        settings = settings.with_(twilio_api_base=rest.base_url)
    async with running_server(settings, media=media) as server:
        yield server


@dataclass
class LiveCall:
    call: SimulatedCall
    task: asyncio.Task[CallResult]
    oracle: TwilioOracle

    async def result(self, timeout: float = 10.0) -> CallResult:
        result = await asyncio.wait_for(self.task, timeout)
        assert self.oracle.violations == [], self.oracle.violations
        return result

    async def hang_up(self) -> CallResult:
        await self.call.hang_up()
        return await self.result()

    def media(self) -> list[dict[str, Any]]:
        return [m for m in self.call.received if m.get("event") == "media"]

    async def wait_media(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        await self.call.wait_for(lambda _m: len(self.media()) >= count, timeout)
        return self.media()


async def place_call(server: RunningServer, *, wait_started: bool = True, **options: Any) -> LiveCall:
    oracle = TwilioOracle()
    defaults = {
        "account_sid": ACCOUNT_SID,
        "auth_token": AUTH_TOKEN,
        "operator_token": OPERATOR_TOKEN,
        "duration_s": 15.0,
    }
    opts = CallOptions(base_url=server.base_url, observer=oracle, **{**defaults, **options})
    call = SimulatedCall(opts)
    task = asyncio.create_task(call.run())
    if not wait_started:
        return LiveCall(call, task, oracle)
    try:
        await call.wait_started()
    except TimeoutError:
        if task.done():
            task.result()
        raise
    return LiveCall(call, task, oracle)


def mulaw_tone(freq_hz: float, ms: int, dbfs: float = -6.0) -> bytes:
    return pcm16_to_ulaw(tone(freq_hz, ms, 8000, dbfs))


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    x = samples.astype(np.float64)
    x = x - x.mean()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def rms_dbfs(samples: np.ndarray) -> float:
    x = samples.astype(np.float64) / 32768.0
    return float(20 * np.log10(np.sqrt(np.mean(x * x)) + 1e-12))


async def ws_close_code(ws: websockets.ClientConnection, timeout: float = 5.0) -> int | None:
    """Read until the server closes ``ws``; the close code it sent (None: it closed without a frame)."""
    async with asyncio.timeout(timeout):
        try:
            while True:
                await ws.recv()
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else None
