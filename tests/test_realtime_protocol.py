"""Realtime client-event builders and server-event parser, for both dialects, checked against the SDK oracle.

Every event a builder produces must pass the strict oracle of PROTOCOLS.md §2.7 (no coercion, no unknown
keys, §8.7 docstring rules) for its dialect; every server event fed to the parser is first checked by the
server oracle, so the parser is tested on what the real service is specified to send.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from ivr.realtime.dialect import (
    ClientEvents,
    Dialect,
    SessionConfig,
    TurnDetection,
    dialect_for_model,
)
from ivr.realtime.events import (
    AgentTranscriptDelta,
    AgentTranscriptDone,
    AudioDelta,
    AudioDone,
    ErrorEvent,
    FunctionCall,
    FunctionCallDone,
    Ignored,
    InputCommitted,
    ItemTruncated,
    MalformedEvent,
    OutputItemAdded,
    ResponseCreated,
    ResponseDone,
    ServerEventParser,
    SessionCreated,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    UserTranscript,
)
from tests.support.oracles import ProtocolViolation, check_client_event, check_server_event

DIALECTS: tuple[Dialect, ...] = ("ga", "beta")

TOOLS: tuple[dict[str, Any], ...] = (
    {
        "type": "function",
        "name": "lookup_order",
        "description": "Find an order by its number.",
        "parameters": {
            "type": "object",
            "properties": {"order": {"type": "string"}},
            "required": ["order"],
        },
    },
    {"type": "function", "name": "hang_up"},
)

TURNS: dict[str, TurnDetection | None] = {
    "server-default": TurnDetection("server_vad"),
    "server-tuned": TurnDetection(
        "server_vad",
        threshold=0.6,
        prefix_padding_ms=200,
        silence_duration_ms=450,
        create_response=False,
        interrupt_response=False,
    ),
    "semantic": TurnDetection("semantic_vad", eagerness="low"),
    "semantic-default": TurnDetection("semantic_vad"),
    "none": None,
}

TRANSCRIPTION: dict[str, tuple[str | None, str | None]] = {
    "no-transcript": (None, None),
    "transcript": ("gpt-4o-mini-transcribe", None),
    "transcript-lang": ("whisper-1", "en"),
}


def _json(raw: bytes) -> dict[str, Any]:
    assert isinstance(raw, bytes)
    data = orjson.loads(raw)
    assert isinstance(data, dict)
    return data


# -- dialect choice -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "override", "expected"),
    [
        ("gpt-realtime", "auto", "ga"),
        ("gpt-realtime-1.5", "auto", "ga"),
        ("gpt-realtime-mini-2025-10-06", "auto", "ga"),
        ("gpt-4o-realtime-preview-2025-06-03", "auto", "beta"),
        ("gpt-4o-mini-realtime-preview-2024-12-17", "auto", "beta"),
        ("GPT-4o-Realtime-Preview", "auto", "beta"),
        ("my-azure-deployment", "beta", "beta"),
        ("gpt-4o-realtime-preview", "ga", "ga"),
        ("gpt-realtime", " BETA ", "beta"),
        ("gpt-realtime", "", "ga"),
    ],
)
def test_dialect_for_model(model: str, override: str, expected: str) -> None:
    assert dialect_for_model(model, override) == expected


def test_dialect_for_model_rejects_unknown_override() -> None:
    with pytest.raises(ValueError, match=r"'v2'.*auto, ga, beta"):
        dialect_for_model("gpt-realtime", "v2")


# -- session.update: every variant passes the strict oracle --------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("audio", ["pcm", "pcmu"])
@pytest.mark.parametrize("turn", list(TURNS))
@pytest.mark.parametrize("transcription", list(TRANSCRIPTION))
@pytest.mark.parametrize("with_tools", [False, True], ids=["no-tools", "tools"])
def test_session_update_variants_pass_oracle(
    dialect: Dialect, audio: str, turn: str, transcription: str, with_tools: bool
) -> None:
    model, language = TRANSCRIPTION[transcription]
    cfg = SessionConfig(
        instructions="You answer the phone for Acme.",
        voice="coral",
        speed=1.1,
        audio=audio,  # type: ignore[arg-type]
        turn_detection=TURNS[turn],
        transcription_model=model,
        transcription_language=language,
        tools=TOOLS if with_tools else (),
        tool_choice="auto" if with_tools else "none",
    )
    raw = ClientEvents(dialect).session_update(cfg)
    data = check_client_event(dialect, raw)
    assert data["type"] == "session.update"
    session = data["session"]
    assert session["instructions"] == "You answer the phone for Acme."
    expected_turn = TURNS[turn].to_wire() if TURNS[turn] else None
    expected_tools = [dict(t) for t in TOOLS] if with_tools else []
    assert session["tools"] == expected_tools
    if dialect == "ga":
        assert session["type"] == "realtime"
        assert session["output_modalities"] == ["audio"]
        fmt = {"type": "audio/pcm", "rate": 24000} if audio == "pcm" else {"type": "audio/pcmu"}
        assert session["audio"]["input"]["format"] == fmt
        assert session["audio"]["output"] == {"format": fmt, "voice": "coral", "speed": 1.1}
        assert session["audio"]["input"]["turn_detection"] == expected_turn
        got_transcription = session["audio"]["input"].get("transcription")
        assert session["max_output_tokens"] == "inf"
    else:
        assert "type" not in session
        fmt_name = "pcm16" if audio == "pcm" else "g711_ulaw"
        assert session["input_audio_format"] == session["output_audio_format"] == fmt_name
        assert session["modalities"] == ["audio", "text"]
        assert (session["voice"], session["speed"]) == ("coral", 1.1)
        assert session["turn_detection"] == expected_turn
        got_transcription = session.get("input_audio_transcription")
        assert session["max_response_output_tokens"] == "inf"
    if model is None:
        assert got_transcription is None
    else:
        expected = {"model": model} if language is None else {"model": model, "language": language}
        assert got_transcription == expected


@pytest.mark.parametrize("dialect", DIALECTS)
def test_session_update_optional_fields_pass_oracle(dialect: Dialect) -> None:
    model = "gpt-realtime" if dialect == "ga" else "gpt-4o-realtime-preview-2025-06-03"
    cfg = SessionConfig(
        instructions="",
        voice="verse",
        speed=0.25,
        audio="pcmu",
        max_output_tokens=4096,
        tool_choice="required",
        tools=TOOLS[:1],
        model=model,
        noise_reduction="near_field",
    )
    data = check_client_event(dialect, ClientEvents(dialect).session_update(cfg))
    session = data["session"]
    assert session["model"] == model
    assert session["tool_choice"] == "required"
    if dialect == "ga":
        assert session["max_output_tokens"] == 4096
        assert session["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
    else:
        assert session["max_response_output_tokens"] == 4096
        assert session["input_audio_noise_reduction"] == {"type": "near_field"}


def test_ga_accepts_ga_only_voices_and_defaults() -> None:
    cfg = SessionConfig(instructions="hi")
    data = check_client_event("ga", ClientEvents("ga").session_update(cfg))
    output = data["session"]["audio"]["output"]
    assert output["voice"] == "marin"
    assert output["speed"] == 1.0
    assert output["format"] == {"type": "audio/pcm", "rate": 24000}
    assert data["session"]["audio"]["input"]["turn_detection"] == {
        "type": "server_vad",
        "create_response": True,
        "interrupt_response": True,
    }
    cedar = SessionConfig(instructions="hi", voice="cedar")
    check_client_event("ga", ClientEvents("ga").session_update(cedar))


@pytest.mark.parametrize("voice", ["marin", "cedar"])
def test_beta_refuses_ga_only_voice(voice: str) -> None:
    cfg = SessionConfig(instructions="hi", voice=voice)
    with pytest.raises(ValueError, match=f"voice='{voice}' exists only for GA models"):
        ClientEvents("beta").session_update(cfg)


def test_oracle_would_catch_a_ga_session_sent_on_beta() -> None:
    """Guard for the tests themselves: the oracle really tells the dialects apart."""
    raw = ClientEvents("ga").session_update(SessionConfig(instructions="x", voice="coral"))
    with pytest.raises(ProtocolViolation):
        check_client_event("beta", raw)
    raw = ClientEvents("beta").session_update(SessionConfig(instructions="x", voice="coral"))
    with pytest.raises(ProtocolViolation):
        check_client_event("ga", raw)


# -- docstring-only rules enforced by the builder ----------------------------------------------------


@pytest.mark.parametrize("speed", [0.2, 1.51, 9.0, -1.0, float("nan"), float("inf"), True, "1.0"])
def test_invalid_speed_is_refused(speed: object) -> None:
    with pytest.raises(ValueError, match="speed="):
        SessionConfig(instructions="x", speed=speed)  # type: ignore[arg-type]


@pytest.mark.parametrize("speed", [0.25, 1.5, 1])
def test_speed_bounds_accepted(speed: float) -> None:
    for dialect in DIALECTS:
        cfg = SessionConfig(instructions="x", voice="alloy", speed=speed)
        check_client_event(dialect, ClientEvents(dialect).session_update(cfg))


@pytest.mark.parametrize("voice", ["nonexistent", "Marin", "", "alloy "])
def test_invalid_voice_is_refused(voice: str) -> None:
    with pytest.raises(ValueError, match="is not a built-in voice"):
        SessionConfig(instructions="x", voice=voice)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"audio": "g711_ulaw"}, "audio='g711_ulaw'"),
        ({"max_output_tokens": 0}, "max_output_tokens=0"),
        ({"max_output_tokens": 4097}, "max_output_tokens=4097"),
        ({"max_output_tokens": "infinite"}, "max_output_tokens='infinite'"),
        ({"tool_choice": "lookup_order"}, "tool_choice='lookup_order'"),
        ({"transcription_language": "en"}, "transcription_model is not"),
        ({"transcription_model": ""}, "transcription_model must be"),
        ({"tools": [TOOLS[0]]}, "tools must be a tuple"),
        ({"tools": ({"name": "x"},)}, r"tools\[0\].type must be 'function'"),
        ({"tools": (TOOLS[0], {"type": "function"})}, r"tools\[1\].name"),
        (
            {"tools": ({"type": "function", "name": "x", "strict": True},)},
            r"tools\[0\] has unknown keys \['strict'\]",
        ),
        ({"tools": ({"type": "function", "name": "x", "parameters": "{}"},)}, r"tools\[0\].parameters \(x\)"),
        ({"noise_reduction": "medium"}, "noise_reduction='medium'"),
        ({"model": ""}, "model must be"),
    ],
)
def test_invalid_session_config_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SessionConfig(instructions="x", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": "push_to_talk"}, "turn_detection.type='push_to_talk'"),
        ({"type": "server_vad", "eagerness": "low"}, "eagerness applies to semantic_vad only"),
        ({"type": "semantic_vad", "threshold": 0.5}, "threshold applies to server_vad only"),
        ({"type": "semantic_vad", "silence_duration_ms": 300}, "silence_duration_ms applies to server_vad"),
        ({"type": "semantic_vad", "eagerness": "eager"}, "eagerness='eager'"),
        ({"type": "server_vad", "threshold": 1.5}, "threshold=1.5"),
        ({"type": "server_vad", "threshold": "0.5"}, "threshold='0.5'"),
        ({"type": "server_vad", "prefix_padding_ms": -1}, "prefix_padding_ms=-1"),
        ({"type": "server_vad", "silence_duration_ms": 200.5}, "silence_duration_ms=200.5"),
        ({"type": "server_vad", "create_response": 1}, "create_response must be true or false"),
    ],
)
def test_invalid_turn_detection_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TurnDetection(**kwargs)


def test_integer_threshold_goes_out_as_float() -> None:
    cfg = SessionConfig(
        instructions="x", voice="ash", turn_detection=TurnDetection("server_vad", threshold=1)
    )
    for dialect in DIALECTS:
        data = check_client_event(dialect, ClientEvents(dialect).session_update(cfg))
        turn = (
            data["session"]["audio"]["input"]["turn_detection"]
            if dialect == "ga"
            else data["session"]["turn_detection"]
        )
        assert turn["threshold"] == 1.0 and isinstance(turn["threshold"], float)


# -- the other builders --------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_builder_passes_oracle(dialect: Dialect) -> None:
    ev = ClientEvents(dialect)
    built = {
        "append": ev.append_audio("f39/fw=="),
        "commit": ev.commit_input(),
        "clear": ev.clear_input(),
        "create": ev.response_create(),
        "create-instr": ev.response_create("Say goodbye politely."),
        "cancel": ev.response_cancel(),
        "truncate": ev.truncate("item_abc", 1234),
        "truncate-0": ev.truncate("item_abc", 0),
        "user": ev.user_text("I'd like to book a table."),
        "system": ev.system_text("The operator approved the refund."),
        "assistant": ev.assistant_text("Sure, for how many people?"),
        "call": ev.function_call_item("call_1", "lookup_order", '{"order":"A-17"}'),
        "output": ev.function_output("call_1", '{"status":"shipped"}'),
    }
    checked = {name: check_client_event(dialect, raw) for name, raw in built.items()}
    assert checked["append"] == {"type": "input_audio_buffer.append", "audio": "f39/fw=="}
    assert checked["commit"] == {"type": "input_audio_buffer.commit"}
    assert checked["clear"] == {"type": "input_audio_buffer.clear"}
    assert checked["create"] == {"type": "response.create"}
    assert checked["create-instr"] == {
        "type": "response.create",
        "response": {"instructions": "Say goodbye politely."},
    }
    assert checked["cancel"] == {"type": "response.cancel"}
    assert checked["truncate"] == {
        "type": "conversation.item.truncate",
        "item_id": "item_abc",
        "content_index": 0,
        "audio_end_ms": 1234,
    }
    assert checked["user"]["item"] == {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "I'd like to book a table."}],
    }
    text_type = "output_text" if dialect == "ga" else "text"
    assert checked["assistant"]["item"] == {
        "type": "message",
        "role": "assistant",
        "content": [{"type": text_type, "text": "Sure, for how many people?"}],
    }
    assert checked["call"]["item"] == {
        "type": "function_call",
        "call_id": "call_1",
        "name": "lookup_order",
        "arguments": '{"order":"A-17"}',
    }
    assert checked["output"]["item"] == {
        "type": "function_call_output",
        "call_id": "call_1",
        "output": '{"status":"shipped"}',
    }


def test_assistant_text_content_type_is_dialect_specific_for_the_oracle() -> None:
    """GA rejects beta's ``text`` content part and beta rejects GA's ``output_text``."""
    with pytest.raises(ProtocolViolation):
        check_client_event("beta", ClientEvents("ga").assistant_text("hi"))
    with pytest.raises(ProtocolViolation):
        check_client_event("ga", ClientEvents("beta").assistant_text("hi"))


@pytest.mark.parametrize("dialect", DIALECTS)
def test_event_ids_count_up_when_enabled(dialect: Dialect) -> None:
    ev = ClientEvents(dialect, event_ids=True)
    assert ev.last_event_id is None
    ids = [
        _json(ev.session_update(SessionConfig(instructions="x", voice="sage")))["event_id"],
        _json(ev.append_audio("AAAA"))["event_id"],
        _json(ev.response_cancel())["event_id"],
    ]
    assert ids == ["ivr_1", "ivr_2", "ivr_3"]
    assert ev.last_event_id == "ivr_3"
    check_client_event(dialect, ev.truncate("item_1", 5))
    assert ev.last_event_id == "ivr_4"
    plain = ClientEvents(dialect)
    assert "event_id" not in _json(plain.append_audio("AAAA"))
    assert plain.last_event_id is None


def test_append_audio_keeps_the_base64_text_exact() -> None:
    payload = "/" * 3 + "+" * 5 + "A" * 1480 + "=="
    out = _json(ClientEvents("ga").append_audio(payload))
    assert out["audio"] == payload


def test_append_audio_escapes_hostile_text_instead_of_injecting_json() -> None:
    raw = ClientEvents("ga").append_audio('x","type":"response.cancel')
    assert _json(raw) == {"type": "input_audio_buffer.append", "audio": 'x","type":"response.cancel'}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda ev: ev.truncate("item_1", -1), "audio_end_ms=-1"),
        (lambda ev: ev.truncate("item_1", 12.5), "audio_end_ms=12.5"),
        (lambda ev: ev.truncate("item_1", True), "audio_end_ms=True"),
        (lambda ev: ev.truncate("item_1", "20"), "audio_end_ms='20'"),
        (lambda ev: ev.truncate("", 20), "item_id must be a non-empty string"),
        (lambda ev: ev.user_text(None), "user_text: text must be a string, not NoneType"),
        (lambda ev: ev.assistant_text(5), "assistant_text: text must be a string, not int"),
        (lambda ev: ev.function_call_item("", "f", "{}"), "call_id must not be empty"),
        (lambda ev: ev.function_call_item("c", "", "{}"), "name must not be empty"),
        (lambda ev: ev.function_call_item("c", "f", {}), "arguments must be a string"),
        (lambda ev: ev.function_output("c", {"ok": True}), "output must be a string, not dict"),
        (lambda ev: ev.response_create(instructions=3), "instructions must be a string"),
    ],
)
def test_builders_refuse_bad_arguments(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(ClientEvents("ga"))


def test_client_events_refuses_unknown_dialect() -> None:
    with pytest.raises(ValueError, match="dialect='v1'"):
        ClientEvents("v1")  # type: ignore[arg-type]


# -- server events ---------------------------------------------------------------------------------------


def _server(dialect: Dialect, event: dict[str, Any]) -> bytes:
    """A server frame, after checking it against the dialect's server oracle."""
    check_server_event(dialect, event)
    return orjson.dumps(event)


_ids = itertools.count(1)


def _eid() -> str:
    return f"event_{next(_ids)}"


def _name(dialect: Dialect, ga: str, beta: str) -> str:
    return ga if dialect == "ga" else beta


def _function_item(status: str = "completed", arguments: str = '{"order":"A-17"}') -> dict[str, Any]:
    return {
        "id": "item_fn",
        "type": "function_call",
        "object": "realtime.item",
        "status": status,
        "call_id": "call_9",
        "name": "lookup_order",
        "arguments": arguments,
    }


@pytest.mark.parametrize("dialect", DIALECTS)
def test_session_events(dialect: Dialect) -> None:
    parser = ServerEventParser(dialect)
    session = {"type": "realtime", "id": "sess_1", "object": "realtime.session", "expires_at": 0}
    if dialect == "beta":
        session = {"id": "sess_1", "voice": "alloy", "input_audio_format": "g711_ulaw"}
    created = parser.parse(
        _server(dialect, {"type": "session.created", "event_id": _eid(), "session": session})
    )
    updated = parser.parse(
        _server(dialect, {"type": "session.updated", "event_id": _eid(), "session": session})
    )
    assert created == SessionCreated(session)
    assert updated == SessionUpdated(session)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_input_side_events(dialect: Dialect) -> None:
    parser = ServerEventParser(dialect)
    item = "item_user_1"
    got = [
        parser.parse(
            _server(
                dialect,
                {
                    "type": "input_audio_buffer.speech_started",
                    "event_id": _eid(),
                    "item_id": item,
                    "audio_start_ms": 1200,
                },
            )
        ),
        parser.parse(
            _server(
                dialect,
                {
                    "type": "input_audio_buffer.speech_stopped",
                    "event_id": _eid(),
                    "item_id": item,
                    "audio_end_ms": 2900,
                },
            )
        ),
        parser.parse(
            _server(
                dialect,
                {
                    "type": "input_audio_buffer.committed",
                    "event_id": _eid(),
                    "item_id": item,
                    "previous_item_id": "item_0",
                },
            )
        ),
        parser.parse(
            _server(
                dialect,
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "event_id": _eid(),
                    "item_id": item,
                    "content_index": 0,
                    "transcript": "I'd like to check my order.",
                    "usage": {"type": "duration", "seconds": 1.7},
                },
            )
        ),
        parser.parse(
            _server(
                dialect,
                {
                    "type": "conversation.item.truncated",
                    "event_id": _eid(),
                    "item_id": "item_asst",
                    "content_index": 0,
                    "audio_end_ms": 640,
                },
            )
        ),
    ]
    assert got == [
        SpeechStarted(item, 1200),
        SpeechStopped(item, 2900),
        InputCommitted(item, "item_0"),  # placed after the item it names (item order)
        UserTranscript(item, "I'd like to check my order."),
        ItemTruncated("item_asst", 640),
    ]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_output_audio_and_transcript_events(dialect: Dialect) -> None:
    parser = ServerEventParser(dialect)
    common = {"response_id": "resp_1", "item_id": "item_a", "output_index": 0, "content_index": 0}
    delta_text = "f39/fw==" * 53
    audio_delta = {
        "type": _name(dialect, "response.output_audio.delta", "response.audio.delta"),
        "event_id": _eid(),
        "delta": delta_text,
        **common,
    }
    audio_done = {
        "type": _name(dialect, "response.output_audio.done", "response.audio.done"),
        "event_id": _eid(),
        **common,
    }
    tr_delta = {
        "type": _name(dialect, "response.output_audio_transcript.delta", "response.audio_transcript.delta"),
        "event_id": _eid(),
        "delta": "Hello, ",
        **common,
    }
    tr_done = {
        "type": _name(dialect, "response.output_audio_transcript.done", "response.audio_transcript.done"),
        "event_id": _eid(),
        "transcript": "Hello, how can I help?",
        **common,
    }
    got = [parser.parse(_server(dialect, e)) for e in (audio_delta, audio_done, tr_delta, tr_done)]
    assert got == [
        AudioDelta("resp_1", "item_a", delta_text),
        AudioDone("resp_1", "item_a"),
        AgentTranscriptDelta("resp_1", "item_a", "Hello, "),
        AgentTranscriptDone("resp_1", "item_a", "Hello, how can I help?"),
    ]


def test_audio_delta_accepts_str_and_bytes_frames() -> None:
    parser = ServerEventParser("ga")
    frame = _server(
        "ga",
        {
            "type": "response.output_audio.delta",
            "event_id": "e",
            "response_id": "r",
            "item_id": "i",
            "output_index": 0,
            "content_index": 0,
            "delta": "AAAA",
        },
    )
    assert parser.parse(frame) == parser.parse(frame.decode()) == AudioDelta("r", "i", "AAAA")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_response_lifecycle_with_function_call(dialect: Dialect) -> None:
    parser = ServerEventParser(dialect)
    created = parser.parse(
        _server(
            dialect,
            {
                "type": "response.created",
                "event_id": _eid(),
                "response": {
                    "id": "resp_7",
                    "object": "realtime.response",
                    "status": "in_progress",
                    "output": [],
                },
            },
        )
    )
    assert created == ResponseCreated("resp_7")
    added = parser.parse(
        _server(
            dialect,
            {
                "type": "response.output_item.added",
                "event_id": _eid(),
                "response_id": "resp_7",
                "output_index": 0,
                "item": _function_item(status="in_progress", arguments=""),
            },
        )
    )
    assert added == OutputItemAdded("resp_7", "item_fn", "function_call", None, "lookup_order")
    assert parser.pending_function_names == 1
    done_event: dict[str, Any] = {
        "type": "response.function_call_arguments.done",
        "event_id": _eid(),
        "response_id": "resp_7",
        "item_id": "item_fn",
        "output_index": 0,
        "call_id": "call_9",
        "arguments": '{"order":"A-17"}',
    }
    if dialect == "ga":
        done_event["name"] = "lookup_order"
    fn_done = parser.parse(_server(dialect, done_event))
    assert fn_done == FunctionCallDone("call_9", "lookup_order", '{"order":"A-17"}', "item_fn", "resp_7")
    assert parser.pending_function_names == 0
    message_item = {
        "id": "item_msg",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": _name(dialect, "output_audio", "audio"), "transcript": "One moment."}],
    }
    usage = {"total_tokens": 120, "input_tokens": 100, "output_tokens": 20}
    response_done = parser.parse(
        _server(
            dialect,
            {
                "type": "response.done",
                "event_id": _eid(),
                "response": {
                    "id": "resp_7",
                    "object": "realtime.response",
                    "status": "completed",
                    "output": [message_item, _function_item()],
                    "usage": usage,
                },
            },
        )
    )
    assert response_done == ResponseDone(
        "resp_7",
        "completed",
        None,
        usage,
        (FunctionCall("call_9", "lookup_order", '{"order":"A-17"}', "item_fn"),),
    )


def test_beta_function_name_comes_from_output_item_added() -> None:
    parser = ServerEventParser("beta")
    for response_id, item_id, name in (("r1", "i1", "transfer_call"), ("r1", "i2", "hang_up")):
        parser.parse(
            _server(
                "beta",
                {
                    "type": "response.output_item.added",
                    "event_id": _eid(),
                    "response_id": response_id,
                    "output_index": 0,
                    "item": {"id": item_id, "type": "function_call", "name": name, "call_id": f"c_{item_id}"},
                },
            )
        )
    second = parser.parse(
        _server(
            "beta",
            {
                "type": "response.function_call_arguments.done",
                "event_id": _eid(),
                "response_id": "r1",
                "item_id": "i2",
                "output_index": 1,
                "call_id": "c_i2",
                "arguments": "{}",
            },
        )
    )
    assert second == FunctionCallDone("c_i2", "hang_up", "{}", "i2", "r1")
    assert parser.pending_function_names == 1
    # response.done forgets whatever was not consumed, so the map cannot grow over a long call.
    parser.parse(
        _server(
            "beta",
            {"type": "response.done", "event_id": _eid(), "response": {"id": "r1", "status": "cancelled"}},
        )
    )
    assert parser.pending_function_names == 0


def test_beta_function_done_without_any_known_name_is_malformed() -> None:
    parser = ServerEventParser("beta")
    event = parser.parse(
        _server(
            "beta",
            {
                "type": "response.function_call_arguments.done",
                "event_id": _eid(),
                "response_id": "r1",
                "item_id": "item_x",
                "output_index": 0,
                "call_id": "call_x",
                "arguments": "{}",
            },
        )
    )
    assert isinstance(event, MalformedEvent)
    assert "item_x" in event.reason and "output_item.added" in event.reason


@pytest.mark.parametrize("dialect", DIALECTS)
def test_output_item_added_for_a_message(dialect: Dialect) -> None:
    parser = ServerEventParser(dialect)
    event = parser.parse(
        _server(
            dialect,
            {
                "type": "response.output_item.added",
                "event_id": _eid(),
                "response_id": "r2",
                "output_index": 0,
                "item": {
                    "id": "item_m",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "status": "in_progress",
                },
            },
        )
    )
    assert event == OutputItemAdded("r2", "item_m", "message", "assistant", None)
    assert parser.pending_function_names == 0


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    ("status", "details", "reason"),
    [
        ("cancelled", {"type": "cancelled", "reason": "turn_detected"}, "turn_detected"),
        ("cancelled", {"type": "cancelled", "reason": "client_cancelled"}, "client_cancelled"),
        ("incomplete", {"type": "incomplete", "reason": "max_output_tokens"}, "max_output_tokens"),
        (
            "failed",
            {
                "type": "failed",
                "error": {"type": "server_error", "code": "overloaded", "message": "Try later"},
            },
            "overloaded: Try later",
        ),
        ("failed", {"type": "failed", "error": {"type": "server_error"}}, "server_error"),
    ],
)
def test_response_done_status_reason(dialect: Dialect, status: str, details: dict, reason: str) -> None:
    parser = ServerEventParser(dialect)
    event = parser.parse(
        _server(
            dialect,
            {
                "type": "response.done",
                "event_id": _eid(),
                "response": {"id": "resp_x", "status": status, "status_details": details, "output": []},
            },
        )
    )
    assert event == ResponseDone("resp_x", status, reason, None, ())


def test_response_done_skips_unfinished_function_calls() -> None:
    parser = ServerEventParser("ga")
    event = parser.parse(
        _server(
            "ga",
            {
                "type": "response.done",
                "event_id": _eid(),
                "response": {
                    "id": "r",
                    "status": "cancelled",
                    "output": [_function_item(status="incomplete", arguments='{"ord')],
                },
            },
        )
    )
    assert isinstance(event, ResponseDone) and event.function_calls == ()


@pytest.mark.parametrize("dialect", DIALECTS)
def test_error_event(dialect: Dialect) -> None:
    parser = ServerEventParser(dialect)
    full = parser.parse(
        _server(
            dialect,
            {
                "type": "error",
                "event_id": _eid(),
                "error": {
                    "type": "invalid_request_error",
                    "code": "invalid_value",
                    "message": "Audio end ms is beyond the audio",
                    "param": "audio_end_ms",
                    "event_id": "ivr_12",
                },
            },
        )
    )
    assert full == ErrorEvent(
        "invalid_request_error", "invalid_value", "Audio end ms is beyond the audio", "audio_end_ms", "ivr_12"
    )
    minimal = parser.parse(
        _server(
            dialect,
            {"type": "error", "event_id": _eid(), "error": {"type": "server_error", "message": "boom"}},
        )
    )
    assert minimal == ErrorEvent("server_error", None, "boom", None, None)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_known_but_unused_events_are_ignored(dialect: Dialect) -> None:
    parser = ServerEventParser(dialect)
    rate = {
        "type": "rate_limits.updated",
        "event_id": _eid(),
        "rate_limits": [{"name": "tokens", "limit": 1000, "remaining": 900, "reset_seconds": 1.5}],
    }
    cleared = {"type": "input_audio_buffer.cleared", "event_id": _eid()}
    assert parser.parse(_server(dialect, rate)) == Ignored("rate_limits.updated")
    assert parser.parse(_server(dialect, cleared)) == Ignored("input_audio_buffer.cleared")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_unknown_event_type_is_ignored_and_unknown_keys_tolerated(dialect: Dialect) -> None:
    parser = ServerEventParser(dialect)
    assert parser.parse(b'{"type":"brand.new.event","x":1}') == Ignored("brand.new.event")
    extra = {
        "type": "input_audio_buffer.speech_started",
        "event_id": "e",
        "item_id": "i",
        "audio_start_ms": 5,
        "future_field": {"nested": True},
    }
    assert parser.parse(orjson.dumps(extra)) == SpeechStarted("i", 5)


def test_both_dialect_names_map_to_the_same_class_in_either_parser() -> None:
    frame = {"type": "", "response_id": "r", "item_id": "i", "delta": "AAAA"}
    for dialect in DIALECTS:
        parser = ServerEventParser(dialect)
        for name in ("response.output_audio.delta", "response.audio.delta"):
            assert parser.parse(orjson.dumps({**frame, "type": name})) == AudioDelta("r", "i", "AAAA")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not JSON"),
        (b"", "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
        (b"[1, 2]", "not a JSON object but a list"),
        (b'"response.done"', "not a JSON object but a str"),
        (b"null", "not a JSON object but a NoneType"),
        (b'{"no": "type"}', "no 'type'"),
        (b'{"type": 5}', "no 'type'"),
        (b'{"type":"response.output_audio.delta","response_id":"r","delta":"AAAA"}', "missing 'item_id'"),
        (
            b'{"type":"response.audio.delta","response_id":"r","item_id":"i","delta":7}',
            "'delta' must be a string",
        ),
        (
            b'{"type":"input_audio_buffer.speech_started","item_id":"i","audio_start_ms":"5"}',
            "'audio_start_ms' must",
        ),
        (
            b'{"type":"input_audio_buffer.speech_stopped","item_id":"i","audio_end_ms":true}',
            "'audio_end_ms' must",
        ),
        (b'{"type":"input_audio_buffer.committed"}', "missing 'item_id'"),
        (b'{"type":"response.created"}', "response.created: missing 'response'"),
        (b'{"type":"response.created","response":[]}', "'response' must be an object"),
        (
            b'{"type":"response.done","response":{"status":"completed"}}',
            "response.done.response: missing 'id'",
        ),
        (b'{"type":"response.done","response":{"id":"r"}}', "missing 'status'"),
        (
            b'{"type":"response.done","response":{"id":"r","status":"completed","output":{}}}',
            "'output' must be",
        ),
        (b'{"type":"response.done","response":{"id":"r","status":"completed","usage":3}}', "'usage' must be"),
        (
            b'{"type":"response.done","response":{"id":"r","status":"completed","output":'
            b'[{"type":"function_call","id":"i","name":"f","arguments":"{}"}]}}',
            r"output[0]: missing 'call_id'",
        ),
        (
            b'{"type":"response.output_item.added","response_id":"r","item":{"type":"message"}}',
            "item: missing 'id'",
        ),
        (
            b'{"type":"response.function_call_arguments.done","response_id":"r","item_id":"i","call_id":"c",'
            b'"arguments":"{}","name":5}',
            "'name' must be a string",
        ),
        (b'{"type":"error","error":{"message":"m"}}', "missing 'type'"),
        (b'{"type":"error","error":"boom"}', "'error' must be an object"),
        (b'{"type":"session.created","session":null}', "missing 'session'"),
        (b'{"type":"conversation.item.truncated","item_id":"i"}', "missing 'audio_end_ms'"),
        (
            b'{"type":"conversation.item.input_audio_transcription.completed","item_id":"i"}',
            "missing 'transcript'",
        ),
    ],
)
def test_malformed_frames_never_raise(raw: bytes, reason: str) -> None:
    for dialect in DIALECTS:
        event = ServerEventParser(dialect).parse(raw)
        assert isinstance(event, MalformedEvent), event
        assert reason in event.reason
        assert event.raw_excerpt == raw[:160].decode("utf-8", "replace")


@pytest.mark.parametrize("raw", [None, 42, 3.5, ["x"], {"type": "error"}])
def test_non_text_input_is_malformed_not_an_exception(raw: object) -> None:
    event = ServerEventParser("ga").parse(raw)  # type: ignore[arg-type]
    assert isinstance(event, MalformedEvent)
    assert "not JSON" in event.reason


def test_malformed_excerpt_is_bounded() -> None:
    raw = b'{"type":"response.output_audio.delta","delta":"' + b"A" * 100_000 + b'"}'
    event = ServerEventParser("ga").parse(raw)
    assert isinstance(event, MalformedEvent)
    assert len(event.raw_excerpt) == 160


def test_parser_refuses_unknown_dialect() -> None:
    with pytest.raises(ValueError, match="dialect='realtime'"):
        ServerEventParser("realtime")  # type: ignore[arg-type]
