"""HAProxy in front of the instances: its config, TLS certificate, stats socket."""

from __future__ import annotations

import csv
import io
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from deploy.haproxy import CacheHop, Edge, Tls, render
from deploy.stack.processes import (
    _http_status,
    _pid_alive,
    _wait_until,
    exited,
    is_alive,
    spawn_child,
)
from deploy.stack.topology import (
    APP_NAMES,
    LOOPBACK,
    StackError,
    Topology,
    save_topology,
)

# ---------------------------------------------------------------------------------- HAProxy


def stack_edge(topology: Topology) -> Edge:
    """What sets the stack's balancer apart from compose's: loopback ports, an HTTPS port with
    the stack's own certificate, the stats socket its tools read, and 127.0.0.1 (make bench,
    the stack tests' races) exempt from the rate rules. It shares a developer's machine with
    three instances, PostgreSQL and Redis, hence two threads and a smaller maxconn; and Varnish
    between the rules and the instances for GET and HEAD."""
    entry = topology.balancer
    if entry.tls_port is None or entry.tls_pem is None or entry.from_cache_port is None:
        raise StackError("topology.json was written by an older stack.py: make stack-down first")
    return Edge(
        servers={name: f"{LOOPBACK}:{app.port}" for name, app in topology.apps.items()},
        port=entry.port,
        host=LOOPBACK,
        tls=Tls(port=entry.tls_port, pem=entry.tls_pem),
        rate_exempt=LOOPBACK,
        stats_socket=entry.stats_socket,
        threads=2,
        maxconn=2000,
        # Varnish between the edge rules and the instances (deploy/stack/varnish.py).
        cache=CacheHop(f"{LOOPBACK}:{topology.cache.port}", entry.from_cache_port),
    )


def _tls_certificate(path: Path) -> None:
    """A self-signed certificate and its key in one PEM (what HAProxy's ``crt`` takes), made
    once: the HTTPS port exists so the rules that only apply over TLS can be seen working."""
    if path.exists():
        return
    fresh = path.with_suffix(".new")
    args = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    args += ["-nodes", "-days", "3650", "-subj", f"/CN={LOOPBACK}", "-keyout", str(fresh)]
    args += ["-out", str(fresh), "-addext", f"subjectAltName=IP:{LOOPBACK}"]
    try:
        done = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise StackError(f"openssl is needed for the balancer's HTTPS port: {exc}") from None
    if done.returncode != 0:
        raise StackError(f"openssl failed:\n{(done.stdout + done.stderr).strip()}")
    fresh.chmod(0o600)
    os.replace(fresh, path)


def _haproxy_binary() -> str:
    return shutil.which("haproxy") or "/usr/sbin/haproxy"


def _start_balancer(topology: Topology, wait: bool = True) -> str:
    entry = topology.balancer
    config = Path(entry.config)
    config.write_text(render(stack_edge(topology)))
    _tls_certificate(Path(entry.tls_pem))
    check = subprocess.run(
        [_haproxy_binary(), "-c", "-q", "-f", str(config)], capture_output=True, text=True
    )
    if check.returncode != 0:
        raise StackError(f"haproxy rejects {config}:\n{(check.stdout + check.stderr).strip()}")
    Path(entry.stats_socket).unlink(missing_ok=True)
    # Foreground (-db) under Popen rather than -D: "log stdout" then lands in our log file.
    entry.pid = spawn_child(
        [_haproxy_binary(), "-db", "-f", str(config)], log=entry.log, pidfile=entry.pidfile
    )
    save_topology(topology)
    if wait:
        _wait_balancer(topology)
    return f"{entry.url}  pid {entry.pid}"


def _wait_balancer(topology: Topology, timeout: float = 30.0) -> None:
    entry = topology.balancer
    live_apps = [name for name in APP_NAMES if is_alive(topology, name)]
    # Without the primary or Redis no /readyz passes: then only the stats socket must answer.
    deps_up = is_alive(topology, "primary") and is_alive(topology, "redis")

    def ready() -> bool:
        if not _pid_alive(entry.pid, "haproxy"):
            raise exited("haproxy", entry.pid, entry.log)
        states = haproxy_backends(topology)
        if not deps_up:
            return True
        if any(states.get(name) != "UP" for name in live_apps):
            return False
        return _http_status(entry.url + "/readyz") == 200

    _wait_until(ready, "HAProxy with every live instance UP", entry.log, timeout)


def _stats(topology: Topology, command: str) -> str:
    path = topology.balancer.stats_socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def haproxy_backends(topology: Topology, backend: str = "shop") -> dict[str, str]:
    """Each server of ``backend`` with the first word of its HAProxy status (UP, DOWN, ...)."""
    text = _stats(topology, "show stat").lstrip("# ")
    result = {}
    for row in csv.DictReader(io.StringIO(text)):
        if row.get("pxname") == backend and row.get("svname") not in ("FRONTEND", "BACKEND"):
            status = (row.get("status") or "").split()
            result[row["svname"]] = status[0] if status else ""
    return result


def wait_for_backends(
    topology: Topology,
    expected: str | Mapping[str, str] = "UP",
    *,
    timeout: float = 15.0,
    backend: str = "shop",
) -> dict[str, str]:
    """Wait until HAProxy shows ``expected``; with fall 2 / inter 1s a death shows in ~2-3 s."""
    want = dict.fromkeys(APP_NAMES, expected) if isinstance(expected, str) else dict(expected)
    deadline = time.monotonic() + timeout
    while True:
        states = haproxy_backends(topology, backend)
        if all(states.get(name) == status for name, status in want.items()):
            return states
        if time.monotonic() > deadline:
            raise StackError(f"HAProxy backends {states}, expected {want} after {timeout:.0f} s")
        time.sleep(0.2)
