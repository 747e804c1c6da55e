"""Two `ivr serve` processes, one Redis: the call lives on A, the operator decides through B."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from types import SimpleNamespace

import httpx

from tests.support.calls import place_call
from tests.support.fake_realtime import FakeRealtimeServer, Reply
from tests.support.process import ServerProcess, free_port, serve_env
from tests.support.server import OPERATOR_TOKEN
from tests.test_call_state_e2e import _pending_booking

CLINIC = Path(__file__).parent / "data" / "flows-clinic"


async def _start(name: str, port: int, env: dict[str, str]) -> ServerProcess:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ivr",
        "serve",
        "--port",
        str(port),
        env={**env, "IVR_INSTANCE_ID": name},
        stderr=asyncio.subprocess.PIPE,
    )
    server = ServerProcess(proc)
    await server.wait_line("Uvicorn running on")
    return server


async def test_approval_posted_to_b_reaches_the_call_on_a(
    fake_realtime: FakeRealtimeServer, redis_url: str, redis_prefix: str
) -> None:
    fake_realtime.default_replies = [Reply(text="Hello, clinic.", audio_ms=200)]
    env = serve_env(
        fake_realtime.url, IVR_FLOWS=str(CLINIC), REDIS_URL=redis_url, IVR_REDIS_PREFIX=redis_prefix
    )
    port_a, port_b = free_port(), free_port()
    async with AsyncExitStack() as stack:
        a = await _start("instance-a", port_a, {**env, "IVR_PUBLIC_URL": f"http://127.0.0.1:{port_a}"})
        stack.push_async_callback(a.terminate)
        b = await _start("instance-b", port_b, {**env, "IVR_PUBLIC_URL": f"http://127.0.0.1:{port_b}"})
        stack.push_async_callback(b.terminate)

        live = await place_call(
            SimpleNamespace(base_url=f"http://127.0.0.1:{port_a}"), to_number="+15550100004"
        )  # type: ignore[arg-type]
        session = await fake_realtime.next_session()
        _, pending = await _pending_booking(session)

        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port_b}", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        ) as http:
            listing = (await http.get("/api/approvals")).json()["approvals"]
            assert [x["id"] for x in listing] == [pending["approval_id"]]
            assert listing[0]["instance_id"] == "instance-a"
            decided_at = time.monotonic()
            response = await http.post(
                f"/api/approvals/{pending['approval_id']}", json={"decision": "approve", "operator": "bob"}
            )
            assert response.status_code == 200, response.text
            news = await session.wait_for(
                "conversation.item.create", lambda e: e["item"].get("role") == "system"
            )
            elapsed = time.monotonic() - decided_at
            print(f"approval round trip across instances (POST to B → model on A): {elapsed * 1000:.1f} ms")
            assert "approved" in json.dumps(news)
            assert elapsed < 1.0, f"decision took {elapsed:.3f} s to reach the call on instance A"
            # B can follow the call on A from Redis too.
            record = (await http.get(f"/api/calls/{live.call.call_sid}")).json()
            assert record["instance_id"] == "instance-a"

        before = len(session.input_audio)
        await session.wait_input_audio(before + 8000)  # the call on A continues
        result = await live.hang_up()
        assert result.ended_by == "caller"
