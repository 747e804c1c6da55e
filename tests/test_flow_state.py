"""FlowState: instructions and tools per stage, transitions by tool result and by key, resuming a call."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime

import pytest
from openai.types.beta.realtime.session_update_event import SessionTool
from openai.types.realtime import RealtimeFunctionTool

from ivr.flows import Flow, parse_flow
from ivr.flows.state import TRANSITION_PARAMETERS, FlowState, KeyAction, StageChange
from ivr.tools.registry import ToolContext, registry_for_flow

DESK = """\
id: desk
instructions: "You answer the phone for {{ business }}. Current stage: {{ stage }}."
variables: {business: Bright Smile}
transfer: {number: "+15550009999"}
timezone: America/Chicago
opening_hours: {mon: ["08:00-17:00"]}
dtmf:
  "0": transfer_to_human
  "9": "stage:reception"
tools:
  - {type: end_call}
  - {type: transfer_to_human}
  - type: booking
    name: appointments
    calendar: desk
    durations: {checkup: 30}
stages:
  - id: reception
    instructions: "Greet the caller of {{ business }} and find out what they need."
    tools: [transfer_to_human, end_call]
    dtmf:
      "1": "stage:booking"
      "0": end_call
    transitions:
      - {to: booking, tool: start_booking, description: "Call when the caller wants an appointment."}
  - id: booking
    instructions: Book with the appointments tool.
    tools: [end_call]
    transitions:
      - {to: wrap_up, tool: appointments}
      - {to: reception, tool: back, description: "Call for questions that are not about appointments."}
  - id: wrap_up
    dtmf: {"2": back}
    transitions:
      - {to: reception, tool: back, description: "Call when the caller has another question."}
"""


def flow_of(text: str = DESK) -> Flow:
    return parse_flow(textwrap.dedent(text), "flows/desk.yaml").flow


def state_of(flow: Flow, stage: str | None = None) -> FlowState:
    context = flow.call_context(
        caller_number="+13125550100",
        called_number="+15551230001",
        call_sid="CA1",
        now=datetime(2026, 3, 2, 15, 0, tzinfo=UTC),
    )
    return FlowState(flow, context, stage=stage)


def names(state: FlowState) -> list[str]:
    return [tool["name"] for tool in state.tools()]


def test_start_stage_instructions_and_tools() -> None:
    state = state_of(flow_of())
    assert state.stage == "reception" and state.context["stage"] == "reception"
    assert state.instructions() == (
        "You answer the phone for Bright Smile. Current stage: reception.\n\n"
        "Greet the caller of Bright Smile and find out what they need."
    )
    assert names(state) == ["end_call", "transfer_to_human", "start_booking"]
    move = state.tools()[-1]
    assert move == {
        "type": "function",
        "name": "start_booking",
        "description": "Call when the caller wants an appointment.",
        "parameters": TRANSITION_PARAMETERS,
    }
    for tool in state.tools():  # what goes into session.update is valid for both Realtime dialects
        for model in (RealtimeFunctionTool, SessionTool):
            assert model.model_validate(tool, strict=True).model_dump(exclude_none=True) == tool
    assert state.allowed("transfer_to_human") and state.allowed("start_booking")
    assert not state.allowed("appointments") and not state.allowed("back")
    assert state.not_allowed_message("appointments") == (
        "'appointments' is not available at this point of the call (stage 'reception'). "
        "Available now: end_call, transfer_to_human, start_booking."
    )


def test_transitions_by_tool_result() -> None:
    state = state_of(flow_of())
    assert state.on_tool_result("transfer_to_human", ok=True) is None
    assert state.on_tool_result("start_booking", ok=False) is None and state.stage == "reception"
    change = state.on_tool_result("start_booking", ok=True)
    assert change == StageChange("reception", "booking", "tool:start_booking")
    assert state.instructions().endswith("Current stage: booking.\n\nBook with the appointments tool.")
    # a declared tool named by a transition is offered, and moves on only when it succeeds
    assert names(state) == ["end_call", "appointments", "back"]
    assert state.on_tool_result("appointments", ok=False) is None and state.stage == "booking"
    assert state.on_tool_result("appointments", ok=True) == StageChange(
        "booking", "wrap_up", "tool:appointments"
    )
    # a stage without a tools list offers every declared tool plus its own moves
    assert names(state) == ["end_call", "transfer_to_human", "appointments", "back"]
    assert state.instructions() == "You answer the phone for Bright Smile. Current stage: wrap_up."
    assert state.tools()[-1]["description"] == "Call when the caller has another question."
    assert state.history == [
        StageChange("reception", "booking", "tool:start_booking"),
        StageChange("booking", "wrap_up", "tool:appointments"),
    ]


def test_transitions_by_key() -> None:
    state = state_of(flow_of())
    assert state.on_key("0") == KeyAction(tool="end_call")  # the stage's key overrides the flow's
    assert state.on_key("5") is None
    action = state.on_key("1")
    assert action == KeyAction(stage_change=StageChange("reception", "booking", "key:1"))
    assert state.stage == "booking"
    assert state.on_key("0") == KeyAction(tool="transfer_to_human")  # the flow's key, in every stage
    assert state.on_key("9") == KeyAction(stage_change=StageChange("booking", "reception", "key:9"))
    assert state.on_key("9") == KeyAction()  # already there: nothing to do
    state.enter("wrap_up", "test")
    assert state.on_key("2") == KeyAction(tool="back")  # runs the move tool; its result moves the call
    assert state.on_tool_result("back", ok=True) == StageChange("wrap_up", "reception", "tool:back")


def test_resume_and_unknown_stages() -> None:
    flow = flow_of()
    assert state_of(flow, stage="wrap_up").stage == "wrap_up"
    with pytest.raises(
        ValueError, match=r"flow 'desk' has no stage 'lobby' \(stages: reception, booking, wrap_up\)"
    ):
        state_of(flow, stage="lobby")
    with pytest.raises(ValueError, match="has no stage 'lobby'"):
        state_of(flow).enter("lobby", "test")


def test_flow_without_stages_is_one_stage_with_every_tool() -> None:
    flow = Flow.model_validate(
        {
            "id": "plain",
            "instructions": "Hi from {{ stage }}.",
            "transfer": {"number": "+15550009999"},
            "dtmf": {"0": "transfer_to_human"},
            "tools": [{"type": "end_call"}, {"type": "transfer_to_human"}],
        }
    )
    state = state_of(flow)
    assert state.stage == "main" and state.instructions() == "Hi from main."
    assert names(state) == ["end_call", "transfer_to_human"]
    assert state.tools() == registry_for_flow(flow).realtime_tools()
    assert state.on_key("0") == KeyAction(tool="transfer_to_human")
    assert state.on_tool_result("end_call", ok=True) is None


class NoCall:
    def request_hangup(self, reason: str) -> None:
        raise AssertionError("unexpected hang-up")

    def request_transfer(self, number: str, announcement: str | None) -> None:
        raise AssertionError("unexpected transfer")


async def test_registry_runs_the_move_tools() -> None:
    flow = flow_of()
    registry = registry_for_flow(flow)
    assert registry.names() == ["end_call", "transfer_to_human", "appointments", "start_booking", "back"]
    ctx = ToolContext(call_sid="CA1", flow=flow, call=NoCall(), caller_number="+1")
    outcome = await registry.dispatch("start_booking", '{"reason": "wants a checkup"}', "fc1", ctx)
    assert outcome.ok and json.loads(outcome.output)["status"] == "ok"
    bad = await registry.dispatch("start_booking", '{"when": "now"}', "fc2", ctx)
    assert bad.error_type == "invalid_arguments"
    # the state built from the registry's definitions offers the same tools as the default
    state = FlowState(flow, state_of(flow).context, definitions=registry.realtime_tools())
    assert state.tools() == state_of(flow).tools()
