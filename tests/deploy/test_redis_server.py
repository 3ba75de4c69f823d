"""The one way a throwaway redis-server is started (deploy/stack/redis_server.py): in the
foreground for the tests and the benchmark, as a daemon with a pid file for the stack, TLS-only
for the cloud tests; and a machine without redis-server is told which package to install."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bench.servers import BenchError, start_redis
from deploy.stack import stack as stack_module
from deploy.stack.programs import PROGRAMS, Program
from deploy.stack.redis_server import (
    RedisServerError,
    ThrowawayRedis,
    TlsFiles,
    redis_server_binary,
)
from deploy.stack.topology import Ports, _build_topology, load_topology
from tests.support import free_ports, missing
from tests.support.redis_servers import tls_material

PASSWORD = "not-on-any-command-line"


@pytest.fixture
def servers() -> Iterator[list[ThrowawayRedis]]:
    """Servers a test started; whatever it left running is stopped by pid afterwards."""
    started: list[ThrowawayRedis] = []
    yield started
    for server in started:
        server.stop()


def start(servers: list[ThrowawayRedis], server: ThrowawayRedis) -> ThrowawayRedis:
    servers.append(server)
    try:
        return server.start()
    except FileNotFoundError as exc:
        missing("redis-server", exc)
    raise AssertionError("unreachable")


def ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_a_foreground_server_is_our_child_answers_and_stops(tmp_path, servers):
    server = start(servers, ThrowawayRedis(tmp_path / "redis", password=PASSWORD))
    assert server.process is not None and server.pid == server.process.pid
    assert ppid(server.pid) == os.getpid()
    assert server.client().ping() is True
    assert server.client().config_get("save") == {"save": ""}  # nothing persists
    assert server.client().config_get("appendonly") == {"appendonly": "no"}
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=server.port).ping()  # requirepass holds
    assert PASSWORD.encode() not in cmdline(server.pid)  # it is in the 0600 config file
    assert (tmp_path / "redis" / "redis.conf").stat().st_mode & 0o077 == 0
    assert "Ready to accept connections" in server.log.read_text()

    pid, port = server.pid, server.port
    server.stop()
    assert gone(pid) and port_free(port)
    assert server.process is None and server.pid is None


def test_a_restart_on_the_same_port_gives_an_empty_redis(tmp_path, servers):
    server = start(servers, ThrowawayRedis(tmp_path / "redis"))
    server.client().set("k", "v")
    before = server.pid
    server.restart()
    assert server.pid != before
    assert server.client().get("k") is None


def test_a_daemon_outlives_its_starter_and_is_stopped_by_its_pidfile(tmp_path, servers):
    pidfile = tmp_path / "run" / "redis.pid"
    server = start(servers, ThrowawayRedis(tmp_path / "redis", daemonize=True, pidfile=pidfile))
    assert server.process is None  # redis-server forked and its first process exited
    pid = int(pidfile.read_text())
    assert server.pid == pid and ppid(pid) != os.getpid()
    assert server.client().ping() is True

    # Another process (``make stack-down``) knows only the folder, the port and the pid file.
    later = ThrowawayRedis(tmp_path / "redis", port=server.port, daemonize=True, pidfile=pidfile)
    assert later.running_pid() == pid
    later.stop()
    assert gone(pid) and port_free(server.port)
    assert not pidfile.exists()


def test_a_recycled_pid_in_the_pidfile_is_never_signalled(tmp_path):
    pidfile = tmp_path / "redis.pid"
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        pidfile.write_text(f"{sleeper.pid}\n")
        server = ThrowawayRedis(tmp_path, daemonize=True, pidfile=pidfile)
        assert server.running_pid() is None
        server.stop()
        assert sleeper.poll() is None  # not a redis-server: left alone
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_server_that_cannot_listen_says_why_from_its_log(tmp_path, servers):
    first = start(servers, ThrowawayRedis(tmp_path / "first"))
    second = ThrowawayRedis(tmp_path / "second", port=first.port)
    servers.append(second)
    with pytest.raises(RedisServerError, match="(?s)exited; its log .*Address already in use"):
        second.start()
    assert second.process is None


def test_a_tls_server_listens_only_over_tls(tmp_path, servers):
    try:
        tls: TlsFiles = tls_material(tmp_path / "tls")
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        missing("openssl, to make a throwaway CA,", exc)
    server = ThrowawayRedis(tmp_path / "redis", tls=tls, password=PASSWORD)
    try:
        start(servers, server)
    except RedisServerError as exc:
        missing("redis-server built with TLS", exc)
    assert server.url.startswith("rediss://")
    assert server.client().ping() is True
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=server.port, password=PASSWORD, socket_timeout=1).ping()
    assert server.client().config_get("port") == {"port": "0"}  # no plain port at all


# -- the stack's Redis and the benchmark's ---------------------------------------------------


@pytest.fixture
def topology(tmp_path) -> Iterator[stack_module.Topology]:
    """A stack's topology on free ports, of which only Redis is ever started here."""
    p = free_ports(13)
    work = tmp_path / "stack"
    work.mkdir()
    ports = Ports(p[0], p[1], p[2], p[3], (p[4], p[5], p[6]), *p[7:13])
    built = _build_topology(work, ports)
    yield built
    with_redis = load_topology(work)
    if with_redis is not None and stack_module.is_alive(with_redis, "redis"):
        stack_module.stop_component(with_redis, "redis")


def test_the_stack_s_redis_is_a_daemon_found_again_from_topology_json(topology):
    try:
        stack_module.start_component(topology, "redis")
    except stack_module.StackError as exc:
        if "redis-server: not found" in str(exc):
            missing("redis-server", exc)
        raise
    pid = topology.redis.pid
    assert pid is not None and ppid(pid) != os.getpid()
    assert Path(topology.redis.pidfile).read_text().strip() == str(pid)
    assert redis.Redis.from_url(topology.redis.url).ping() is True

    again = load_topology(topology.work_dir)  # as `make stack-down` finds it
    assert again is not None and stack_module.is_alive(again, "redis")
    stack_module.stop_component(again, "redis")
    assert gone(pid) and again.redis.pid is None
    assert not stack_module.is_alive(again, "redis")


def no_redis_server_anywhere(monkeypatch, tmp_path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    without = tuple(Program(p.name, p.package, None, p.in_pg_bin) for p in PROGRAMS)
    monkeypatch.setattr("deploy.stack.programs.PROGRAMS", without)


def test_without_redis_server_the_stack_names_the_debian_package(topology, monkeypatch, tmp_path):
    no_redis_server_anywhere(monkeypatch, tmp_path)
    with pytest.raises(FileNotFoundError):
        redis_server_binary()
    with pytest.raises(stack_module.StackError) as raised:
        stack_module.start_component(topology, "redis")
    message = str(raised.value)
    assert "redis-server: not found on PATH; Debian package redis-server" in message
    assert message.endswith("install them with: sudo apt-get install redis-server")


def test_without_redis_server_the_bench_names_the_debian_package(monkeypatch, tmp_path):
    no_redis_server_anywhere(monkeypatch, tmp_path)
    with pytest.raises(BenchError, match="install the Debian package redis-server"):
        start_redis(tmp_path / "logs")


def test_the_bench_s_private_redis_is_recorded_and_stopped_with_the_rest(tmp_path):
    from bench import servers as bench_servers

    try:
        process = start_redis(tmp_path / "logs")
    except BenchError as exc:
        if "not found" not in str(exc):
            raise
        missing("redis-server", exc)
    try:
        assert process in bench_servers.STARTED and process.alive()
        assert redis.Redis.from_url(process.url).ping() is True
        assert process.log == tmp_path / "logs" / "redis.log"
    finally:
        bench_servers.stop_all()
    assert not process.alive() and process not in bench_servers.STARTED
