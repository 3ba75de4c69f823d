"""The whole stack: up (or only its dead parts), down, by pid."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from deploy.stack.apps import _clear_app_leftovers, _migrate_and_seed, _spawn_app, _wait_app
from deploy.stack.components import start_component, stop_component
from deploy.stack.haproxy import _start_balancer, _wait_balancer
from deploy.stack.monitoring import start_monitor
from deploy.stack.pgbouncer import _start_pgbouncer
from deploy.stack.postgres import (
    _chown_postgres,
    _pg_stop_data_dir,
    _start_primary,
    _start_replica,
    _wait_replica_caught_up,
)
from deploy.stack.processes import (
    _group_pids,
    _pid_alive,
    _postmaster_pid,
    _require_ports_free,
    _wait_port_free,
    is_alive,
    stack_status,
)
from deploy.stack.programs import require_programs
from deploy.stack.redis_server import _start_redis
from deploy.stack.smtp_sink import _start_smtp
from deploy.stack.topology import (
    APP_NAMES,
    COMPONENTS,
    MONITORS,
    SEED_PRODUCTS,
    Echo,
    Ports,
    StackError,
    Topology,
    _build_topology,
    _work,
    load_topology,
    save_topology,
)
from deploy.stack.varnish import _start_cache, _start_purger

# ------------------------------------------------------------------------------ whole stack


def _prepare_work(work: Path) -> None:
    for sub in ("", "logs", "run"):
        (work / sub).mkdir(mode=0o755, parents=True, exist_ok=True)
    pg = work / "pg"
    pg.mkdir(mode=0o700, exist_ok=True)
    _chown_postgres(pg)
    if os.geteuid() == 0:
        # postgres must reach its data directories: every ancestor needs o+x.
        for folder in [work, *work.parents]:
            if not folder.stat().st_mode & 0o001:
                raise StackError(
                    f"{folder} is not traversable by the postgres user (chmod o+x it), or set "
                    "STACK_DIR to a folder under one that is"
                )
    socket_path = work / "run" / "haproxy.sock"
    if len(str(socket_path)) > 100:
        raise StackError(f"STACK_DIR is too long for a unix socket path: {socket_path}")


def _timed(echo: Echo, label: str, step: Callable[[], str], topology: Topology) -> str:
    """Run one start step, say how long it took, and record its pid even if it failed."""
    started = time.monotonic()
    try:
        detail = step()
    finally:
        save_topology(topology)
    echo(f"  {label:<9} {detail}  ({time.monotonic() - started:.1f} s)")
    return detail


def _serialized(echo: Echo) -> Echo:
    """Progress lines come from several threads; one at a time keeps each line whole."""
    lock = threading.Lock()

    def locked(line: str) -> None:
        with lock:
            echo(line)

    return locked


def _parallel(*steps: Callable[[], Any]) -> None:
    """Run independent steps at once; the first failure is raised after all have finished."""
    with ThreadPoolExecutor(max_workers=len(steps)) as pool:
        futures = [pool.submit(step) for step in steps]
    for future in futures:
        future.result()


def _summary(topology: Topology, echo: Echo) -> None:
    echo(f"shop      {topology.url}")
    balancer = topology.balancer
    if balancer.tls_url is not None:
        echo(f"          {balancer.tls_url}  (certificate: {balancer.tls_pem})")
    echo(f"cache     {topology.cache.url}  (Varnish; varnishlog -n {topology.cache.work_dir})")
    rows = [("balancer", topology.balancer.log)]
    names = ("cache", "purger", "pgbouncer", "primary", "replica", "redis", "smtp")
    rows += [(name, topology.component(name).log) for name in names]
    rows += [(name, app.log) for name, app in topology.apps.items()]
    rows.append(("setup", topology.setup_log))
    for i, (name, path) in enumerate(rows):
        echo(f"{'logs' if i == 0 else '':<9} {name:<9} {path}")
    echo(f"mail      {topology.smtp.maildir}  (every mail the shop sent, one .eml each)")
    echo(f"metrics   {topology.prometheus.url}  (Prometheus; instances' metrics ports not proxied)")
    echo(f"topology  {Path(topology.work_dir) / 'topology.json'}")


def start_stack(
    work_dir: str | os.PathLike[str] | None = None,
    *,
    ports: Ports | None = None,
    seed_products: int = SEED_PRODUCTS,
    echo: Echo = print,
) -> Topology:
    """Bring the stack up and return its topology.

    Already up: nothing is touched. Partly up: only the dead parts are started (on the ports
    the topology records). Nothing alive: a fresh start on ``ports`` (default: from the
    environment), reusing the data directories if they are there.
    """
    started = time.monotonic()
    work = _work(work_dir)
    # openssl only makes the certificate, once (see _tls_certificate).
    require_programs(have_certificate=(work / "tls.pem").exists())
    echo = _serialized(echo)
    old = load_topology(work)
    if old is not None:
        status = stack_status(old)
        if all(status.values()):
            echo("stack already up")
            _summary(old, echo)
            return old
        if any(status.values()):
            dead = [name for name in COMPONENTS if not status[name]]
            echo(f"restarting what is down: {', '.join(dead)}")
            failures = []
            for name in dead:  # in dependency order; one failure does not stop the rest
                try:
                    _timed(echo, name, lambda name=name: _restart_dead(old, name), old)
                except StackError as exc:
                    failures.append(f"{name}: {exc}")
                    echo(f"  {name:<9} FAILED")
            if failures:
                raise StackError("\n".join(failures))
            _wait_balancer(old)
            echo(f"stack up in {time.monotonic() - started:.1f} s")
            _summary(old, echo)
            return old
        for name in APP_NAMES:  # workers a killed master left behind
            _clear_app_leftovers(old.apps[name])

    _prepare_work(work)
    ports = ports or Ports.from_env()
    topology = _build_topology(work, ports)
    _require_ports_free(ports.all())
    save_topology(topology)
    echo(f"starting the stack in {work}")

    _parallel(
        lambda: _timed(echo, "primary", lambda: _start_primary(topology), topology),
        lambda: _timed(echo, "redis", lambda: _start_redis(topology), topology),
        lambda: _timed(echo, "smtp", lambda: _start_smtp(topology), topology),
        # Varnish needs nothing else to start: a miss before the balancer is up gets a 503
        # (nothing is sent to it until then).
        lambda: _timed(echo, "cache", lambda: _start_cache(topology), topology),
        # PgBouncer connects to the servers on demand: it needs neither up to start.
        lambda: _timed(echo, "pgbouncer", lambda: _start_pgbouncer(topology), topology),
    )
    save_topology(topology)
    _parallel(
        lambda: _timed(echo, "replica", lambda: _start_replica(topology), topology),
        lambda: _timed(
            echo, "schema", lambda: _migrate_and_seed(topology, seed_products), topology
        ),
        lambda: _timed(echo, "purger", lambda: _start_purger(topology), topology),
    )
    _wait_replica_caught_up(topology)
    save_topology(topology)
    for name in APP_NAMES:
        _spawn_app(topology.apps[name])
    save_topology(topology)
    app_started = time.monotonic()
    _parallel(
        *[
            lambda name=name: echo(
                f"  {name:<9} {_wait_app(topology, topology.apps[name])}"
                f"  ({time.monotonic() - app_started:.1f} s)"
            )
            for name in APP_NAMES
        ]
    )
    _timed(echo, "balancer", lambda: _start_balancer(topology), topology)
    save_topology(topology)
    _parallel(  # the monitoring (deploy/stack/monitoring.py)
        *[
            lambda name=name: _timed(echo, name, lambda: start_monitor(topology, name), topology)
            for name in MONITORS
        ]
    )
    save_topology(topology)
    echo(f"stack up in {time.monotonic() - started:.1f} s")
    _summary(topology, echo)
    return topology


def _restart_dead(topology: Topology, name: str) -> str:
    start_component(topology, name)
    entry = topology.component(name)
    return f"port {entry.port}  pid {entry.pid}"


def stop_stack(
    work_dir: str | os.PathLike[str] | None = None, *, purge: bool = False, echo: Echo = print
) -> None:
    """Stop everything the topology names, by pid, newest first; remove topology.json.
    ``purge`` also deletes the data directories, logs, secret key and HAProxy config."""
    work = _work(work_dir)
    topology = load_topology(work)
    if topology is None:
        echo(f"no stack recorded in {work}")
        # A PostgreSQL left running from its data directory is still ours to stop.
        for name in ("replica", "primary"):
            data = work / "pg" / name
            if _pid_alive(_postmaster_pid(data), "postgres"):
                _pg_stop_data_dir(data)
                echo(f"  {name:<9} stopped (found by its postmaster.pid)")
    else:
        for name in reversed(COMPONENTS):
            entry = topology.component(name)
            alive = is_alive(topology, name)
            leftovers = name in APP_NAMES and _group_pids(entry.pid, "gunicorn")
            if not (alive or leftovers):
                continue
            started = time.monotonic()
            stop_component(topology, name)
            echo(f"  {name:<9} stopped  ({time.monotonic() - started:.1f} s)")
        busy = {
            name: port
            for name, port in _ports_of(topology).items()
            if not _wait_port_free(port, timeout=2)
        }
        (work / "topology.json").unlink(missing_ok=True)
        if busy:
            raise StackError(f"stopped, but ports are still taken: {busy}")
    if purge:
        for sub in ("pg", "logs", "run", "redis", "mail"):
            shutil.rmtree(work / sub, ignore_errors=True)
        shutil.rmtree(work / "varnish", ignore_errors=True)
        shutil.rmtree(work / "prometheus", ignore_errors=True)
        for name in (
            "secret_key",
            "haproxy.cfg",
            "varnish.vcl",
            "tls.pem",
            "topology.json.tmp",
            "pgbouncer.ini",
            "pgbouncer-users.txt",
        ):
            (work / name).unlink(missing_ok=True)
        (work / "prometheus.yml").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            work.rmdir()
        echo(f"purged {work}")
    echo("stack down")


def _ports_of(topology: Topology) -> dict[str, int]:
    ports = {name: topology.component(name).port for name in COMPONENTS}
    ports["cache_purge"] = topology.cache.purge_port
    return {name: port for name, port in ports.items() if port is not None}
