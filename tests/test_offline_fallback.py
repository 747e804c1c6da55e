"""``model.fallback: local``: when the OpenAI model cannot be reached, the call carries on offline.

The Realtime URL points at a port nobody listens on. Without a fallback the caller would hear an apology
and the call would end; with one, the call switches to the offline engine after two failed attempts, tells
the caller in one sentence, carries on with the flow's offline dialogue, and the call record says so.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ivr.call.session import FALLBACK_NOTICE
from ivr.store.keys import KeySchema
from tests.support.calls import place_call
from tests.support.fake_twilio_rest import FakeTwilioRest
from tests.support.server import make_settings, running_server

FLOWS = Path(__file__).resolve().parent.parent / "flows"

pytestmark = pytest.mark.slow


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _flow_with_fallback(folder: Path, fallback: str) -> Path:
    text = (FLOWS / "dental-clinic.yaml").read_text()
    text = text.replace("model:\n  voice: coral", f"model:\n  fallback: {fallback}\n  voice: coral", 1)
    assert f"fallback: {fallback}" in text
    folder.mkdir()
    (folder / "dental-clinic.yaml").write_text(text)
    return folder


async def test_unreachable_model_falls_back_to_the_local_engine(
    tmp_path: Path, redis_url: str, redis_prefix: str, fake_twilio_rest: FakeTwilioRest
) -> None:
    flows = _flow_with_fallback(tmp_path / "flows", "local")
    settings = make_settings(
        realtime_url=f"ws://127.0.0.1:{_closed_port()}/v1/realtime",
        flows_dir=flows,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
    )
    rest = fake_twilio_rest
    async with running_server(settings.with_(twilio_api_base=rest.base_url)) as server:
        live = await place_call(server, to_number="+15551230001", duration_s=60.0)
        await live.call.wait_agent_quiet(800, timeout=30)
        agent = [
            e["text"] for e in live.call.transcript if e.get("type") == "transcript" and e["role"] == "agent"
        ]
        assert agent and agent[0] == FALLBACK_NOTICE, agent
        # …and then the flow's own offline conversation goes on: its on_start step looks the caller up.
        tools = [e["name"] for e in live.call.transcript if e.get("type") == "tool.called"]
        assert tools[:1] == ["find_patient"], tools
        fallbacks = [e for e in live.call.transcript if e.get("type") == "model.fallback"]
        assert [(e["previous"], e["engine"]) for e in fallbacks] == [("realtime", "local")]
        await live.hang_up()

    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = KeySchema(redis_prefix)
        record = await client.hgetall(keys.call(live.call.call_sid))
        assert record["engine"] == "local"
        assert json.loads(record["counters"])["engine_fallbacks"] == 1
        assert json.loads(record["counters"])["model_connect_failures"] == 2
        events = await client.xrange(keys.call_events(live.call.call_sid))
        assert any(fields.get("type") == "model.fallback" for _id, fields in events), events
    finally:
        await client.aclose()


async def test_without_fallback_the_caller_hears_the_apology(
    tmp_path: Path, fake_twilio_rest: FakeTwilioRest
) -> None:
    flows = _flow_with_fallback(tmp_path / "flows", "none")
    settings = make_settings(
        realtime_url=f"ws://127.0.0.1:{_closed_port()}/v1/realtime", flows_dir=flows, model_connect_attempts=2
    )
    rest = fake_twilio_rest
    async with running_server(settings.with_(twilio_api_base=rest.base_url)) as server:
        live = await place_call(server, to_number="+15551230001", duration_s=30.0)
        result = await live.result(timeout=20)
        assert result.ended_by == "server"
        update = await rest.wait_for_update()
        assert update.twiml is not None and "technical difficulties" in update.twiml
        assert not any(e.get("type") == "model.fallback" for e in live.call.transcript)
