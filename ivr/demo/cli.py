"""``ivr demo``: one command, a complete phone call, no API key, no network."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def register(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="run a complete phone call offline (embedded Redis, local speech, an example flow)",
        description=(
            "Start the server on a free loopback port with the offline engine, place a simulated "
            "Twilio call whose caller speaks synthesized lines, show the live transcript, ask you (the "
            "operator) to approve the booking, and write demo-call.wav (caller left, agent right) and "
            "demo-call.json. The caller is a scripted person with a voice of their own who reacts to what "
            "the agent says; --scenario picks what they call for. Exits 1 when the call did not reach its "
            "goal (read back from Redis: e.g. an approved booking stored)."
        ),
    )
    decide = parser.add_mutually_exclusive_group()
    decide.add_argument("--yes", action="store_true", help="approve the operator request automatically")
    decide.add_argument("--deny", action="store_true", help="deny the operator request automatically")
    parser.add_argument(
        "--interactive", action="store_true", help="be the caller: type each line; the agent answers by voice"
    )
    parser.add_argument(
        "--flow",
        default="dental-clinic",
        help="flow id to call (default dental-clinic); 'default' is the flow that answers unclaimed numbers",
    )
    parser.add_argument(
        "--scenario",
        default="default",
        help=f"what the scripted caller wants, per flow: {_scenario_help()} (default: the first)",
    )
    parser.add_argument(
        "--variant", type=int, default=0, help="another caller for the same scenario (phrasing, day, name)"
    )
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


def _scenario_help() -> str:
    from .scripts import SCENARIOS

    return "; ".join(f"{flow}: {', '.join(names)}" for flow, names in SCENARIOS.items())


def run_cli(args: argparse.Namespace) -> int:
    from ..flows import FlowError
    from .runner import DemoOptions, check_out_dir, run_demo

    check_out_dir(Path(args.out))
    options = DemoOptions(
        flow_id=args.flow,
        scenario=args.scenario,
        variant=args.variant,
        flows_dir=Path(args.flows) if args.flows else None,
        caller_number=args.caller,
        approve=True if args.yes else False if args.deny else None,
        interactive=args.interactive,
        out_dir=Path(args.out),
        redis_url=os.environ.get("REDIS_URL", ""),
    )
    # The demo prints its own progress: the server's INFO lines would drown it. Set here, once per process,
    # not in run_demo, which tests and benchmarks run several at a time in one process.
    ivr_log = logging.getLogger("ivr")
    ivr_log_level = ivr_log.level
    ivr_log.setLevel(logging.WARNING)
    try:
        result = _run_until_signalled(run_demo(options, sys.stdout, _Terminal().ask))
    except FlowError as exc:
        print(f"ivr demo: the flows have errors:\n{exc}", file=sys.stderr)
        return 2
    except _Stopped as stopped:
        name = "Ctrl-C" if stopped.signum == signal.SIGINT else signal.Signals(stopped.signum).name
        print(
            f"\nivr demo: stopped by {name}; the call, the server and the embedded Redis are shut down",
            file=sys.stderr,
        )
        return 128 + stopped.signum
    finally:
        ivr_log.setLevel(ivr_log_level)
    return result.exit_code


class _Stopped(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _run_until_signalled(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main``; SIGINT (Ctrl-C) and SIGTERM cancel it, so every ``finally`` runs (the embedded Redis
    is stopped, the server closed) and the caller gets :class:`_Stopped` instead of a traceback.

    Another signal while shutting down is ignored: stopping takes a second or two, not a second Ctrl-C.
    """
    received: list[int] = []

    async def guarded() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop(signum: int) -> None:
            if not received:
                received.append(signum)
                task.cancel()

        def quiet_after_stop(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            if not received:  # tasks torn down by a stop may leave errors nobody reads: not news
                loop.default_exception_handler(context)

        loop.set_exception_handler(quiet_after_stop)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop, signum)
        try:
            return await main
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    try:
        return asyncio.run(guarded())
    except (asyncio.CancelledError, KeyboardInterrupt):
        if received:
            raise _Stopped(received[0]) from None
        raise _Stopped(signal.SIGINT) from None
