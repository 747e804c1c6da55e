"""Finding 1: a media stream is bound to its signed webhook (issue 9).

Each stream must carry the per-call token the signed webhook put in its TwiML; the flow, caller and called
number come from the values that token covers, never from ``start`` alone; a call sid streams once. Over
real sockets with the protocol-faithful stand-ins (the ``ivr call`` Twilio simulator, the fake model).
"""

from __future__ import annotations

import asyncio
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping

import httpx
import pytest
import websockets
from twilio.request_validator import RequestValidator

from ivr.caller.twilio_side import TwilioStreamSimulator, new_sid
from ivr.settings import Settings, SettingsError
from ivr.telephony.stream_token import (
    TOKEN_PARAMETER,
    OnceClaims,
    Refusal,
    StreamBinding,
    StreamTokens,
    derive_key,
)
from tests.support.calls import app_for, place_call, ws_close_code
from tests.support.fake_realtime import FakeRealtimeServer, Reply
from tests.support.server import ACCOUNT_SID, AUTH_TOKEN, RunningServer, make_settings, running_server

CALLER = "+15550100001"
DESK = "+15550100002"  # tests/data/flows/test-desk.yaml
ATTACKER = "+15550177777"


# ------------------------------------------------------------------------------------------- helpers


def _sign(url: str, params: Mapping[str, str]) -> str:
    return RequestValidator(AUTH_TOKEN).compute_signature(url, dict(params))


async def _webhook(server: RunningServer, call_sid: str, caller: str = CALLER) -> dict[str, str]:
    """POST the signed voice webhook as Twilio would; return the TwiML <Parameter>s of the stream."""
    form = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": caller,
        "To": DESK,
    }
    url = server.settings.public_url + "/twilio/voice"
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        response = await http.post(
            "/twilio/voice", data=form, headers={"X-Twilio-Signature": _sign(url, form)}
        )
    assert response.status_code == 200, response.text
    stream = ET.fromstring(response.text).find("./Connect/Stream")
    assert stream is not None
    return {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}


async def _open_stream(
    server: RunningServer, call_sid: str, parameters: Mapping[str, str]
) -> websockets.ClientConnection:
    """A media socket with a VALID upgrade signature (the constant one), sending connected + start."""
    url = server.settings.media_stream_url
    ws = await websockets.connect(url, additional_headers={"x-twilio-signature": _sign(url, {})})
    sim = TwilioStreamSimulator(ACCOUNT_SID, call_sid, new_sid("MZ"), parameters)
    await ws.send(sim.connected())
    await ws.send(sim.start())
    return ws


def _refused(server: RunningServer) -> dict[str, float]:
    """``ivr_media_streams_refused_total`` by reason, from the app's own Prometheus registry."""
    out: dict[str, float] = {}
    for metric in server.state.metrics.registry.collect():
        if metric.name == "ivr_media_streams_refused":
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["reason"]] = sample.value
    return out


# ------------------------------------------------------------------------------------------- over sockets


async def test_forged_stream_with_a_live_calls_sid_is_refused_and_the_call_survives(
    fake_realtime: FakeRealtimeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The reproduced attack: valid (constant) upgrade signature + a live call's sid + chosen flow/caller."""
    caplog.set_level(logging.INFO)
    fake_realtime.default_replies = [Reply(text="Hello.", audio_ms=200)]
    async with app_for(fake_realtime) as server:
        live = await place_call(server)
        await fake_realtime.next_session()
        sid = live.call.call_sid
        genuine = server.state.sessions[sid]

        forged = await _open_stream(
            server, sid, {"flow": "test-passthrough", "caller": ATTACKER, "called": DESK}
        )
        assert await ws_close_code(forged) == 1008
        assert server.state.sessions[sid] is genuine, "the forged stream replaced the live call's session"
        assert len(fake_realtime.sessions) == 1, "the forged stream opened a model session"
        assert _refused(server) == {"missing_token": 1.0}
        refusals = [r.getMessage() for r in caplog.records if "refused a media stream" in r.getMessage()]
        assert refusals and "missing_token" in refusals[0]
        assert ATTACKER not in caplog.text and ATTACKER[-4:] not in "".join(refusals)

        await live.wait_media(2)
        result = await live.hang_up()
    assert result.ended_by == "caller"


async def test_replaying_the_genuine_start_is_refused_during_and_after_the_call(
    fake_realtime: FakeRealtimeServer,
) -> None:
    """Even the complete, token-carrying start (captured from the wire) streams a call sid only once."""
    fake_realtime.default_replies = [Reply(text="Hello.", audio_ms=200)]
    async with app_for(fake_realtime) as server:
        live = await place_call(server)
        await fake_realtime.next_session()
        sid = live.call.call_sid
        captured = dict(live.call._sim.custom_parameters)
        assert TOKEN_PARAMETER in captured

        replay = await _open_stream(server, sid, captured)
        assert await ws_close_code(replay) == 1008
        await live.hang_up()

        after = await _open_stream(server, sid, captured)
        assert await ws_close_code(after) == 1008
        assert _refused(server) == {"replayed": 2.0}
    assert len(fake_realtime.sessions) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [("caller", ATTACKER), ("flow", "test-passthrough"), ("called", "+15550100003")],
)
async def test_changing_a_token_bound_parameter_is_refused(
    fake_realtime: FakeRealtimeServer, field: str, value: str
) -> None:
    """Flow, caller and called are covered by the token: a start that alters one of them is refused."""
    async with app_for(fake_realtime) as server:
        sid = new_sid("CA")
        params = await _webhook(server, sid)
        ws = await _open_stream(server, sid, {**params, field: value})
        assert await ws_close_code(ws) == 1008
        assert _refused(server) == {"bad_token": 1.0}
        # The genuine parameters still work afterwards: a refused attempt does not burn the call sid.
        ok = await _open_stream(server, sid, params)
        await fake_realtime.next_session()
        assert server.state.sessions[sid].record.caller == CALLER
        await ok.close()
    assert len(fake_realtime.sessions) == 1


async def test_a_token_of_another_call_is_refused(fake_realtime: FakeRealtimeServer) -> None:
    async with app_for(fake_realtime) as server:
        mine, victim = new_sid("CA"), new_sid("CA")
        params = await _webhook(server, mine, caller=ATTACKER)
        ws = await _open_stream(server, victim, params)
        assert await ws_close_code(ws) == 1008
        assert _refused(server) == {"bad_token": 1.0}
    assert fake_realtime.sessions == []


async def test_flow_and_caller_come_from_the_signed_webhook(fake_realtime: FakeRealtimeServer) -> None:
    """Unbound extra parameters in start never reach the call context (they would override flow variables)."""
    fake_realtime.default_replies = [Reply(text="Hello.", audio_ms=200)]
    async with app_for(fake_realtime) as server:
        sid = new_sid("CA")
        params = await _webhook(server, sid)
        assert set(params) == {"flow", "caller", "called", TOKEN_PARAMETER}
        ws = await _open_stream(server, sid, {**params, "caller_number": ATTACKER, "extra": "x"})
        session = await fake_realtime.next_session()
        call = server.state.sessions[sid]
        assert (call.record.flow_id, call.record.caller, call.record.called) == ("test-desk", CALLER, DESK)
        update = await session.wait_for("session.update")
        instructions = update["session"]["instructions"]
        assert CALLER in instructions and ATTACKER not in instructions
        await ws.close()


async def test_unverified_dev_mode_accepts_an_unbound_stream_with_a_warning(
    fake_realtime: FakeRealtimeServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ivr.app")
    fake_realtime.default_replies = [Reply(text="Hello.", audio_ms=200)]
    async with app_for(fake_realtime, verify_signatures=False) as server:
        sid = new_sid("CA")
        ws = await _open_stream(server, sid, {"flow": "test-desk", "caller": CALLER, "called": DESK})
        await fake_realtime.next_session()
        assert server.state.sessions[sid].record.caller == CALLER
        assert any("unbound media stream" in r.getMessage() for r in caplog.records)
        # ... but even in dev mode a live call is never taken over.
        second = await _open_stream(server, sid, {"flow": "test-desk", "caller": ATTACKER, "called": DESK})
        assert await ws_close_code(second) == 1008
        assert server.state.sessions[sid].record.caller == CALLER
        await ws.close()


async def test_a_token_from_instance_a_streams_once_across_instances(
    fake_realtime: FakeRealtimeServer, redis_url: str, redis_prefix: str
) -> None:
    """Both instances derive the same key; the once-only claim lives in Redis, so B refuses A's replay."""
    fake_realtime.default_replies = [Reply(text="Hello.", audio_ms=200)]
    settings = make_settings(realtime_url=fake_realtime.url, redis_url=redis_url, redis_prefix=redis_prefix)
    async with (
        running_server(settings.with_(instance_id="instance-a")) as a,
        running_server(settings.with_(instance_id="instance-b")) as b,
    ):
        sid = new_sid("CA")
        params = await _webhook(a, sid)
        on_b = await _open_stream(b, sid, params)  # the socket may land on any instance
        await fake_realtime.next_session()
        assert b.state.sessions[sid].record.caller == CALLER
        replay_on_a = await _open_stream(a, sid, params)
        assert await ws_close_code(replay_on_a) == 1008
        assert _refused(a) == {"replayed": 1.0}
        await on_b.close()


# ------------------------------------------------------------------------------------------- sans-I/O

KEY = derive_key("", AUTH_TOKEN)
BINDING = StreamBinding(call_sid="CA" + "1" * 32, flow="test-desk", caller=CALLER, called=DESK)


def _params(token: str, binding: StreamBinding = BINDING) -> dict[str, str]:
    return {"flow": binding.flow, "caller": binding.caller, "called": binding.called, TOKEN_PARAMETER: token}


def test_token_round_trip_gives_back_the_binding() -> None:
    assert KEY is not None
    tokens = StreamTokens(KEY, ttl_s=60)
    token = tokens.issue(BINDING, now=1000.0)
    verdict = tokens.verify(_params(token), BINDING.call_sid, now=1059.0)
    assert verdict == BINDING
    assert tokens.expires_at(token) == 1060


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"flow": "other"}, "bad_token"),
        ({"caller": ATTACKER}, "bad_token"),
        ({"called": "+15550100003"}, "bad_token"),
        ({TOKEN_PARAMETER: ""}, "missing_token"),
        ({TOKEN_PARAMETER: "garbage"}, "malformed_token"),
        ({TOKEN_PARAMETER: "v1.notanumber.AAAA"}, "malformed_token"),
        ({TOKEN_PARAMETER: "v1.1060.!!!!"}, "malformed_token"),
        ({TOKEN_PARAMETER: "v9.1060.AAAA"}, "malformed_token"),
    ],
)
def test_any_change_is_refused_with_a_reason(change: dict[str, str], reason: str) -> None:
    assert KEY is not None
    tokens = StreamTokens(KEY, ttl_s=60)
    params = {**_params(tokens.issue(BINDING, now=1000.0)), **change}
    verdict = tokens.verify(params, BINDING.call_sid, now=1001.0)
    assert isinstance(verdict, Refusal) and verdict.reason == reason, verdict


def test_missing_parameter_and_altered_expiry_and_other_sid_are_refused() -> None:
    assert KEY is not None
    tokens = StreamTokens(KEY, ttl_s=60)
    token = tokens.issue(BINDING, now=1000.0)
    no_caller = {k: v for k, v in _params(token).items() if k != "caller"}
    assert tokens.verify(no_caller, BINDING.call_sid, now=1001.0) == Refusal("bad_token", "")
    version, expiry, mac = token.split(".")
    later = f"{version}.{int(expiry) + 3600}.{mac}"
    assert tokens.verify(_params(later), BINDING.call_sid, now=1001.0) == Refusal("bad_token", "")
    assert tokens.verify(_params(token), "CA" + "2" * 32, now=1001.0) == Refusal("bad_token", "")


def test_expired_token_is_refused() -> None:
    assert KEY is not None
    tokens = StreamTokens(KEY, ttl_s=60)
    token = tokens.issue(BINDING, now=1000.0)
    verdict = tokens.verify(_params(token), BINDING.call_sid, now=1061.0)
    assert isinstance(verdict, Refusal) and verdict.reason == "expired_token"


def test_separator_in_a_value_cannot_shift_fields() -> None:
    """caller='a|b', called='c' must not sign the same bytes as caller='a', called='b|c'."""
    assert KEY is not None
    tokens = StreamTokens(KEY, ttl_s=60)
    one = StreamBinding(BINDING.call_sid, "f", "a|b", "c")
    two = StreamBinding(BINDING.call_sid, "f", "a", "b|c")
    token = tokens.issue(one, now=1000.0)
    assert tokens.verify(_params(token, two), BINDING.call_sid, now=1001.0) == Refusal("bad_token", "")


def test_key_derivation_agrees_across_instances_and_prefers_the_stream_secret() -> None:
    assert derive_key("", AUTH_TOKEN) == derive_key("", AUTH_TOKEN)
    assert derive_key("", AUTH_TOKEN) != derive_key("", "another-token")
    assert derive_key("a-long-stream-secret", AUTH_TOKEN) == derive_key("a-long-stream-secret", "x")
    assert derive_key("", AUTH_TOKEN) != AUTH_TOKEN.encode()  # never the auth token itself
    assert derive_key("", "") is None
    other = StreamTokens(derive_key("", "another-token") or b"", ttl_s=60)
    token = other.issue(BINDING, now=1000.0)
    assert StreamTokens(KEY or b"", ttl_s=60).verify(_params(token), BINDING.call_sid, 1001.0) == Refusal(
        "bad_token", ""
    )


def test_once_claims_refuse_a_second_claim_until_it_expires_and_stay_bounded() -> None:
    claims = OnceClaims(max_entries=100)
    assert claims.claim("CA1", until=110.0, now=100.0)
    assert not claims.claim("CA1", until=120.0, now=105.0)
    assert claims.claim("CA1", until=130.0, now=111.0)  # the token it guarded has expired by now
    for n in range(1000):
        claims.claim(f"CA-{n}", until=200.0 + n, now=150.0)
    assert len(claims) <= 100
    # Past the bound the oldest claims are dropped, never refused wrongly: a fresh sid still claims.
    assert claims.claim("CA-new", until=300.0, now=150.0)


def test_settings_read_the_stream_secret_and_token_lifetime() -> None:
    settings = Settings.from_env({"IVR_STREAM_SECRET": "s" * 32, "IVR_STREAM_TOKEN_TTL": "90"})
    assert settings.stream_secret == "s" * 32 and settings.stream_token_ttl_s == 90.0
    assert Settings.from_env({}).stream_token_ttl_s == 120.0
    with pytest.raises(SettingsError, match="IVR_STREAM_TOKEN_TTL"):
        Settings.from_env({"IVR_STREAM_TOKEN_TTL": "0"})


def test_wall_clock_is_what_tokens_use() -> None:
    """Tokens cross instances, so they carry wall-clock seconds (not a process's monotonic clock)."""
    assert KEY is not None
    token = StreamTokens(KEY, ttl_s=60).issue(BINDING, now=time.time())
    assert abs(StreamTokens(KEY, ttl_s=60).expires_at(token) - (time.time() + 60)) < 5


def test_a_short_stream_secret_draws_a_start_up_warning() -> None:
    from ivr.app import startup_warnings

    short = [w for w in startup_warnings(Settings(stream_secret="short")) if "IVR_STREAM_SECRET" in w]
    assert short and "at least 32" in short[0]
    assert not [w for w in startup_warnings(Settings(stream_secret="s" * 40)) if "IVR_STREAM_SECRET" in w]


async def test_a_redis_that_does_not_answer_does_not_delay_the_stream_claim() -> None:
    """A black-holed Redis (accepts, never replies) must not hold the greeting back by its 5 s socket
    timeout: the claim gives up on Redis quickly and this instance's own claim holds."""
    import redis.asyncio as aioredis

    from ivr.admission import STREAM_CLAIM_TIMEOUT_S
    from ivr.app import AppState
    from ivr.flows import FlowSet
    from ivr.store.keys import KeySchema

    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # keep the connection open, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    state = AppState(make_settings(), FlowSet([]))
    state.services.redis = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}", socket_timeout=5.0)
    state.services.keys = KeySchema("ivr:")
    sid = "CA" + "1" * 32
    try:
        started = time.perf_counter()
        assert await state.admission.claim(sid, time.time() + 60) is True
        waited = time.perf_counter() - started
        assert accepted, "the claim did try Redis"
        assert waited < 5.0 * 0.5, f"the claim waited {waited:.1f} s for a silent Redis"
        # ... and the local claim still refuses a second stream for the same sid.
        assert await state.admission.claim(sid, time.time() + 60) is False
    finally:
        await state.services.redis.aclose()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    assert STREAM_CLAIM_TIMEOUT_S < 1.0
