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
from ivr.caller.call_view import CallView
from ivr.caller.client import ENDED_PHRASES, CallEndedError, CallOptions, CallResult, SimulatedCall
from ivr.caller.sample import LAST_LINE_STAGE, QUIET_MS, SAMPLE_LINES, SAMPLE_TO, sample_lines
from ivr.caller.twilio_side import BYTES_PER_MS, DTMF_DIGITS, SayHangup, TwimlError, parse_twiml
from ivr.help_format import ParagraphHelpFormatter

__all__ = ["parse_dtmf_schedule", "register", "run_call", "run_cli"]

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_OUT = "ivr-call-agent.wav"
DEFAULT_TO = "+15550100002"
DEFAULT_DURATION_S = 30.0
#: Long enough for the sample caller to book and hear that the booking waits for an operator's approval.
SAMPLE_DURATION_S = 90.0
#: How long the sample caller waits for the agent to speak before giving up on its next line.
SAMPLE_WAIT_S = 30.0
DESCRIPTION = """\
Call an ivr server the way Twilio does, from your terminal: the signed voice webhook, the media stream with
real-time audio, key presses, hang-up. It prints the conversation as it happens (what the agent said, what it
heard the caller say, tool calls, approvals) and writes the agent's audio to a WAV file.

Try it against a local server (`ivr serve` with TWILIO_AUTH_TOKEN set, and IVR_OPERATOR_TOKEN for the live
transcript):

  ivr call --sample
      the shipped sample caller books a cleaning at the dental clinic
  ivr call --wav me.wav --to NUMBER
      your own recording, to the flow that answers NUMBER
  ivr call --keyboard
      press keys as you go; q hangs up

Exit code: 0 the call went through, 1 something failed during it, 2 the call was refused or a flag is
wrong."""


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
        description=DESCRIPTION,
        formatter_class=ParagraphHelpFormatter,
    )
    parser.add_argument(
        "url", nargs="?", default=DEFAULT_URL, help=f"the ivr server to call (default {DEFAULT_URL})"
    )
    parser.add_argument(
        "--from",
        metavar="NUMBER",
        dest="from_number",
        default="+15550100001",
        help="the caller's number (default +15550100001)",
    )
    parser.add_argument(
        "--to",
        metavar="NUMBER",
        dest="to_number",
        default=None,
        help=f"the number called, which picks the flow (default {DEFAULT_TO}: the default flow; "
        f"with --sample {SAMPLE_TO}: the dental clinic)",
    )
    speech = parser.add_mutually_exclusive_group()
    speech.add_argument(
        "--wav",
        metavar="PATH",
        type=Path,
        help="what the caller says: any PCM or float WAV file, sent from the start of the call (put a few "
        "seconds of silence first to let the greeting finish)",
    )
    speech.add_argument(
        "--sample",
        action="store_true",
        help="the shipped sample caller books a cleaning at the dental clinic (which answers at any hour), "
        "saying each line when the agent has finished speaking",
    )
    parser.add_argument(
        "--dtmf",
        type=parse_dtmf_schedule,
        default=[],
        metavar="T:KEY,...",
        help='keys to press, as seconds from the start of the call and a key: "2.5:1,4:#" presses 1 '
        "after 2.5 s and # after 4 s",
    )
    parser.add_argument(
        "--keyboard", action="store_true", help="type keys + Enter during the call to press them; q hangs up"
    )
    parser.add_argument(
        "--duration",
        metavar="SECONDS",
        type=_positive_seconds,
        default=None,
        help=f"hang up after this many seconds if the server has not ended the call (default "
        f"{DEFAULT_DURATION_S:g}, with --sample {SAMPLE_DURATION_S:g})",
    )
    parser.add_argument(
        "--out",
        metavar="PATH",
        type=Path,
        default=Path(DEFAULT_OUT),
        help=f"where to write what the agent said, as a WAV file (default {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--stereo-out",
        metavar="PATH",
        type=Path,
        help="also write both sides as one stereo WAV: caller left, agent right",
    )
    parser.add_argument(
        "--public-url",
        metavar="URL",
        help="the address the server believes Twilio calls (its IVR_PUBLIC_URL), which the signatures "
        "cover; default: the url above",
    )
    parser.add_argument(
        "--connect-to",
        metavar="HOST:PORT",
        help="open the media stream to this address instead of the host the server's TwiML names "
        "(when IVR_PUBLIC_URL is a public address but the server runs here)",
    )
    parser.add_argument(
        "--backend",
        metavar="URL",
        action="append",
        default=[],
        dest="backends",
        help="an instance behind --public-url (repeat for each, e.g. http://127.0.0.1:8001): every request "
        "and stream goes to the first that accepts it, as through a load balancer; try stopping the one "
        "carrying the call and watch it resume on another",
    )
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        help="an operator's token, needed to show the live transcript (default $IVR_OPERATOR_TOKEN)",
    )
    parser.add_argument(
        "--account-sid",
        metavar="SID",
        help="the Twilio account the call claims to come from (default $TWILIO_ACCOUNT_SID, else a random "
        "AC… id)",
    )
    parser.add_argument(
        "--auth-token",
        metavar="TOKEN",
        help="the secret that signs the requests, the same as the server's TWILIO_AUTH_TOKEN (default "
        "$TWILIO_AUTH_TOKEN)",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--quiet", action="store_true", help="print only the summary at the end")
    output.add_argument(
        "--verbose",
        action="store_true",
        help="also print the protocol: marks echoed as audio plays, stream set-up, latencies, server events",
    )
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
    if args.out.is_dir():
        out(
            f"error: --out {args.out} is a folder; give the name of the WAV file to write, e.g. {DEFAULT_OUT}"
        )
        return 2
    caller_audio = b""
    if args.wav is not None:
        try:
            caller_audio = read_wav_as_ulaw8k(args.wav)
        except (OSError, ValueError) as exc:
            out(f"error: cannot use --wav {args.wav}: {exc}")
            return 2
    sample = bool(getattr(args, "sample", False))
    to_number = args.to_number or (SAMPLE_TO if sample else DEFAULT_TO)
    duration_s = args.duration or (SAMPLE_DURATION_S if sample else DEFAULT_DURATION_S)
    verbose = bool(getattr(args, "verbose", False))
    view = CallView(verbose=verbose, console_url=args.url.rstrip("/") + "/ops/")
    clock = _Clock()
    stages: set[str] = set()  # the flow stages the call has reached (from the live feed)
    stage_changed = asyncio.Event()

    def print_line(line: str) -> None:
        shown = view.client_line(line)
        if shown is not None:
            out(shown)

    def print_event(event: dict[str, Any]) -> None:
        if event.get("type") == "stage.changed":
            stages.add(str(event.get("stage")))
            stage_changed.set()
        shown = view.event(event)
        if shown is not None:
            out(clock.stamp(shown))

    options = CallOptions(
        base_url=args.url,
        public_url=args.public_url,
        from_number=args.from_number,
        to_number=to_number,
        account_sid=args.account_sid,
        auth_token=args.auth_token,
        caller_audio=caller_audio,
        dtmf=list(args.dtmf),
        duration_s=duration_s,
        connect_to=args.connect_to,
        backends=tuple(args.backends),
        operator_token=args.token,
        on_event=None if args.quiet else print_event,
    )
    try:
        call = SimulatedCall(options, printer=None if args.quiet else print_line)
    except ValueError as exc:
        out(f"error: {exc}")
        return 2
    if not args.quiet:
        out(f"calling {to_number} at {args.url} from {args.from_number} for up to {duration_s:g} s")
        if not call.options.operator_token:
            out(
                "  no live transcript: it needs an operator token of the server (--token, or "
                "IVR_OPERATOR_TOKEN set the same as the server's)"
            )
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
    clock.start(loop)
    speaker = None
    if sample:
        said = (lambda text: out(clock.stamp(text))) if verbose else None
        speaker = asyncio.create_task(_speak_sample(call, stages, stage_changed, said))
    try:
        result = await call.run()
    finally:
        if signals_installed:
            loop.remove_signal_handler(signal.SIGINT)
        if speaker is not None:
            speaker.cancel()
            await asyncio.gather(speaker, return_exceptions=True)
    return _finish(call, result, args, out)


async def _speak_sample(
    call: SimulatedCall, stages: set[str], stage_changed: asyncio.Event, out: Callable[[str], None] | None
) -> None:
    """Say the sample caller's lines one by one, each once the agent has spoken and fallen silent; the last
    one only once the call reached the flow's wrap-up (an operator approved the booking)."""
    lines = list(zip(SAMPLE_LINES, sample_lines(), strict=True))
    for index, (text, audio) in enumerate(lines):
        try:
            if index == len(lines) - 1:
                while LAST_LINE_STAGE not in stages:
                    stage_changed.clear()
                    await stage_changed.wait()
            await call.wait_agent_quiet(QUIET_MS, timeout=SAMPLE_WAIT_S)
        except (TimeoutError, CallEndedError):
            return  # the agent went quiet for good, or the call is over: the summary says how it ended
        if out is not None:
            out(f"the sample caller says: {text!r}")
        call.say(audio)


class _Clock:
    """Stamps feed events like the simulated call stamps its own lines: ``[mm:ss.s]`` since the call began."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._t0 = loop, loop.time()

    def stamp(self, text: str) -> str:
        elapsed = self._loop.time() - self._t0 if self._loop is not None else 0.0
        minutes, seconds = divmod(elapsed, 60)
        return f"[{int(minutes):02d}:{seconds:04.1f}] {text}"


def _no_audio_reason(result: CallResult, *, quote: bool) -> str:
    """Why no agent audio could be recorded: the call never reached a media stream."""
    if result.ended_by == "rejected":
        return "the call did not get through (see the error above)"
    try:
        instruction = parse_twiml(result.twiml) if result.twiml else None
    except TwimlError:
        instruction = None
    if isinstance(instruction, SayHangup):
        said = f" ({instruction.text!r})" if quote and instruction.text else ""
        return (
            f"the server only spoke a message{said} and hung up, without a media stream: what a flow does "
            "outside its opening hours (after_hours: message_and_hangup), or a server that is shutting down. "
            f"Call a flow that answers now: --to NUMBER, or --sample (the dental clinic at {SAMPLE_TO} "
            "answers at any hour)"
        )
    if result.ended_by == "caller":
        return "the call was hung up before the media stream started"
    return "the media stream never started"


def _finish(
    call: SimulatedCall, result: CallResult, args: argparse.Namespace, out: Callable[[str], None]
) -> int:
    verbose = bool(getattr(args, "verbose", False))
    written: list[str] = []
    notes: list[str] = []
    write_errors: list[str] = []
    if result.frames_sent:
        try:
            write_ulaw_as_wav(args.out, bytes(call.played_audio))
            written.append(f"agent audio → {args.out}")
            if not result.agent_audio_ms:
                silence_s = len(call.played_audio) / BYTES_PER_MS / 1000
                notes.append(f"the agent said nothing: {args.out} holds {silence_s:.1f} s of silence")
            if args.stereo_out is not None:
                write_stereo_wav(
                    args.stereo_out,
                    ulaw_to_pcm16(bytes(call.sent_audio)),
                    ulaw_to_pcm16(bytes(call.played_audio)),
                )
                written.append(f"stereo (caller left, agent right) → {args.stereo_out}")
        except (OSError, ValueError) as exc:
            write_errors.append(f"could not write the audio file: {exc}")
    else:
        notes.append(f"no agent audio written to {args.out}: {_no_audio_reason(result, quote=args.quiet)}")
    caller_s = len(call.sent_audio) / BYTES_PER_MS / 1000
    ended = ENDED_PHRASES.get(result.ended_by, result.ended_by)
    out(f"{ended} after {result.duration_s:.1f} s ({result.call_sid})")
    if result.frames_sent:
        out(
            f"  sent {caller_s:.1f} s of caller audio ({result.frames_sent} frames), "
            f"heard {result.agent_audio_ms / 1000:.1f} s of agent audio"
        )
        if verbose:
            out(f"  marks echoed {result.marks_echoed}, clears {result.clears}")
    if result.legs > 1:  # the call moved on to new media streams (<Connect action>); the silence heard
        gaps = result.gaps_ms(heard=True)
        silence = f", silence between them {', '.join(f'{g:.0f}' for g in gaps)} ms" if gaps else ""
        out(f"  media streams: {result.legs}{silence}")
    for line in written + notes:
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
