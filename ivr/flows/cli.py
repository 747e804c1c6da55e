"""``ivr flows check [PATH]``: validate flow files before a deploy and show what each number will do.

Registered into the top-level ``ivr`` parser by :func:`register`; each command's ``func`` returns the
process exit code (0 valid, 1 problems found, 2 unusable configuration).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from ivr.flows.compat import DIALECT_SETTING, MODEL_SETTING
from ivr.flows.errors import FlowError, Problem
from ivr.flows.flowset import FlowSet, missing_flows
from ivr.flows.hours import DAY_NAMES, describe_opening
from ivr.flows.model import Flow, LookupConfig, ToolConfig, TransferToHumanConfig
from ivr.flows.state import FlowState
from ivr.help_format import ParagraphHelpFormatter
from ivr.settings import DEFAULT_REALTIME_MODEL, Settings, SettingsError

#: ``ivr flows --help``, written for a person.
DESCRIPTION = """\
Work with call-flow files (the YAML that says what each phone number does).

  ivr flows check [PATH]
      validate the flows and show, per flow, its numbers, stages, today's
      hours, tools and approval rules"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``flows check`` to the ``ivr`` command line."""
    flows = subparsers.add_parser(
        "flows",
        help="work with call-flow files",
        description=DESCRIPTION,
        formatter_class=ParagraphHelpFormatter,
    )
    commands = flows.add_subparsers(dest="flows_command", metavar="COMMAND", required=True)
    check = commands.add_parser(
        "check",
        help="validate flow files and print a summary",
        description="Validate every flow file in a folder (or one file) and print a summary per flow.",
    )
    check.add_argument(
        "path",
        nargs="?",
        type=Path,
        default=None,
        help="folder of *.yaml flows, or one flow file (default: $IVR_FLOWS, else flows/)",
    )
    check.add_argument(
        "--model",
        default=None,
        help="check every flow without model.name against this model (default: $IVR_REALTIME_MODEL, "
        "else gpt-realtime)",
    )
    check.add_argument(
        "--dialect",
        choices=("auto", "ga", "beta"),
        default=None,
        help="force the Realtime dialect, as IVR_REALTIME_DIALECT does (default: $IVR_REALTIME_DIALECT, "
        "else auto: from the model name)",
    )
    check.set_defaults(func=check_command)


@dataclass(frozen=True)
class ModelChoice:
    """The deployment's model and dialect the flows are checked against, and what set them (for messages)."""

    name: str = DEFAULT_REALTIME_MODEL
    dialect: str = "auto"
    name_from: str = MODEL_SETTING
    dialect_from: str = DIALECT_SETTING


def check_command(args: argparse.Namespace) -> int:
    """Entry point for ``ivr flows check``; resolves the default path from the settings."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path: Path = args.path if args.path is not None else settings.flows_dir
    model = ModelChoice(
        settings.realtime_model if args.model is None else args.model,
        settings.realtime_dialect if args.dialect is None else args.dialect,
        MODEL_SETTING if args.model is None else "--model",
        DIALECT_SETTING if args.dialect is None else "--dialect",
    )
    return check(path, out=sys.stdout, err=sys.stderr, model=model)


def check(
    path: Path,
    *,
    out: TextIO,
    err: TextIO,
    now: datetime | None = None,
    model: ModelChoice | None = None,
) -> int:
    """Validate the flows at ``path``; print a summary to ``out`` or the problems to ``err``.

    ``now`` (default: the current time) is the moment "today's hours" and "open now" refer to; ``model``
    (default: gpt-realtime, dialect from its name) the deployment model each flow is checked against.
    """
    now = now or datetime.now(UTC)
    model = model or ModelChoice()
    missing = missing_flows(path)
    if missing is not None:
        print(f"error: {missing} (give a folder of flow files or one .yaml file)", file=err)
        return 1
    try:
        flows = FlowSet.load(path)
    except FlowError as exc:
        return _failed(exc.problems, err)
    errors, model_warnings = flows.model_problems(
        model.name, model.dialect, model_source=model.name_from, dialect_source=model.dialect_from
    )
    if errors:
        return _failed(errors, err)
    for flow in flows:
        print(summary(flow, flows.source_of(flow.id) or "", now=now), file=out)
    for line in dataset_lines(flows):
        print(line, file=out)
    for warning in [*flows.warnings(), *model_warnings]:
        print(f"warning: {warning}", file=out)
    if flows.default is None:
        print("note: no flow has default: true; other numbers get the built-in assistant", file=out)
    print(f"OK: {len(flows)} flow{'s' if len(flows) != 1 else ''}", file=out)
    return 0


def _failed(problems: Sequence[Problem], err: TextIO) -> int:
    for problem in problems:
        print(problem, file=err)
    count = len(problems)
    print(f"FAILED: {count} problem{'s' if count != 1 else ''}", file=err)
    return 1


def summary(flow: Flow, source: str, *, now: datetime | None = None) -> str:
    """A few readable lines saying what a flow does."""
    now = now or datetime.now(UTC)
    model = flow.model
    turns = model.turn_detection
    lines = [
        f"{flow.id}{' (default)' if flow.default else ''}  {source}",
        f"  numbers  {', '.join(flow.numbers) or '-'}",
        f"  model    {model.name or 'default model'} (dialect {model.dialect}), voice {model.voice}, "
        f"audio {model.audio}, speed {model.speed}, turns {turns.type}",
    ]
    lines.append(f"  tools    {', '.join(_tool_text(flow, tool) for tool in flow.tools) or '-'}")
    if flow.dtmf:
        lines.append("  keypad   " + ", ".join(f"{key} -> {name}" for key, name in sorted(flow.dtmf.items())))
    lines.extend(_stage_lines(flow))
    lines.extend(_hours_lines(flow, now))
    return "\n".join(lines)


def _tool_text(flow: Flow, tool: ToolConfig) -> str:
    text = tool.name if tool.name == tool.type else f"{tool.name} ({tool.type})"
    if isinstance(tool, TransferToHumanConfig):
        text += f" -> {flow.transfer_number(tool)}"
    policy = tool.approval
    if policy.required == "always":
        text += " [approval: always]"
    elif policy.required == "when":
        text += f" [approval when {policy.when}]"
    return text


def _stage_lines(flow: Flow) -> list[str]:
    if not flow.stages:
        return []
    lines = []
    for stage in flow.stages:
        state = FlowState(flow, {}, stage=stage.id, definitions=[])
        start = " (start)" if stage.id == flow.start_stage_id else ""
        moves = [f"{t.to} via {t.tool}" for t in stage.transitions]
        keys = [f"{key} -> {target}" for key, target in sorted(stage.dtmf.items())]
        text = f"  stage    {stage.id}{start}: tools {', '.join(state.tool_names()) or '-'}"
        if moves:
            text += f"; next {', '.join(moves)}"
        if keys:
            text += f"; keys {', '.join(keys)}"
        lines.append(text)
    return lines


def _hours_lines(flow: Flow, now: datetime) -> list[str]:
    hours = flow.opening_hours
    if hours is None:
        return ["  hours    always open"]
    local = now.astimezone(hours.zone)
    today = local.date()
    state = (
        "open now"
        if hours.is_open(now)
        else f"closed now, opens {describe_opening(hours.next_opening(now), now)}"
    )
    return [
        f"  hours    today ({DAY_NAMES[today.weekday()]} {today.isoformat()}, {hours.zone}): "
        f"{hours.describe_day(today)}; {state}",
        f"           week: {hours.describe_week()}"
        + (f"; closed {', '.join(d.isoformat() for d in hours.closed_dates)}" if hours.closed_dates else ""),
        f"           after hours: {flow.after_hours.action}",
    ]


def dataset_lines(flows: FlowSet) -> list[str]:
    """One line per lookup dataset: its file, key and rows, or what is wrong with the file."""
    if not any(isinstance(t, LookupConfig) for flow in flows for t in flow.tools):
        return []
    from ivr.tools import datasets  # the tools import the flow models; import late to avoid a cycle

    try:
        specs = datasets.collect(flows)
    except datasets.DatasetError as exc:
        return [f"warning: {line}" for line in str(exc).splitlines()]
    lines = []
    for spec in specs:
        head = f"dataset  {spec.name} <- {_shown(spec.source)} by {spec.key_field} ({spec.normalize})"
        try:
            rows = sum(1 for _ in datasets.read_records(spec))
        except datasets.DatasetError as exc:
            lines.append(f"{head}: PROBLEM")
            lines.append(f"warning: {exc}")
            continue
        lines.append(f"{head}: {rows} rows, fields {', '.join(spec.fields)}")
    return lines


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is under it (shorter, and what people typed)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
