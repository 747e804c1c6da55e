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
from ivr.caller.cli import parse_dtmf_schedule, register, run_call
from tests.test_caller_client import AUTH_TOKEN, FakeIvr, MediaConn, serve


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
    assert args.duration == 30.0 and args.dtmf == [] and not args.keyboard and not args.quiet
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
