"""Twilio's media socket served without ASGI (ivr.telephony.media_socket), and the ASGI path it replaced.

``ivr serve`` hands ``/twilio/media`` to :class:`DirectMediaSocket` and every other WebSocket path to
uvicorn's own protocol. The same endpoint runs on both carriers, so the behaviours a caller and an attacker
can see are checked on both (``media="direct"`` and ``media="asgi"``); what only the direct carrier does
(routing, shutdown, keepalive, proxy addresses, a broken upgrade) is checked on it alone.
Real sockets on loopback throughout.
"""

from __future__ import annotations

import asyncio
import base64

import pytest
import websockets
from twilio.request_validator import RequestValidator
from websockets.exceptions import InvalidStatus

from ivr.caller.twilio_side import TwilioStreamSimulator, new_sid
from ivr.telephony.media_socket import DirectMediaSocket
from tests.support.calls import app_for, place_call, ws_close_code
from tests.support.fake_realtime import FakeRealtimeServer, Reply
from tests.support.server import ACCOUNT_SID, AUTH_TOKEN, RunningServer

CARRIERS = ["direct", "asgi"]
GREETING = Reply(text="Hello, test desk.", audio_ms=400, tone_hz=440.0)


def _sign(url: str) -> str:
    return RequestValidator(AUTH_TOKEN).compute_signature(url, {})


def _direct_sockets(server: RunningServer) -> list[DirectMediaSocket]:
    return [c for c in server.server.server_state.connections if isinstance(c, DirectMediaSocket)]


async def _raw_upgrade(
    port: int, path: str, headers: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\n".encode())
    await writer.drain()
    return reader, writer


UPGRADE = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


# ------------------------------------------------------------------------------------------- both carriers


@pytest.mark.parametrize("media", CARRIERS)
async def test_a_whole_call_greets_echoes_marks_and_ends_on_either_carrier(
    fake_realtime: FakeRealtimeServer, media: str
) -> None:
    fake_realtime.default_replies = [GREETING]
    async with app_for(fake_realtime, media=media) as server:
        live = await place_call(server)
        session = await fake_realtime.next_session()
        await session.wait_input_audio(8000)  # the caller's audio reaches the model
        media_messages = await live.wait_media(4)
        assert {m["streamSid"] for m in media_messages} == {live.call.stream_sid}
        assert base64.b64decode(media_messages[0]["media"]["payload"])  # μ-law audio, not empty
        await asyncio.wait_for(live.oracle.mark_echoed.wait(), 3.0)
        assert (len(_direct_sockets(server)) == 1) is (media == "direct")
        result = await live.hang_up()
        await asyncio.wait_for(session.closed.wait(), 2.0)
    assert result.ended_by == "caller"
    assert result.marks_echoed >= 1


@pytest.mark.parametrize("media", CARRIERS)
async def test_junk_mid_call_is_counted_and_the_call_goes_on_on_either_carrier(
    fake_realtime: FakeRealtimeServer, media: str
) -> None:
    async with app_for(fake_realtime, media=media) as server:
        live = await place_call(server)
        session = await fake_realtime.next_session()
        await session.wait_input_audio(8000)
        ws = live.call._ws
        assert ws is not None
        await ws.send("not json")
        await ws.send(b"\x00\x01binary")
        before = len(session.input_audio)
        await session.wait_input_audio(before + 8000)  # audio still flows after the junk
        feed = server.state.calls.get(live.call.call_sid)
        assert feed is not None and feed.record.counters["malformed_twilio"] == 2
        await live.hang_up()


@pytest.mark.parametrize("media", CARRIERS)
async def test_an_oversized_message_closes_1009_on_either_carrier(
    fake_realtime: FakeRealtimeServer, media: str
) -> None:
    async with app_for(fake_realtime, media=media, verify_signatures=False) as server:
        ws = await websockets.connect(server.settings.media_stream_url, max_size=None)
        sim = TwilioStreamSimulator(ACCOUNT_SID, new_sid("CA"), new_sid("MZ"), {"pad": "x" * (256 * 1024)})
        await ws.send(sim.connected())
        await ws.send(sim.start())
        assert await ws_close_code(ws) == 1009
        assert server.state.counters.get("ws_message_too_big") == 1
    assert fake_realtime.sessions == []


@pytest.mark.parametrize("media", CARRIERS)
async def test_bad_signatures_close_1008_then_the_client_is_denied_429_on_either_carrier(
    fake_realtime: FakeRealtimeServer, media: str
) -> None:
    async with app_for(fake_realtime, media=media, signature_failure_limit=2) as server:
        url = server.settings.media_stream_url
        for _ in range(2):
            async with websockets.connect(url, additional_headers={"x-twilio-signature": "bad"}) as ws:
                assert await ws_close_code(ws) == 1008
        with pytest.raises(InvalidStatus) as denied:
            await websockets.connect(url, additional_headers={"x-twilio-signature": "bad"})
        assert denied.value.response.status_code == 429
        assert int(denied.value.response.headers["Retry-After"]) >= 1
        assert b"retry in" in denied.value.response.body
        async with websockets.connect(url, additional_headers={"x-twilio-signature": _sign(url)}) as ws:
            assert ws.response is not None and ws.response.status_code == 101


# ------------------------------------------------------------------------------------------- direct only


async def test_other_websocket_paths_still_go_through_asgi(fake_realtime: FakeRealtimeServer) -> None:
    """The router keeps only /twilio/media: an unknown WebSocket path gets Starlette's refusal (403)."""
    async with app_for(fake_realtime) as server:
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(f"ws://127.0.0.1:{server.port}/twilio/mediax")
        assert refused.value.response.status_code == 403
        assert _direct_sockets(server) == []
        # …while /twilio/media with a query string is still the direct carrier.
        url = server.settings.media_stream_url + "?x=1"
        async with websockets.connect(url, additional_headers={"x-twilio-signature": "bad"}) as ws:
            assert await ws_close_code(ws) == 1008


async def test_a_broken_upgrade_to_the_media_path_gets_400_not_a_crash(
    fake_realtime: FakeRealtimeServer,
) -> None:
    async with app_for(fake_realtime, verify_signatures=False) as server:
        no_key = UPGRADE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "")
        reader, writer = await _raw_upgrade(server.port, "/twilio/media", no_key)
        try:
            async with asyncio.timeout(5):
                status = await reader.readline()
                rest = await reader.read()  # the server closes after its answer
        finally:
            writer.close()
        assert status.startswith(b"HTTP/1.1 400"), status
        assert b"Sec-WebSocket-Key" in rest
        # The server is unharmed: a good upgrade right after works.
        async with websockets.connect(server.settings.media_stream_url) as ws:
            assert ws.response is not None and ws.response.status_code == 101


async def test_uvicorn_shutdown_closes_a_live_media_socket_with_1012(
    fake_realtime: FakeRealtimeServer,
) -> None:
    """After a drain (or at once with no drain) uvicorn asks every connection to shut down: the direct
    socket sends 1012 (service restart), the call ends, and the server's exit is not held up."""
    async with app_for(fake_realtime) as server:
        live = await place_call(server)
        await fake_realtime.next_session()
        server.server.should_exit = True
        result = await asyncio.wait_for(live.task, 8.0)
        assert result.streams[0].close_code == 1012
        assert _direct_sockets(server) == []


async def test_a_peer_that_never_answers_pings_is_cut_off(fake_realtime: FakeRealtimeServer) -> None:
    """Keepalive on the direct carrier follows uvicorn's ws_ping_interval/ws_ping_timeout."""
    async with app_for(fake_realtime, verify_signatures=False) as server:
        config = server.server.config
        config.ws_ping_interval, config.ws_ping_timeout = 0.2, 0.3
        reader, writer = await _raw_upgrade(server.port, "/twilio/media", UPGRADE)
        try:
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 101")
                received = await reader.read()  # never answers the ping; ends at the server's close
        finally:
            writer.close()
        assert received[:1] == b"\x89"  # it was pinged (opcode 9, unmasked from a server)
        assert b"keepalive ping timeout" in received  # then closed with 1011 and that reason


async def test_the_rate_limit_keys_on_the_forwarded_address_behind_a_trusted_proxy(
    fake_realtime: FakeRealtimeServer,
) -> None:
    """uvicorn trusts 127.0.0.1 as a proxy by default: the limiter counts X-Forwarded-For's client, so one
    caller's bad signatures do not block another caller behind the same proxy."""
    async with app_for(fake_realtime, signature_failure_limit=2) as server:
        url = server.settings.media_stream_url

        def headers(client: str) -> dict[str, str]:
            return {"x-twilio-signature": "bad", "X-Forwarded-For": client}

        for _ in range(2):
            async with websockets.connect(url, additional_headers=headers("203.0.113.7")) as ws:
                assert await ws_close_code(ws) == 1008
        with pytest.raises(InvalidStatus) as denied:
            await websockets.connect(url, additional_headers=headers("203.0.113.7"))
        assert denied.value.response.status_code == 429
        async with websockets.connect(url, additional_headers=headers("198.51.100.9")) as ws:
            assert await ws_close_code(ws) == 1008  # refused for its signature, not rate-limited
