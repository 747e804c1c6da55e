"""``ivr demo``: one command, a complete phone call, no API key, no network."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="run a complete phone call offline (embedded Redis, local speech, an example flow)",
        description=(
            "Start the server on a free loopback port with the offline engine, place a simulated "
            "Twilio call whose caller speaks synthesized lines, show the live transcript, ask you (the "
            "operator) to approve the booking, and write demo-call.wav (caller left, agent right) and "
            "demo-call.json. Exits 1 when the call did not reach its goal (an approved booking in Redis)."
        ),
    )
    decide = parser.add_mutually_exclusive_group()
    decide.add_argument("--yes", action="store_true", help="approve the operator request automatically")
    decide.add_argument("--deny", action="store_true", help="deny the operator request automatically")
    parser.add_argument(
        "--interactive", action="store_true", help="be the caller: type each line; the agent answers by voice"
    )
    parser.add_argument("--flow", default="dental-clinic", help="flow id to call (default dental-clinic)")
    parser.add_argument("--flows", default=None, help="folder of call-flow YAML (default flows/)")
    parser.add_argument("--out", default=".", help="folder for demo-call.wav and demo-call.json (default .)")
    parser.add_argument(
        "--from", dest="caller", default="+13125550101", help="caller's number (default a known patient)"
    )
    parser.set_defaults(func=run_cli)
    return parser


class _Terminal:
    """Lines typed at the terminal, read by one daemon thread into a queue.

    One reader for the whole run: a question may be answered elsewhere (the operator decided in the
    console), and cancelling its wait must neither lose the next line typed nor keep the process alive.
    """

    def __init__(self) -> None:
        self._lines: asyncio.Queue[str | None] | None = None

    async def ask(self, prompt: str) -> str:
        loop = asyncio.get_running_loop()
        if self._lines is None:
            lines: asyncio.Queue[str | None] = asyncio.Queue()
            self._lines = lines

            def read() -> None:
                while True:
                    line = sys.stdin.readline()
                    with contextlib.suppress(RuntimeError):  # the loop is closed: the demo is over
                        loop.call_soon_threadsafe(lines.put_nowait, line or None)
                    if not line:
                        return

            threading.Thread(target=read, name="demo-terminal", daemon=True).start()
        print(prompt, end="", flush=True)
        line = await self._lines.get()
        if line is None:
            raise EOFError
        return line


def run_cli(args: argparse.Namespace) -> int:
    from ..flows import FlowError
    from .runner import DemoOptions, run_demo

    options = DemoOptions(
        flow_id=args.flow,
        flows_dir=Path(args.flows) if args.flows else None,
        caller_number=args.caller,
        approve=True if args.yes else False if args.deny else None,
        interactive=args.interactive,
        out_dir=Path(args.out),
        redis_url=os.environ.get("REDIS_URL", ""),
    )
    try:
        result = asyncio.run(run_demo(options, sys.stdout, _Terminal().ask))
    except FlowError as exc:
        print(f"ivr demo: the flows have errors:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nivr demo: interrupted", file=sys.stderr)
        return 130
    return result.exit_code
