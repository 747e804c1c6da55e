"""The app's edges over real sockets: signatures, the operator API, logs, failure paths, `ivr call`."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest
import websockets
from twilio.request_validator import RequestValidator

from ivr.audio.wav import read_wav_as_ulaw8k, write_wav
from ivr.caller.cli import register, run_call
from tests.support.calls import app_for, mulaw_tone, place_call
from tests.support.fake_realtime import FakeRealtimeServer, Reply
from tests.support.fake_twilio_rest import FakeTwilioRest
from tests.support.server import ACCOUNT_SID, AUTH_TOKEN, OPERATOR_TOKEN, make_settings, running_server

CALL_SID = "CA" + "5" * 32
PARAMS = {
    "AccountSid": ACCOUNT_SID,
    "ApiVersion": "2010-04-01",
    "CallSid": CALL_SID,
    "CallStatus": "ringing",
    "Direction": "inbound",
    "From": "+15550100001",
    "To": "+15550100002",
    "Called": "+15550100002",
    "Caller": "+15550100001",
}


def _sign(url: str, params: dict[str, str], token: str = AUTH_TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, params)


async def test_voice_webhook_signed_answers_connect_stream(fake_realtime: FakeRealtimeServer) -> None:
    async with app_for(fake_realtime) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        url = server.settings.public_url + "/twilio/voice"
        ok = await http.post("/twilio/voice", data=PARAMS, headers={"X-Twilio-Signature": _sign(url, PARAMS)})
        assert ok.status_code == 200
        assert ok.headers["content-type"].startswith("application/xml")
        root = ElementTree.fromstring(ok.text)
        stream = root.find("./Connect/Stream")
        assert stream is not None
        assert stream.get("url") == server.settings.media_stream_url
        assert "?" not in stream.get("url", "")
        params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
        token = params.pop("ivr_token")  # binds the stream to this webhook (tests/test_stream_trust.py)
        assert token and token.startswith("v1.")
        assert params == {"flow": "test-desk", "caller": "+15550100001", "called": "+15550100002"}

        other = {**PARAMS, "To": "+15550100003"}
        passthrough = await http.post(
            "/twilio/voice", data=other, headers={"X-Twilio-Signature": _sign(url, other)}
        )
        assert 'value="test-passthrough"' in passthrough.text

        unsigned = await http.post("/twilio/voice", data=PARAMS)
        assert unsigned.status_code == 403
        forged = await http.post(
            "/twilio/voice", data=PARAMS, headers={"X-Twilio-Signature": _sign(url, PARAMS, "another-token")}
        )
        assert forged.status_code == 403
        tampered = {**PARAMS, "From": "+15559999999"}
        replay = await http.post(
            "/twilio/voice", data=tampered, headers={"X-Twilio-Signature": _sign(url, PARAMS)}
        )
        assert replay.status_code == 403


async def test_status_callback_is_signed_and_ends_the_call(fake_realtime: FakeRealtimeServer) -> None:
    fake_realtime.default_replies = [Reply(audio_ms=200)]
    async with app_for(fake_realtime) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        live = await place_call(server)
        session = await fake_realtime.next_session()
        url = server.settings.public_url + "/twilio/status"
        status = {
            "CallSid": live.call.call_sid,
            "AccountSid": ACCOUNT_SID,
            "CallStatus": "completed",
            "CallDuration": "7",
        }
        assert (await http.post("/twilio/status", data=status)).status_code == 403
        response = await http.post(
            "/twilio/status", data=status, headers={"X-Twilio-Signature": _sign(url, status)}
        )
        assert response.status_code == 204
        await asyncio.wait_for(session.closed.wait(), 1.0)
        result = await live.result()
        record = server.state.calls.get(live.call.call_sid)
        assert record is not None
        assert record.record.twilio_status == "completed"
        assert record.record.outcome == "completed"
    assert result.ended_by == "server"


async def test_media_upgrade_with_bad_signature_is_closed_1008(fake_realtime: FakeRealtimeServer) -> None:
    async with app_for(fake_realtime) as server:
        url = server.settings.media_stream_url
        for headers in ({}, {"x-twilio-signature": _sign(url, {}, "not-the-server-token")}):
            async with websockets.connect(url, additional_headers=headers) as ws:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        # `ivr call` with the wrong token is refused at the webhook already, and says why.
        live = await place_call(server, auth_token="not-the-server-token", wait_started=False)
        result = await live.result()
        assert result.ended_by == "rejected"
        assert "auth token" in result.errors[0]
    assert fake_realtime.sessions == []


async def test_signatures_use_the_public_wss_url_behind_a_proxy(fake_realtime: FakeRealtimeServer) -> None:
    """Twilio signs https://public/... and wss://public/...; the app sees plain http on a private port."""
    fake_realtime.default_replies = [Reply(audio_ms=200)]
    settings = make_settings(realtime_url=fake_realtime.url, public_url="https://agent.example.test")
    async with running_server(settings) as server:
        assert server.settings.media_stream_url == "wss://agent.example.test/twilio/media"
        live = await place_call(
            server, public_url="https://agent.example.test", connect_to=f"127.0.0.1:{server.port}"
        )
        await fake_realtime.next_session()
        await live.wait_media(2)
        result = await live.hang_up()
    assert result.ended_by == "caller"
    assert "wss://agent.example.test/twilio/media" in result.twiml


async def test_unverified_mode_warns_at_start_up(
    fake_realtime: FakeRealtimeServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ivr.app")
    async with (
        app_for(fake_realtime, verify_signatures=False) as server,
        httpx.AsyncClient(base_url=server.base_url) as http,
    ):
        response = await http.post("/twilio/voice", data=PARAMS)  # no signature needed now
        assert response.status_code == 200
    assert any("signatures are NOT checked" in r.getMessage() for r in caplog.records)


async def test_operator_api_requires_the_bearer_token(fake_realtime: FakeRealtimeServer) -> None:
    async with app_for(fake_realtime) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        assert (await http.get("/api/calls")).status_code == 401
        wrong = await http.get("/api/calls", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = await http.get("/api/calls", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
        assert right.status_code == 200 and right.json()["live"] == []
        missing = await http.get(
            "/api/calls/CA0/events", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        )
        assert missing.status_code == 404
        assert (await http.get("/healthz")).json()["status"] == "ok"
        assert (await http.get("/readyz")).status_code == 200
    async with (
        app_for(fake_realtime, operator_token="") as server,
        httpx.AsyncClient(base_url=server.base_url) as http,
    ):
        disabled = await http.get("/api/calls", headers={"Authorization": "Bearer anything"})
        assert disabled.status_code == 401
        assert "IVR_OPERATOR_TOKEN" in disabled.json()["detail"]


async def test_logs_carry_no_secrets_or_caller_numbers(
    fake_realtime: FakeRealtimeServer, fake_twilio_rest: FakeTwilioRest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_realtime.default_replies = [Reply(audio_ms=300), Reply(text="Bye.", audio_ms=200)]
    async with app_for(fake_realtime, fake_twilio_rest) as server:
        live = await place_call(server, from_number="+15557654321")
        session = await fake_realtime.next_session()
        await session.wait_response_done()
        await session.respond(Reply(function_call=("end_call", {"reason": "done"})))
        await live.result()
    # Everything our process logs: the app, uvicorn, and our model socket's websockets records (handshake
    # headers included). The fake model's own server logs are test scaffolding and are left out.
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("ivr", "uvicorn")))
    assert any(r.name == "ivr.realtime.ws" for r in caplog.records)  # handshake headers were logged…
    assert "call started" in text and "hanging up" in text  # the log does tell the story
    assert live.call.call_sid in text
    for secret in (AUTH_TOKEN, OPERATOR_TOKEN, "sk-test", "+15557654321", "5557654321"):
        assert secret not in text, f"{secret!r} leaked into the logs"
    assert "+1********21" in text  # masked, still tells calls apart


async def test_unreachable_model_ends_the_call_with_an_apology(
    fake_realtime: FakeRealtimeServer, fake_twilio_rest: FakeTwilioRest
) -> None:
    fake_realtime.reject_handshakes = 100
    async with app_for(fake_realtime, fake_twilio_rest, model_connect_attempts=2) as server:
        live = await place_call(server)
        update = await fake_twilio_rest.wait_for_update(timeout=10.0)
        assert update.twiml is not None and "technical difficulties" in update.twiml
        assert "<Hangup" in update.twiml
        result = await live.result()
        record = server.state.calls.get(live.call.call_sid)
        assert record is not None and record.record.outcome == "model-unavailable"
        assert record.record.counters["model_connect_failures"] == 2
    assert result.ended_by == "server"
    assert any(e["type"] == "error" for e in result.transcript)


async def test_ivr_call_cli_against_the_real_app(fake_realtime: FakeRealtimeServer, tmp_path: Path) -> None:
    """The `ivr call` command end to end: WAV in, live transcript out, agent audio written to WAV."""
    import numpy as np

    from ivr.audio.g711 import ulaw_to_pcm16

    fake_realtime.default_replies = [Reply(text="Hello from the desk.", audio_ms=500)]
    wav_in = tmp_path / "caller.wav"
    write_wav(wav_in, ulaw_to_pcm16(mulaw_tone(900.0, 700)).astype(np.int16), 8000)
    out = tmp_path / "agent.wav"
    lines: list[str] = []
    async with app_for(fake_realtime) as server:
        top = argparse.ArgumentParser(prog="ivr")
        register(top.add_subparsers(dest="command", required=True))
        args = top.parse_args(
            [
                "call",
                server.base_url,
                "--wav",
                str(wav_in),
                "--duration",
                "1.5",
                "--out",
                str(out),
                "--auth-token",
                AUTH_TOKEN,
                "--account-sid",
                ACCOUNT_SID,
                "--token",
                OPERATOR_TOKEN,
            ]
        )
        code = await run_call(args, out=lines.append)
        session = fake_realtime.sessions[0]
    assert code == 0, lines
    printed = "\n".join(lines)
    assert "Hello from the desk." in printed  # the live transcript came through the operator feed
    assert AUTH_TOKEN not in printed and OPERATOR_TOKEN not in printed
    heard = read_wav_as_ulaw8k(out)
    assert len(heard) >= 500 * 8 - 160  # the agent's 500 ms greeting was recorded
    assert len(session.input_audio) >= 24000  # and the caller's WAV reached the model
