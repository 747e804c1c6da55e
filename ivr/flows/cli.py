"""``ivr flows check [PATH]``: validate flow files before a deploy and show what each number will do.

Registered into the top-level ``ivr`` parser by :func:`register`; each command's ``func`` returns the
process exit code (0 valid, 1 problems found, 2 unusable configuration).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from ivr.flows.errors import FlowError
from ivr.flows.flowset import FlowSet
from ivr.flows.model import Flow, TransferToHumanConfig
from ivr.settings import Settings, SettingsError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``flows check`` to the ``ivr`` command line."""
    flows = subparsers.add_parser("flows", help="work with call-flow files", description=__doc__)
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
    check.set_defaults(func=check_command)


def check_command(args: argparse.Namespace) -> int:
    """Entry point for ``ivr flows check``; resolves the default path from the settings."""
    path: Path | None = args.path
    if path is None:
        try:
            path = Settings.from_env().flows_dir
        except SettingsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return check(path, out=sys.stdout, err=sys.stderr)


def check(path: Path, *, out: TextIO, err: TextIO) -> int:
    """Validate the flows at ``path``; print a summary to ``out`` or the problems to ``err``."""
    if not path.exists():
        print(f"error: {path} does not exist (give a folder of flow files or one .yaml file)", file=err)
        return 1
    try:
        flows = FlowSet.load(path)
    except FlowError as exc:
        print(exc, file=err)
        count = len(exc.problems)
        print(f"FAILED: {count} problem{'s' if count != 1 else ''}", file=err)
        return 1
    for flow in flows:
        print(summary(flow, flows.source_of(flow.id) or ""), file=out)
    if flows.default is None:
        print("note: no flow has default: true; other numbers get the built-in assistant", file=out)
    print(f"OK: {len(flows)} flow{'s' if len(flows) != 1 else ''}", file=out)
    return 0


def summary(flow: Flow, source: str) -> str:
    """A few readable lines saying what a flow does."""
    model = flow.model
    turns = model.turn_detection
    lines = [
        f"{flow.id}{' (default)' if flow.default else ''}  {source}",
        f"  numbers  {', '.join(flow.numbers) or '-'}",
        f"  model    {model.name or 'default model'} (dialect {model.dialect}), voice {model.voice}, "
        f"audio {model.audio}, speed {model.speed}, turns {turns.type}",
    ]
    tools = []
    for tool in flow.tools:
        text = tool.name if tool.name == tool.type else f"{tool.name} ({tool.type})"
        if isinstance(tool, TransferToHumanConfig):
            text += f" -> {flow.transfer_number(tool)}"
        tools.append(text)
    lines.append(f"  tools    {', '.join(tools) or '-'}")
    if flow.dtmf:
        lines.append("  keypad   " + ", ".join(f"{key} -> {name}" for key, name in sorted(flow.dtmf.items())))
    return "\n".join(lines)
