"""``ivr call``: place a simulated Twilio phone call against a running ivr server from the terminal.

Why: a developer (or a CI smoke test) can hear what the agent says, press keys, barge in with a WAV file
and see the live transcript without a Twilio account, a phone number or a tunnel. Everything protocol-related
is in :mod:`ivr.caller.client`; this module only turns flags into
:class:`~ivr.caller.client.CallOptions`, prints, and writes the audio files.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from ivr.audio.g711 import ulaw_to_pcm16
from ivr.audio.wav import read_wav_as_ulaw8k, write_stereo_wav, write_ulaw_as_wav
from ivr.caller.client import ENDED_PHRASES, CallOptions, CallResult, SimulatedCall
from ivr.caller.twilio_side import BYTES_PER_MS, DTMF_DIGITS

__all__ = ["parse_dtmf_schedule", "register", "run_call", "run_cli"]

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_OUT = "ivr-call-agent.wav"


def parse_dtmf_schedule(text: str) -> list[tuple[float, str]]:
    """Parse ``"2.5:1,4:#"`` into ``[(2.5, "1"), (4.0, "#")]`` (seconds from stream start, key)."""
    schedule: list[tuple[float, str]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        at, sep, digit = item.rpartition(":")
        if not sep:
            raise argparse.ArgumentTypeError(f"{item!r}: expected SECONDS:KEY, e.g. 2.5:1")
        try:
            seconds = float(at)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: {at!r} is not a number of seconds") from None
        if not seconds >= 0:
            raise argparse.ArgumentTypeError(f"{item!r}: the time must be 0 or more seconds")
        if digit not in DTMF_DIGITS:
            raise argparse.ArgumentTypeError(f"{item!r}: key must be one of 0-9, * or #")
        schedule.append((seconds, digit))
    return schedule


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the duration must be more than 0 seconds")
    return value


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``call`` subcommand to the ``ivr`` command line (``subparsers`` from ``add_subparsers``)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "call",
        help="place a simulated Twilio call against an ivr server",
        description=(
            "Act exactly like Twilio: POST the signed voice webhook, open the media WebSocket from the "
            "TwiML, stream caller audio in real time, play the agent's audio, echo marks, and show the live "
            "transcript."
        ),
    )
    parser.add_argument(
        "url", nargs="?", default=DEFAULT_URL, help=f"server base URL (default {DEFAULT_URL})"
    )
    parser.add_argument(
        "--from", metavar="NUMBER", dest="from_number", default="+15550100001", help="caller number"
    )
    parser.add_argument(
        "--to", metavar="NUMBER", dest="to_number", default="+15550100002", help="called number"
    )
    parser.add_argument(
        "--wav", metavar="PATH", type=Path, help="caller audio: any PCM/float WAV, converted to 8 kHz μ-law"
    )
    parser.add_argument(
        "--dtmf",
        type=parse_dtmf_schedule,
        default=[],
        metavar="T:KEY,...",
        help='key presses, e.g. "2.5:1,4:#"',
    )
    parser.add_argument(
        "--keyboard", action="store_true", help="type keys + Enter during the call to press them; q hangs up"
    )
    parser.add_argument(
        "--duration", metavar="SECONDS", type=_positive_seconds, default=30.0, help="hang up after SECONDS"
    )
    parser.add_argument(
        "--out", metavar="PATH", type=Path, default=Path(DEFAULT_OUT), help=f"agent audio WAV ({DEFAULT_OUT})"
    )
    parser.add_argument(
        "--stereo-out", metavar="PATH", type=Path, help="stereo WAV: caller left, agent right"
    )
    parser.add_argument(
        "--public-url", metavar="URL", help="origin Twilio signs (the server's IVR_PUBLIC_URL); default: url"
    )
    parser.add_argument(
        "--connect-to",
        metavar="HOST:PORT",
        help="dial this for the media WebSocket instead of the TwiML host",
    )
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        help="operator token for the live transcript (default $IVR_OPERATOR_TOKEN)",
    )
    parser.add_argument(
        "--account-sid", metavar="SID", help="default $TWILIO_ACCOUNT_SID, else a random AC… sid"
    )
    parser.add_argument(
        "--auth-token", metavar="TOKEN", help="signs the requests (default $TWILIO_AUTH_TOKEN)"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    parser.set_defaults(func=run_cli)
    return parser


def run_cli(args: argparse.Namespace) -> int:
    """Entry point for ``ivr call``; returns the process exit code (0 ok, 1 errors, 2 refused/bad input)."""
    try:
        return asyncio.run(
            run_call(args, install_signals=True, keyboard=sys.stdin if args.keyboard else None)
        )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _start_keyboard(
    call: SimulatedCall, stream: TextIO, loop: asyncio.AbstractEventLoop, out: Callable[[str], None]
) -> None:
    """Read key presses from ``stream`` in a daemon thread (stdin cannot be awaited portably)."""

    def hang_up() -> None:
        loop.create_task(call.hang_up())

    def reader() -> None:
        try:
            for line in stream:
                text = line.strip()
                if text.lower() in {"q", "quit", "hangup"}:
                    loop.call_soon_threadsafe(hang_up)
                    return
                for ch in text:
                    if ch in DTMF_DIGITS:
                        loop.call_soon_threadsafe(call.press, ch)
                    else:
                        loop.call_soon_threadsafe(out, f"ignored {ch!r}: keys are 0-9, * and #; q hangs up")
        except (RuntimeError, ValueError, OSError):
            return  # the call (and its event loop) is over, or stdin went away

    threading.Thread(target=reader, name="ivr-call-keyboard", daemon=True).start()


async def run_call(
    args: argparse.Namespace,
    *,
    out: Callable[[str], None] = print,
    install_signals: bool = False,
    keyboard: TextIO | None = None,
) -> int:
    """The body of ``ivr call``; tests await it directly inside their own event loop."""
    caller_audio = b""
    if args.wav is not None:
        try:
            caller_audio = read_wav_as_ulaw8k(args.wav)
        except (OSError, ValueError) as exc:
            out(f"error: cannot use --wav {args.wav}: {exc}")
            return 2
    options = CallOptions(
        base_url=args.url,
        public_url=args.public_url,
        from_number=args.from_number,
        to_number=args.to_number,
        account_sid=args.account_sid,
        auth_token=args.auth_token,
        caller_audio=caller_audio,
        dtmf=list(args.dtmf),
        duration_s=args.duration,
        connect_to=args.connect_to,
        operator_token=args.token,
    )
    try:
        call = SimulatedCall(options, printer=None if args.quiet else out)
    except ValueError as exc:
        out(f"error: {exc}")
        return 2
    loop = asyncio.get_running_loop()
    if keyboard is not None:
        _start_keyboard(call, keyboard, loop, out)
        if not args.quiet:
            out("keyboard: type keys (0-9 * #) and Enter to press them, q and Enter to hang up")
    signals_installed = False
    if install_signals:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, lambda: loop.create_task(call.hang_up()))
            signals_installed = True
    try:
        result = await call.run()
    finally:
        if signals_installed:
            loop.remove_signal_handler(signal.SIGINT)
    return _finish(call, result, args, out)


def _finish(
    call: SimulatedCall, result: CallResult, args: argparse.Namespace, out: Callable[[str], None]
) -> int:
    written: list[str] = []
    write_errors: list[str] = []
    if result.frames_sent:
        try:
            write_ulaw_as_wav(args.out, bytes(call.played_audio))
            written.append(f"agent audio → {args.out}")
            if args.stereo_out is not None:
                write_stereo_wav(
                    args.stereo_out,
                    ulaw_to_pcm16(bytes(call.sent_audio)),
                    ulaw_to_pcm16(bytes(call.played_audio)),
                )
                written.append(f"stereo (caller left, agent right) → {args.stereo_out}")
        except (OSError, ValueError) as exc:
            write_errors.append(f"could not write the audio file: {exc}")
    caller_s = len(call.sent_audio) / BYTES_PER_MS / 1000
    ended = ENDED_PHRASES.get(result.ended_by, result.ended_by)
    out(f"{ended} after {result.duration_s:.1f} s ({result.call_sid})")
    if result.frames_sent:
        out(
            f"  sent {result.frames_sent} frames ({caller_s:.1f} s of caller audio), "
            f"heard {result.agent_audio_ms / 1000:.1f} s of agent audio"
        )
        out(f"  marks echoed {result.marks_echoed}, clears {result.clears}")
    for line in written:
        out(f"  {line}")
    problems = result.errors + write_errors
    # errors during the call were already printed live, with their timestamps
    for problem in problems if args.quiet else write_errors:
        out(f"  error: {problem}")
    if result.errors and not args.quiet:
        out(f"  {len(result.errors)} error(s), see above")
    if result.ended_by == "rejected":
        return 2
    return 1 if problems else 0
