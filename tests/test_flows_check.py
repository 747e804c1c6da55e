"""`ivr flows check` as a real process: every flow checked against the model and dialect it will use.

Why: a flow setting the model cannot take (a GA-only voice on a beta preview model, a transcription model
the dialect does not offer) used to pass the check and then fail inside the first call's model task,
leaving the caller in silence. The check must catch it before a deploy, with file, line and the choices
that would work. An empty or missing folder must fail the check too: "OK: 0 flows" hides a wrong path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import get_args

import pytest
from openai.types.beta.realtime.session_update_event import Session as BetaSession
from openai.types.realtime.audio_transcription import AudioTranscription
from openai.types.realtime.realtime_audio_config_output import RealtimeAudioConfigOutput

from ivr.flows import FlowSet, parse_flow
from ivr.flows.compat import choices_for, compat_issues

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "flows"
PREVIEW = "gpt-4o-realtime-preview-2025-06-03"
BETA_VOICES = "alloy, ash, ballad, coral, echo, sage, shimmer, verse"


def run_check(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m ivr flows check ARGS` with a clean environment plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("IVR_") and k != "REDIS_URL"}
    base.update(env)
    return subprocess.run(
        [sys.executable, "-m", "ivr", "flows", "check", *args],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _literals(annotation: object) -> set[str]:
    found: set[str] = set()
    for arg in get_args(annotation):
        found |= {a for a in get_args(arg) if isinstance(a, str)} or _literals(arg)
    return found


# --- the finding: a GA-only voice on a beta model ---------------------------------------------------------


def test_preview_model_with_the_shipped_default_flow_fails_with_file_line_and_voices() -> None:
    result = run_check(str(SHIPPED), IVR_REALTIME_MODEL=PREVIEW)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    voice = next(line for line in lines if "model.voice" in line)
    assert voice.startswith(f"{SHIPPED / 'default.yaml'}:7: model.voice: 'marin' ")
    assert PREVIEW in voice and "beta" in voice and "IVR_REALTIME_MODEL" in voice
    assert f"use one of: {BETA_VOICES}" in voice
    assert lines[-1] == "FAILED: 1 problem"
    assert "Traceback" not in result.stderr


def test_the_model_flag_checks_against_another_model_without_the_environment() -> None:
    result = run_check(str(SHIPPED), "--model", PREVIEW)
    assert result.returncode == 1
    assert f"{SHIPPED / 'default.yaml'}:7: model.voice: 'marin'" in result.stderr
    assert "--model" in result.stderr


def test_forcing_the_beta_dialect_is_checked_too() -> None:
    result = run_check(str(SHIPPED), IVR_REALTIME_DIALECT="beta")
    assert result.returncode == 1
    assert "IVR_REALTIME_DIALECT" in result.stderr and f"use one of: {BETA_VOICES}" in result.stderr


def test_the_dialect_flag_overrides_the_environment() -> None:
    result = run_check(str(SHIPPED), "--dialect", "beta", IVR_REALTIME_DIALECT="ga")
    assert result.returncode == 1
    assert "(beta dialect, from --dialect)" in result.stderr


def test_the_shipped_flows_pass_on_the_default_ga_model() -> None:
    result = run_check(str(SHIPPED))
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("OK: 3 flows")


def test_a_transcription_model_the_beta_dialect_lacks_is_an_error_with_its_choices(tmp_path: Path) -> None:
    write(
        tmp_path,
        "desk.yaml",
        f"""\
        id: desk
        instructions: hi
        model:
          name: {PREVIEW}
          voice: alloy
          transcription:
            model: gpt-realtime-whisper
        """,
    )
    result = run_check(str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        f"{tmp_path / 'desk.yaml'}:7: model.transcription.model: 'gpt-realtime-whisper' is not offered "
        f"by {PREVIEW} (beta dialect, from model.name); use one of: gpt-4o-mini-transcribe, "
        "gpt-4o-transcribe, whisper-1"
    )


def test_a_transcription_model_nobody_knows_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    write(tmp_path, "desk.yaml", "id: desk\ninstructions: hi\nmodel:\n  transcription: {model: my-asr}\n")
    result = run_check(str(tmp_path))
    assert result.returncode == 0, result.stderr
    warning = next(line for line in result.stdout.splitlines() if "my-asr" in line)
    assert warning.startswith(f"warning: {tmp_path / 'desk.yaml'}:4: model.transcription.model: ")
    assert "gpt-4o-mini-transcribe" in warning


# --- missing and empty folders ------------------------------------------------------------------------------


def test_an_empty_folder_fails_with_no_flows(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a flow", encoding="utf-8")
    result = run_check(str(tmp_path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"no flows in {tmp_path}" in result.stderr and "*.yaml" in result.stderr


def test_a_missing_folder_fails(tmp_path: Path) -> None:
    result = run_check(str(tmp_path / "nope"))
    assert result.returncode == 1
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


# --- the valid choices come from the openai package's types ---------------------------------------------


def test_choices_are_derived_from_the_openai_types() -> None:
    ga, beta = choices_for("ga"), choices_for("beta")
    assert ga.voices == _literals(RealtimeAudioConfigOutput.model_fields["voice"].annotation)
    assert beta.voices == _literals(BetaSession.model_fields["voice"].annotation)
    assert {"marin", "cedar"} <= ga.voices and not {"marin", "cedar"} & beta.voices
    assert ga.transcription_models == _literals(AudioTranscription.model_fields["model"].annotation)
    assert beta.transcription_models == {"gpt-4o-transcribe", "gpt-4o-mini-transcribe", "whisper-1"}
    assert beta.audio_formats >= {"pcm16", "g711_ulaw"} and ga.audio_formats >= {"audio/pcm", "audio/pcmu"}
    assert ga.turn_detection == beta.turn_detection == {"server_vad", "semantic_vad"}


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("model: {voice: cedar}", ["model.voice"]),
        ("model: {voice: ash, transcription: {model: gpt-transcribe}}", ["model.transcription.model"]),
        ("model: {voice: ash, audio: pcmu, turn_detection: {type: semantic_vad}}", []),
        ("model: {voice: ash, transcription: null}", []),
    ],
)
def test_compat_issues_per_field_on_beta(snippet: str, expected: list[str]) -> None:
    flow = parse_flow(f"id: x\ninstructions: hi\n{snippet}\n", "x.yaml").flow
    issues = compat_issues(flow, default_model=PREVIEW)
    assert [".".join(map(str, i.path)) for i in issues if i.severity == "error"] == expected


def test_chat_audio_models_and_the_local_engine_are_not_held_to_realtime_rules() -> None:
    flow = parse_flow("id: x\ninstructions: hi\nmodel: {voice: marin}\n", "x.yaml").flow
    assert compat_issues(flow, default_model="gpt-audio-1.5") == []
    assert compat_issues(flow, default_model="gpt-realtime") == []


def test_the_builtin_assistant_gets_a_voice_the_deployment_can_take(tmp_path: Path) -> None:
    write(tmp_path, "desk.yaml", "id: desk\nnumbers: ['+15550001111']\ninstructions: hi\n")
    flows = FlowSet.load(tmp_path)
    assert flows.for_number("+15559999999").model.voice == "marin"  # GA default
    fitted = flows.fitted_to(PREVIEW)
    builtin = fitted.for_number("+15559999999")
    assert builtin.model.voice in choices_for("beta").voices
    assert compat_issues(builtin, default_model=PREVIEW) == []
    assert fitted.get("desk") is flows.get("desk")
