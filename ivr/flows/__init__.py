"""Call flows: YAML files that say what each phone number does, validated into typed models.

Typical use::

    flows = FlowSet.load(settings.flows_dir)
    flow = flows.for_number(twilio_to)
    context = flow.call_context(caller_number=..., called_number=..., call_sid=..., now=...)
    prompt = flow.render(flow.instructions, context)
"""

from ivr.flows.errors import FlowError, Problem
from ivr.flows.flowset import BUILTIN_FLOW_ID, FlowSet
from ivr.flows.loader import LoadedFlow, load_flow, parse_flow
from ivr.flows.model import (
    BUILTIN_PLACEHOLDERS,
    VOICES,
    EndCallConfig,
    Flow,
    Limits,
    ModelSettings,
    SemanticVad,
    ServerVad,
    ToolConfig,
    Transcription,
    Transfer,
    TransferToHumanConfig,
    dialect_for,
    normalise_number,
)

__all__ = [
    "BUILTIN_FLOW_ID",
    "BUILTIN_PLACEHOLDERS",
    "VOICES",
    "EndCallConfig",
    "Flow",
    "FlowError",
    "FlowSet",
    "Limits",
    "LoadedFlow",
    "ModelSettings",
    "Problem",
    "SemanticVad",
    "ServerVad",
    "ToolConfig",
    "Transcription",
    "Transfer",
    "TransferToHumanConfig",
    "dialect_for",
    "load_flow",
    "normalise_number",
    "parse_flow",
]
