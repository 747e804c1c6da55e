"""The protocol oracles accept every documented example and reject the mistakes listed in PROTOCOLS.md.

If an oracle is loosened or tightened wrongly, these fail first; the protocol lock fails loudly when an
openai SDK upgrade changes the Realtime event set.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.oracles import (
    BETA_CLIENT,
    BETA_SERVER,
    GA_CLIENT,
    GA_SERVER,
    ProtocolViolation,
    check,
    check_client_event,
    check_from_twilio,
    check_server_event,
    check_to_twilio,
    event_type_names,
    find_extras,
)

FIXTURES = Path(__file__).parent / "fixtures"


def _load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


TWILIO = _load("twilio_examples.json")
GA = _load("realtime_ga_examples.json")
BETA = _load("realtime_beta_examples.json")
STREAM_SID = TWILIO["from_twilio"]["start"]["streamSid"]


def _ga_session(**overrides: Any) -> dict[str, Any]:
    event = copy.deepcopy(GA["client"][0])
    event["session"].update(overrides)
    return event


# ---------------------------------------------------------------------------------------------------------
# Golden fixtures pass
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TWILIO["from_twilio"]))
def test_documented_twilio_inbound_messages_pass(name: str) -> None:
    msg = TWILIO["from_twilio"][name]
    assert check_from_twilio(msg).event == name
    assert check_from_twilio(json.dumps(msg)).event == name
    assert check_from_twilio(json.dumps(msg).encode()).event == name


@pytest.mark.parametrize("name", sorted(TWILIO["to_twilio"]))
def test_documented_twilio_outbound_messages_pass(name: str) -> None:
    assert check_to_twilio(TWILIO["to_twilio"][name]).event == name


@pytest.mark.parametrize(
    ("dialect", "event"), [("ga", e) for e in GA["client"]] + [("beta", e) for e in BETA["client"]]
)
def test_realtime_client_fixtures_pass(dialect: str, event: dict[str, Any]) -> None:
    assert check_client_event(dialect, json.dumps(event)) == event  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dialect", "event"), [("ga", e) for e in GA["server"]] + [("beta", e) for e in BETA["server"]]
)
def test_realtime_server_fixtures_pass(dialect: str, event: dict[str, Any]) -> None:
    assert check_server_event(dialect, event).type == event["type"]  # type: ignore[arg-type]


def test_fixture_sets_cover_the_events_the_bridge_uses() -> None:
    ga_client = {e["type"] for e in GA["client"]}
    assert {
        "session.update",
        "input_audio_buffer.append",
        "response.cancel",
        "conversation.item.truncate",
    } <= ga_client
    assert {"response.output_audio.delta", "response.done", "error"} <= {e["type"] for e in GA["server"]}
    assert {"response.audio.delta", "response.function_call_arguments.done"} <= {
        e["type"] for e in BETA["server"]
    }


# ---------------------------------------------------------------------------------------------------------
# Realtime mutations fail (PROTOCOLS.md §2.7 and §8 item 7)
# ---------------------------------------------------------------------------------------------------------


REALTIME_GA_CLIENT_MUTATIONS: list[tuple[str, dict[str, Any], str]] = [
    ("wrong event name", {"type": "input_audio.append", "audio": "AAAA"}, "union_tag_invalid"),
    ("no type key", {"audio": "AAAA"}, "union_tag_not_found"),
    ("missing field", {"type": "input_audio_buffer.append"}, "missing"),
    ("wrong type", {"type": "input_audio_buffer.append", "audio": 123}, "string_type"),
    (
        "truncate audio_end_ms as string",
        {"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0, "audio_end_ms": "20"},
        "int_type",
    ),
    ("beta key in GA session", _ga_session(input_audio_format="pcm16"), "$.session.input_audio_format"),
    (
        "typo key",
        _ga_session(
            audio={"input": {"turn_detection": {"type": "server_vad", "silence_duraton_ms": 500}}},
        ),
        "$.session.audio.input.turn_detection.silence_duraton_ms",
    ),
    (
        "semantic_vad with a server_vad knob",
        _ga_session(
            audio={"input": {"turn_detection": {"type": "semantic_vad", "silence_duration_ms": 500}}}
        ),
        "silence_duration_ms",
    ),
    (
        "pcm at 8000 Hz",
        _ga_session(audio={"output": {"format": {"type": "audio/pcm", "rate": 8000}}}),
        "Input should be 24000",
    ),
    (
        "format given as a beta string",
        _ga_session(audio={"output": {"format": "g711_ulaw"}}),
        "model_type",
    ),
    (
        "threshold as a string (strict mode)",
        _ga_session(audio={"input": {"turn_detection": {"type": "server_vad", "threshold": "0.5"}}}),
        "float_type",
    ),
    ("session without type", {"type": "session.update", "session": {"instructions": "hi"}}, "missing"),
    ("speed 9.0", _ga_session(audio={"output": {"speed": 9.0}}), "speed 9.0 outside 0.25..1.5"),
    ("speed 0.1", _ga_session(audio={"output": {"speed": 0.1}}), "outside 0.25..1.5"),
    (
        "voice nonexistent",
        _ga_session(audio={"output": {"voice": "nonexistent"}}),
        "unknown voice 'nonexistent'",
    ),
    ("custom voice without id", _ga_session(audio={"output": {"voice": {"id": ""}}}), "non-empty 'id'"),
    ("max_output_tokens 99999", _ga_session(max_output_tokens=99999), "1..4096"),
    ("max_output_tokens 0", _ga_session(max_output_tokens=0), "1..4096"),
    ("text and audio together", _ga_session(output_modalities=["text", "audio"]), "together are not allowed"),
    (
        "response voice unknown",
        {"type": "response.create", "response": {"audio": {"output": {"voice": "robot"}}}},
        "unknown voice 'robot'",
    ),
    (
        "truncate content_index 1",
        {"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 1, "audio_end_ms": 20},
        "content_index must be 0",
    ),
    (
        "truncate negative audio_end_ms",
        {"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0, "audio_end_ms": -5},
        "audio_end_ms must be >= 0",
    ),
    ("output_audio_buffer.clear on a WebSocket", {"type": "output_audio_buffer.clear"}, "WebRTC/SIP only"),
]


@pytest.mark.parametrize(
    ("label", "event", "expected"),
    REALTIME_GA_CLIENT_MUTATIONS,
    ids=[m[0] for m in REALTIME_GA_CLIENT_MUTATIONS],
)
def test_ga_client_mutations_are_rejected(label: str, event: dict[str, Any], expected: str) -> None:
    with pytest.raises(ProtocolViolation) as info:
        check_client_event("ga", event)
    assert expected in str(info.value), f"{label}: {info.value}"


def test_ga_client_accepts_the_allowed_edges() -> None:
    for event in (
        _ga_session(audio={"output": {"speed": 0.25, "voice": {"id": "voice_1234"}}}),
        _ga_session(audio={"output": {"speed": 1.5, "voice": "cedar"}}),
        _ga_session(max_output_tokens=4096),
        _ga_session(max_output_tokens=1),
        _ga_session(output_modalities=["text"]),
        _ga_session(audio={"input": {"turn_detection": None}}),
        _ga_session(audio={"input": {"format": {"type": "audio/pcm", "rate": 24000}}}),
        {"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0, "audio_end_ms": 0},
    ):
        check_client_event("ga", event)


def test_invalid_json_is_a_violation_not_a_crash() -> None:
    with pytest.raises(ProtocolViolation, match="not valid JSON"):
        check_client_event("ga", "{not json")
    with pytest.raises(ProtocolViolation, match="not valid JSON"):
        check_from_twilio(b"\xff\xfe")
    with pytest.raises(ProtocolViolation):
        check_client_event("ga", "[1, 2]")


BETA_CLIENT_MUTATIONS: list[tuple[str, dict[str, Any], str]] = [
    (
        "GA format object in beta",
        {"type": "session.update", "session": {"input_audio_format": "audio/pcmu"}},
        "'pcm16', 'g711_ulaw' or 'g711_alaw'",
    ),
    ("GA nested audio key in beta", {"type": "session.update", "session": {"audio": {}}}, "$.session.audio"),
    ("speed 9.0", {"type": "session.update", "session": {"speed": 9.0}}, "outside 0.25..1.5"),
    ("voice nonexistent", {"type": "session.update", "session": {"voice": "nonexistent"}}, "unknown voice"),
    (
        "max_response_output_tokens too large",
        {"type": "session.update", "session": {"max_response_output_tokens": 5000}},
        "1..4096",
    ),
    (
        "truncate content_index 1",
        {"type": "conversation.item.truncate", "item_id": "i", "content_index": 1, "audio_end_ms": 0},
        "content_index must be 0",
    ),
]


@pytest.mark.parametrize(
    ("label", "event", "expected"), BETA_CLIENT_MUTATIONS, ids=[m[0] for m in BETA_CLIENT_MUTATIONS]
)
def test_beta_client_mutations_are_rejected(label: str, event: dict[str, Any], expected: str) -> None:
    with pytest.raises(ProtocolViolation) as info:
        check_client_event("beta", event)
    assert expected in str(info.value), f"{label}: {info.value}"


def test_beta_allows_text_and_audio_modalities_its_default() -> None:
    check_client_event("beta", {"type": "session.update", "session": {"modalities": ["text", "audio"]}})


def test_server_event_mutations_are_rejected() -> None:
    delta = next(e for e in GA["server"] if e["type"] == "response.output_audio.delta")
    with pytest.raises(ProtocolViolation, match="union_tag_invalid"):
        check_server_event("ga", {**delta, "type": "response.audio.delta"})  # beta name on a GA session
    with pytest.raises(ProtocolViolation, match="item_id"):
        check_server_event("ga", {k: v for k, v in delta.items() if k != "item_id"})
    with pytest.raises(ProtocolViolation, match="unknown keys"):
        check_server_event("ga", {**delta, "bogus": 1})
    started = {"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "item_1"}
    with pytest.raises(ProtocolViolation, match="event_id"):
        check_server_event("ga", started)
    fc_done = next(e for e in GA["server"] if e["type"] == "response.function_call_arguments.done")
    with pytest.raises(ProtocolViolation, match="name"):
        check_server_event("ga", {k: v for k, v in fc_done.items() if k != "name"})
    with pytest.raises(ProtocolViolation, match=r"\$\.name"):
        check_server_event("beta", fc_done)  # beta has no name on this event


def test_session_allowlist_applies_to_server_events_only() -> None:
    created = GA["server"][0]
    assert {"$.session.id", "$.session.object", "$.session.expires_at"} <= set(
        find_extras(check(GA_SERVER, created, forbid_extra=False))
    )
    with pytest.raises(ProtocolViolation, match=r"\$\.session\.id"):
        check(GA_SERVER, created)
    check_server_event("ga", created)
    with pytest.raises(ProtocolViolation, match=r"\$\.session\.foo"):
        check_server_event("ga", {**created, "session": {**created["session"], "foo": 1}})


def test_check_lax_mode_coerces_where_strict_refuses() -> None:
    event = _ga_session(audio={"input": {"turn_detection": {"type": "server_vad", "threshold": "0.5"}}})
    check(GA_CLIENT, event, strict=False)
    with pytest.raises(ProtocolViolation, match="float_type"):
        check(GA_CLIENT, event)


def test_violation_message_names_the_event_not_every_union_member() -> None:
    with pytest.raises(ProtocolViolation) as info:
        check_client_event("ga", {"type": "input_audio_buffer.append", "audio": 123})
    first_line = str(info.value).splitlines()[0]
    assert first_line == "1 validation error(s) for event 'input_audio_buffer.append'"


# ---------------------------------------------------------------------------------------------------------
# Twilio mutations fail (PROTOCOLS.md §6.3)
# ---------------------------------------------------------------------------------------------------------


def _mutated(direction: str, name: str, path: tuple[str, ...], value: Any) -> dict[str, Any]:
    msg = copy.deepcopy(TWILIO[direction][name])
    target = msg
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return msg


_DELETE = object()
_WAV = base64.b64encode(b"RIFF\x24\x00\x00\x00WAVEfmt ").decode()
_AU = base64.b64encode(b".snd\x00\x00\x00\x18").decode()

TWILIO_INBOUND_MUTATIONS: list[tuple[str, dict[str, Any], str]] = [
    ("chunk as int", _mutated("from_twilio", "media", ("media", "chunk"), 2), "string_type"),
    ("sequenceNumber as int", _mutated("from_twilio", "media", ("sequenceNumber",), 4), "string_type"),
    (
        "timestamp not numeric",
        _mutated("from_twilio", "media", ("media", "timestamp"), "5ms"),
        "string_pattern",
    ),
    (
        "sampleRate 16000",
        _mutated("from_twilio", "start", ("start", "mediaFormat", "sampleRate"), 16000),
        "Input should be 8000",
    ),
    (
        "encoding not mulaw",
        _mutated("from_twilio", "start", ("start", "mediaFormat", "encoding"), "audio/l16"),
        "literal_error",
    ),
    ("bad stream SID", _mutated("from_twilio", "media", ("streamSid",), "MZ123"), "string_pattern"),
    ("bad call SID", _mutated("from_twilio", "stop", ("stop", "callSid"), "XX" + "0" * 32), "string_pattern"),
    (
        "payload not base64",
        _mutated("from_twilio", "media", ("media", "payload"), "not base64!"),
        "valid base64",
    ),
    (
        "dtmf on the wrong track",
        _mutated("from_twilio", "dtmf", ("dtmf", "track"), "inbound"),
        "literal_error",
    ),
    ("unknown event", _mutated("from_twilio", "stop", ("event",), "hangup"), "union_tag_invalid"),
    ("extra key", _mutated("from_twilio", "connected", ("extra",), 1), "extra_forbidden"),
    ("missing mark body", _mutated("from_twilio", "mark", ("mark",), _DELETE), "missing"),
]


@pytest.mark.parametrize(
    ("label", "msg", "expected"), TWILIO_INBOUND_MUTATIONS, ids=[m[0] for m in TWILIO_INBOUND_MUTATIONS]
)
def test_twilio_inbound_mutations_are_rejected(label: str, msg: dict[str, Any], expected: str) -> None:
    with pytest.raises(ProtocolViolation) as info:
        check_from_twilio(msg)
    assert expected in str(info.value), f"{label}: {info.value}"


TWILIO_OUTBOUND_MUTATIONS: list[tuple[str, dict[str, Any], str]] = [
    ("RIFF payload", _mutated("to_twilio", "media", ("media", "payload"), _WAV), "not a WAV/AU file"),
    ("AU payload", _mutated("to_twilio", "media", ("media", "payload"), _AU), "not a WAV/AU file"),
    (
        "extra track on outbound media",
        _mutated("to_twilio", "media", ("media", "track"), "outbound"),
        "extra_forbidden",
    ),
    (
        "sequenceNumber on outbound media",
        _mutated("to_twilio", "media", ("sequenceNumber",), "1"),
        "extra_forbidden",
    ),
    ("missing streamSid", _mutated("to_twilio", "media", ("streamSid",), _DELETE), "missing"),
    ("mark without mark object", {"event": "mark", "streamSid": STREAM_SID, "name": "x"}, "missing"),
    ("outbound stop", {"event": "stop", "streamSid": STREAM_SID}, "union_tag_invalid"),
    ("payload not base64", _mutated("to_twilio", "media", ("media", "payload"), "%%%"), "valid base64"),
]


@pytest.mark.parametrize(
    ("label", "msg", "expected"), TWILIO_OUTBOUND_MUTATIONS, ids=[m[0] for m in TWILIO_OUTBOUND_MUTATIONS]
)
def test_twilio_outbound_mutations_are_rejected(label: str, msg: dict[str, Any], expected: str) -> None:
    with pytest.raises(ProtocolViolation) as info:
        check_to_twilio(msg)
    assert expected in str(info.value), f"{label}: {info.value}"


def test_inbound_media_is_not_a_valid_outbound_message() -> None:
    with pytest.raises(ProtocolViolation, match="extra_forbidden"):
        check_to_twilio(TWILIO["from_twilio"]["media"])


# ---------------------------------------------------------------------------------------------------------
# Protocol lock
# ---------------------------------------------------------------------------------------------------------


def test_protocol_lock_event_type_names_match_snapshot() -> None:
    snapshot = _load("realtime_event_types.json")
    current = {
        "ga_client": event_type_names("ga", "client"),
        "ga_server": event_type_names("ga", "server"),
        "beta_client": event_type_names("beta", "client"),
        "beta_server": event_type_names("beta", "server"),
    }
    assert {k: len(v) for k, v in current.items()} == {
        "ga_client": 11,
        "ga_server": 46,
        "beta_client": 12,
        "beta_server": 34,
    }
    for key, names in current.items():
        assert names == snapshot[key], (
            f"Realtime protocol changed in the openai SDK ({key}); review and update"
        )


def test_adapters_are_real_tagged_unions() -> None:
    for adapter, count in ((GA_CLIENT, 11), (GA_SERVER, 46), (BETA_CLIENT, 12), (BETA_SERVER, 34)):
        schema = adapter.json_schema()
        assert schema["discriminator"]["propertyName"] == "type"
        assert len(schema["oneOf"]) == count
