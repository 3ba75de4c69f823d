"""Redis without persistence (stop + start gives an empty Redis), and the SMTP sink."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

from deploy.stack.processes import _wait_until, spawn_child
from deploy.stack.topology import LOOPBACK, REPO, StackError, Topology

# ------------------------------------------------------------------------------------- Redis


def _start_redis(topology: Topology) -> str:
    entry = topology.redis
    pidfile, log = Path(entry.pidfile), Path(entry.log)
    pidfile.unlink(missing_ok=True)
    data = Path(topology.work_dir) / "redis"
    data.mkdir(exist_ok=True)
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    args = [binary, "--port", str(entry.port), "--bind", LOOPBACK, "--save", ""]
    args += ["--appendonly", "no", "--daemonize", "yes", "--pidfile", str(pidfile)]
    args += ["--logfile", str(log), "--dir", str(data)]
    done = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise StackError(f"redis-server failed:\n{(done.stdout + done.stderr).strip()}")

    def ready() -> bool:
        import redis

        if not pidfile.exists():
            return False
        client = redis.Redis(host=LOOPBACK, port=entry.port, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()

    _wait_until(ready, "Redis", str(log), 20)
    entry.pid = int(pidfile.read_text().strip())
    return f"{LOOPBACK}:{entry.port}  pid {entry.pid}  (no persistence)"


# ------------------------------------------------------------------------------- SMTP sink


def _start_smtp(topology: Topology) -> str:
    """aiosmtpd keeping each message as a file in the sink's maildir (deploy/stack/smtp_sink)."""
    entry = topology.smtp
    Path(entry.pidfile).parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "deploy.stack.smtp_sink", "--port", str(entry.port)]
    argv += ["--dir", entry.maildir]
    entry.pid = spawn_child(argv, log=entry.log, pidfile=entry.pidfile, cwd=str(REPO))

    def ready() -> bool:
        try:
            with socket.create_connection((LOOPBACK, entry.port), timeout=1) as sock:
                return sock.recv(3) == b"220"
        except OSError:
            return False

    _wait_until(ready, "the SMTP sink", entry.log, 20)
    return f"{entry.url}  pid {entry.pid}  (mail kept in {entry.maildir})"
