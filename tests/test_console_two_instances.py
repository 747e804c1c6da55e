"""Two app instances on one Redis: a call running on A is watched and decided from B's console.

Both instances are the real app under uvicorn (``running_server`` twice, each with its own instance id);
they share nothing but Redis. The operator is logged in to B only, with a session cookie and its CSRF token.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests.support.calls import place_call
from tests.support.console import Sse, logged_in, wait_ready
from tests.support.fake_realtime import FakeRealtimeServer, Reply
from tests.support.server import make_settings, running_server
from tests.test_call_state_e2e import _pending_booking

CLINIC = Path(__file__).parent / "data" / "flows-clinic"


async def test_a_call_on_a_is_watched_approved_and_hung_up_from_b(
    fake_realtime: FakeRealtimeServer, redis_url: str, redis_prefix: str
) -> None:
    fake_realtime.default_replies = [Reply(text="Hello, clinic.", audio_ms=200)]
    common = {"realtime_url": fake_realtime.url, "flows_dir": CLINIC, "redis_url": redis_url}
    async with (
        running_server(make_settings(**common, redis_prefix=redis_prefix, instance_id="console-a")) as a,
        running_server(make_settings(**common, redis_prefix=redis_prefix, instance_id="console-b")) as b,
    ):
        await wait_ready(a)
        async with logged_in(b, "bea", "approver") as bea:
            live = await place_call(a, to_number="+15550100004")
            sid = live.call.call_sid
            session = await fake_realtime.next_session()
            headers = {"HX-Request": "true", "X-CSRF-Token": bea.csrf}
            async with bea.client.stream("GET", f"/ops/calls/{sid}/events?after=0-0") as stream:
                assert stream.status_code == 200
                sse = Sse(stream)
                started, _ = await sse.until("Call started")  # A's events, read from Redis by B
                _, pending = await _pending_booking(session)
                await sse.until("Approval requested for appointments")
                board = await bea.client.get("/ops/")
                assert f'data-approval="{pending["approval_id"]}"' in board.text and "console-a" in board.text

                decided_at = time.monotonic()
                response = await bea.client.post(
                    f"/ops/approvals/{pending['approval_id']}", data={"decision": "approve"}, headers=headers
                )
                assert response.status_code == 200, response.text
                assert "Approved by <strong>bea</strong>" in response.text
                news = await session.wait_for(
                    "conversation.item.create", lambda e: e["item"].get("role") == "system"
                )
                elapsed = time.monotonic() - decided_at
                assert "approved" in json.dumps(news) and elapsed < 1.0, elapsed
                await sse.until("Approval approved by bea for appointments")
                await sse.until("Tool appointments ok")  # the call on A went on and booked

                hangup = await bea.client.post(f"/ops/calls/{sid}/hangup", headers=headers)
                assert hangup.status_code == 200, hangup.text
                assert "console-a" in hangup.text
                await sse.until("bea asked to hang up")
                ended_id, ended = await sse.until("Call ended")
                assert "operator-hangup" in ended
                assert started < ended_id
            result = await live.result()
            assert result.ended_by == "server"
            print(f"\n[decision posted to B → approval notice at the model on A] {elapsed * 1000:.1f} ms")
            ended_page = await bea.client.get(f"/ops/calls/{sid}")
            assert ended_page.status_code == 200 and "operator-hangup" in ended_page.text
            assert "Hang up</button>" not in ended_page.text
        async with httpx.AsyncClient(base_url=b.base_url) as anonymous:
            assert (await anonymous.get(f"/ops/calls/{sid}/events")).status_code == 401
