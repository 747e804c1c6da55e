"""`ivr serve` as a real process: start-up, a call, and a graceful drain on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from types import SimpleNamespace

import httpx
from twilio.request_validator import RequestValidator

from tests.support.calls import place_call
from tests.support.fake_realtime import FakeRealtimeServer, Reply
from tests.support.process import ServerProcess, free_port, serve_env
from tests.support.server import ACCOUNT_SID, AUTH_TOKEN, TEST_FLOWS


async def test_sigterm_drains_live_calls_then_exits(fake_realtime: FakeRealtimeServer) -> None:
    fake_realtime.default_replies = [Reply(text="Hello.", audio_ms=300)]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = serve_env(fake_realtime.url, IVR_DRAIN_TIMEOUT="20")
    server = await ServerProcess.start(port, TEST_FLOWS, env)
    proc = server.proc
    try:
        await server.wait_line("Uvicorn running on")
        live = await place_call(SimpleNamespace(base_url=base))  # type: ignore[arg-type]
        session = await fake_realtime.next_session()
        await session.wait_response_done()

        proc.send_signal(signal.SIGTERM)
        await server.wait_line("draining")
        async with httpx.AsyncClient(base_url=base) as http:
            assert (await http.get("/readyz")).status_code == 503
            params = {
                "CallSid": "CA" + "7" * 32,
                "AccountSid": ACCOUNT_SID,
                "From": "+15550100009",
                "To": "+1",
            }
            signature = RequestValidator(AUTH_TOKEN).compute_signature(base + "/twilio/voice", params)
            refused = await http.post("/twilio/voice", data=params, headers={"X-Twilio-Signature": signature})
        assert refused.status_code == 200
        assert "<Hangup" in refused.text and "<Connect" not in refused.text

        before = len(session.input_audio)
        await session.wait_input_audio(before + 24000)  # the live call goes on during the drain
        assert proc.returncode is None
        result = await live.hang_up()
        assert result.ended_by == "caller"
        assert await asyncio.wait_for(proc.wait(), 10.0) == 0
    finally:
        await server.kill()
    assert not any("Traceback" in line for line in server.lines), server.lines
