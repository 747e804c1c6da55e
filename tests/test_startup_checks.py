"""`ivr serve` refuses a configuration that cannot work, at start-up, with one clear message.

Why: each of these used to surface late or raw: a flow the model cannot take failed inside the first call
(the caller heard silence), ``REDIS_URL`` without a scheme crashed with a traceback, a port in use was
reported only after start-up claimed it was listening, ``--port 99999`` was accepted, and a missing or
empty flows folder ran with the built-in assistant only and no word about it. Every test runs the real
command in a child process (real sockets, a real listener holding the port).
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest

from ivr.flows.compat import choices_for
from ivr.settings import Settings, SettingsError
from tests.support.calls import place_call
from tests.support.fake_realtime import FakeRealtimeServer, Reply
from tests.support.process import free_port, serve_env
from tests.support.server import TEST_FLOWS, make_settings, running_server

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "flows"
PREVIEW = "gpt-4o-realtime-preview-2025-06-03"
READY_MARKS = ("listening on", "Uvicorn running on", "Application startup complete")


async def serve(*args: str, **env: str) -> tuple[int, str]:
    """Run `python -m ivr serve ARGS` to its end (it must exit by itself); return (exit code, stderr)."""
    base = {k: v for k, v in serve_env("ws://127.0.0.1:9/v1/realtime").items() if k != "IVR_FLOWS"}
    base.pop("IVR_REALTIME_MODEL", None)
    base.pop("IVR_REALTIME_DIALECT", None)
    base.update(env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ivr",
        "serve",
        *args,
        cwd=ROOT,
        env=base,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), 60.0)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, stderr.decode(errors="replace")


def assert_refused_before_ready(code: int, err: str) -> None:
    assert code != 0, err
    assert "Traceback" not in err, err
    for mark in READY_MARKS:
        assert mark not in err, err


async def test_a_flow_the_model_cannot_take_stops_start_up_with_file_line_and_choices() -> None:
    code, err = await serve("--port", str(free_port()), "--flows", str(SHIPPED), IVR_REALTIME_MODEL=PREVIEW)
    assert_refused_before_ready(code, err)
    assert code == 2
    assert f"{SHIPPED / 'default.yaml'}:7: model.voice: 'marin' " in err
    assert PREVIEW in err and "use one of: alloy, ash, ballad, coral, echo, sage, shimmer, verse" in err


async def test_redis_url_without_a_scheme_is_a_clear_error_without_traceback() -> None:
    code, err = await serve(
        "--port", str(free_port()), "--flows", str(TEST_FLOWS), REDIS_URL="localhost:6379"
    )
    assert_refused_before_ready(code, err)
    assert code == 2
    assert "REDIS_URL" in err and "redis://localhost:6379" in err


async def test_a_port_in_use_is_refused_before_start_up_claims_ready() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code, err = await serve("--port", str(port), "--flows", str(TEST_FLOWS))
    assert_refused_before_ready(code, err)
    assert code == 1
    assert f"127.0.0.1:{port} is already in use" in err and "--port" in err
    assert "embedded" not in err  # refused before anything was started


@pytest.mark.parametrize("port", ["99999", "-1", "0"])
async def test_a_port_outside_1_to_65535_is_refused(port: str) -> None:
    code, err = await serve("--port", port, "--flows", str(TEST_FLOWS))
    assert_refused_before_ready(code, err)
    assert code == 2
    assert f"--port: {port} is not a port number (use 1 to 65535)" in err


async def test_a_missing_flows_folder_stops_start_up(tmp_path: Path) -> None:
    missing = tmp_path / "flows"
    code, err = await serve("--port", str(free_port()), "--flows", str(missing))
    assert_refused_before_ready(code, err)
    assert code == 2
    assert f"{missing} does not exist" in err and "--flows" in err and "IVR_FLOWS" in err


async def test_an_empty_flows_folder_stops_start_up(tmp_path: Path) -> None:
    code, err = await serve("--port", str(free_port()), IVR_FLOWS=str(tmp_path))
    assert_refused_before_ready(code, err)
    assert code == 2
    assert f"no flows in {tmp_path}" in err


# --- the settings behind the REDIS_URL message ------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "hint"),
    [
        ("localhost:6379", "redis://localhost:6379"),
        ("10.0.0.5", "redis://10.0.0.5"),
        ("http://cache:6379", "redis://cache:6379"),
        ("redis://cache:99999", "redis://host:6379/0"),
        ("unix://", "unix:///path/to/redis.sock"),
    ],
)
def test_redis_url_must_be_a_redis_url(raw: str, hint: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"REDIS_URL": raw})
    assert str(caught.value).startswith("REDIS_URL=")
    assert hint in str(caught.value)


def test_redis_url_errors_never_show_the_password() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"REDIS_URL": "user:s3cret@cache:6379"})
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["redis://localhost:6379/0", "rediss://u:p@cache.example.com:6380", "unix:///run/redis.sock"]
)
def test_valid_redis_urls_pass(url: str) -> None:
    assert Settings.from_env({"REDIS_URL": url}).redis_url == url


# --- the built-in assistant on a beta model ---------------------------------------------------------------


async def test_the_builtin_assistant_speaks_a_voice_a_preview_model_can_take(
    tmp_path: Path, fake_realtime: FakeRealtimeServer
) -> None:
    # No flow is the default, so the unclaimed number below gets the built-in assistant, whose voice is
    # GA-only "marin" by default: on a preview (beta) model its session.update used to fail mid-call.
    (tmp_path / "desk.yaml").write_text(
        "id: desk\nnumbers: ['+15550100077']\ninstructions: hi\nmodel: {voice: ash}\n", encoding="utf-8"
    )
    fake_realtime.default_replies = [Reply(text="Hello.", audio_ms=200)]
    settings = make_settings(realtime_url=fake_realtime.url, realtime_model=PREVIEW, flows_dir=tmp_path)
    async with running_server(settings) as server:
        live = await place_call(server, to_number="+15550100099")
        session = await fake_realtime.next_session()
        update = await session.wait_for("session.update")
        await session.wait_response_done()
        result = await live.hang_up()
    assert session.dialect == "beta" and session.model == PREVIEW
    assert update["session"]["voice"] in choices_for("beta").voices
    assert result.ended_by == "caller"
