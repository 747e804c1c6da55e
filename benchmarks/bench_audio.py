"""Audio path benchmark: converter cost per 20 ms frame, the whole per-message path, and quality figures.

Run: ``python benchmarks/bench_audio.py`` (add ``--quick`` for a shorter run). Timing method: GC off
while timing, the process pinned to one core when the OS allows it, consecutive frames fed to the same
stateful objects. Each figure is printed as the median and p99 of individually timed calls (timer overhead
subtracted) and, as a cross-check, the mean per call inside tight batches.

The quality section measures each direction on its own with PCM in and out, with 20 ms frames, skipping
the first 0.25 s; then once more with μ-law in the loop, where the codec (~37 dB) sets the ceiling.
"""

from __future__ import annotations

import argparse
import base64
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.audio_metrics when run as a script

from ivr.audio import (
    Downsampler24to8,
    InboundConverter,
    OutboundConverter,
    Upsampler8to24,
    pcm16_to_ulaw,
    tone,
    ulaw_to_pcm16,
)
from tests.audio_metrics import band_ratio_db, peak_position, power_ratio_db, sinad_db

STREAM_SID = "MZ" + "0123456789abcdef" * 2
FRAMES = 100  # distinct consecutive 20 ms frames, cycled


def _speechlike(seconds: float, rate: int, seed: int = 1) -> np.ndarray:
    """Tones plus noise at a speech-like level (about -20 dBFS RMS) with energy above 4 kHz at 24 kHz."""
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    t = np.arange(n) / rate
    x = 3000 * np.sin(2 * np.pi * 310 * t) + 1500 * np.sin(2 * np.pi * 1270 * t) + rng.normal(0, 1200, n)
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def _timer_overhead() -> int:
    samples = []
    for _ in range(2000):
        t0 = time.perf_counter_ns()
        t1 = time.perf_counter_ns()
        samples.append(t1 - t0)
    return int(statistics.median(samples))


def measure(
    fn: Callable[[Any], object], inputs: Sequence[Any], calls: int, overhead_ns: int
) -> dict[str, float]:
    """Median and p99 of individually timed calls, and the mean per call over batches, in µs."""
    for i in range(300):  # warm-up
        fn(inputs[i % len(inputs)])
    per_call = []
    count = len(inputs)
    gc.disable()
    try:
        for i in range(calls):
            arg = inputs[i % count]
            t0 = time.perf_counter_ns()
            fn(arg)
            per_call.append(time.perf_counter_ns() - t0 - overhead_ns)
        batch_means = []
        for _ in range(max(5, calls // 400)):
            t0 = time.perf_counter_ns()
            for arg in inputs:
                fn(arg)
            batch_means.append((time.perf_counter_ns() - t0) / count)
    finally:
        gc.enable()
    per_call.sort()
    return {
        "median": per_call[len(per_call) // 2] / 1000,
        "p99": per_call[int(len(per_call) * 0.99)] / 1000,
        "batch": statistics.median(batch_means) / 1000,
    }


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data) - size + 1, size)][:FRAMES]


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    line = "  ".join(
        f"{h:<{w}}" if i == 0 else f"{h:>{w}}" for i, (h, w) in enumerate(zip(header, widths, strict=True))
    )
    print(line)
    print("-" * len(line))
    for row in rows:
        print(
            "  ".join(
                f"{c:<{w}}" if i == 0 else f"{c:>{w}}"
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def _fmt(result: dict[str, float]) -> list[str]:
    return [f"{result['median']:.2f}", f"{result['p99']:.2f}", f"{result['batch']:.2f}"]


def bench_conversion(calls: int, overhead: int) -> None:
    mulaw_frames = _chunks(pcm16_to_ulaw(_speechlike(2.2, 8000)), 160)
    pcm_frames = _chunks(_speechlike(2.2, 24000, seed=2).astype("<i2").tobytes(), 960)
    up, down = Upsampler8to24(), Downsampler24to8()
    samples_8k = [ulaw_to_pcm16(f) for f in mulaw_frames]
    samples_24k = [np.frombuffer(f, "<i2").astype(np.int16) for f in pcm_frames]
    cases: list[tuple[str, Callable[[Any], object], Sequence[Any]]] = [
        (
            "InboundConverter.convert  (160 B μ-law → 960 B PCM16 24k)",
            InboundConverter().convert,
            mulaw_frames,
        ),
        (
            "OutboundConverter.convert (960 B PCM16 24k → 160 B μ-law)",
            OutboundConverter().convert,
            pcm_frames,
        ),
        ("  part: ulaw_to_pcm16 (160 samples)", ulaw_to_pcm16, mulaw_frames),
        ("  part: pcm16_to_ulaw (160 samples)", pcm16_to_ulaw, samples_8k),
        ("  part: Upsampler8to24.process (int16)", up.process, samples_8k),
        ("  part: Downsampler24to8.process (int16)", down.process, samples_24k),
    ]
    rows = []
    for name, fn, inputs in cases:
        rows.append([name, *_fmt(measure(fn, inputs, calls, overhead))])
    _table(
        "Conversion per 20 ms frame (µs; gate ≤ 15 per direction)",
        ["step", "median", "p99", "batch mean"],
        rows,
    )


def bench_messages(calls: int, overhead: int) -> None:
    mulaw_frames = _chunks(pcm16_to_ulaw(_speechlike(2.2, 8000)), 160)
    pcm_frames = _chunks(_speechlike(2.2, 24000, seed=2).astype("<i2").tobytes(), 960)
    twilio_in = [
        orjson.dumps(
            {
                "event": "media",
                "sequenceNumber": str(i + 3),
                "media": {
                    "track": "inbound",
                    "chunk": str(i + 1),
                    "timestamp": str(20 * i),
                    "payload": base64.b64encode(f).decode(),
                },
                "streamSid": STREAM_SID,
            }
        )
        for i, f in enumerate(mulaw_frames)
    ]

    def delta(payload: bytes, i: int) -> bytes:
        return orjson.dumps(
            {
                "type": "response.output_audio.delta",
                "event_id": f"event_{i:022d}",
                "response_id": "resp_0123456789abcdefghijk",
                "item_id": "item_0123456789abcdefghijk",
                "output_index": 0,
                "content_index": 0,
                "delta": base64.b64encode(payload).decode(),
            }
        )

    openai_pcm = [delta(f, i) for i, f in enumerate(pcm_frames)]
    openai_pcmu = [delta(f, i) for i, f in enumerate(mulaw_frames)]
    inbound, outbound = InboundConverter(), OutboundConverter()

    def in_passthrough(message: bytes) -> bytes:
        event = orjson.loads(message)
        return orjson.dumps({"type": "input_audio_buffer.append", "audio": event["media"]["payload"]})

    def in_transcode(message: bytes) -> bytes:
        event = orjson.loads(message)
        pcm = inbound.convert(base64.b64decode(event["media"]["payload"]))
        return orjson.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})

    def out_passthrough(message: bytes) -> bytes:
        event = orjson.loads(message)
        return orjson.dumps({"event": "media", "streamSid": STREAM_SID, "media": {"payload": event["delta"]}})

    def out_transcode(message: bytes) -> bytes:
        event = orjson.loads(message)
        mulaw = outbound.convert(base64.b64decode(event["delta"]))
        payload = base64.b64encode(mulaw).decode()
        return orjson.dumps({"event": "media", "streamSid": STREAM_SID, "media": {"payload": payload}})

    cases = [
        (f"in  passthrough (Twilio media {len(twilio_in[0])} B → append)", in_passthrough, twilio_in),
        ("in  transcode   (loads, b64 decode, convert, b64 encode, dumps)", in_transcode, twilio_in),
        (
            f"out passthrough (pcmu delta {len(openai_pcmu[0])} B → Twilio media)",
            out_passthrough,
            openai_pcmu,
        ),
        (f"out transcode   (PCM16 delta {len(openai_pcm[0])} B → Twilio media)", out_transcode, openai_pcm),
    ]
    rows = [[name, *_fmt(measure(fn, inputs, calls, overhead))] for name, fn, inputs in cases]
    _table(
        "Whole per-message path with orjson (µs per 20 ms message; goals: passthrough ≤ 3, transcode ≤ 25)",
        ["path", "median", "p99", "batch mean"],
        rows,
    )


def _feed(resampler: Upsampler8to24 | Downsampler24to8, x: np.ndarray, frame: int) -> np.ndarray:
    return np.concatenate([resampler.process(x[i : i + frame]) for i in range(0, len(x), frame)])


def quality() -> None:
    rows = []
    for freq in (1004, 3004, 3404):
        y = _feed(Upsampler8to24(), tone(freq, 2000, 8000), 160)
        images = band_ratio_db(y, 24000, (4000, 12001), (0, 4000))
        gate = "≥ 50 / ≤ −45" if freq != 3404 else "(info)"
        rows.append(
            [
                f"up {freq} Hz: SINAD / images above 4 kHz",
                f"{sinad_db(y, freq, 24000):.1f} / {images:.1f}",
                gate,
            ]
        )
    for freq in (1004, 3004):
        y = _feed(Downsampler24to8(), tone(freq, 2000, 24000), 480)
        rows.append([f"down {freq} Hz: SINAD", f"{sinad_db(y, freq, 8000):.1f}", "≥ 50"])
    for freq in (5000, 6000, 10000):
        x = tone(freq, 2000, 24000)
        y = _feed(Downsampler24to8(), x, 480)
        alias = power_ratio_db(y, 8000, x, 24000)
        shown = f"{alias:.1f}" if alias > -200 else "< −96 (rounds to 0)"
        rows.append([f"down {freq} Hz tone: alias in 0-4 kHz", shown, "≤ −45" if freq < 10000 else "(info)"])

    impulse = np.zeros(400, dtype=np.int16)
    impulse[200] = 10000
    up_ms = (peak_position(_feed(Upsampler8to24(), impulse, 160)) - 600) / 24
    delays = []
    for position in (300, 301, 302):
        x = np.zeros(600, dtype=np.int16)
        x[position] = 20000
        delays.append(3 * peak_position(_feed(Downsampler24to8(), x, 480)) - position)
    down_ms = float(np.mean(delays)) / 24
    rows.append(["added latency up / down (ms, impulse peak)", f"{up_ms:.2f} / {down_ms:.2f}", "≤ 2"])

    rng = np.random.default_rng(5)
    noise8 = np.clip(rng.normal(0, 8000, 16000), -32768, 32767).astype(np.int16)
    noise24 = np.clip(rng.normal(0, 8000, 48000), -32768, 32767).astype(np.int16)
    up_diff = np.abs(
        _feed(Upsampler8to24(), noise8, 160).astype(int) - Upsampler8to24().process(noise8)
    ).max()
    down_diff = np.abs(
        _feed(Downsampler24to8(), noise24, 7).astype(int) - Downsampler24to8().process(noise24)
    ).max()
    rows.append(["chunked vs one call, max diff (LSB) up / down", f"{up_diff} / {down_diff}", "≤ 1"])

    mulaw = pcm16_to_ulaw(tone(1004, 2000, 8000))
    inbound = InboundConverter()
    up = np.frombuffer(
        b"".join(inbound.convert(mulaw[i : i + 160]) for i in range(0, len(mulaw), 160)), "<i2"
    )
    outbound = OutboundConverter()
    pcm = tone(1004, 2000, 24000).astype("<i2").tobytes()
    down = ulaw_to_pcm16(b"".join(outbound.convert(pcm[i : i + 960]) for i in range(0, len(pcm), 960)))
    rows.append(
        [
            "with μ-law in the loop, 1004 Hz: in / out SINAD",
            f"{sinad_db(up, 1004, 24000):.1f} / {sinad_db(down, 1004, 8000):.1f}",
            "(codec ceiling ~37)",
        ]
    )
    _table("Quality (tones at −6 dBFS, 20 ms frames, dB unless stated)", ["measure", "value", "gate"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed calls (noisier)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    args = parser.parse_args()
    pinned = "no"
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        cpu = max(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        pinned = f"CPU {cpu}"
    calls = 2000 if args.quick else 20000
    overhead = _timer_overhead()
    print(
        f"Python {sys.version.split()[0]}, numpy {np.__version__}, orjson {orjson.__version__}; "
        f"{os.cpu_count()} CPUs, pinned: {pinned}; {calls} timed calls per row; "
        f"timer overhead {overhead} ns subtracted"
    )
    bench_conversion(calls, overhead)
    bench_messages(calls, overhead)
    quality()


if __name__ == "__main__":
    main()
