"""Telephony audio: G.711 μ-law, streaming 8 kHz ⇄ 24 kHz resampling, and WAV file helpers.

The live call path passes μ-law through untouched when the model accepts it; the converters here are for
when the model needs 24 kHz PCM16 (the measured designs behind this are summarised in the module docstrings).
"""

from ivr.audio.convert import InboundConverter, OutboundConverter
from ivr.audio.g711 import (
    ULAW_SILENCE,
    pcm16_bytes_to_ulaw_bytes,
    pcm16_to_ulaw,
    ulaw_bytes_to_pcm16_bytes,
    ulaw_to_pcm16,
)
from ivr.audio.resample import Downsampler24to8, Upsampler8to24, design_lowpass
from ivr.audio.wav import read_wav_as_ulaw8k, tone, write_stereo_wav, write_ulaw_as_wav, write_wav

__all__ = [
    "ULAW_SILENCE",
    "Downsampler24to8",
    "InboundConverter",
    "OutboundConverter",
    "Upsampler8to24",
    "design_lowpass",
    "pcm16_bytes_to_ulaw_bytes",
    "pcm16_to_ulaw",
    "read_wav_as_ulaw8k",
    "tone",
    "ulaw_bytes_to_pcm16_bytes",
    "ulaw_to_pcm16",
    "write_stereo_wav",
    "write_ulaw_as_wav",
    "write_wav",
]
