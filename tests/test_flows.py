"""Flow YAML: the shipped examples, every kind of error with its exact file:line, routing and rendering."""

from __future__ import annotations

import argparse
import io
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ivr.flows import (
    BUILTIN_FLOW_ID,
    EndCallConfig,
    Flow,
    FlowError,
    FlowSet,
    SemanticVad,
    ServerVad,
    TransferToHumanConfig,
    parse_flow,
)
from ivr.flows import cli as flows_cli

SHIPPED = Path(__file__).resolve().parent.parent / "flows"
SOURCE = "flows/dental.yaml"

MINIMAL = """\
id: dental
instructions: You answer the phone.
"""


def parse(text: str, source: str = SOURCE) -> Flow:
    return parse_flow(textwrap.dedent(text), source).flow


def errors_of(text: str, source: str = SOURCE) -> list[str]:
    with pytest.raises(FlowError) as caught:
        parse(text, source)
    return str(caught.value).splitlines()


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_errors(folder: Path) -> list[str]:
    with pytest.raises(FlowError) as caught:
        FlowSet.load(folder)
    return str(caught.value).splitlines()


# --- the shipped flows ----------------------------------------------------------------------------------


def test_shipped_flows_load_and_route() -> None:
    flows = FlowSet.load(SHIPPED)
    assert sorted(f.id for f in flows) == ["dental-clinic", "general-reception", "restaurant"]
    assert flows.default is not None and flows.default.id == "general-reception"
    assert flows.for_number("+15551230001").id == "dental-clinic"
    assert flows.for_number("+15551230002").id == "restaurant"
    assert flows.for_number("+15559999999").id == "general-reception"
    assert flows.source_of("restaurant") == str(SHIPPED / "restaurant.yaml")


def test_shipped_flows_render_every_spoken_text() -> None:
    now = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)
    for flow in FlowSet.load(SHIPPED):
        context = flow.call_context(
            caller_number="+15550100", called_number="+15551230001", call_sid="CA1", now=now
        )
        texts = [flow.instructions, flow.greeting or "", flow.hold_phrase]
        if flow.transfer and flow.transfer.announcement:
            texts.append(flow.transfer.announcement)
        for text in texts:
            rendered = flow.render(text, context)
            assert "{{" not in rendered and "}}" not in rendered
        assert {"end_call", "transfer_to_human"} <= {t.type for t in flow.tools}
        assert flow.opening_hours is not None and flow.timezone is not None  # every shipped flow has hours


def test_minimal_flow_gets_documented_defaults() -> None:
    flow = parse(MINIMAL)
    assert flow.id == "dental" and flow.default is False and flow.numbers == []
    assert flow.model.name is None and flow.model.dialect == "auto"
    assert flow.model.voice == "marin" and flow.model.speed == 1.0 and flow.model.audio == "pcm"
    assert flow.model.turn_detection == ServerVad(
        threshold=0.5, prefix_padding_ms=300, silence_duration_ms=500
    )
    assert flow.model.transcription is not None and flow.model.transcription.model == "gpt-4o-mini-transcribe"
    assert flow.model.max_output_tokens == "inf"
    assert flow.limits.max_call_seconds == 900 and flow.limits.max_tool_calls == 20
    assert flow.hold_phrase == "One moment please."
    assert flow.tools == [] and flow.transfer is None and flow.greeting is None


def test_full_example_from_the_spec_parses() -> None:
    flow = parse(
        """\
        id: dental-clinic
        default: false
        numbers: ["+1 555-123-0001"]
        model:
          name: gpt-realtime
          dialect: auto
          voice: marin
          speed: 1.0
          audio: pcmu
          turn_detection: {type: semantic_vad, eagerness: low}
          transcription: null
          max_output_tokens: 800
        greeting: "Thanks for calling {{ business_name }}."
        instructions: |
          You are the phone assistant of {{ business_name }}. The caller's number is {{ caller_number }}.
        variables: {business_name: Bright Smile Dental, founded: 1998, opened: 2024-05-01}
        transfer: {number: "+15550009999", announcement: "Connecting you to a team member now."}
        hold_phrase: "One moment please."
        dtmf: {0: transfer_to_human, "#": end_call}
        tools:
          - {type: end_call, name: end_call, description: "Hang up after saying goodbye."}
          - {type: transfer_to_human, description: "To a person.", number: "+15550001234"}
        limits: {max_call_seconds: 600, max_tool_calls: 5}
        """
    )
    assert flow.numbers == ["+15551230001"]
    assert flow.model.audio == "pcmu" and flow.model.transcription is None
    assert flow.model.turn_detection == SemanticVad(eagerness="low")
    assert flow.model.max_output_tokens == 800
    assert flow.variables == {
        "business_name": "Bright Smile Dental",
        "founded": "1998",
        "opened": "2024-05-01",
    }
    assert flow.dtmf == {"0": "transfer_to_human", "#": "end_call"}
    assert isinstance(flow.tools[0], EndCallConfig)
    assert isinstance(flow.tools[1], TransferToHumanConfig) and flow.tools[1].number == "+15550001234"
    assert flow.transfer_number(flow.tools[1]) == "+15550001234"
    assert flow.transfer_number() == "+15550009999"


@pytest.mark.parametrize(("written", "expected"), [("inf", "inf"), (".inf", "inf"), ("1", 1), ("4096", 4096)])
def test_max_output_tokens_accepts_inf_and_the_range(written: str, expected: object) -> None:
    assert parse(MINIMAL + f"model: {{max_output_tokens: {written}}}\n").model.max_output_tokens == expected


# --- errors name the file, the line and the field --------------------------------------------------------


def test_out_of_range_names_file_line_field_and_range() -> None:
    text = """\
        id: dental
        instructions: hi
        numbers: ["+15551230001"]
        model:
          name: gpt-realtime
          voice: marin
          speed: 3.0
        """
    assert errors_of(text) == ["flows/dental.yaml:7: model.speed: 3.0 is out of range (use 0.25 to 1.5)"]


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("model:\n  speed: fast\n", "flows/dental.yaml:4: model.speed: 'fast' is text, expected a number"),
        (
            "default: yes please\n",
            "flows/dental.yaml:3: default: 'yes please' is text, expected true or false",
        ),
        (
            "limits: {max_tool_calls: '5'}\n",
            "flows/dental.yaml:3: limits.max_tool_calls: '5' is text, expected a whole number",
        ),
        (
            "model: gpt-realtime\n",
            "flows/dental.yaml:3: model: 'gpt-realtime' is text, expected a mapping (key: value)",
        ),
        (
            "numbers: '+15551230001'\n",
            "flows/dental.yaml:3: numbers: '+15551230001' is text, expected a list",
        ),
        ("greeting: [hi]\n", "flows/dental.yaml:3: greeting: ['hi'] is a list, expected text"),
    ],
)
def test_wrong_type(snippet: str, expected: str) -> None:
    assert errors_of(MINIMAL + snippet) == [expected]


def test_empty_required_value_says_no_value_given() -> None:
    assert errors_of("id: dental\ninstructions:\n") == [
        "flows/dental.yaml:2: instructions: no value given (expected text)"
    ]


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("model:\n  voise: marin\n", "flows/dental.yaml:4: model.voise: unknown key (did you mean 'voice'?)"),
        ("instructons: hi\n", "flows/dental.yaml:3: instructons: unknown key (did you mean 'instructions'?)"),
        (
            "tools:\n  - type: end_call\n    descripton: bye\n",
            "flows/dental.yaml:5: tools[0].descripton: unknown key (did you mean 'description'?)",
        ),
        (
            "model:\n  turn_detection:\n    type: server_vad\n    eagerness: low\n",
            "flows/dental.yaml:6: model.turn_detection.eagerness: unknown key "
            "(eagerness belongs to type semantic_vad)",
        ),
        (
            "limits: {zzz: 1}\n",
            "flows/dental.yaml:3: limits.zzz: unknown key (allowed keys: max_call_seconds, max_tool_calls)",
        ),
    ],
)
def test_unknown_key_with_suggestion(snippet: str, expected: str) -> None:
    assert errors_of(MINIMAL + snippet) == [expected]


def test_missing_required_fields() -> None:
    assert errors_of("id: dental\n") == [
        "flows/dental.yaml:1: instructions: required field is missing (the system prompt for the model)"
    ]
    assert errors_of(MINIMAL + "variables: {}\ntransfer:\n  announcement: Connecting you.\n") == [
        "flows/dental.yaml:4: transfer.number: required field is missing "
        '(the E.164 number to transfer to, e.g. "+15550009999")'
    ]


def test_bad_yaml_syntax_gives_line_and_column() -> None:
    assert errors_of("id: dental\ninstructions: hi\n  numbers: x\n") == [
        "flows/dental.yaml:3:10: YAML syntax error: mapping values are not allowed here"
    ]
    (line,) = errors_of('id: dental\ninstructions: "unterminated\n')
    assert line.startswith("flows/dental.yaml:3:1: YAML syntax error: found unexpected end of stream")
    assert "(while scanning a quoted scalar at line 2)" in line


def test_duplicate_key_in_one_file() -> None:
    assert errors_of(MINIMAL + "model:\n  voice: ash\n  voice: coral\n") == [
        "flows/dental.yaml:5: model.voice: duplicate key (first given at line 4; remove one of them)"
    ]


def test_empty_file_and_non_mapping_top_level() -> None:
    assert errors_of("") == [
        "flows/dental.yaml:1: the file is empty (expected a mapping with at least id and instructions)"
    ]
    assert errors_of("- id: dental\n") == [
        "flows/dental.yaml:1: the top level is a list, expected a mapping (id: ..., instructions: ...)"
    ]


def test_literal_choice_with_did_you_mean() -> None:
    assert errors_of(MINIMAL + "model: {voice: marine}\n") == [
        "flows/dental.yaml:3: model.voice: 'marine' is not allowed (did you mean 'marin'? "
        "use one of: alloy, ash, ballad, coral, echo, sage, shimmer, verse, marin, cedar)"
    ]
    assert errors_of(MINIMAL + "model: {audio: ulaw}\n") == [
        "flows/dental.yaml:3: model.audio: 'ulaw' is not allowed (use one of: pcm, pcmu)"
    ]


def test_tool_type_errors() -> None:
    text = MINIMAL + "tools:\n  - type: hangup\n  - name: bye\n  - end_call\n"
    assert errors_of(text) == [
        "flows/dental.yaml:4: tools[0].type: unknown type 'hangup' "
        "(use one of: end_call, transfer_to_human, booking, lookup, http)",
        "flows/dental.yaml:5: tools[1]: missing 'type' "
        "(use one of: end_call, transfer_to_human, booking, lookup, http)",
        "flows/dental.yaml:6: tools[2]: 'end_call' is text, expected a mapping with a type "
        "(e.g. {type: end_call})",
    ]


def test_phone_numbers() -> None:
    assert errors_of(MINIMAL + "numbers: [+15551230001, '555-0100']\n") == [
        "flows/dental.yaml:3: numbers[0]: 15551230001 was read as a number; quote it so YAML keeps the '+' "
        '(e.g. "+15551230001")',
        "flows/dental.yaml:3: numbers[1]: '555-0100' is not an E.164 number (use + country code and number, "
        'e.g. "+15551230001")',
    ]
    assert errors_of(MINIMAL + "numbers:\n  - '+15551230001'\n  - '+1 555 123 0001'\n") == [
        "flows/dental.yaml:5: numbers[1]: +15551230001 is listed twice (also numbers[0])"
    ]


def test_unknown_placeholder_names_placeholder_file_and_line() -> None:
    text = """\
        id: dental
        greeting: Welcome to {{ business_name }}.
        instructions: |
          You work for {{ business_name }}.
          The caller is {{ caller_numbr }}.
        variables:
          business_name: Bright Smile
        """
    assert errors_of(text) == [
        "flows/dental.yaml:5: instructions: unknown placeholder {{ caller_numbr }} "
        "(did you mean 'caller_number'?) "
        "(use one of: business_name, call_sid, called_number, caller_number, flow_id, next_opening, now, "
        "open_now, stage, today; or add it under variables)"
    ]


def test_placeholder_in_greeting_without_variable_and_malformed_placeholder() -> None:
    text = """\
        id: dental
        greeting: "Welcome to {{ clinic }}."
        instructions: |
          Line one.
          Line two {{ not valid }} here.
        """
    lines = errors_of(text)
    assert lines[0].startswith(
        "flows/dental.yaml:2: greeting: unknown placeholder {{ clinic }} (use one of: "
    )
    assert (
        lines[1]
        == "flows/dental.yaml:5: instructions: malformed placeholder '{{ not valid }}' (write {{ name }})"
    )


def test_cross_field_checks_in_one_file() -> None:
    text = """\
        id: dental
        instructions: hi
        dtmf:
          "0": transfer_to_humn
          "5": end_call
        tools:
          - type: end_call
          - type: end_call
          - type: transfer_to_human
        model: {name: gpt-4o-realtime-preview, voice: cedar}
        variables: {caller_number: "+1"}
        """
    assert errors_of(text) == [
        "flows/dental.yaml:11: variables.caller_number: 'caller_number' is filled in at call time "
        "and cannot be set here (pick another name)",
    ]
    text = text.replace('variables: {caller_number: "+1"}\n', "")
    assert errors_of(text) == [
        "flows/dental.yaml:4: dtmf.0: no tool named 'transfer_to_humn' (did you mean 'transfer_to_human'?) "
        "(tools of this flow: end_call, transfer_to_human)",
        "flows/dental.yaml:8: tools[1].name: 'end_call' is already used by tools[0] (names must be unique)",
        "flows/dental.yaml:9: tools[2]: transfer_to_human has no number to call (set number here or add "
        "transfer.number)",
        "flows/dental.yaml:10: model.voice: 'cedar' needs a gpt-realtime model (GA dialect); "
        "the beta dialect offers alloy, ash, ballad, coral, echo, sage, shimmer, verse",
    ]


def test_flow_built_in_code_is_validated_too() -> None:
    with pytest.raises(ValueError, match=r"unknown placeholder \{\{ nope \}\}"):
        Flow(id="x", instructions="Hi {{ nope }}")
    with pytest.raises(ValueError, match="out of range"):
        Flow.model_validate({"id": "x", "instructions": "hi", "model": {"speed": 0.1}})


def test_non_utf8_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_bytes(b"id: x\ninstructions: caf\xe9\n")
    (line,) = load_errors(tmp_path)
    assert line == f"{tmp_path / 'bad.yaml'}: is not UTF-8 text (invalid continuation byte at byte 23)"


# --- folders: rules across files ------------------------------------------------------------------------


def test_duplicate_number_across_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", 'id: a\ninstructions: hi\nnumbers: ["+15551230001"]\n')
    write(
        tmp_path, "b.yaml", 'id: b\ninstructions: hi\nnumbers:\n  - "+15550000000"\n  - "+1 555 123 0001"\n'
    )
    assert load_errors(tmp_path) == [
        f"{tmp_path / 'b.yaml'}:5: numbers[1]: +15551230001 is already answered by flow 'a' "
        f"({tmp_path / 'a.yaml'}:3); a number may belong to one flow only"
    ]


def test_two_defaults_and_duplicate_ids(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "id: main\ndefault: true\ninstructions: hi\n")
    write(tmp_path, "b.yml", "instructions: hi\nid: main\ndefault: true\n")
    assert load_errors(tmp_path) == [
        f"{tmp_path / 'b.yml'}:2: id: 'main' is already the id of the flow in {tmp_path / 'a.yaml'}:1 "
        "(ids must be unique)",
        f"{tmp_path / 'b.yml'}:3: default: flow 'main' ({tmp_path / 'a.yaml'}:2) is already the default "
        "(only one flow may have default: true)",
    ]


def test_folder_collects_every_problem_from_every_file(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "id: a\ninstructions: hi\nmodel: {speed: 9}\n")
    write(tmp_path, "b.yaml", "id: B\ninstructions: hi\n")
    write(tmp_path, "c.yaml", "id: c\ninstructions: hi\n")
    write(tmp_path, "notes.txt", "not a flow")
    write(tmp_path, ".hidden.yaml", "not: [valid")
    with pytest.raises(FlowError) as caught:
        FlowSet.load(tmp_path)
    assert [(Path(p.source).name, p.line, p.field) for p in caught.value.problems] == [
        ("a.yaml", 3, "model.speed"),
        ("b.yaml", 1, "id"),
    ]


def test_code_built_flowset_checks_conflicts() -> None:
    a = Flow(id="a", instructions="hi", numbers=["+15551230001"])
    b = Flow(id="b", instructions="hi", numbers=["+15551230001"])
    with pytest.raises(
        FlowError, match=r"flow 'b': numbers\[0\]: \+15551230001 is already answered by flow 'a'"
    ):
        FlowSet([a, b])


# --- routing --------------------------------------------------------------------------------------------


def test_routing_exact_match_normalised_and_default(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", 'id: a\ninstructions: hi\nnumbers: ["+15551230001"]\n')
    write(tmp_path, "main.yaml", "id: main\ndefault: true\ninstructions: hi\n")
    flows = FlowSet.load(tmp_path)
    assert flows.for_number("+15551230001").id == "a"
    assert flows.for_number("+1 555-123-0001").id == "a"
    assert flows.for_number("+15551230009").id == "main"
    assert flows.for_number("client:alice").id == "main"
    assert len(flows) == 2 and flows.get("a") is not None and flows.get("zzz") is None


def test_routing_without_default_uses_builtin(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", 'id: a\ninstructions: hi\nnumbers: ["+15551230001"]\n')
    flows = FlowSet.load(tmp_path)
    assert flows.default is None
    fallback = flows.for_number("+15550000000")
    assert fallback.id == BUILTIN_FLOW_ID
    assert [t.type for t in fallback.tools] == ["end_call"]


def test_missing_folder_gives_only_the_builtin(tmp_path: Path) -> None:
    flows = FlowSet.load(tmp_path / "nope")
    assert len(flows) == 0
    assert flows.for_number("+15551230001").id == BUILTIN_FLOW_ID


def test_single_file_can_be_loaded(tmp_path: Path) -> None:
    path = write(tmp_path, "one.yaml", 'id: one\ninstructions: hi\nnumbers: ["+15551230001"]\n')
    assert FlowSet.load(path).for_number("+15551230001").id == "one"


def test_builtin_default_offers_transfer_only_with_a_number() -> None:
    plain = FlowSet.builtin_default()
    assert [t.type for t in plain.tools] == ["end_call"]
    assert "transfer_to_human" not in plain.instructions
    with_transfer = FlowSet.builtin_default(transfer_number="+15550009999")
    assert [t.type for t in with_transfer.tools] == ["end_call", "transfer_to_human"]
    assert with_transfer.transfer_number() == "+15550009999"
    assert "transfer_to_human" in with_transfer.instructions


# --- rendering ------------------------------------------------------------------------------------------


def test_render_fills_placeholders_from_the_call_context() -> None:
    flow = parse(
        """\
        id: dental
        timezone: America/New_York
        variables: {business_name: Bright Smile, greeting_name: there}
        instructions: >-
          {{business_name}} {{ greeting_name }} {{ caller_number }} {{ called_number }}
          {{ call_sid }} {{ flow_id }} {{ today }} {{ now }}
        """
    )
    context = flow.call_context(
        caller_number="+15550100",
        called_number="+15551230001",
        call_sid="CA123",
        now=datetime(2026, 1, 1, 3, 5, tzinfo=UTC),  # 22:05 the day before in New York
        parameters={"greeting_name": "Sam", "caller_number": "+1999 spoofed"},
    )
    assert flow.render(flow.instructions, context) == (
        "Bright Smile Sam +15550100 +15551230001 CA123 dental 2025-12-31 22:05"
    )


def test_render_without_a_value_is_a_clear_error() -> None:
    flow = parse(MINIMAL)
    with pytest.raises(FlowError, match=r"flow 'dental': no value for placeholder \{\{ who \}\}; known: a"):
        flow.render("Hello {{ who }}", {"a": "1"})


def test_naive_now_is_read_as_utc() -> None:
    flow = parse(MINIMAL)
    context = flow.call_context(
        caller_number="+1", called_number="+2", call_sid="CA", now=datetime(2026, 5, 4, 23, 59)
    )
    assert (context["today"], context["now"]) == ("2026-05-04", "23:59")


def test_bad_timezone() -> None:
    assert errors_of(MINIMAL + "timezone: Mars/Base\n") == [
        "flows/dental.yaml:3: timezone: 'Mars/Base' is not a known time zone "
        "(use an IANA name such as Europe/Berlin)"
    ]


# --- CLI ------------------------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ivr")
    flows_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_check_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["flows", "check", str(SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("OK: 3 flows")
    assert f"dental-clinic  {SHIPPED / 'dental-clinic.yaml'}" in out
    assert "  numbers  +15551230001" in out
    assert "voice coral, audio pcm" in out
    assert (
        "  tools    end_call, transfer_to_human -> +15550009999, find_patient (lookup), "
        "appointments (booking) [approval when action in ('book', 'cancel')]"
    ) in out
    assert "general-reception (default)" in out


def test_cli_check_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, "a.yaml", "id: a\ninstructions: hi\nmodel: {speed: 9}\n")
    assert run_cli(["flows", "check", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"{tmp_path / 'a.yaml'}:3: model.speed: 9.0 is out of range (use 0.25 to 1.5)\nFAILED: 1 problem\n"
    )


def test_cli_check_defaults_to_ivr_flows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "x.yaml", "id: x\ninstructions: hi\n")
    monkeypatch.setenv("IVR_FLOWS", str(tmp_path))
    assert run_cli(["flows", "check"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"x  {tmp_path / 'x.yaml'}\n")
    assert "note: no flow has default: true" in out and out.endswith("OK: 1 flow\n")


def test_cli_check_missing_path(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert flows_cli.check(tmp_path / "missing", out=out, err=err) == 1
    assert "does not exist" in err.getvalue() and out.getvalue() == ""


def test_yaml_aliases_cannot_hang_or_crash_the_loader() -> None:
    assert errors_of(MINIMAL + "numbers: &a [*a]\n") == [
        "flows/dental.yaml:3: numbers[0]: [[[...]]] is a list, expected text"
    ]
    nested = "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))
    lines = errors_of(MINIMAL + "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + nested + "numbers: [*a8]\n")
    # 9**9 values once expanded: refused before validation, at the anchor that is too big (H8, fuzzing)
    assert len(lines) == 1 and lines[0].startswith("flows/dental.yaml:8: YAML aliases expand this flow")


def test_merge_keys_still_report_lines() -> None:
    text = MINIMAL + "model:\n  <<: {voice: ash, speed: 1.2}\n  speed: 3\n"
    assert errors_of(text) == ["flows/dental.yaml:5: model.speed: 3.0 is out of range (use 0.25 to 1.5)"]


def test_cli_check_shows_stages_hours_approvals_and_datasets() -> None:
    out, err = io.StringIO(), io.StringIO()
    monday_0930_chicago = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)
    assert flows_cli.check(SHIPPED, out=out, err=err, now=monday_0930_chicago) == 0
    text = out.getvalue()
    assert err.getvalue() == ""
    assert (
        "  stage    reception (start): tools end_call, transfer_to_human, find_patient, start_booking; "
        "next booking via start_booking; keys 1 -> stage:booking"
    ) in text
    assert "  hours    today (Monday 2026-03-02, America/Chicago): 08:00-12:00, 13:00-18:00; open now" in text
    assert (
        "  hours    today (Monday 2026-03-02, America/New_York): closed; closed now, opens tomorrow at noon"
    ) in text
    assert "reservations (booking) [approval when action == 'book' and party_size > 8]" in text
    assert "           after hours: message_and_hangup" in text
    patients = next(line for line in text.splitlines() if line.startswith("dataset  patients <- "))
    assert patients.endswith(
        "flows/data/patients.csv by phone (phone): 20 rows, fields first_name, last_name, last_visit, dentist"
    )
    assert "warning" not in text


def test_cli_check_prints_warnings_and_dataset_problems(tmp_path: Path) -> None:
    write(
        tmp_path,
        "desk.yaml",
        """\
        id: desk
        instructions: hi
        tools:
          - {type: lookup, name: find, description: Find., dataset: people, source: people.csv,
             key_field: phone, fields: [name]}
        stages:
          - id: start
          - id: island
        """,
    )
    (tmp_path / "people.csv").write_text("telephone,name\n+1,A\n", encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    assert flows_cli.check(tmp_path, out=out, err=err) == 0  # warnings do not fail the check
    lines = out.getvalue().splitlines()
    assert f"dataset  people <- {tmp_path / 'people.csv'} by phone (none): PROBLEM" in lines
    assert (
        f"warning: {tmp_path / 'people.csv'}:1: column 'phone' not found "
        "(the flow's key_field/fields name it); columns are: telephone, name"
    ) in lines
    assert (
        f"warning: {tmp_path / 'desk.yaml'}:8: stages[1].id: stage 'island' cannot be reached from the start "
        "stage 'start' (add a transition or a stage:<id> key that leads to it)"
    ) in lines


def test_shipped_approval_policies_gate_only_what_they_should() -> None:
    flows = FlowSet.load(SHIPPED)
    dental, restaurant = flows.get("dental-clinic"), flows.get("restaurant")
    assert dental is not None and restaurant is not None
    appointments, reservations = dental.tool("appointments"), restaurant.tool("reservations")
    assert appointments is not None and reservations is not None
    assert appointments.approval.requires_approval({"action": "cancel", "booking_id": "ABC234"})
    assert not appointments.approval.requires_approval({"action": "find_slots", "service": "checkup"})
    assert reservations.approval.requires_approval({"action": "book", "party_size": 9})
    assert not reservations.approval.requires_approval({"action": "book", "party_size": 8})
    assert not reservations.approval.requires_approval({"action": "find_slots", "service": "dinner"})
    assert reservations.approval.requires_approval({"action": "book"})  # fails closed without a size
