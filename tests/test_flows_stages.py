"""Stages in flow YAML: what parses, and every mistake reported with file:line:field and what is expected."""

from __future__ import annotations

import textwrap

import pytest

from ivr.flows import Flow, FlowError, parse_flow

SOURCE = "flows/desk.yaml"

TOOLS = """\
id: desk
instructions: "You answer the phone. Stage: {{ stage }}."
transfer: {number: "+15550009999"}
tools:
  - {type: end_call}
  - {type: transfer_to_human}
"""


def parse(text: str) -> Flow:
    return parse_flow(textwrap.dedent(text), SOURCE).flow


def errors_of(text: str) -> list[str]:
    with pytest.raises(FlowError) as caught:
        parse(text)
    return str(caught.value).splitlines()


def warnings_of(text: str) -> list[str]:
    return [str(w) for w in parse_flow(textwrap.dedent(text), SOURCE).warnings]


def test_stages_parse_with_defaults() -> None:
    flow = parse(
        TOOLS
        + """\
stages:
  - id: reception
    instructions: Find out what the caller needs.
    tools: [transfer_to_human]
    dtmf: {1: "stage:closing", "#": end_call}
    transitions:
      - {to: closing, tool: wrap_up, description: Call when the caller is done.}
  - id: closing
    transitions:
      - {to: reception, tool: transfer_to_human}
"""
    )
    assert flow.start_stage_id == "reception" and flow.start_stage is None
    reception, closing = flow.stages
    assert reception.dtmf == {"1": "stage:closing", "#": "end_call"}
    assert closing.tools is None and closing.instructions is None
    assert flow.transition_tools() == {"wrap_up": "Call when the caller is done."}
    assert flow.stage("closing") is closing and flow.stage("nope") is None
    assert parse_flow(textwrap.dedent(TOOLS), SOURCE).flow.start_stage_id == "main"


def test_every_stage_mistake_names_its_line() -> None:
    text = """\
        id: desk
        instructions: hi
        transfer: {number: "+15550009999"}
        dtmf: {"9": "stage:nowhere"}
        tools:
          - {type: end_call}
          - {type: transfer_to_human}
        start_stage: recepton
        stages:
          - id: reception
            instructions: "Hello {{ stag }}"
            tools: [end_cal, transfer_to_human]
            dtmf: {"1": "stage:bookng", "2": lookup_patient}
            transitions:
              - {to: booking, tool: start_booking}
              - {to: reception, tool: end_call}
              - {to: booking, tool: start_booking, description: again}
          - id: booking
            transitions:
              - {to: closing, tool: done, description: When done.}
          - id: booking
        """
    assert errors_of(text) == [
        "flows/desk.yaml:4: dtmf.9: no stage named 'nowhere' (stages of this flow: reception, booking)",
        "flows/desk.yaml:8: start_stage: no stage named 'recepton' (did you mean 'reception'?) "
        "(stages of this flow: reception, booking)",
        "flows/desk.yaml:11: stages[0].instructions: unknown placeholder {{ stag }} (did you mean 'stage'?) "
        "(use one of: call_sid, called_number, caller_number, flow_id, next_opening, now, open_now, stage, "
        "today; or add it under variables)",
        "flows/desk.yaml:12: stages[0].tools[0]: no tool named 'end_cal' (did you mean 'end_call'?) "
        "(tools of this flow: end_call, transfer_to_human)",
        "flows/desk.yaml:13: stages[0].dtmf.1: no stage named 'bookng' (did you mean 'booking'?) "
        "(stages of this flow: reception, booking)",
        "flows/desk.yaml:13: stages[0].dtmf.2: no tool named 'lookup_patient' "
        "(tools of this flow: end_call, transfer_to_human, start_booking)",
        "flows/desk.yaml:15: stages[0].transitions[0].tool: 'start_booking' is not a declared tool, so it "
        "becomes a new tool that moves to 'booking'; add a description saying when the model should call it",
        "flows/desk.yaml:16: stages[0].transitions[1].to: a transition from 'reception' cannot lead to "
        "itself",
        "flows/desk.yaml:17: stages[0].transitions[2].tool: 'start_booking' already leads out of this stage "
        "(transitions[0])",
        "flows/desk.yaml:20: stages[1].transitions[0].to: no stage named 'closing' "
        "(stages of this flow: reception, booking)",
        "flows/desk.yaml:21: stages[2].id: 'booking' is already the id of stages[1] (stage ids must be "
        "unique)",
    ]


def test_field_level_stage_errors() -> None:
    assert errors_of(TOOLS + "stages:\n  - id: Front Desk\n") == [
        "flows/desk.yaml:8: stages[0].id: 'Front Desk' is not a valid id (use 1-64 letters, digits, '_' or "
        "'-', "
        "e.g. booking)"
    ]
    assert errors_of(TOOLS + "stages:\n  - id: a\n    dtmf: {'1': 'stage:'}\n") == [
        "flows/desk.yaml:9: stages[0].dtmf.1: 'stage:' does not name a stage (write stage:<stage id>, "
        "e.g. stage:booking)"
    ]
    assert errors_of(TOOLS + "dtmf: {'1': 'go now!'}\n") == [
        "flows/desk.yaml:7: dtmf.1: 'go now!' is neither a tool name nor stage:<stage id> "
        "(e.g. transfer_to_human or stage:booking)"
    ]
    assert errors_of(TOOLS + "stages:\n  - id: a\n    transitions: [{tool: x, description: y}]\n") == [
        "flows/desk.yaml:9: stages[0].transitions[0].to: required field is missing "
        "(the id of the stage to move to)"
    ]
    assert errors_of(TOOLS + "start_stage: a\ndtmf: {'1': 'stage:a'}\n") == [
        "flows/desk.yaml:7: start_stage: this flow has no stages (add stages or remove start_stage)",
        "flows/desk.yaml:8: dtmf.1: 'stage:a' moves to a stage, but this flow has no stages",
    ]


def test_unreachable_stages_and_likely_typos_are_warnings() -> None:
    text = (
        TOOLS
        + """\
  - {type: http, name: appointments, description: x, url: "http://127.0.0.1:9/a"}
dtmf: {"0": "stage:help"}
stages:
  - id: start
    transitions:
      - {to: booking, tool: appointmnets, description: Book.}
  - id: booking
  - id: orphan
  - id: help
"""
    )
    flow = parse(text)  # loads despite the warnings
    assert [s.id for s in flow.stages] == ["start", "booking", "orphan", "help"]
    assert warnings_of(text) == [
        "flows/desk.yaml:12: stages[0].transitions[0].tool: 'appointmnets' is not a declared tool "
        "(did you mean 'appointments'?); it becomes a new tool that only moves to 'booking'",
        "flows/desk.yaml:14: stages[2].id: stage 'orphan' cannot be reached from the start stage 'start' "
        "(add a transition or a stage:<id> key that leads to it)",
    ]
    assert [w.severity for w in flow.warnings()] == ["warning", "warning"]


def test_flow_built_in_code_raises_only_for_errors() -> None:
    Flow.model_validate(
        {"id": "x", "instructions": "hi", "stages": [{"id": "a"}, {"id": "island"}]}
    )  # an unreachable stage is a warning only
    with pytest.raises(ValueError, match=r"stages\[1\]\.id: 'a' is already the id of stages\[0\]"):
        Flow.model_validate({"id": "x", "instructions": "hi", "stages": [{"id": "a"}, {"id": "a"}]})
