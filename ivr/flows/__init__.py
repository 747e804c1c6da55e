"""Call flows: YAML files that say what each phone number does, validated into typed models.

Typical use::

    flows = FlowSet.load(settings.flows_dir)
    flow = flows.for_number(twilio_to)
    context = flow.call_context(caller_number=..., called_number=..., call_sid=..., now=...)
    closed = after_hours_decision(flow, now)          # None while open; else what to do
    state = FlowState(flow, context)                  # stages: instructions/tools now, transitions
    session_update(state.instructions(), state.tools())
"""

from ivr.flows.errors import FlowError, Problem
from ivr.flows.flowset import BUILTIN_FLOW_ID, FlowSet
from ivr.flows.hours import AfterHours, OpeningHours, after_hours_decision
from ivr.flows.loader import LoadedFlow, load_flow, parse_flow
from ivr.flows.model import (
    BUILTIN_PLACEHOLDERS,
    IMPLICIT_STAGE,
    VOICES,
    BookingConfig,
    EndCallConfig,
    Flow,
    HttpConfig,
    Limits,
    LookupConfig,
    ModelSettings,
    SemanticVad,
    ServerVad,
    Stage,
    ToolConfig,
    Transcription,
    Transfer,
    TransferToHumanConfig,
    Transition,
    dialect_for,
    normalise_number,
)
from ivr.flows.state import FlowState, KeyAction, StageChange

__all__ = [
    "BUILTIN_FLOW_ID",
    "BUILTIN_PLACEHOLDERS",
    "IMPLICIT_STAGE",
    "VOICES",
    "AfterHours",
    "BookingConfig",
    "EndCallConfig",
    "Flow",
    "FlowError",
    "FlowSet",
    "FlowState",
    "HttpConfig",
    "KeyAction",
    "Limits",
    "LoadedFlow",
    "LookupConfig",
    "ModelSettings",
    "OpeningHours",
    "Problem",
    "SemanticVad",
    "ServerVad",
    "Stage",
    "StageChange",
    "ToolConfig",
    "Transcription",
    "Transfer",
    "TransferToHumanConfig",
    "Transition",
    "after_hours_decision",
    "dialect_for",
    "load_flow",
    "normalise_number",
    "parse_flow",
]
