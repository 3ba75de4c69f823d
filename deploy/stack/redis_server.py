"""Throwaway redis-server processes, and the stack's Redis among them.

The one place that knows how a redis-server we start is configured, started, waited for (PING
answered) and stopped, for the three that need one: the stack (``make stack``: a daemon with a
pid file that outlives the command), the benchmark (a private child, so its command statistics
are the benchmark's alone) and the tests (TLS-only with ``requirepass``, restarts, failovers).

A throwaway server never persists (no RDB, no AOF: a restart gives an empty Redis) and takes its
settings from a config file in its folder, mode 0600, so a password is never on a command line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from deploy.stack import programs
from deploy.stack.topology import LOOPBACK, STOP_TIMEOUT, StackError, Topology


class RedisServerMissing(FileNotFoundError):
    """No redis-server where the stack looks for one (deploy/stack/programs.py)."""


class RedisServerError(RuntimeError):
    """A redis-server would not start or stop; the message quotes its log."""


def redis_server_binary() -> str:
    """The redis-server to run, found as ``make stack`` checks for it: PATH, then Debian's
    place (the ``redis-server`` entry of :data:`deploy.stack.programs.PROGRAMS`)."""
    program = next(p for p in programs.PROGRAMS if p.name == "redis-server")
    found = program.where(Path(), shutil.which)
    if found is None:
        raise RedisServerMissing(f"redis-server: not on PATH nor at {program.fallback}")
    return found


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate, its key, and the CA that signed it (what clients must trust)."""

    cert: Path
    key: Path
    ca: Path


@dataclass
class ThrowawayRedis:
    """One redis-server on ``port``, its config, data and (by default) log in ``folder``.

    Foreground (default): a child in a session of its own, which the caller stops with
    :meth:`stop`. ``daemonize``: redis-server forks and writes ``pidfile``; :meth:`stop` finds
    it again by that pid, so another process (``make stack-down``) can stop it. ``tls`` makes it
    TLS-only (``port 0``, ``tls-port``), as ElastiCache with in-transit encryption; ``password``
    is its ``requirepass`` (and ``masterauth``, so a replica of a twin can sync).
    """

    folder: Path
    port: int = field(default_factory=free_port)
    bind: tuple[str, ...] = (LOOPBACK,)
    password: str | None = None
    tls: TlsFiles | None = None
    logfile: Path | None = None  # default: <folder>/redis.log
    daemonize: bool = False
    pidfile: Path | None = None  # default: <folder>/redis.pid (daemonize only)
    pid: int | None = None
    # A Redis Cluster node (``cluster-enabled yes``) when set: how many milliseconds a node
    # may not answer before it counts as failed (and its replica takes over).
    cluster_node_timeout: int | None = None
    cluster_port: int | None = None  # the cluster bus (default: port + 10000, not always free)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def log(self) -> Path:
        return self.logfile or self.folder / "redis.log"

    @property
    def pid_path(self) -> Path:
        return self.pidfile or self.folder / "redis.pid"

    @property
    def host(self) -> str:
        return self.bind[0]

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/0"

    def config(self) -> str:
        """The redis.conf this server runs with."""
        lines = [
            f"bind {' '.join(self.bind)}",
            f"dir {self.folder}",
            'save ""',
            "appendonly no",
            f"logfile {self.log}",
            # A replica syncs at once, and a primary stops without waiting for its replicas.
            "repl-diskless-sync-delay 0",
            "shutdown-timeout 0",
        ]
        if self.daemonize:
            lines += ["daemonize yes", f"pidfile {self.pid_path}"]
        if self.cluster_node_timeout is not None:
            lines += [
                "cluster-enabled yes",
                f"cluster-config-file {self.folder / 'nodes.conf'}",
                f"cluster-node-timeout {self.cluster_node_timeout}",
                f"cluster-port {self.cluster_port or self.port + 10000}",
                # A replica whose primary froze takes over however long it was cut off.
                "cluster-replica-validity-factor 0",
            ]
        if self.tls is None:
            lines.append(f"port {self.port}")
        else:
            lines += [
                "port 0",
                f"tls-port {self.port}",
                f"tls-cert-file {self.tls.cert}",
                f"tls-key-file {self.tls.key}",
                f"tls-ca-cert-file {self.tls.ca}",
                "tls-auth-clients no",  # ElastiCache asks no client certificate either
                "tls-replication yes",
            ]
        if self.password is not None:
            lines += [f"requirepass {self.password}", f"masterauth {self.password}"]
        return "\n".join(lines) + "\n"

    def client(self, **options: object) -> redis.Redis:
        """A redis-py client of this server (its password, its CA, answers as ``str``), for
        commands of our own, not the shop's."""
        kwargs: dict = {"socket_timeout": 1, "password": self.password, "decode_responses": True}
        kwargs.update(options)
        if self.tls is not None:
            kwargs.update(ssl=True, ssl_ca_certs=str(self.tls.ca))
        return redis.Redis(host=self.host, port=self.port, **kwargs)

    def start(self, timeout: float = 10.0) -> ThrowawayRedis:
        """Start it and return once it answers PING; raises :class:`RedisServerMissing` or
        :class:`RedisServerError` (with its log) instead."""
        binary = redis_server_binary()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "redis.conf"
        conf.touch(mode=0o600)
        conf.chmod(0o600)
        conf.write_text(self.config())
        if self.daemonize:
            self.pid_path.parent.mkdir(parents=True, exist_ok=True)
            self.pid_path.unlink(missing_ok=True)
            done = subprocess.run(
                [binary, str(conf)], capture_output=True, text=True, stdin=subprocess.DEVNULL
            )
            if done.returncode != 0:
                output = (done.stdout + done.stderr).strip()
                raise RedisServerError(f"redis-server failed ({done.returncode}):\n{output}")
        else:
            with open(self.log, "ab") as out:
                self.process = subprocess.Popen(
                    [binary, str(conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.pid = self.process.pid
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.daemonize:
                self.pid = _read_pid(self.pid_path)
            exited = (
                self.process.poll() is not None
                if self.process is not None
                else self.pid is not None and not _is_redis(self.pid)
            )
            if exited:
                self.stop()
                raise RedisServerError(f"redis-server exited; its log {self.log}:\n{self._tail()}")
            if self.pid is not None and self._answers():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RedisServerError(
                    f"redis-server on {self.host}:{self.port} not ready after {timeout:.0f} s; "
                    f"its log {self.log}:\n{self._tail()}"
                )
            time.sleep(0.02)

    def _answers(self) -> bool:
        """PING answered by this server's own process (not another one holding the port)."""
        with contextlib.suppress(redis.RedisError, OSError), self.client() as client:
            return bool(client.ping()) and client.info("server")["process_id"] == self.pid
        return False

    def _tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
            return "\n".join("    " + line for line in text)
        return ""

    def running_pid(self) -> int | None:
        """Its live pid: the pid file's (it may have been restarted by someone else), then the
        one recorded at start; never a recycled pid that is no redis-server."""
        candidates = [_read_pid(self.pid_path)] if self.daemonize else []
        for pid in (*candidates, self.pid):
            if pid is not None and _is_redis(pid):
                return pid
        return None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` s; returns once the process is gone."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
        else:
            pid = self.running_pid()
            if pid is not None:
                _terminate(pid, timeout)
        self.pid = None
        if self.daemonize:
            self.pid_path.unlink(missing_ok=True)

    def restart(self) -> ThrowawayRedis:
        """Stop and start again on the same port: an empty Redis."""
        self.stop()
        return self.start()


@dataclass
class ThrowawayCluster:
    """A Redis Cluster of ``primaries`` primaries with ``replicas`` replicas each, made of
    :class:`ThrowawayRedis` nodes under ``folder`` (``node<i>``) and joined by
    ``redis-cli --cluster create``; :meth:`stop` stops every node."""

    folder: Path
    primaries: int = 3
    replicas: int = 1
    node_timeout: int = 1000  # ms: a frozen primary is replaced within a few seconds
    daemonize: bool = False
    ports: tuple[int, ...] = ()
    buses: tuple[int, ...] = ()  # the nodes' cluster-bus ports (default: free ones)
    nodes: list[ThrowawayRedis] = field(default_factory=list)

    @property
    def url(self) -> str:
        """A node's URL, as SHOP_REDIS_URL names a cluster (any node finds the others)."""
        return self.nodes[0].url

    def start(self, timeout: float = 30.0) -> ThrowawayCluster:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RedisServerMissing("redis-cli: not on PATH (Debian's redis-tools)")
        self.nodes = self.build_nodes()
        try:
            for node in self.nodes:
                node.folder.mkdir(parents=True, exist_ok=True)
                (node.folder / "nodes.conf").unlink(missing_ok=True)
                node.start()
            addresses = [f"{node.host}:{node.port}" for node in self.nodes]
            done = subprocess.run(
                [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas),
                 "--cluster-yes"],
                capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout,
            )  # fmt: skip
            if done.returncode != 0:
                raise RedisServerError(f"redis-cli --cluster create failed:\n{done.stdout}")
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def build_nodes(self) -> list[ThrowawayRedis]:
        """The nodes, on ``ports`` (default: free ones); :meth:`stop` needs no more to find
        daemonized ones again (their pid files)."""
        count = self.primaries * (1 + self.replicas)
        ports = self.ports or tuple(free_port() for _ in range(count))
        buses = self.buses or tuple(free_port() for _ in range(count))
        return [
            ThrowawayRedis(
                self.folder / f"node{i}",
                port=port,
                cluster_node_timeout=self.node_timeout,
                cluster_port=bus,
                daemonize=self.daemonize,
            )
            for i, (port, bus) in enumerate(zip(ports, buses, strict=True))
        ]

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every node says ``cluster_state:ok`` with all 16384 slots served."""
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for node in self.nodes:
                with contextlib.suppress(redis.RedisError, OSError), node.client() as client:
                    states.append(client.cluster("info"))
            if len(states) == len(self.nodes) and all(
                info.get("cluster_state") == "ok" and int(info.get("cluster_slots_ok", 0)) == 16384
                for info in states
            ):
                return
            if time.monotonic() > deadline:
                raise RedisServerError(f"the cluster never became healthy: {states}")
            time.sleep(0.1)

    def primary_nodes(self) -> list[ThrowawayRedis]:
        """The nodes that are primaries now (a failover changes which)."""
        found = []
        for node in self.nodes:
            with contextlib.suppress(redis.RedisError, OSError), node.client() as client:
                if client.info("replication")["role"] == "master":
                    found.append(node)
        return found

    def stop(self) -> None:
        for node in self.nodes or (self.build_nodes() if self.ports else []):
            node.stop()


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _is_redis(pid: int) -> bool:
    """Alive (not a zombie) and a redis-server, by /proc."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return (
            state not in ("Z", "X") and b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
        )
    except (OSError, IndexError):
        return False


def _terminate(pid: int, timeout: float) -> None:
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while _is_redis(pid):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        else:
            return
    raise RedisServerError(f"redis-server pid {pid} survived SIGKILL")


# ------------------------------------------------------------------------- the stack's Redis


def stack_client(topology: Topology, **options: object) -> redis.Redis:
    """A client of the stack's Redis: a cluster client when it runs a Redis Cluster
    (STACK_REDIS=cluster), whose keys live on several nodes (delete them one by one)."""
    if topology.redis.nodes:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(topology.redis.url, **options)  # type: ignore[return-value]
    return redis.Redis.from_url(topology.redis.url, **options)


def stack_redis(topology: Topology) -> ThrowawayRedis:
    """The stack's Redis: a daemon on its loopback port, its pid file and log where
    ``topology.json`` says, its data folder ``<work>/redis``."""
    entry = topology.redis
    return ThrowawayRedis(
        Path(topology.work_dir) / "redis",
        port=entry.port,
        bind=(LOOPBACK,),
        logfile=Path(entry.log),
        daemonize=True,
        pidfile=Path(entry.pidfile),
        pid=entry.pid,
    )


def stack_cluster(topology: Topology) -> ThrowawayCluster:
    """The stack's Redis Cluster (STACK_REDIS=cluster): six daemons under ``<work>/redis-cluster``
    on the topology's ports, the first one being ``topology.redis``."""
    entry = topology.redis
    return ThrowawayCluster(
        Path(topology.work_dir) / "redis-cluster",
        ports=tuple(entry.nodes),
        buses=tuple(entry.buses),
        daemonize=True,
    )


def _start_redis(topology: Topology) -> str:
    if topology.redis.nodes:
        return _start_redis_cluster(topology)
    server = stack_redis(topology)
    try:
        server.start(timeout=20)
    except RedisServerMissing as exc:
        programs.require_programs(only=("redis-server",))  # names the Debian package
        raise StackError(str(exc)) from exc
    except RedisServerError as exc:
        raise StackError(str(exc)) from None
    topology.redis.pid = server.pid
    return f"{LOOPBACK}:{server.port}  pid {server.pid}  (no persistence)"


def _start_redis_cluster(topology: Topology) -> str:
    cluster = stack_cluster(topology)
    try:
        cluster.start(timeout=60)
    except RedisServerMissing as exc:
        programs.require_programs(only=("redis-server",))
        raise StackError(str(exc)) from exc
    except RedisServerError as exc:
        raise StackError(str(exc)) from None
    topology.redis.pid = cluster.nodes[0].pid
    ports = ", ".join(str(node.port) for node in cluster.nodes)
    return f"a Redis Cluster on {LOOPBACK}: {ports} (3 primaries + 3 replicas, no persistence)"


def _stop_redis(topology: Topology) -> None:
    try:
        if topology.redis.nodes:
            stack_cluster(topology).stop()
        stack_redis(topology).stop()
    except RedisServerError as exc:
        raise StackError(str(exc)) from None
    topology.redis.pid = None
