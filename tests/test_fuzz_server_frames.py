"""Frames found by ``benchmarks/fuzz_server.py`` that hurt a live call, replayed against the real app.

Why: the fuzz run over the server's sockets finds sequences, not single bad values; each sequence that lost
a call is kept here as a small end-to-end case (real app on loopback, the fake Realtime API sending the
frames raw on the model socket, a simulated Twilio caller), so the next change cannot bring it back.
A call survives when the model session stays open and a later answer still reaches the caller as audio.
"""

from __future__ import annotations

import base64

import orjson

from tests.support.calls import app_for, place_call
from tests.support.fake_realtime import FakeRealtimeServer, FakeSession, Reply


async def _send_raw(session: FakeSession, event: dict[str, object]) -> None:
    # The fake validates what it emits itself; these frames are invalid on purpose, so they go out raw.
    await session._ws.send(orjson.dumps(event).decode())


async def test_an_audio_delta_with_an_empty_item_id_does_not_end_the_call(
    fake_realtime: FakeRealtimeServer,
) -> None:
    """Fuzz find: ``item_id: ""`` became the playing item; the next barge-in raised building the truncate
    inside the model task, and the call ended with ``model-unavailable`` (4 of 8 fuzzed calls in a 20,000
    frame run). The frame must be ignored or survived; either way the model task goes on."""
    async with app_for(fake_realtime) as server:
        live = await place_call(server, to_number="+15550100003")  # the μ-law passthrough flow
        session = await fake_realtime.next_session()
        await live.wait_media(1)  # the greeting plays
        await session.wait_response_done()
        await live.call.wait_agent_quiet(300, timeout=5.0)  # the greeting has played out
        audio = base64.b64encode(b"\xff" * 3200).decode()  # 400 ms of μ-law silence: enough to be marked
        await _send_raw(
            session,
            {"type": "response.output_audio.delta", "response_id": "resp_x", "item_id": "", "delta": audio},
        )
        await session.speech_started()  # barge-in while that audio plays
        await session.speech_stopped()
        await session.user_said("Are you still there?")
        before = len(live.media())
        await session.respond(Reply(text="Yes, still here.", audio_ms=400))
        await live.wait_media(before + 1, timeout=5.0)
        assert not session.closed.is_set(), "the model session was closed after one malformed frame"
        assert fake_realtime.sessions == [session], "the server dropped the model session over one frame"
        result = await live.hang_up()
        assert result.ended_by == "caller"
        feed = server.state.calls.get(live.call.call_sid)
        assert feed is not None
        assert feed.record.counters.get("internal_errors", 0) == 0, (
            feed.record.counters
        )  # the model task lived
        assert feed.record.outcome == "completed"
