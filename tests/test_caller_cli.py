"""``ivr call`` command line: flag parsing, the end-to-end run against the stand-in server, output files."""

from __future__ import annotations

import argparse
import base64
import os
import signal
import struct
from pathlib import Path

import numpy as np
import pytest

from ivr.audio.wav import read_wav_as_ulaw8k, tone, write_wav
from ivr.caller.call_view import CallView, describe_tool_call
from ivr.caller.cli import parse_dtmf_schedule, register, run_call
from ivr.caller.sample import QUIET_MS, SAMPLE_LINES, SAMPLE_TO, sample_lines
from tests.test_caller_client import AUTH_TOKEN, OPERATOR_TOKEN, FakeIvr, MediaConn, serve

ROOT = Path(__file__).resolve().parent.parent


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="ivr")
    register(top.add_subparsers(dest="command", required=True))
    return top


def test_dtmf_schedule_parsing() -> None:
    assert parse_dtmf_schedule("2.5:1,4:#") == [(2.5, "1"), (4.0, "#")]
    assert parse_dtmf_schedule(" 0:* , ") == [(0.0, "*")]
    for bad, fragment in [
        ("5", "SECONDS:KEY"),
        ("a:1", "not a number"),
        ("1:x", "key must be"),
        ("-1:1", "0 or"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=fragment):
            parse_dtmf_schedule(bad)


def test_flags_and_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    args = parser().parse_args(["call"])
    assert args.url == "http://127.0.0.1:8000"
    assert args.out == Path("ivr-call-agent.wav")
    assert args.duration is None and args.dtmf == [] and not args.keyboard and not args.quiet
    assert args.func.__name__ == "run_cli"
    args = parser().parse_args(
        [
            "call",
            "https://x.example",
            "--from",
            "+1",
            "--dtmf",
            "1:2",
            "--connect-to",
            "h:1",
            "--duration",
            "3",
        ]
    )
    assert (args.url, args.from_number, args.dtmf, args.connect_to, args.duration) == (
        "https://x.example",
        "+1",
        [(1.0, "2")],
        "h:1",
        3.0,
    )
    with pytest.raises(SystemExit):
        parser().parse_args(["call", "--duration", "0"])
    assert "more than 0 seconds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser().parse_args(["call", "--dtmf", "1:z"])
    assert "key must be one of" in capsys.readouterr().err


def _wav_channels(path: Path) -> tuple[int, int]:
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE"
    channels, rate = struct.unpack_from("<HI", raw, 22)
    return channels, rate


async def test_end_to_end_writes_audio_and_summary(tmp_path: Path) -> None:
    wav = tmp_path / "caller.wav"
    write_wav(wav, tone(440.0, 100, 16000, -12.0), 16000)  # 16 kHz input: converted to 8 kHz μ-law
    out, stereo = tmp_path / "agent.wav", tmp_path / "both.wav"

    async def script(conn: MediaConn) -> None:
        await conn.media(b"\x30" * 800)  # 100 ms of agent audio
        await conn.mark("hello")
        await conn.echo_of("hello")
        await conn.ws.close(code=1000)

    lines: list[str] = []
    async with serve(FakeIvr(script=script)) as fake:
        args = parser().parse_args(
            [
                *("call", fake.base_url, "--wav", str(wav), "--dtmf", "0.04:7", "--out", str(out)),
                *("--stereo-out", str(stereo), "--auth-token", AUTH_TOKEN, "--token", "", "--duration", "5"),
                "--verbose",
            ]
        )
        code = await run_call(args, out=lines.append)

    assert code == 0, lines
    msgs = [f.msg for f in fake.conn.got.frames]
    assert [m["dtmf"]["digit"] for m in msgs if m["event"] == "dtmf"] == ["7"]
    sent = b"".join(base64.b64decode(m["media"]["payload"]) for m in msgs if m["event"] == "media")
    expected = read_wav_as_ulaw8k(wav)
    assert len(expected) == 800
    assert sent[:800] == expected
    assert _wav_channels(out) == (1, 8000)
    assert _wav_channels(stereo) == (2, 8000)
    agent = np.frombuffer(out.read_bytes()[44:], dtype="<i2")
    assert np.count_nonzero(agent) == 800  # exactly the 100 ms the server sent; silence elsewhere
    text = "\n".join(lines)
    assert "webhook 200 → stream ws://127.0.0.1" in text
    assert "← mark hello played" in text
    assert "call ended by server after" in text and "marks echoed 1, clears 0" in text
    assert f"agent audio → {out}" in text
    assert AUTH_TOKEN not in text


async def test_keyboard_presses_and_hangs_up(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()

    async def script(conn: MediaConn) -> None:
        os.write(write_fd, b"12x\n")
        await conn.got.wait_for(lambda m: m["event"] == "dtmf" and m["dtmf"]["digit"] == "2")
        os.write(write_fd, b"q\n")

    lines: list[str] = []
    try:
        with os.fdopen(read_fd, "r") as keyboard:
            async with serve(FakeIvr(script=script)) as fake:
                args = parser().parse_args(
                    [
                        "call",
                        fake.base_url,
                        "--keyboard",
                        "--out",
                        str(tmp_path / "a.wav"),
                        "--auth-token",
                        AUTH_TOKEN,
                        "--token",
                        "",
                    ]
                )
                code = await run_call(args, out=lines.append, keyboard=keyboard)
                await fake.conn.closed.wait()
    finally:
        os.close(write_fd)
    msgs = [f.msg for f in fake.conn.got.frames]
    assert code == 0, lines
    assert [m["dtmf"]["digit"] for m in msgs if m["event"] == "dtmf"] == ["1", "2"]
    assert msgs[-1]["event"] == "stop"
    assert any("ignored 'x'" in line for line in lines)
    assert any(line.startswith("call ended by caller (hang-up) after") for line in lines)


async def test_ctrl_c_hangs_up_gracefully(tmp_path: Path) -> None:
    async def script(conn: MediaConn) -> None:
        await conn.got.wait_for(lambda m: m["event"] == "media")
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler  # our handler is in place
        os.kill(os.getpid(), signal.SIGINT)

    async with serve(FakeIvr(script=script)) as fake:
        args = parser().parse_args(
            [
                "call",
                fake.base_url,
                "--quiet",
                "--out",
                str(tmp_path / "a.wav"),
                "--auth-token",
                AUTH_TOKEN,
                "--token",
                "",
            ]
        )
        lines: list[str] = []
        code = await run_call(args, out=lines.append, install_signals=True)
        await fake.conn.closed.wait()
    assert code == 0
    assert fake.conn.got.frames[-1].msg["event"] == "stop"
    assert lines[0].startswith("call ended by caller (hang-up) after ")
    assert not any(line.startswith("[") for line in lines)  # --quiet: summary only


async def test_errors_give_exit_codes_and_next_steps(tmp_path: Path) -> None:
    lines: list[str] = []
    args = parser().parse_args(["call", "--wav", str(tmp_path / "missing.wav"), "--auth-token", "t"])
    assert await run_call(args, out=lines.append) == 2
    assert "cannot use --wav" in lines[0]

    lines.clear()
    args = parser().parse_args(["call", "--account-sid", "AC123", "--auth-token", "t"])
    assert await run_call(args, out=lines.append) == 2
    assert "account_sid" in lines[0]

    async with serve(FakeIvr()) as fake:
        lines.clear()
        args = parser().parse_args(
            ["call", fake.base_url, "--auth-token", "wrong", "--token", "", "--out", str(tmp_path / "x.wav")]
        )
        assert await run_call(args, out=lines.append) == 2
    assert not (tmp_path / "x.wav").exists()  # nothing was heard, nothing written
    assert any("HTTP 403" in line for line in lines)
    assert any(line.startswith("call refused after") for line in lines)
    why = f"  no agent audio written to {tmp_path / 'x.wav'}: the call did not get through"
    assert why in "\n".join(lines)


def _feed_of(fake: FakeIvr, conn: MediaConn) -> tuple[str, object]:
    call_sid = conn.got.frames[1].msg["start"]["callSid"]
    return call_sid, fake.feeds[call_sid]


PENDING_OUTPUT = (
    '{"status": "pending_approval", "message": "A staff member must approve this.", "approval_id": "ap_7"}'
)


async def _conversation_call(tmp_path: Path, *extra: str) -> tuple[int, list[str]]:
    """A call whose server plays audio with a mark and publishes a conversation on its live feed."""
    holder: dict[str, FakeIvr] = {}

    async def script(conn: MediaConn) -> None:
        call_sid, feed = _feed_of(holder["fake"], conn)

        def publish(event_type: str, **fields: object) -> None:
            feed.publish(call_sid, event_type, **fields)  # type: ignore[attr-defined]

        publish("transcript", role="agent", text="Thanks for calling. How can I help?")
        for n in range(3):
            await conn.media(b"\x30" * 800)
            await conn.mark(f"m{n}")
        await conn.echo_of("m2")
        publish("transcript", role="caller", text="i'd like to book a cleaning")
        publish("transcript", role="caller", text="")
        publish(
            "tool.called",
            name="find_patient",
            arguments={"key": "+13125550101"},
            ok=True,
            error_type=None,
            output='{"found": true, "first_name": "Maria", "slots": [1, 2, 3]}',
        )
        publish(
            "tool.called",
            name="appointments",
            arguments={"action": "book", "service": "cleaning", "start": "2026-12-08T09:00"},
            ok=False,
            error_type="pending",
            output=PENDING_OUTPUT,
        )
        publish("approval.requested", approval_id="ap_7", tool="appointments")
        publish(
            "tool.called",
            name="order_status",
            arguments={"order": "A1"},
            ok=False,
            error_type="unavailable",
            output={"error": {"type": "unavailable", "message": "The kitchen system is down."}},
        )
        publish("approval.decided", approval_id="ap_7", tool="appointments", status="approved")
        publish("turn.latency", turn=1, latency_ms=420)  # (the stand-in feed reserves "kind")
        publish("call.ended", outcome="completed")
        await conn.ws.close(code=1000)

    lines: list[str] = []
    fake = FakeIvr(script=script)
    holder["fake"] = fake
    async with serve(fake) as fake:
        args = parser().parse_args(
            [
                *("call", fake.base_url, "--out", str(tmp_path / "agent.wav"), "--duration", "10"),
                *("--auth-token", AUTH_TOKEN, "--token", OPERATOR_TOKEN, *extra),
            ]
        )
        code = await run_call(args, out=lines.append)
    return code, lines


async def test_default_output_is_the_conversation_not_the_protocol(tmp_path: Path) -> None:
    code, lines = await _conversation_call(tmp_path)
    text = "\n".join(lines)
    assert code == 0, text
    assert not any("mark" in line for line in lines), text  # ten a second on a real call: --verbose only
    assert "webhook 200" not in text and "server: call.started" not in text and "reply 1 audio" not in text
    assert "] agent:  Thanks for calling. How can I help?" in text
    assert "] caller: i'd like to book a cleaning" in text
    assert "] caller: (nothing recognised)" in text
    assert "] tool find_patient(key=+13125550101) → ok: found=true, first_name=Maria, slots [3 items]" in text
    pending = next(line for line in lines if "tool appointments" in line)
    assert pending.endswith(
        "tool appointments(action=book, service=cleaning, start=2026-12-08T09:00) → pending: held until an "
        "operator approves it (ap_7)"
    ), pending
    assert "failed" not in pending
    assert "approval pending: appointments waits for an operator — `ivr approvals approve ap_7`" in text
    assert "] tool order_status(order=A1) → failed (unavailable): The kitchen system is down." in text
    assert "] approval ap_7 (appointments): approved" in text
    assert "server: call ended (completed)" in text
    assert text.count("Thanks for calling") == 1  # each feed event once, not also the client's own rendering
    assert f"agent audio → {tmp_path / 'agent.wav'}" in text


async def test_verbose_adds_marks_and_server_details(tmp_path: Path) -> None:
    code, lines = await _conversation_call(tmp_path, "--verbose")
    text = "\n".join(lines)
    assert code == 0, text
    assert "← mark m0 played" in text and "← mark m2 played" in text
    assert "webhook 200 → stream" in text and "server: call.started" in text
    assert "server: reply 1 audio 420 ms after the caller stopped speaking" in text
    assert "marks echoed 3, clears 0" in text
    assert text.count("Thanks for calling") == 1
    assert "→ pending: held until an operator approves it" in text


def test_tool_lines_are_readable_one_liners() -> None:
    denied = {"name": "book", "arguments": "{}", "ok": False, "error_type": "denied", "output": None}
    assert describe_tool_call(denied) == "tool book() → not run: the operator denied it"
    odd = {
        "name": "x",
        "arguments": {"note": "two words", "n": 3, "deep": {"a": 1}},
        "ok": True,
        "output": "done",
    }
    assert describe_tool_call(odd) == 'tool x(note="two words", n=3, deep={…}) → ok: done'
    long = {"name": "x", "arguments": {"text": "a" * 300}, "ok": True, "output": {"text": "b" * 300}}
    assert len(describe_tool_call(long)) < 220
    assert CallView().client_line("[00:01.0] ← mark m1 played") is None
    assert CallView(verbose=True).client_line("[00:01.0] ← mark m1 played") == "[00:01.0] ← mark m1 played"
    assert CallView().client_line("[00:01.0] error: boom") == "[00:01.0] error: boom"


async def test_no_agent_audio_says_why(tmp_path: Path) -> None:
    """A flow closed for the night (or a draining server) answers with <Say><Hangup>: no stream, no audio."""
    lines: list[str] = []
    out = tmp_path / "agent.wav"
    async with serve(FakeIvr(drain=True)) as fake:
        args = parser().parse_args(
            ["call", fake.base_url, "--auth-token", AUTH_TOKEN, "--token", "", "--out", str(out)]
        )
        code = await run_call(args, out=lines.append)
    text = "\n".join(lines)
    assert code == 0, text
    assert not out.exists()
    note = next(line for line in lines if "no agent audio written" in line)
    assert f"no agent audio written to {out}: the server only spoke a message and hung up" in note
    assert "outside its opening hours" in note
    said = next(line for line in lines if "server said" in line)  # what was said: shown live, once
    assert "We are restarting. Please call again in a minute." in said
    assert f"--sample (the dental clinic at {SAMPLE_TO} answers at any hour)" in note
    assert "no live transcript: it needs an operator token" in text


def _caller_audio(conn: MediaConn) -> bytes:
    media = [f.msg for f in conn.got.frames if f.msg["event"] == "media"]
    return b"".join(base64.b64decode(m["media"]["payload"]) for m in media)


def test_sample_lines_are_shipped_package_data() -> None:
    lines = sample_lines()
    assert len(lines) == len(SAMPLE_LINES) >= 5
    for text, audio in zip(SAMPLE_LINES, lines, strict=True):
        assert 0.8 * 8000 < len(audio) < 5 * 8000, text  # one short spoken line each, 8 kHz μ-law
        assert len(set(audio)) > 50, text  # speech, not silence
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"ivr.caller" = ["samples/*.wav"]' in pyproject  # in the wheel, not only in the checkout
    dental = (ROOT / "flows" / "dental-clinic.yaml").read_text(encoding="utf-8")
    assert f'numbers: ["{SAMPLE_TO}"]' in dental and "action: continue" in dental  # answers at any hour


async def test_sample_caller_speaks_when_the_agent_has_finished(tmp_path: Path) -> None:
    """--sample calls the dental clinic and says each line once the agent has spoken and been quiet."""
    first, second = sample_lines()[:2]

    async def script(conn: MediaConn) -> None:
        await conn.media(b"\x30" * 2400)  # the agent's 300 ms greeting
        await conn.mark("greeting")
        await conn.got.wait_for(lambda _m: first in _caller_audio(conn), timeout=10)
        await conn.media(b"\x30" * 2400)  # the agent's question
        await conn.mark("question")
        await conn.got.wait_for(lambda _m: second in _caller_audio(conn), timeout=10)
        await conn.ws.close(code=1000)

    lines: list[str] = []
    async with serve(FakeIvr(script=script)) as fake:
        args = parser().parse_args(
            [
                *("call", fake.base_url, "--sample", "--auth-token", AUTH_TOKEN, "--token", ""),
                *("--out", str(tmp_path / "a.wav")),
            ]
        )
        assert args.duration is None
        assert await run_call(args, out=lines.append) == 0, lines
        sent = _caller_audio(fake.conn)
    assert fake.webhooks[0]["To"] == SAMPLE_TO
    assert "for up to 90 s" in lines[0]
    quiet_bytes = (300 + QUIET_MS) * 8 - 2 * 160  # the agent's 300 ms, then QUIET_MS of silence (± a frame)
    at_first, at_second = sent.index(first), sent.index(second)
    assert at_first >= quiet_bytes and set(sent[:at_first]) == {0xFF}  # silent while the agent spoke
    gap = sent[at_first + len(first) : at_second]
    assert len(gap) >= quiet_bytes and set(gap) == {0xFF}
    with pytest.raises(SystemExit):
        parser().parse_args(["call", "--sample", "--wav", "x.wav"])  # one or the other


async def test_out_naming_a_folder_fails_before_calling(tmp_path: Path) -> None:
    lines: list[str] = []
    args = parser().parse_args(["call", "http://127.0.0.1:9", "--out", str(tmp_path), "--auth-token", "t"])
    assert await run_call(args, out=lines.append) == 2
    assert lines == [
        f"error: --out {tmp_path} is a folder; give the name of the WAV file to write, e.g. "
        "ivr-call-agent.wav"
    ]


async def test_backends_behind_one_public_url_take_the_call_from_the_first_that_answers(
    tmp_path: Path,
) -> None:
    """`--backend` twice, the first a closed port (and the URL argument too): the webhook and the stream
    reach the second backend only through the routing, and the signatures still cover the public URL
    (FakeIvr checks them against it)."""
    import socket

    async def script(conn: MediaConn) -> None:
        await conn.media(b"\x30" * 160)
        await conn.ws.close(code=1000)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"  # bound, never listening: refused
        lines: list[str] = []
        async with serve(FakeIvr(script=script)) as fake:
            args = parser().parse_args(
                [
                    *("call", dead, "--auth-token", AUTH_TOKEN, "--token", "", "--duration", "5"),
                    *("--public-url", fake.base_url, "--backend", dead, "--backend", fake.base_url),
                ]
            )
            code = await run_call(args, out=lines.append)
    assert code == 0, lines
    assert fake.conn.got.frames, "the stream reached the second backend"
    assert any(f.msg["event"] == "start" for f in fake.conn.got.frames)
