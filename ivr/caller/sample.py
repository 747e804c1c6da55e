"""The sample caller shipped with ivr, so ``ivr call --sample`` works on a fresh install, at any hour.

``samples/sample-N.wav`` (8 kHz mono PCM16, one short line each) book a cleaning at the shipped dental
clinic: ask for a cleaning, name a day, pick a time, give a name, confirm, and (once an operator approved the
booking) say that is all. ``ivr call --sample`` says each
line once the agent has finished speaking (it waits for :data:`QUIET_MS` of silence after the agent spoke),
so the script keeps pace with the agent on a slow machine as on a fast one. It calls the dental clinic's
number because that flow answers at any hour (``after_hours: continue``); a flow closed for the night only
says so and hangs up.

The files were made with :func:`make_sample`, the project's own offline voice slowed a little so the caller is
not the agent's voice at the agent's pitch: ``python -c "from ivr.caller.sample import make_sample;
make_sample('ivr/caller/samples')"``.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

import numpy as np

__all__ = ["LAST_LINE_STAGE", "QUIET_MS", "SAMPLE_LINES", "SAMPLE_TO", "make_sample", "sample_lines"]

#: The shipped dental-clinic flow's number (flows/dental-clinic.yaml): it answers at any hour.
SAMPLE_TO = "+15551230001"
#: What the sample caller says, in order, one line per turn.
SAMPLE_LINES: tuple[str, ...] = (
    "Hi, I'd like to book a cleaning, please.",
    "Tuesday please.",
    "The first one please.",
    "Alex Morgan.",
    "Yes please.",
    "No that's all thank you.",
)  # no commas after the first line: the voice pauses at a comma, which can end the caller's turn early
#: The last line waits until the call has reached this stage of the flow (the booking was approved and the
#: agent asks whether there is anything else); while the booking waits for an operator, the caller holds.
LAST_LINE_STAGE = "wrap_up"
#: The caller speaks after the agent has been silent this long (the agent pauses briefly between sentences).
QUIET_MS = 1200
_RATE = 8000
#: The voice is slowed by this factor, which lowers its pitch (the caller is not the agent's voice as is).
_SLOWER = 1.12
_LEAD_S = 0.2
_TAIL_S = 0.3


def _name(index: int) -> str:
    return f"sample-{index + 1}.wav"


def sample_lines() -> list[bytes]:
    """Each line of the sample caller as 8 kHz μ-law, read from the package data."""
    from ivr.audio.wav import read_wav_as_ulaw8k

    folder = files("ivr.caller").joinpath("samples")
    lines = []
    for index in range(len(SAMPLE_LINES)):
        with as_file(folder.joinpath(_name(index))) as path:
            lines.append(read_wav_as_ulaw8k(path))
    return lines


def make_sample(folder: str | Path) -> float:
    """Write the sample's WAV files into ``folder`` with the offline voice; returns their total seconds."""
    import soxr

    from ivr.audio.wav import write_wav
    from ivr.speech.tts import SAMPLE_RATE, Synthesizer

    voice = Synthesizer()
    total = 0.0
    for index, text in enumerate(SAMPLE_LINES):
        speech = voice.synthesize(text).astype(np.float64) / 32768.0
        slowed = soxr.resample(speech, SAMPLE_RATE, SAMPLE_RATE * _SLOWER)
        phone = soxr.resample(slowed, SAMPLE_RATE, _RATE)
        pcm = np.clip(np.rint(phone * 32767.0 * 0.9), -32768, 32767).astype(np.int16)
        lead, tail = np.zeros(int(_LEAD_S * _RATE), np.int16), np.zeros(int(_TAIL_S * _RATE), np.int16)
        audio = np.concatenate([lead, pcm, tail])
        write_wav(Path(folder) / _name(index), audio, _RATE)
        total += len(audio) / _RATE
    return total
