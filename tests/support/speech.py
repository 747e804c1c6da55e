"""Shared by the Whisper and recogniser tests: the caller voices as a fixture, and links to the model wheels.

Used by tests/test_speech_whisper.py and tests/test_speech_recognizer.py. A test module takes the fixture by
assigning it (``voices = speech.voices``), so it stays module-scoped: one voice cache per module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.speech.whisper import package_data_dirs
from tests.support.voices import VOICES, VoiceCache, require_voice

__all__ = ["linked_wheels", "voices"]


@pytest.fixture(scope="module")
def voices() -> VoiceCache:
    """A cache of lines spoken by every voice; skips the test when a voice's synthesizer is missing."""
    for voice in VOICES:
        require_voice(voice)
    return VoiceCache()


def linked_wheels(tmp_path: Path) -> tuple[Path, Path]:
    """The two wheels' data folders as links in ``tmp_path`` (the 145 MB parts are not copied).

    A test replaces a link with a changed file (unlink, then write) to damage the copy, never the wheel.
    """
    copies: list[Path] = []
    for index, source in enumerate(package_data_dirs()):
        target = tmp_path / f"part{index + 1}"
        target.mkdir()
        for file in source.iterdir():
            (target / file.name).symlink_to(file)
        copies.append(target)
    return copies[0], copies[1]
