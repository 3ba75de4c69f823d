"""One component at a time, by name: start, stop, restart, crash."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from deploy.stack.apps import _clear_app_leftovers, _start_app, _stop_app
from deploy.stack.haproxy import _start_balancer
from deploy.stack.monitoring import start_monitor
from deploy.stack.pgbouncer import _start_pgbouncer, wait_until_reachable
from deploy.stack.postgres import _pg_stop, _start_primary, _start_replica
from deploy.stack.processes import (
    _MARKERS,
    _live_pid,
    _pid_alive,
    _require_ports_free,
    _terminate,
    _wait_port_free,
    is_alive,
)
from deploy.stack.redis_server import _start_redis, _stop_redis
from deploy.stack.smtp_sink import _start_smtp
from deploy.stack.topology import (
    APP_NAMES,
    MONITORS,
    App,
    Balancer,
    EdgeCache,
    EdgePurger,
    Monitor,
    PgBouncer,
    PgServer,
    RedisServer,
    SmtpSink,
    StackError,
    Topology,
    save_topology,
)
from deploy.stack.varnish import _start_cache, _start_purger

# ------------------------------------------------------------------------------- components


def _start_one(topology: Topology, name: str, wait: bool = True) -> str:
    if name == "primary":
        detail = _start_primary(topology)
        wait_until_reachable(topology, "shop")  # ready when the instances reach it
        return detail
    if name == "replica":
        detail = _start_replica(topology)
        wait_until_reachable(topology, "shop_replica")
        return detail
    if name == "pgbouncer":
        return _start_pgbouncer(topology)
    if name == "redis":
        return _start_redis(topology)
    if name == "smtp":
        return _start_smtp(topology)
    if name in APP_NAMES:
        return _start_app(topology, name, wait)
    if name == "cache":
        return _start_cache(topology)
    if name == "purger":
        return _start_purger(topology)
    if name in MONITORS:
        return start_monitor(topology, name)
    return _start_balancer(topology, wait)


def start_component(topology: Topology, name: str, *, wait: bool = True) -> Topology:
    """Start ``name`` unless it is alive; wait until it is ready (``wait=False``: apps and the
    balancer only get spawned). Redis always comes back empty."""
    entry = topology.component(name)
    if is_alive(topology, name):
        return topology
    if name in APP_NAMES:
        _clear_app_leftovers(entry)
    if entry.port is not None and not _wait_port_free(entry.port):
        _require_ports_free({name: entry.port})
    if isinstance(entry, EdgeCache) and not _wait_port_free(entry.purge_port):
        _require_ports_free({"cache_purge": entry.purge_port})
    try:
        _start_one(topology, name, wait)
    finally:
        save_topology(topology)
    return topology


def stop_component(topology: Topology, name: str) -> Topology:
    """Stop ``name`` by pid (PostgreSQL: ``pg_ctl stop -m fast``) and wait for its port."""
    entry = topology.component(name)
    pid = _live_pid(topology, name)
    if isinstance(entry, PgServer):
        _pg_stop(entry)
    elif isinstance(entry, App):
        _stop_app(entry, pid)
    elif isinstance(entry, RedisServer):
        _stop_redis(topology)
    else:
        _terminate([pid] if pid else [], _MARKERS[name])
        entry.pid = None
    if isinstance(entry, Balancer):
        Path(entry.stats_socket).unlink(missing_ok=True)
    if isinstance(entry, (App, Balancer, SmtpSink, EdgeCache, EdgePurger, PgBouncer, Monitor)):
        Path(entry.pidfile).unlink(missing_ok=True)  # Redis removes its own; PostgreSQL: none
    save_topology(topology)
    if entry.port is not None and not _wait_port_free(entry.port):
        raise StackError(f"{name} stopped but port {entry.port} is still taken")
    return topology


def restart_app(topology: Topology, name: str, *, wait: bool = True) -> Topology:
    """Stop the instance if it lives (leftover workers too), start it with its recorded
    command and env, and (``wait``) until it answers its health check."""
    if name not in APP_NAMES:
        raise StackError(f"unknown app {name!r}; one of {', '.join(APP_NAMES)}")
    stop_component(topology, name)
    return start_component(topology, name, wait=wait)


def crash_component(topology: Topology, name: str) -> int:
    """SIGKILL the component's process, as a crash does (no shutdown of its own), and wait
    until it is gone; returns its pid. ``start_component`` brings it back. Apps: the master
    only, as :func:`kill_app`."""
    if name in APP_NAMES:
        return kill_app(topology, name)
    pid = _live_pid(topology, name)
    if pid is None:
        raise StackError(f"{name} is not running")
    os.kill(pid, signal.SIGKILL)
    _terminate([pid], _MARKERS[name], timeout=5.0)  # waits for it (nothing left to signal)
    return pid


def kill_app(topology: Topology, name: str, sig: int = signal.SIGKILL) -> int:
    """Send ``sig`` to the instance's gunicorn master only (a crash); returns its pid."""
    entry = topology.apps[name]
    pid = entry.pid
    if not _pid_alive(pid, "gunicorn"):
        raise StackError(f"{name} is not running")
    os.kill(pid, sig)
    return pid
