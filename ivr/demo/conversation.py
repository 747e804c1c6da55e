"""The demo's side of the live call: the scripted (or typed) conversation, the operator's decisions, the
live events, and the stand-in for Twilio's call-update endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any
from urllib.parse import parse_qsl

import httpx
from fastapi import Request, Response

from ..caller.client import SimulatedCall
from ..engines.local import LocalResources
from . import voice
from .caller import CallerScript, Line
from .options import Ask, DemoOptions, Progress, Voice
from .report import (
    parse_json,
    sound_span,
)


class DemoCall:
    """The conversation loop: speak, wait for the agent, handle the operator's approval."""

    def __init__(
        self,
        *,
        options: DemoOptions,
        progress: Progress,
        resources: LocalResources,
        ask: Ask,
        base_url: str,
        operator_token: str,
        script: CallerScript,
    ) -> None:
        self.options = options
        self.progress = progress
        self.resources = resources
        self.ask = ask
        self.base_url = base_url
        self.operator_token = operator_token
        self.script = script
        self.call: SimulatedCall | None = None
        self.lines: list[tuple[str, int, int]] = []  # text, first sample of sound, end of sound
        self.approvals: list[dict[str, Any]] = []
        self.agent_lines: list[str] = []
        self.caller_heard: list[str] = []
        self.engine_turns: list[dict[str, Any]] = []
        self.tools: list[dict[str, Any]] = []
        self.transfers = 0  # transfer requests the app sent to the Twilio stand-in
        self.voice: Voice = lambda text: b""
        self._heard_upto = 0  # agent lines before this index were answered already
        self._approval_pending: asyncio.Event = asyncio.Event()
        self._approval_done: asyncio.Event = asyncio.Event()
        # Set when a decision reaches the call before the terminal answered (taken in the console).
        self._decided_elsewhere: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- live events -------------------------------------------------------------------------------------

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "transcript":
            role, text = event.get("role", "?"), event.get("text", "")
            (self.agent_lines if role == "agent" else self.caller_heard).append(text)
            label = "agent " if role == "agent" else "caller"
            shown = text if text else "(nothing recognised)"
            self.progress(f"  {label} │ {shown}")
        elif kind == "tool.called":
            self.tools.append(event)
            self.script.observe_tool(str(event.get("name")), parse_json(event.get("output")))
            status = "ok" if event.get("ok") else f"not run: {event.get('error_type')}"
            self.progress(f"  tool   │ {event.get('name')} {_args(event.get('arguments'))} → {status}")
        elif kind == "approval.decided":
            # Set even before the terminal question is asked: the console may decide first.
            self._decided_elsewhere.setdefault(str(event.get("approval_id")), asyncio.Event()).set()
        elif kind == "approval.requested":
            self._approval_pending.set()
            self._approval_done.clear()
            task = asyncio.ensure_future(self._decide(str(event.get("approval_id"))))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind == "engine.turn":
            self.engine_turns.append(event)
        elif kind == "stage.changed":
            self.progress(f"  stage  │ {event.get('previous')} → {event.get('stage')}")
        elif kind == "call.ended":
            self.progress(f"  call ended: {event.get('outcome')}")

    async def _decide(self, approval_id: str) -> None:
        headers = {"Authorization": f"Bearer {self.operator_token}"}
        async with httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=10) as http:
            details = (await http.get(f"/api/approvals/{approval_id}")).json()
            what = f"{details.get('tool')} {_args(details.get('arguments'))}"
            self.progress(f"  OPERATOR: approval {approval_id} requested for {what}")
            if details.get("reason"):
                self.progress(f"            why: {details.get('reason')}")
            approve = self.options.approve if self.script.approve is None else self.script.approve
            if approve is None:
                if sys.stdin is not None and sys.stdin.isatty():
                    approve = await self._ask_or_console(http, approval_id)
                    if approve is None:  # decided in the console
                        self._approval_pending.clear()
                        self._approval_done.set()
                        return
                else:
                    self.progress("            no terminal to ask: approving automatically (as --yes would)")
                    approve = True
            else:
                self.progress(f"            {'approving' if approve else 'denying'} automatically")
            body = {"decision": "approve" if approve else "deny", "operator": "demo-operator"}
            response = await http.post(f"/api/approvals/{approval_id}", json=body)
            self.script.observe_approval(body["decision"], details.get("arguments"))
            self.approvals.append(
                {
                    "id": approval_id,
                    "tool": details.get("tool"),
                    "decision": body["decision"],
                    "status": response.status_code,
                    "arguments": details.get("arguments"),
                }
            )
        self._approval_pending.clear()
        self._approval_done.set()

    async def _ask_or_console(self, http: httpx.AsyncClient, approval_id: str) -> bool | None:
        """Ask at the terminal, unless an operator decides in the console first (then None)."""
        elsewhere = self._decided_elsewhere.setdefault(approval_id, asyncio.Event())
        self.progress("            (or decide in the console)")
        asking = asyncio.ensure_future(self.ask("            approve it? [y/n] "))
        console = asyncio.ensure_future(elsewhere.wait())
        await asyncio.wait({asking, console}, return_when=asyncio.FIRST_COMPLETED)
        console.cancel()
        if asking.done():
            return asking.result().strip().lower() in {"y", "yes"}
        asking.cancel()
        record = (await http.get(f"/api/approvals/{approval_id}")).json()
        self.progress(
            f"            {record.get('status')} in the console by {record.get('decided_by') or '?'}"
        )
        decision = "approve" if record.get("status") == "approved" else "deny"
        self.script.observe_approval(decision, record.get("arguments"))
        self.approvals.append(
            {
                "id": approval_id,
                "tool": record.get("tool"),
                "decision": "approve" if record.get("status") == "approved" else "deny",
                "status": 200,
                "decided_by": record.get("decided_by"),
                "arguments": record.get("arguments"),
            }
        )
        return None

    # ---- the conversation ----------------------------------------------------------------------------------

    def say(self, line: Line | str) -> None:
        assert self.call is not None
        line = line if isinstance(line, Line) else Line(line)
        text = line.text
        audio = self.voice(text)
        if line.unclear:
            audio = voice.mumble(audio)
        self._heard_upto = len(self.agent_lines)
        span = sound_span(audio) or (0, len(audio))
        # The line starts at the next tick: after the audio already queued, on the sent timeline.
        start = len(self.call.sent_audio) + self.call.queued_caller_bytes
        self.lines.append((text, start + span[0], start + span[1]))
        self.call.say(audio)

    async def agent_turn(self) -> None:
        """Wait for the agent to answer and stop; an approval in between is waited out."""
        assert self.call is not None
        while True:
            await self.call.wait_agent_quiet(900, timeout=60)
            if not self._approval_pending.is_set():
                return
            await self._approval_done.wait()

    async def scripted(self) -> None:
        assert self.call is not None
        await self.call.wait_started(timeout=30)
        await self.agent_turn()
        self.say(self.script.first_line())
        while True:
            await self.agent_turn()
            holds = 0
            while self.script.holding(" ".join(self.agent_lines[self._heard_upto :])) and holds < 3:
                holds += 1  # "one moment please": wait for what the agent says next
                with contextlib.suppress(TimeoutError):
                    await self.call.wait_agent_quiet(900, timeout=20)
            line = self.script.next_line(" ".join(self.agent_lines[self._heard_upto :]))
            if line is None:
                break
            self.say(line)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.call.wait_ended(), 20)

    async def interactive(self) -> None:
        assert self.call is not None
        await self.call.wait_started(timeout=30)
        self.progress(
            "  you are the caller: type what to say and press Enter (empty line or Ctrl-D hangs up)"
        )
        while not self.call.ended:
            await self.agent_turn()
            if self._approval_pending.is_set():
                continue
            try:
                line = (await self.ask("  you    │ ")).strip()
            except EOFError:
                line = ""
            if not line or self.call.ended:
                break
            self.say(line)
        if not self.call.ended:
            await self.call.hang_up()


def _args(arguments: Any) -> str:
    if not isinstance(arguments, dict):
        return ""
    return "(" + ", ".join(f"{k}={v}" for k, v in arguments.items()) + ")"


def twilio_rest_stand_in(app: Any, demo: DemoCall) -> None:
    """Twilio's call-update endpoint, played by the demo: hang-up and transfer end the media stream."""

    @app.post("/2010-04-01/Accounts/{account}/Calls/{call}.json", include_in_schema=False)
    async def update_call(account: str, call: str, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        what = "hang-up" if form.get("Status") == "completed" else "transfer (TwiML redirect)"
        if form.get("Status") != "completed":
            demo.transfers += 1
        demo.progress(f"  twilio │ the app asked Twilio for a {what}; ending the media stream")
        if demo.call is not None:
            task = asyncio.ensure_future(demo.call.hang_up())
            demo._tasks.add(task)
            task.add_done_callback(demo._tasks.discard)
        return Response(
            content=f'{{"sid": "{call}", "account_sid": "{account}", "status": "completed"}}',
            media_type="application/json",
        )
