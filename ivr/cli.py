"""The ``ivr`` command: ``ivr serve``, ``ivr call``, ``ivr flows check``, ``ivr operators``, …"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .help_format import ParagraphHelpFormatter

if TYPE_CHECKING:
    from .flows import FlowSet
    from .settings import Settings


def _serve(args: argparse.Namespace) -> int:
    """Check everything that can be checked before starting (settings, flows against their model, the
    port), so a bad configuration stops here with one message instead of failing at the first call."""
    from .bind import BindError, bind_listener
    from .flows import FlowError, FlowSet
    from .flows.flowset import missing_flows
    from .settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"ivr serve: {exc}", file=sys.stderr)
        return 2
    if args.flows:
        settings = settings.with_(flows_dir=Path(args.flows))
    missing = missing_flows(settings.flows_dir)
    if missing is not None:
        print(
            f"ivr serve: {missing}; every call would get the built-in assistant. Point --flows (or "
            "IVR_FLOWS) at your folder of flow files, and check it with `ivr flows check`.",
            file=sys.stderr,
        )
        return 2
    try:
        flows = FlowSet.load(settings.flows_dir)
    except FlowError as exc:
        print(f"ivr serve: the call flows in {settings.flows_dir} have errors:\n{exc}", file=sys.stderr)
        print("Fix them (check with `ivr flows check`) and start again.", file=sys.stderr)
        return 2
    if not settings.uses_local_engine:  # the local engine ignores the flows' model settings
        errors, warnings = flows.model_problems(settings.realtime_model, settings.realtime_dialect)
        if errors:
            print(
                f"ivr serve: the call flows in {settings.flows_dir} ask for what their model cannot do:",
                *errors,
                "Fix them or pick another model (model.name in the flow, or IVR_REALTIME_MODEL); "
                "`ivr flows check` shows the same.",
                sep="\n",
                file=sys.stderr,
            )
            return 2
        for warning in warnings:
            print(f"ivr serve: warning: {warning}", file=sys.stderr)
    try:
        listener = bind_listener(args.host, args.port)
    except BindError as exc:
        print(f"ivr serve: {exc}", file=sys.stderr)
        return 1
    try:
        return _run(args, settings, flows, listener)
    finally:
        listener.close()


def _run(args: argparse.Namespace, settings: Settings, flows: FlowSet, listener: socket.socket) -> int:
    from .app import create_app
    from .logs import configure_logging
    from .server import make_server

    if not settings.instance_id:
        from .store.store import default_instance_id

        settings = settings.with_(instance_id=default_instance_id(args.port))
    if not settings.public_url:
        origin = f"http://{args.host if args.host not in ('0.0.0.0', '::') else '127.0.0.1'}:{args.port}"
        settings = settings.with_(public_url=origin)
    configure_logging(settings.log_level)
    app = create_app(settings, flows)
    print(
        f"ivr {__version__}: listening on http://{args.host}:{args.port}  "
        f"(Twilio voice webhook: {settings.public_url}/twilio/voice)",
        file=sys.stderr,
    )
    server = make_server(app, args.host, args.port, settings.drain_timeout_s, settings.log_level)
    server.run(sockets=[listener])  # uvicorn picks uvloop when installed (docs/performance.md)
    return 0


def _port(text: str) -> int:
    from .bind import port_number

    try:
        return port_number(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


DESCRIPTION = """\
A phone agent for Twilio: callers reach a realtime speech model (or the offline engine) that follows your call
flows, runs their tools and asks an operator before risky actions.

Start here:
  ivr demo     a whole phone call on this machine: no API key, no phone number
  ivr serve    the server for real calls (Twilio's webhook and media stream)
  ivr call     call a running server from the terminal, as Twilio would

`ivr COMMAND --help` explains each command."""

SERVE_DESCRIPTION = """\
Run the server Twilio calls: the voice webhook (/twilio/voice), the media stream (/twilio/media), the
operator API and the operations console (/ops/).

Before it binds the port it checks the settings (environment variables, see the README's Configuration),
the call flows and what their model can do, and stops with one message and exit code 2 if something is
wrong. Without REDIS_URL it starts an embedded Redis. Lookup datasets the flows declare and Redis does not
hold yet are loaded at start-up (existing ones are left alone). Without
OPENAI_API_KEY every call runs on the offline engine. Without TWILIO_AUTH_TOKEN every Twilio request is
refused. SIGTERM or Ctrl-C lets live calls finish first (up to IVR_DRAIN_TIMEOUT); a second one stops now."""

#: Help written for a person, for commands registered by other modules whose own description is missing or
#: is that module's docstring (reST markup, notes for programmers). A module's own prose description wins.
DESCRIPTIONS: dict[tuple[str, ...], str] = {
    ("flows",): """\
Work with call-flow files (the YAML that says what each phone number does).

  ivr flows check [PATH]
      validate the flows and show, per flow, its numbers, stages, today's
      hours, tools and approval rules""",
    ("approvals",): """\
See and decide the tool calls that wait for an operator's approval (a booking, a cancellation…), from
any machine that reaches the Redis the servers use (REDIS_URL, IVR_REDIS_PREFIX). The operations
console (/ops/) does the same in a browser.

  ivr approvals list           what is waiting, soonest deadline first
  ivr approvals show ID        one request in full
  ivr approvals approve ID     let it run (--note adds a note for the audit)
  ivr approvals deny ID        refuse it; the agent tells the caller

Exit code: 0 done, 1 refused (unknown id, already decided, expired, Redis unreachable), 2 the settings
are unusable.""",
    ("approvals", "list"): "Show the requests waiting for a decision, soonest deadline first.",
    (
        "approvals",
        "show",
    ): "Show one approval request in full: the call, the tool, its arguments, the reason.",
    ("approvals", "approve"): "Approve a pending request: the tool runs with exactly the arguments shown.",
    ("approvals", "deny"): "Deny a pending request: the tool does not run and the agent tells the caller.",
    ("operators", "add"): "Add an operator with a role and print their login token. It is shown once only.",
    ("operators", "list"): "Show the operators: name, role, when they were added and last logged in.",
    ("operators", "remove"): "Remove an operator: their token and console sessions stop working at once.",
    ("data",): """\
Put the lookup datasets your flows declare (patients, a menu, orders…) into Redis, where the lookup
tools read them.

  ivr data load [--flows PATH] [--dataset ID]

`ivr serve` loads a dataset by itself when Redis does not have it yet (e.g. the embedded Redis); run
`ivr data load` to replace one after its file changed. It checks each file first (every column the
flow names must exist; errors name the file and the column), writes into the Redis at REDIS_URL under
IVR_REDIS_PREFIX, and prints a summary per dataset. Exit code: 0 loaded, 1 a flow or file problem or
Redis unreachable, 2 the settings are unusable.""",
}
#: Help for positional arguments registered without any.
ARGUMENT_HELP: dict[tuple[str, ...], dict[str, str]] = {
    ("operators", "remove"): {"name": "the operator's name, as `ivr operators list` shows it"},
}
_DOCSTRING_MARKS = ("``", ":func:", ":class:", ":mod:", ":meth:", "Registered into")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _written_for_a_person(description: str | None) -> bool:
    return bool(description) and not any(mark in (description or "") for mark in _DOCSTRING_MARKS)


def _humanise(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> None:
    """Give every command a description a person can read: ours where the registering module's is missing or
    is its docstring."""
    for name, command in _subcommands(parser).items():
        where = (*path, name)
        if where in DESCRIPTIONS and not _written_for_a_person(command.description):
            command.description = DESCRIPTIONS[where]
            command.formatter_class = ParagraphHelpFormatter
        elif command.formatter_class is argparse.RawDescriptionHelpFormatter:
            command.formatter_class = ParagraphHelpFormatter  # same layout, wrapped to the terminal
        for action in command._actions:
            extra = ARGUMENT_HELP.get(where, {}).get(action.dest)
            if extra and not action.help:
                action.help = extra
        _humanise(command, where)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ivr", description=DESCRIPTION, formatter_class=ParagraphHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"ivr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the webhook and media-stream server",
        description=SERVE_DESCRIPTION,
        formatter_class=ParagraphHelpFormatter,
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 for every interface (default 127.0.0.1)",
    )
    serve.add_argument("--port", type=_port, default=8000, help="port to listen on, 1-65535 (default 8000)")
    serve.add_argument(
        "--flows",
        metavar="DIR",
        default=None,
        help="folder of call-flow YAML files (default $IVR_FLOWS, else flows/)",
    )
    serve.set_defaults(func=_serve)

    from .approvals.cli import register as register_approvals
    from .caller.cli import register as register_call
    from .console.operators_cli import register as register_operators
    from .demo.cli import register as register_demo
    from .flows.cli import register as register_flows
    from .tools.data_cli import register as register_data

    register_demo(sub)
    register_call(sub)
    register_flows(sub)
    register_approvals(sub)
    register_operators(sub)
    register_data(sub)
    _humanise(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return int(func(args) or 0)
