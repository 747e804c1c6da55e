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
    from .drain_cli import register as register_drain
    from .flows.cli import register as register_flows
    from .tools.data_cli import register as register_data

    register_demo(sub)
    register_call(sub)
    register_flows(sub)
    register_approvals(sub)
    register_operators(sub)
    register_data(sub)
    register_drain(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return int(func(args) or 0)
