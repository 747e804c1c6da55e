"""The ``offline:`` sections of flow YAML: load-time errors with their lines, and the shipped flows."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ivr.dialogue import CallTool, Dialogue
from ivr.flows import Flow, FlowError, FlowSet, parse_flow
from ivr.flows.offline import references, split_filters, whole_reference

ROOT = Path(__file__).resolve().parent.parent

# Lines 1-24; tests append an offline section from line 25 on.
BASE = """\
id: t
instructions: hi
timezone: UTC
opening_hours: {mon: "09:00-17:00"}
tools:
  - {type: end_call, name: end_call, description: "Hang up."}
  - type: lookup
    name: find_patient
    description: "Find a patient."
    dataset: patients
    source: patients.csv
    key_field: phone
    fields: [first_name, last_name]
  - {type: booking, name: appointments, description: "Book.", calendar: c, durations: {cleaning: 30}}
stages:
  - id: reception
    tools: [find_patient, end_call]
    transitions: [{to: booking, tool: start_booking, description: "Move to booking."}]
  - id: booking
    tools: [appointments, end_call]
    transitions: [{to: wrap_up, tool: appointments}]
  - id: wrap_up
    tools: [end_call]
    transitions: [{to: reception, tool: something_else, description: "Back."}]
"""


def load(extra: str) -> Flow:
    return parse_flow(BASE + textwrap.dedent(extra), "test.yaml").flow


def errors_of(extra: str) -> list[str]:
    with pytest.raises(FlowError) as caught:
        load(extra)
    return str(caught.value).splitlines()


# --- a valid section -----------------------------------------------------------------------------------


def test_a_complete_offline_section_loads() -> None:
    flow = load(
        """\
        offline:
          speed: 1.1
          reask: ["Pardon?"]
          giveup: {say: "Bye."}
          on_start:
            - {tool: find_patient, arguments: {key: "{{ caller_number }}"}, as: caller, optional: true}
            - {say: "Hi {{ caller.first_name }}.", when: caller.found}
          intents:
            - id: bye
              keywords: [goodbye]
              steps: [{say: "Bye!"}, {end_call: true}]
        """
    )
    offline = flow.offline
    assert offline is not None and offline.voice == "heart" and offline.speed == 1.1
    assert offline.giveup is not None and offline.giveup[0].say == "Bye."  # one step is a list of one
    assert offline.on_start[0].as_ == "caller" and offline.on_start[1].when == "caller.found"
    assert offline.intents[0].steps[1].action == "end_call"


def test_templates_are_paths_with_filters() -> None:
    refs = references("Id {{ booking.booking_id | spell }} at {{start.label}} {{ x|digits|spell }}")
    assert [(r.path, r.filters) for r in refs] == [
        (("booking", "booking_id"), ("spell",)),
        (("start", "label"), ()),
        (("x",), ("digits", "spell")),
    ]
    assert whole_reference(" {{ party_size }} ") is not None
    assert whole_reference("for {{ party_size }}") is None
    assert split_filters("start | time") == (("start",), ("time",))


# --- errors, each with its line --------------------------------------------------------------------------


def test_unknown_tool_in_a_step() -> None:
    assert errors_of(
        """\
        offline:
          intents:
            - id: book
              keywords: [book]
              steps:
                - tool: apointments
        """
    ) == [
        "test.yaml:30: offline.intents[0].steps[0].tool: no tool named 'apointments' (did you mean "
        "'appointments'?) (tools of this flow: end_call, find_patient, appointments)"
    ]


def test_a_move_only_tool_is_not_a_step_tool() -> None:
    (problem,) = errors_of(
        """\
        offline:
          intents:
            - {id: book, keywords: [book], steps: [{tool: start_booking}]}
        """
    )
    assert problem.startswith("test.yaml:27: offline.intents[0].steps[0].tool: no tool named 'start_booking'")
    assert problem.endswith("; to move to a stage write goto: booking")


def test_a_tool_must_be_usable_in_the_stage() -> None:
    (problem,) = errors_of(
        """\
        offline:
          on_start:
            - tool: appointments
              arguments: {action: find_slots, service: cleaning}
        """
    )
    assert problem == (
        "test.yaml:27: offline.on_start[0].tool: tool 'appointments' is not available in stage 'reception' "
        "(its tools: end_call, find_patient, start_booking); add it to that stage's tools or move this to a "
        "stage that has it"
    )


def test_unknown_stage_and_missing_transition() -> None:
    assert errors_of(
        """\
        offline:
          intents:
            - id: go
              keywords: [go]
              steps: [{goto: bookin}]
            - id: done
              keywords: [done]
              steps: [{goto: wrap_up}]
        """
    ) == [
        "test.yaml:29: offline.intents[0].steps[0].goto: no stage named 'bookin' (did you mean 'booking'?) "
        "(stages of this flow: reception, booking, wrap_up)",
        "test.yaml:32: offline.intents[1].steps[0].goto: stage reception has no transition to wrap_up; add "
        "one "
        "with a tool name (transitions: - {to: wrap_up, tool: go_wrap_up, description: ...})",
    ]


def test_goto_through_a_declared_tool_is_refused() -> None:
    flow_text = BASE.replace(
        "    transitions: [{to: wrap_up, tool: appointments}]\n",
        "    transitions: [{to: wrap_up, tool: appointments}]\n"
        "    offline:\n"
        "      intents: [{id: done, keywords: [done], steps: [{goto: wrap_up}]}]\n",
    )
    with pytest.raises(FlowError) as caught:
        parse_flow(flow_text, "test.yaml")
    assert str(caught.value) == (
        "test.yaml:23: stages[1].offline.intents[0].steps[0].goto: stage booking reaches wrap_up only "
        "through "
        "the declared tool 'appointments', which needs its own arguments; add a transition with a new tool "
        "name for goto"
    )


def test_unknown_template_name_with_a_hint() -> None:
    assert errors_of(
        """\
        offline:
          intents:
            - id: book
              keywords: [book]
              slots:
                - {name: day, type: date, ask: "Which day?"}
              confirm: "On {{ dya }}?"
              steps:
                - say: |
                    Booked for {{ day }}
                    at {{ bussiness_name }}.
        """
    ) == [
        "test.yaml:31: offline.intents[0].confirm: {{ dya }}: unknown name 'dya' (did you mean 'day'?) "
        "(known "
        "here: call_sid, called_number, caller_number, day, flow_id, next_opening, now, open_now, stage, "
        "today; names are slots of the intent, results saved with 'as' earlier, flow variables and call "
        "values)",
        "test.yaml:35: offline.intents[0].steps[0].say: {{ bussiness_name }}: unknown name 'bussiness_name' "
        "(known here: call_sid, called_number, caller_number, day, flow_id, next_opening, now, open_now, "
        "stage, "
        "today; names are slots of the intent, results saved with 'as' earlier, flow variables and call "
        "values)",
    ]


def test_results_are_known_only_after_they_are_saved_and_lookup_fields_are_checked() -> None:
    problems = errors_of(
        """\
        offline:
          on_start:
            - say: "Hi {{ caller.first_name }}"
            - {tool: find_patient, arguments: {key: "{{ caller_number }}"}, as: caller}
            - say: "Hi {{ caller.frist_name }}"
              when: caller.fuond
        """
    )
    assert problems[0].startswith(
        "test.yaml:27: offline.on_start[0].say: {{ caller.first_name }}: unknown name"
    )
    assert problems[1:] == [
        "test.yaml:29: offline.on_start[2].say: {{ caller.frist_name }}: 'find_patient' returns no field "
        "'frist_name' (did you mean 'first_name'?) (it returns found, first_name, last_name)",
        "test.yaml:30: offline.on_start[2].when: 'caller.fuond': 'find_patient' returns no field 'fuond' "
        "(did you mean 'found'?) (it returns found, first_name, last_name)",
    ]


def test_choices_only_on_choice_slots_and_offers_need_their_fields() -> None:
    assert errors_of(
        """\
        offline:
          intents:
            - id: book
              keywords: [book]
              slots:
                - name: day
                  type: date
                  ask: "Which day?"
                  choices: {monday: [monday]}
                - name: kind
                  type: choice
                  ask: "Which?"
                - name: start
                  type: offer
                  tool: find_patient
                  ask: "I have {{ options }}."
        """
    ) == [
        "test.yaml:33: offline.intents[0].slots[0].choices: choices only go with type: choice (this slot is "
        "a "
        "date)",
        "test.yaml:34: offline.intents[0].slots[1]: a choice slot needs choices (e.g. choices: {cleaning: "
        "[cleaning, clean]})",
        "test.yaml:37: offline.intents[0].slots[2]: an offer slot needs options, value, label (tool: the "
        "tool "
        "to call, options: where its list is, value/label: the option's fields to keep and to say)",
        "test.yaml:39: offline.intents[0].slots[2].tool: tool 'find_patient' is not available in stage "
        "'booking' (its tools: appointments, end_call); add it to that stage's tools or move this to a stage "
        "that has it",
    ]


def test_arguments_are_checked_against_the_tool() -> None:
    flow_text = BASE.replace(
        "    tools: [appointments, end_call]\n",
        "    tools: [appointments, end_call]\n"
        "    offline:\n"
        "      intents:\n"
        "        - id: book\n"
        "          keywords: [book]\n"
        "          steps:\n"
        "            - tool: appointments\n"
        "              arguments: {action: book, dat: '{{ today }}'}\n",
    )
    with pytest.raises(FlowError) as caught:
        parse_flow(flow_text, "test.yaml")
    assert str(caught.value).startswith(
        "test.yaml:27: stages[1].offline.intents[0].steps[0].arguments.dat: 'dat' is not an argument of "
        "appointments (did you mean 'date'?)"
    )


def test_step_shape_errors() -> None:
    assert errors_of(
        """\
        offline:
          intents:
            - id: book
              keywords: ["yes", no]
              steps:
                - {say: "Hi", end_call: true}
                - {say: "Hi", as: x}
        """
    ) == [
        "test.yaml:28: offline.intents[0].keywords[1]: False was read as a boolean (YAML reads yes, no, on "
        "and "
        'off that way); quote it: "no"',
        "test.yaml:30: offline.intents[0].steps[0]: a step does exactly one thing (found say and end_call); "
        "write one of say:, tool:, goto:, end_call: true or transfer: true per step",
        "test.yaml:31: offline.intents[0].steps[1]: as only go with tool: (this step is a say step)",
    ]


def test_unknown_filters() -> None:
    assert errors_of(
        """\
        offline:
          intents:
            - id: book
              keywords: [book]
              slots:
                - name: start
                  type: offer
                  tool: appointments
                  options: slots
                  value: start
                  label: "start | hour"
              steps:
                - say: "{{ today | shout }}"
        """
    ) == [
        "test.yaml:35: offline.intents[0].slots[0].label: unknown filter 'hour' (filters: spell, digits, "
        "time, "
        "date)",
    ]
    assert errors_of(
        """\
        offline:
          intents:
            - {id: book, keywords: [book], steps: [{say: "{{ today | shout }}"}]}
        """
    ) == [
        "test.yaml:27: offline.intents[0].steps[0].say: unknown filter 'shout' in {{ today | shout }} "
        "(filters: "
        "spell, digits, time, date)",
    ]


def test_nothing_may_follow_an_unconditional_end_and_end_call_needs_its_tool() -> None:
    flow_text = BASE.replace('  - {type: end_call, name: end_call, description: "Hang up."}\n', "")
    flow_text = (
        flow_text.replace("[find_patient, end_call]", "[find_patient]")
        .replace("[appointments, end_call]", "[appointments]")
        .replace("tools: [end_call]", "tools: []")
    )
    text = flow_text + textwrap.dedent(
        """\
        offline:
          intents:
            - id: bye
              keywords: [bye]
              steps:
                - {end_call: true, when: open_now}
                - {say: "Still here."}
                - {goto: booking}
                - {say: "Never said."}
        """
    )
    with pytest.raises(FlowError) as caught:
        parse_flow(text, "test.yaml")
    lines = str(caught.value).splitlines()
    assert lines[0] == (
        "test.yaml:29: offline.intents[0].steps[0].end_call: this flow declares no end_call tool (add one "
        "under "
        "tools: - {type: end_call})"
    )
    assert lines[-1] == (
        "test.yaml:32: offline.intents[0].steps[3]: nothing runs after the goto step (steps[2]); move this "
        "step before it, or give that step a when:/unless:"
    )


def test_out_of_range_and_wrong_voice() -> None:
    assert errors_of(
        """\
        offline:
          voice: coral
          speed: 3
          reask: []
        """
    ) == [
        "test.yaml:26: offline.voice: 'coral' is not allowed (use one of: heart)",
        "test.yaml:27: offline.speed: 3.0 is out of range (use 0.5 to 2.0)",
        "test.yaml:28: offline.reask: must not be empty (give at least one entry, or leave the key out)",
    ]


# --- the shipped flows ---------------------------------------------------------------------------------


def test_every_shipped_flow_loads_with_offline_intents_for_its_stages() -> None:
    flows = FlowSet.load(ROOT / "flows")
    assert sorted(f.id for f in flows) == ["dental-clinic", "general-reception", "restaurant"]
    for flow in flows:
        assert flow.offline is not None, flow.id
        assert flow.offline.voice == "heart"
        if not flow.stages:
            assert flow.offline.intents, flow.id
        for stage in flow.stages:
            assert stage.offline is not None and stage.offline.intents, (flow.id, stage.id)


@pytest.mark.parametrize("flow_id", ["dental-clinic", "general-reception", "restaurant"])
def test_every_shipped_flow_can_say_goodbye_from_every_stage(flow_id: str) -> None:
    flow = FlowSet.load(ROOT / "flows").get(flow_id)
    assert flow is not None
    now = datetime(2026, 3, 5, 16, 0, tzinfo=UTC)
    context = flow.call_context(caller_number="+15550000000", called_number="+1", call_sid="CA", now=now)
    for stage in [s.id for s in flow.stages] or [None]:
        dialogue = Dialogue(flow, stage=stage, context=context, today=now.date())
        actions = dialogue.heard("no thanks goodbye", 0.9)
        assert any(isinstance(a, CallTool) and a.name == "end_call" for a in actions), (
            flow_id,
            stage,
            actions,
        )


def test_unknown_keys_get_hints() -> None:
    assert errors_of(
        """\
        offline:
          on_start:
            - {tool: find_patient, ass: caller}
          intents:
            - {id: x, keywords: [x], slots: [{name: day, type: date, aks: "Which day?"}]}
        """
    ) == [
        "test.yaml:27: offline.on_start[0].ass: unknown key (did you mean 'as'?)",
        "test.yaml:29: offline.intents[0].slots[0].aks: unknown key (did you mean 'ask'?)",
    ]
