"""What a demo call is told (:class:`DemoOptions`), what it returns (:class:`DemoResult`), and its progress
lines."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .caller import CallerScript

Ask = Callable[[str], Awaitable[str]]
Voice = Callable[[str], bytes]


def default_flows_dir() -> Path:
    """flows/ in the working directory, else the one beside the package (a source checkout)."""
    here = Path("flows")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "flows"


@dataclass
class DemoOptions:
    flow_id: str = "dental-clinic"
    flows_dir: Path | None = None
    caller_number: str = "+13125550101"
    caller_name: str = "Maria Gonzalez"
    approve: bool | None = None  # True: --yes; False: deny; None: ask (approve when there is no terminal)
    interactive: bool = False
    out_dir: Path = Path(".")
    redis_url: str = ""
    timeout_s: float = 240.0
    #: Which scripted call to place (:data:`ivr.demo.scripts.SCENARIOS`); ignored when ``script`` is given.
    scenario: str = "default"
    variant: int = 0
    #: The caller's side; None = ``script_for(flow_id, scenario, variant=…)``.
    script: CallerScript | None = None
    #: Text → 8 kHz μ-law for the caller's lines; None = the demo's second voice (:mod:`ivr.demo.voice`).
    caller_voice: Voice | None = None


@dataclass
class DemoResult:
    exit_code: int
    summary: dict[str, Any] = field(default_factory=dict)


class Progress:
    """Timestamped progress lines: what the demo is doing, so nothing pauses silently."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.t0 = time.perf_counter()

    def __call__(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.1f}s] {text}", file=self.out, flush=True)
