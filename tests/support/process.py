"""`ivr serve` as a child process, with its stderr collected and awaitable."""

from __future__ import annotations

import asyncio
import os
import socket
import sys


class ServerProcess:
    """Runs `python -m ivr serve` and collects its stderr lines, with awaitable matches."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            async with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip())
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def terminate(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited in 10 s; always reap the process and its reader."""
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10.0)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._reader

    async def kill(self) -> None:
        """SIGKILL if still running; always reap the process and its reader (a test's clean-up)."""
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await self._reader

    @classmethod
    async def start(cls, port: int, flows: object, env: dict[str, str]) -> ServerProcess:
        """`python -m ivr serve --port PORT --flows FLOWS` with ``env``, its stderr collected."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ivr",
            "serve",
            "--port",
            str(port),
            "--flows",
            str(flows),
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def wait_line(self, fragment: str, timeout: float = 10.0) -> str:
        async def find() -> str:
            async with self._changed:
                while True:
                    for line in self.lines:
                        if fragment in line:
                            return line
                    if self._reader.done():
                        raise AssertionError(f"server exited without {fragment!r}: {self.lines[-15:]}")
                    await self._changed.wait()

        return await asyncio.wait_for(find(), timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_env(realtime_url: str, **extra: str) -> dict[str, str]:
    """Environment for a child `ivr serve` talking to the fake model with the test credentials.

    ``REDIS_URL`` from the surrounding environment is dropped unless passed in ``extra``: a child server
    without one starts its own embedded Valkey instead of writing default-prefixed keys into a shared Redis.
    """
    from tests.support.server import ACCOUNT_SID, AUTH_TOKEN, OPERATOR_TOKEN

    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(
        OPENAI_API_KEY="sk-test",
        IVR_REALTIME_URL=realtime_url,
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        IVR_OPERATOR_TOKEN=OPERATOR_TOKEN,
        IVR_PUBLIC_URL="",
    )
    env.update(extra)
    return env
