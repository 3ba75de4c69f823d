"""The stack's edge cache: Varnish between HAProxy's edge rules and the instances, and the
purger that turns the shop's invalidations into purges.

The path of a GET or HEAD: client -> HAProxy ``edge`` (TLS, rate rules, body limits, the
client's address in X-Forwarded-For) -> Varnish -> HAProxy ``from_cache`` -> an instance, round
robin with health checks and retries as before. Other methods go from ``edge`` straight to the
instances. See docs/edge-cache.md for why Varnish sits there and not in front of HAProxy.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

from deploy.stack.processes import _pid_alive, _wait_until, exited, spawn_child
from deploy.stack.topology import LOOPBACK, REPO, StackError, Topology, save_topology
from deploy.varnish import PURGE_SOCKET, Cache, render


def varnishd_binary() -> str:
    return shutil.which("varnishd") or "/usr/sbin/varnishd"


def varnishd_command(vcl: str, work_dir: str, port: int, purge_port: int) -> list[str]:
    """``varnishd`` in the foreground (-F: its manager's output in our log, stopped by pid),
    shoppers' requests on ``port`` and purges on ``purge_port`` (the socket named
    :data:`PURGE_SOCKET`, the only one where PURGE works), no admin port (-T none), and a size
    that suits a developer's machine: 128 MB of pages, one small thread pool."""
    return [
        varnishd_binary(),
        "-F",
        "-n",
        work_dir,
        "-a",
        f"{LOOPBACK}:{port}",
        "-a",
        f"{PURGE_SOCKET}={LOOPBACK}:{purge_port}",
        "-f",
        vcl,
        "-T",
        "none",
        "-s",
        "malloc,128m",
        "-p",
        "thread_pools=1",
        "-p",
        "thread_pool_min=20",
        "-p",
        "thread_pool_max=1000",
        # Below HAProxy's keep-alive timeout (5 s): Varnish never reuses a connection HAProxy
        # is closing.
        "-p",
        "backend_idle_timeout=4",
    ]


def check_vcl(vcl: str, work_dir: str) -> None:
    """Compile the VCL (``varnishd -C``) and raise a :class:`StackError` with its complaint."""
    done = subprocess.run(
        [varnishd_binary(), "-C", "-n", work_dir, "-f", vcl],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise StackError(f"varnishd rejects {vcl}:\n{done.stderr.strip()[-3000:]}")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False


def _start_cache(topology: Topology) -> str:
    """Render the VCL (misses go to the balancer's ``from_cache`` frontend), check it, start
    varnishd and wait for both its sockets."""
    entry = topology.cache
    if topology.balancer.from_cache_port is None:
        raise StackError("topology.json was written by an older stack.py: make stack-down first")
    app_env = topology.apps["app1"].env
    cookie = app_env.get("SHOP_SESSION_COOKIE_NAME") or "shop_sid"
    Path(entry.vcl).write_text(render(Cache(LOOPBACK, topology.balancer.from_cache_port, cookie)))
    Path(entry.work_dir).mkdir(parents=True, exist_ok=True)
    check_vcl(entry.vcl, entry.work_dir)
    argv = varnishd_command(entry.vcl, entry.work_dir, entry.port, entry.purge_port)
    entry.pid = spawn_child(argv, log=entry.log, pidfile=entry.pidfile)
    save_topology(topology)

    def ready() -> bool:
        if not _pid_alive(entry.pid, "varnishd"):
            raise exited("varnishd", entry.pid, entry.log)
        return _answers(entry.port) and _answers(entry.purge_port)

    _wait_until(ready, "Varnish", entry.log, 30)
    return f"{entry.url}  pid {entry.pid}  (purges on {LOOPBACK}:{entry.purge_port})"


def _start_purger(topology: Topology) -> str:
    """The edge purger, subscribed to the shop's invalidations in the stack's Redis."""
    entry = topology.purger
    log_path = Path(entry.log)
    before = log_path.stat().st_size if log_path.exists() else 0  # the log is appended to
    argv = [sys.executable, "-m", "deploy.stack.edge_purger", "--redis", entry.redis_url]
    argv += ["--channel", entry.channel, "--varnish", f"{LOOPBACK}:{topology.cache.purge_port}"]
    entry.pid = spawn_child(argv, log=entry.log, pidfile=entry.pidfile, cwd=str(REPO))
    save_topology(topology)

    def ready() -> bool:  # it says so once subscribed (and Redis may be down: then alive only)
        if not _pid_alive(entry.pid, "edge_purger"):
            raise exited("the edge purger", entry.pid, entry.log)
        with log_path.open("rb") as log:
            log.seek(before)
            return b"listening on" in log.read()

    try:
        _wait_until(ready, "the edge purger", entry.log, 10)
    except StackError:
        if not _pid_alive(entry.pid, "edge_purger"):
            raise
        return f"pid {entry.pid}  (not subscribed yet: is Redis up?)"
    return f"pid {entry.pid}  ({entry.channel} -> purges)"
