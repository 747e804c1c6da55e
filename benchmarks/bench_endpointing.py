"""End of turn, fixed vs adaptive: how long after the caller's last word is the turn over and its text known,
and how often is a caller cut off at a pause inside a sentence?

Voices nobody on the project chose (espeak-ng en-us, flite slt/kal/awb/rms; tests/support/voices.py) speak
through the phone path (8 kHz μ-law). Two sets:

- whole answers (``ANSWERS``): last word → turn over and text known. Fixed rule: the VAD's 600 ms stop,
  then the recogniser runs on the turn. Adaptive (:mod:`ivr.speech.endpointing`): at a pause the turn so far
  is recognised; the result arrives ``decode_ms`` of audio later (measured, real time), may end the turn, and
  is reused when the turn ends with no new speech.
- sentences with a pause inside (``PAUSED``: two halves joined with 400, 550 and 700 ms of silence): a
  cut-off is a turn that ends before the second half starts. Split into pauses at an unfinished point ("I'd
  like to book … a cleaning") and pauses after a phrase that could be a whole answer ("yes … and I also").

Run: ``.venv/bin/python benchmarks/bench_endpointing.py`` (``--quick``: one voice, one gap;
``--asr pocketsphinx`` for the light recogniser; ``--decode-ms 250`` counts a fixed recognition time, to take
the machine's load out of the figures).

``--demo N``: whole ``ivr demo`` calls (the app on real sockets, the scripted caller), alternating the code
before (fixed rule, replies with hibari's ~300 ms leading silence) and after (adaptive rule, trimmed) N times
each in this process, and the caller's last word → agent's first audio read
off each call's recording (the demo's own ``reply_latency_ms``).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ivr.audio.g711 import ULAW_SILENCE, ulaw_to_pcm16
from ivr.speech.endpointing import EndpointingPolicy, judge
from ivr.speech.vad import FRAME_BYTES, SpeechPaused, SpeechStopped, TurnDetector
from tests.support.voices import VOICES, VoiceCache, missing_voices

RATE = 8000

ANSWERS = [
    "Yes.",
    "Yes, that's right.",
    "No thanks, that's all.",
    "On Tuesday please.",
    "Seven thirty.",
    "The first one please.",
    "A table for four on Friday at seven thirty.",
    "Tuesday would work for me.",
    "My name is Maria Lopez.",
    "I'd like to book a cleaning please.",
    "Can I speak to a person?",
    "Sure, go ahead.",
    "What time do you open on Saturday?",
    "Actually, make it three.",
    "No, Wednesday.",
]

#: (first half, second half, unfinished): unfinished = a person hearing the first half expects more.
PAUSED = [
    ("I'd like to book", "a cleaning on Tuesday.", True),
    ("My name is", "Maria Lopez.", True),
    ("Can I get a table for", "four people on Friday?", True),
    ("Um", "Tuesday would work.", True),
    ("I was wondering if", "you have anything on Thursday.", True),
    ("Could you move my appointment to", "next Monday?", True),
    ("Uh, let me think", "Wednesday afternoon.", True),
    ("The earliest one", "is fine.", False),
    ("I need to cancel my appointment", "for tomorrow morning.", False),
    ("Yes", "and I also need a check-up.", False),
]
GAPS_MS = (400, 550, 700)


@dataclass
class Outcome:
    stop_ms: int | None  # audio time the turn ended (first SpeechStopped)
    stops_before_ms: int = 0  # turns ended before this audio time (cut-offs)
    text_ready_ms: float | None = None  # audio time the turn's text is known
    early_runs: int = 0
    reused: bool = False


def last_word_ms(mulaw: bytes) -> int:
    """End of the last 10 ms window within 40 dB of the loudest one."""
    pcm = ulaw_to_pcm16(mulaw).astype(np.float64)
    win = RATE // 100
    n = len(pcm) // win
    energy = (pcm[: n * win].reshape(n, win) ** 2).mean(axis=1)
    loud = np.nonzero(energy > energy.max() * 1e-4)[0]
    return (int(loud[-1]) + 1) * 10


def trimmed(mulaw: bytes) -> bytes:
    """The synthesizer's own leading/trailing silence removed (10 ms windows within 40 dB of the loudest)."""
    pcm = ulaw_to_pcm16(mulaw).astype(np.float64)
    win = RATE // 100
    n = len(pcm) // win
    energy = (pcm[: n * win].reshape(n, win) ** 2).mean(axis=1)
    loud = np.nonzero(energy > energy.max() * 1e-4)[0]
    return mulaw[int(loud[0]) * win : (int(loud[-1]) + 1) * win]


class Timed:
    """A recogniser whose decode time is measured, or fixed (``--decode-ms``) to take machine load out."""

    def __init__(self, recognizer: Any, decode_ms: float | None) -> None:
        self.recognizer = recognizer
        self.decode_ms = decode_ms
        self.measured: list[float] = []

    def recognize(self, pcm16: bytes) -> Any:
        result = self.recognizer.recognize(pcm16)
        self.measured.append(result.decode_ms)
        if self.decode_ms is not None:
            result = dataclasses.replace(result, decode_ms=self.decode_ms)
        return result


def run_fixed(recognizer: Any, mulaw: bytes, cut_at: int | None) -> Outcome:
    detector = TurnDetector()
    out = Outcome(stop_ms=None)
    for i in range(0, len(mulaw), FRAME_BYTES // 2):
        for event in detector.feed_mulaw(mulaw[i : i + FRAME_BYTES // 2]):
            if isinstance(event, SpeechStopped):
                now = detector.now_ms
                if cut_at is not None and now < cut_at:
                    out.stops_before_ms += 1
                if out.stop_ms is None and (cut_at is None or now >= cut_at):
                    out.stop_ms = now
                    decode = recognizer.recognize(event.audio).decode_ms
                    out.text_ready_ms = now + decode
    return out


def run_adaptive(recognizer: Any, mulaw: bytes, cut_at: int | None, policy: EndpointingPolicy) -> Outcome:
    """Feed 20 ms frames; an early recognition's result is handed back ``decode_ms`` of audio later."""
    detector = TurnDetector(endpointing=policy)
    out = Outcome(stop_ms=None)
    pending: tuple[float, int, str, bytes] | None = None  # (due audio ms, revision, text, audio)
    early: tuple[bytes, float] | None = None  # audio recognised early, audio ms its text was known

    def handle(events: list[Any], now: int) -> None:
        nonlocal pending, early
        for event in events:
            if isinstance(event, SpeechPaused):
                result = recognizer.recognize(event.audio)
                out.early_runs += 1
                pending = (now + result.decode_ms, event.revision, result.text, event.audio)
            elif isinstance(event, SpeechStopped):
                if cut_at is not None and now < cut_at:
                    out.stops_before_ms += 1
                if out.stop_ms is None and (cut_at is None or now >= cut_at):
                    out.stop_ms = now
                    if early is not None and early[0] == event.audio:
                        out.reused = True
                        out.text_ready_ms = max(now, early[1])
                    elif pending is not None and pending[3] == event.audio:
                        out.reused = True
                        out.text_ready_ms = pending[0]
                    else:
                        out.text_ready_ms = now + recognizer.recognize(event.audio).decode_ms
                pending = None

    for i in range(0, len(mulaw), FRAME_BYTES // 2):
        handle(detector.feed_mulaw(mulaw[i : i + FRAME_BYTES // 2]), detector.now_ms)
        if pending is not None and detector.now_ms >= pending[0]:
            due, revision, text, audio = pending
            pending = None
            early = (audio, due)
            handle(detector.judged(revision, text), detector.now_ms)
    return out


def demo_ab(rounds: int) -> int:
    """Alternate fixed/adaptive ``ivr demo`` calls; print each call's latencies and the medians."""
    import asyncio
    import io
    import tempfile

    from ivr.demo.runner import DemoOptions, run_demo
    from ivr.engines import local

    original_init = local.LocalEngine.__init__
    variant = {"fixed": False}

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        if variant["fixed"]:
            self.vad = TurnDetector()

    local.LocalEngine.__init__ = init  # type: ignore[method-assign]
    trim = local.trim_leading_silence

    async def answer(_prompt: str) -> str:
        return "y"

    latencies: dict[str, list[float]] = {"fixed": [], "adaptive": []}
    for n in range(rounds):
        for name in ("fixed", "adaptive"):
            variant["fixed"] = name == "fixed"
            # "fixed" is the code before: the 600 ms rule and replies starting with the voice's own silence.
            local.trim_leading_silence = (lambda audio, keep_ms=60: audio) if variant["fixed"] else trim
            with tempfile.TemporaryDirectory(prefix="ivr-bench-") as tmp:
                result = asyncio.run(
                    run_demo(DemoOptions(approve=True, out_dir=Path(tmp)), io.StringIO(), answer)
                )
            values = [float(v) for v in result.summary.get("reply_latency_ms", [])]
            latencies[name] += values
            goal = result.summary.get("goal_reached")
            print(f"round {n + 1} {name:8s}: goal {goal}, last word -> first audio {values}", flush=True)
    for name, values in latencies.items():
        if values:
            print(f"{name:8s}: median {statistics.median(values):.0f} ms over {len(values)} turns")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one voice, one gap")
    parser.add_argument("--asr", default="whisper", choices=("whisper", "pocketsphinx"))
    parser.add_argument(
        "--decode-ms", type=float, default=None, help="count this recognition time, not the measured one"
    )
    parser.add_argument("--demo", type=int, default=0, help="N rounds of fixed vs adaptive demo calls")
    args = parser.parse_args()
    if args.demo:
        return demo_ab(args.demo)
    voices = [v for v in VOICES if v not in missing_voices()]
    if not voices:
        print("no espeak-ng/flite voice installed (apt-get install espeak-ng flite)")
        return 2
    gaps = GAPS_MS
    if args.quick:
        voices, gaps = voices[:1], (550,)
    if args.asr == "whisper":
        from ivr.speech.whisper import WhisperRecognizer

        recognizer: Any = WhisperRecognizer()
    else:
        from ivr.speech.asr import Recognizer

        recognizer = Recognizer()
    started = time.perf_counter()
    recognizer.load()
    recognizer = Timed(recognizer, args.decode_ms)
    names = ", ".join(v.name for v in voices)
    print(f"{args.asr} loaded in {time.perf_counter() - started:.1f} s; voices: {names}")
    policy = EndpointingPolicy()
    cache = VoiceCache()
    silence = bytes([ULAW_SILENCE])
    tail = silence * (2 * RATE)

    fixed_lat: list[float] = []
    adapt_lat: list[float] = []
    judged_as: dict[str, int] = {}
    for voice in voices:
        for line in ANSWERS:
            mulaw = silence * (RATE // 2) + trimmed(cache.mulaw(voice, line, pad_s=0.0)) + tail
            end = last_word_ms(mulaw)
            fixed = run_fixed(recognizer, mulaw, None)
            adaptive = run_adaptive(recognizer, mulaw, None, policy)
            assert fixed.text_ready_ms is not None and adaptive.text_ready_ms is not None
            fixed_lat.append(fixed.text_ready_ms - end)
            adapt_lat.append(adaptive.text_ready_ms - end)
            kind = judge(recognizer.recognize(ulaw_to_pcm16(mulaw).astype("<i2").tobytes()).text).value
            judged_as[kind] = judged_as.get(kind, 0) + 1

    def figures(values: list[float]) -> str:
        ordered = sorted(values)
        p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
        return f"median {statistics.median(values):.0f} ms, p90 {p90:.0f} ms, max {max(values):.0f} ms"

    print(f"\nwhole answers ({len(fixed_lat)} = {len(ANSWERS)} lines x {len(voices)} voices)")
    print("  last word -> turn over and its text known (VAD hangover + silence + recognition not hidden)")
    print(f"  fixed 600 ms rule: {figures(fixed_lat)}")
    print(f"  adaptive:          {figures(adapt_lat)}")
    print(f"  early text judged: {judged_as}")
    measured = sorted(recognizer.measured)
    print(
        f"  recognition measured: median {statistics.median(measured):.0f} ms over {len(measured)} runs"
        + (f" (counted as {args.decode_ms:.0f} ms)" if args.decode_ms is not None else "")
    )

    counts = {True: [0, 0, 0], False: [0, 0, 0]}  # runs, fixed cut-offs, adaptive cut-offs
    cut_lines: list[str] = []
    for voice in voices:
        for first, second, unfinished in PAUSED:
            a = trimmed(cache.mulaw(voice, first, pad_s=0.0))
            b = trimmed(cache.mulaw(voice, second, pad_s=0.0))
            lead = silence * (RATE // 2)
            for gap in gaps:
                mulaw = lead + a + silence * (gap * RATE // 1000) + b + tail
                second_starts = (len(lead) + len(a) + gap * RATE // 1000) // 8
                fixed = run_fixed(recognizer, mulaw, second_starts)
                adaptive = run_adaptive(recognizer, mulaw, second_starts, policy)
                row = counts[unfinished]
                row[0] += 1
                row[1] += fixed.stops_before_ms > 0
                row[2] += adaptive.stops_before_ms > 0
                if adaptive.stops_before_ms:
                    cut_lines.append(f"    {voice.name}: {first!r} +{gap} ms+ {second!r}")
    print(f"\nsentences with a pause inside (gaps {', '.join(map(str, gaps))} ms)")
    labels = ((True, "pause at an unfinished point"), (False, "pause after a possible answer"))
    for unfinished, label in labels:
        runs, fixed_cuts, adapt_cuts = counts[unfinished]
        print(f"  {label}: {runs} runs; cut off: fixed {fixed_cuts}, adaptive {adapt_cuts}")
    if cut_lines:
        print("  adaptive cut-offs:")
        print("\n".join(cut_lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
