"""The shop as it runs for real, on loopback: ``make stack`` / ``make stack-down``.

Why: what the shop promises (no stickiness, an instance may die, replica fallback, Redis and
primary outages) only shows with real servers and a real balancer. This starts them with ports
of their own, next to (never touching) any PostgreSQL or Redis already on the machine:

- PostgreSQL 15 primary and one streaming hot-standby replica (``pg_basebackup -R -X stream``),
  trust auth on 127.0.0.1 only, ``pg_stat_statements`` preloaded, database ``shop``;
- Redis without persistence (stop + start gives an empty Redis);
- three gunicorn instances of the shop (app1..app3), migrated and seeded once with 2000 demo
  products;
- HAProxy, round robin without stickiness, health checks on ``/readyz``, with the edge rules
  (rate limits, 413 for oversized bodies, HSTS over TLS); plain HTTP on the balancer port and
  HTTPS with a self-signed certificate (made with ``openssl`` on first start) on base+14.

Command line (``python deploy/stack/stack.py``)::

    up                   start what is not running (already up: says so; exit 0)
    down [--purge]       stop everything by pid; --purge (or STACK_PURGE=1) also deletes data
    status               each part alive or dead, HAProxy's view of the instances
    restart-app NAME     stop app1/app2/app3 if it lives, start it the same way again

Environment: ``STACK_DIR`` (work folder, default ``.stack`` in the repo), ``STACK_PORT``
(balancer, default 8000), ``STACK_PORT_BASE`` (default 25400: +0 primary, +1 replica, +2 Redis,
+11..+13 app1..app3, +14 the balancer's HTTPS; below Linux's ephemeral range 32768-60999, so
no outgoing connection can hold one of them), ``STACK_PG_BIN`` (default
/usr/lib/postgresql/15/bin), ``STACK_PURGE``.

Data directories are kept across ``down``/``up`` (the catalogue is seeded only into an empty
database; Redis always starts empty). ``down --purge`` deletes them, the logs, the secret key,
the TLS certificate and the rendered HAProxy config, so the next ``up`` starts from scratch.

Python API. A ``topology`` is the dict saved in ``<work>/topology.json``; component names are
``primary``, ``replica``, ``redis``, ``app1``, ``app2``, ``app3`` and ``balancer``. Functions
that start or stop something update the topology in place and save it.

``start_stack(work_dir=None, *, ports=None, seed_products=2000, echo=print) -> dict``
    Bring the stack up (or only its dead parts) and return the topology.
``stop_stack(work_dir=None, *, purge=False, echo=print) -> None``
    Stop everything the topology names, by pid; remove topology.json.
``load_topology(work_dir=None) -> dict | None``
``stack_status(topology) -> dict[str, bool]`` and ``is_alive(topology, name) -> bool``
``start_component(topology, name, *, wait=True) -> dict`` / ``stop_component(topology, name)``
    Any component; ``stop_component(t, "redis")`` + ``start_component(t, "redis")`` gives an
    empty Redis. An app started while the primary or Redis is down waits for ``/healthz``
    only (its ``/readyz`` cannot pass).
``restart_app(topology, name, *, wait=True) -> dict``
    Stop (if alive, leftover workers included) and start again with the recorded env/command.
``kill_app(topology, name, sig=signal.SIGKILL) -> int``
    Signal the gunicorn master only, like a crash; returns its pid. Orphaned workers notice
    within about a second and exit.
``haproxy_backends(topology, backend="apps") -> dict[str, str]``
    ``{"app1": "UP", ...}`` from the stats socket (first word of HAProxy's status: UP, DOWN,
    MAINT, NOLB; "UP 1/2" -- up, one check failed -- is reported as UP).
``wait_for_backends(topology, expected="UP", *, timeout=15.0, backend="apps") -> dict``
    Wait until HAProxy reports ``expected`` (one status for all, or ``{name: status}``).

``Ports.from_env()`` gives the ports the environment asks for; ``StackError`` is raised for
anything that cannot start (busy port, a part that never became ready: the message names its
log).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from shop.throttle import RULES

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
HAPROXY_TEMPLATE = HERE / "haproxy.cfg.tmpl"
LOOPBACK = "127.0.0.1"

APP_NAMES = ("app1", "app2", "app3")
# Start order; stop order is the reverse.
COMPONENTS = ("primary", "replica", "redis", *APP_NAMES, "balancer")
# What a component's /proc/<pid>/cmdline must contain, so a recycled pid is never taken for ours.
_MARKERS = {"primary": "postgres", "replica": "postgres", "redis": "redis-server"}
_MARKERS.update({name: "gunicorn" for name in APP_NAMES}, balancer="haproxy")

DEFAULT_PORT = 8000
DEFAULT_PORT_BASE = 25400
SEED_PRODUCTS = 2000
STOP_TIMEOUT = 10.0

Topology = dict[str, Any]
Echo = Callable[[str], None]

# Popen objects of the children we started, so they are reaped rather than left as zombies
# (and no "subprocess still running" ResourceWarning when one would be garbage-collected).
_CHILDREN: dict[int, subprocess.Popen] = {}
_SAVE_LOCK = threading.Lock()


class StackError(RuntimeError):
    """A part of the stack cannot be started or stopped; the message says where to look."""


@dataclass(frozen=True)
class Ports:
    """The loopback ports of one stack."""

    balancer: int
    primary: int
    replica: int
    redis: int
    apps: tuple[int, ...]
    balancer_tls: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Ports:
        """STACK_PORT for the balancer, the others from STACK_PORT_BASE."""
        environ = os.environ if environ is None else environ
        balancer = _port_env(environ, "STACK_PORT", DEFAULT_PORT)
        base = _port_env(environ, "STACK_PORT_BASE", DEFAULT_PORT_BASE)
        if base + 14 > 65535:
            raise StackError(f"STACK_PORT_BASE={base} leaves no room for base+14")
        apps = (base + 11, base + 12, base + 13)
        ports = cls(balancer, base, base + 1, base + 2, apps, base + 14)
        if len(set(ports.all().values())) != len(ports.all()):
            raise StackError(f"STACK_PORT={balancer} collides with a port derived from {base}")
        return ports

    def all(self) -> dict[str, int]:
        named = {"primary": self.primary, "replica": self.replica, "redis": self.redis}
        named.update(zip(APP_NAMES, self.apps, strict=True))
        named["balancer"] = self.balancer
        named["balancer_tls"] = self.balancer_tls
        return named


def _port_env(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise StackError(f"{name} must be a port number, got {raw!r}") from None
    if not 1 <= port <= 65535:
        raise StackError(f"{name} must be between 1 and 65535, got {port}")
    return port


# --------------------------------------------------------------------------- paths, topology


def default_work_dir() -> Path:
    return Path(os.environ.get("STACK_DIR") or REPO / ".stack").resolve()


def _work(work_dir: str | os.PathLike[str] | None) -> Path:
    return Path(work_dir).resolve() if work_dir is not None else default_work_dir()


def _pg_bin_dir() -> Path:
    return Path(os.environ.get("STACK_PG_BIN") or "/usr/lib/postgresql/15/bin")


def _venv_bin() -> Path:
    """The venv running this script: gunicorn and flask come from the same install."""
    candidate = Path(sys.prefix) / "bin"
    return candidate if (candidate / "gunicorn").exists() else REPO / ".venv" / "bin"


def load_topology(work_dir: str | os.PathLike[str] | None = None) -> Topology | None:
    path = _work(work_dir) / "topology.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise StackError(f"{path} is not valid JSON ({exc}); delete it or run stack-down") from None


def save_topology(topology: Topology) -> None:
    """Written atomically and 0600: it holds the stack's secret key in the apps' env."""
    path = Path(topology["work_dir"]) / "topology.json"
    with _SAVE_LOCK:
        tmp = path.with_suffix(".json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(topology, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)


def _entry(topology: Topology, name: str) -> dict[str, Any]:
    if name in APP_NAMES:
        return topology["apps"][name]
    if name in COMPONENTS:
        return topology[name]
    raise StackError(f"unknown component {name!r}; one of {', '.join(COMPONENTS)}")


def _secret_key(work: Path) -> tuple[str, Path]:
    """Generated once, so restarts keep sessions' CSRF tokens valid."""
    path = work / "secret_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip(), path
    key = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key, path


def _build_topology(work: Path, ports: Ports) -> Topology:
    logs, run = work / "logs", work / "run"
    key, key_path = _secret_key(work)
    pg_dir = work / "pg"

    def pg(name: str, port: int) -> dict[str, Any]:
        return {
            "port": port,
            "data_dir": str(pg_dir / name),
            "pid": None,
            "log": str(logs / f"{name}.log"),
            "url": f"postgresql+psycopg2://postgres@{LOOPBACK}:{port}/shop",
            "dsn": f"host={LOOPBACK} port={port} user=postgres dbname=shop",
        }

    primary, replica = pg("primary", ports.primary), pg("replica", ports.replica)
    redis_url = f"redis://{LOOPBACK}:{ports.redis}/0"
    bin_dir = _venv_bin()
    apps = {}
    for name, port in zip(APP_NAMES, ports.apps, strict=True):
        env = {
            # A clean environment: nothing from the caller's shell (a stray SHOP_* variable,
            # a proxy setting) changes an instance, and the record below is complete.
            "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "SHOP_DATABASE_URL": primary["url"],
            "SHOP_REPLICA_URLS": replica["url"],
            "SHOP_REDIS_URL": redis_url,
            "SHOP_SECRET_KEY": key,
            "SHOP_INSTANCE_NAME": name,
            "SHOP_BIND": f"{LOOPBACK}:{port}",
            "SHOP_WORKERS": "2",
            "SHOP_THREADS": "4",
            "SHOP_TRUSTED_PROXIES": "1",
            "SHOP_ENV": "development",
            "SHOP_REPLICA_RETRY_AFTER": "2",
            "SHOP_DB_CONNECT_TIMEOUT": "2",
            # The shop's own per-address rules: everything here comes from 127.0.0.1 (you, the
            # stack tests' 100 racing buyers, make bench), which HAProxy exempts too. They are
            # tested in tests/test_throttle.py; the failed-login back-off per account stays on.
            **{f"SHOP_LIMIT_{rule.upper()}": "" for rule in RULES},
        }
        apps[name] = {
            "name": name,
            "port": port,
            "pid": None,
            "log": str(logs / f"{name}.log"),
            "pidfile": str(run / f"{name}.pid"),
            "url": f"http://{LOOPBACK}:{port}",
            "cwd": str(REPO),
            "command": [str(bin_dir / "gunicorn"), "wsgi:app", "-c", "gunicorn.conf.py"],
            "env": env,
        }
    return {
        "version": 1,
        "work_dir": str(work),
        "url": f"http://{LOOPBACK}:{ports.balancer}",
        "secret_key_file": str(key_path),
        "setup_log": str(logs / "setup.log"),
        "balancer": {
            "port": ports.balancer,
            "pid": None,
            "url": f"http://{LOOPBACK}:{ports.balancer}",
            "tls_port": ports.balancer_tls,
            "tls_url": f"https://{LOOPBACK}:{ports.balancer_tls}",
            "tls_pem": str(work / "tls.pem"),
            "config": str(work / "haproxy.cfg"),
            "stats_socket": str(run / "haproxy.sock"),
            "pidfile": str(run / "haproxy.pid"),
            "log": str(logs / "haproxy.log"),
        },
        "primary": primary,
        "replica": replica,
        "redis": {
            "port": ports.redis,
            "pid": None,
            "pidfile": str(run / "redis.pid"),
            "log": str(logs / "redis.log"),
            "url": redis_url,
        },
        "apps": apps,
    }


# --------------------------------------------------------------------------------- processes


def _reap(pid: int) -> None:
    """Collect a child of ours that has exited, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        _CHILDREN.pop(pid, None)


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, ..."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int | None, marker: str) -> bool:
    if not pid:
        return False
    _reap(pid)
    fields = _proc_stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    try:
        return marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _group_pids(pgid: int | None, marker: str) -> list[int]:
    """Live processes of a process group (a gunicorn master and its workers, even orphaned)."""
    if not pgid:
        return []
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        fields = _proc_stat(int(proc.name))
        if fields and int(fields[2]) == pgid and _pid_alive(int(proc.name), marker):
            found.append(int(proc.name))
    return found


def _terminate(pids: list[int], marker: str, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL whatever is left."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        alive = [pid for pid in pids if _pid_alive(pid, marker)]
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while alive and time.monotonic() < deadline:
            time.sleep(0.05)
            alive = [pid for pid in alive if _pid_alive(pid, marker)]
        if not alive:
            return
    raise StackError(f"processes {alive} survived SIGKILL")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as servers set it: a TIME_WAIT left by a stopped server is no conflict.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _port_owner(port: int) -> str:
    """Who listens on ``port``, from ``ss``, to say what is in the way."""
    try:
        out = subprocess.run(
            ["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return " ".join(out.split()) if out else ""


def _wait_port_free(port: int, timeout: float = STOP_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while not _port_free(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _require_ports_free(named: Mapping[str, int]) -> None:
    busy = {name: port for name, port in named.items() if not _port_free(port)}
    if busy:
        lines = []
        for name, port in busy.items():
            owner = _port_owner(port)
            lines.append(
                f"  {name}: {LOOPBACK}:{port} is in use" + (f" ({owner})" if owner else "")
            )
        raise StackError(
            "ports needed by the stack are taken:\n"
            + "\n".join(lines)
            + "\nchoose others with STACK_PORT (balancer) or STACK_PORT_BASE (the rest)"
        )


def _tail(path: str | os.PathLike[str], lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join("    " + line for line in text)


def _wait_until(check: Callable[[], bool], what: str, log: str | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except StackError:
            raise
        except Exception:  # noqa: BLE001 - "not ready yet" comes in many shapes
            pass
        if time.monotonic() > deadline:
            hint = f"; its log {log}:\n{_tail(log)}" if log else ""
            raise StackError(f"{what} not ready after {timeout:.0f} s{hint}")
        time.sleep(0.1)


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_status(url: str, timeout: float = 3.0) -> int:
    """GET ``url`` directly (never through an http_proxy from the environment)."""
    try:
        with _NO_PROXY.open(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


# -------------------------------------------------------------------------------- PostgreSQL


def _as_postgres() -> dict[str, Any]:
    """initdb and postgres refuse root: run PostgreSQL's tools as ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return {}
    account = pwd.getpwnam("postgres")
    env = {"PATH": "/usr/bin:/bin", "HOME": account.pw_dir, "LANG": "C.UTF-8"}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": [], "env": env}


def _chown_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(path, account.pw_uid, account.pw_gid)


def _pg_run(args: list[str], what: str, timeout: float = 120.0) -> str:
    try:
        done = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
            stdin=subprocess.DEVNULL,
            **_as_postgres(),
        )
    except subprocess.TimeoutExpired:
        raise StackError(f"{what}: no answer after {timeout:.0f} s ({' '.join(args)})") from None
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise StackError(f"{what} failed ({' '.join(args)}):\n{output}")
    return done.stdout


def _pg_extension_available() -> bool:
    try:
        share = subprocess.run(
            [str(_pg_bin_dir() / "pg_config"), "--sharedir"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        share = ""
    share = share or "/usr/share/postgresql/15"
    return (Path(share) / "extension" / "pg_stat_statements.control").exists()


def _pg_initialized(data: Path) -> bool:
    conf = data / "postgresql.conf"
    return (data / "PG_VERSION").exists() and conf.exists() and "stack.conf" in conf.read_text()


def _write_pg_conf(data: Path, port: int) -> None:
    """Our settings, rewritten on every start so the ports always match the topology."""
    lines = [
        "# Written by deploy/stack/stack.py on every start; edits here are overwritten.",
        f"listen_addresses = '{LOOPBACK}'",
        f"port = {port}",
        "unix_socket_directories = ''",
        # 3 instances x 2 workers x (pool 5 + overflow 10) per engine, plus tools.
        "max_connections = 200",
        "wal_level = replica",
        "max_wal_senders = 5",
        "wal_keep_size = '256MB'",
        "hot_standby = on",
        "track_counts = on",
        "log_line_prefix = '%m [%p] %q%u@%d '",
    ]
    if _pg_extension_available():
        lines.append("shared_preload_libraries = 'pg_stat_statements'")
    path = data / "stack.conf"
    path.write_text("\n".join(lines) + "\n")
    _chown_postgres(path)


def _postmaster_pid(data: Path) -> int | None:
    try:
        return int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _pg_connect(port: int, dbname: str = "postgres"):  # -> psycopg2 connection
    import psycopg2

    conn = psycopg2.connect(
        host=LOOPBACK, port=port, user="postgres", dbname=dbname, connect_timeout=2
    )
    conn.autocommit = True
    return conn


def _pg_query(port: int, sql: str, dbname: str = "postgres", params: tuple = ()) -> Any:
    conn = _pg_connect(port, dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            row = cur.fetchone() if cur.description else None
            return row[0] if row else None
    finally:
        conn.close()


def _system_identifier(data: Path) -> str | None:
    try:
        out = subprocess.run(
            [str(_pg_bin_dir() / "pg_controldata"), "-D", str(data)],
            capture_output=True,
            text=True,
            env={"LANG": "C", "LC_ALL": "C", "PATH": "/usr/bin:/bin"},
        ).stdout
    except OSError:
        return None
    for line in out.splitlines():
        if line.startswith("Database system identifier:"):
            return line.split(":", 1)[1].strip()
    return None


def _init_primary(entry: dict[str, Any]) -> None:
    data = Path(entry["data_dir"])
    if _pg_initialized(data):
        return
    fresh = data.with_name(data.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    args = [str(_pg_bin_dir() / "initdb"), "--pgdata", str(fresh)]
    args += ["--auth=trust", "--username=postgres", "--encoding=UTF8", "--no-locale"]
    args.append("--no-sync")
    _pg_run(args, "initdb")
    with open(fresh / "postgresql.conf", "a") as conf:
        conf.write("\ninclude 'stack.conf'\n")
    shutil.rmtree(data, ignore_errors=True)
    fresh.rename(data)


def _replica_usable(replica: dict[str, Any], primary: dict[str, Any]) -> bool:
    """A standby of *this* primary, pointed at its current port; otherwise it is re-made."""
    data = Path(replica["data_dir"])
    if not (_pg_initialized(data) and (data / "standby.signal").exists()):
        return False
    try:
        auto = (data / "postgresql.auto.conf").read_text()
    except OSError:
        return False
    if f"port={primary['port']}" not in auto:
        return False
    ours = _system_identifier(data)
    return ours is not None and ours == _system_identifier(Path(primary["data_dir"]))


def _clone_replica(replica: dict[str, Any], primary: dict[str, Any]) -> None:
    data = Path(replica["data_dir"])
    fresh = data.with_name(data.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    args = [str(_pg_bin_dir() / "pg_basebackup"), "--pgdata", str(fresh)]
    args += ["--host", LOOPBACK, "--port", str(primary["port"]), "--username=postgres"]
    # -R -X stream: a standby.signal plus primary_conninfo, and the WAL needed to start.
    args += ["--write-recovery-conf", "--wal-method=stream", "--checkpoint=fast", "--no-sync"]
    _pg_run(args, "pg_basebackup")
    shutil.rmtree(data, ignore_errors=True)
    fresh.rename(data)


def _shm_attached(shmid: int) -> int | None:
    """Processes attached to a SysV segment (None: the segment is gone)."""
    try:
        rows = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return None
    for row in rows:
        fields = row.split()
        if int(fields[1]) == shmid:
            return int(fields[6])
    return None


def _clear_stale_postmaster_pid(data: Path, timeout: float = 30.0) -> None:
    """A postmaster killed with SIGKILL stays a zombie until init reaps it (lazily on this
    machine), and PostgreSQL takes a zombie's pid for a running server. Once no process is
    attached to its interlock segment (PostgreSQL's own test that no backend survived), its
    lock file is stale and goes."""
    lock = data / "postmaster.pid"
    deadline = time.monotonic() + timeout
    while True:
        pid = _postmaster_pid(data)
        if pid is None or _pid_alive(pid, "postgres"):
            return
        fields = _proc_stat(pid)
        if fields is None:  # reaped: PostgreSQL's own checks take it from here
            return
        if fields[0] == "Z":
            try:
                shmid = int(lock.read_text().splitlines()[6].split()[1])
            except (OSError, IndexError, ValueError):
                shmid = None
            if shmid is None or not _shm_attached(shmid):
                lock.unlink(missing_ok=True)
                return
        if time.monotonic() > deadline:
            return
        time.sleep(0.1)


def _pg_start(entry: dict[str, Any]) -> None:
    data, log = Path(entry["data_dir"]), Path(entry["log"])
    _clear_stale_postmaster_pid(data)
    _write_pg_conf(data, entry["port"])
    log.touch()
    _chown_postgres(log)
    try:
        args = [str(_pg_bin_dir() / "pg_ctl"), "start", "-D", str(data), "-l", str(log)]
        _pg_run([*args, "-w", "-t", "60", "-s"], "pg_ctl start", timeout=90)
    except StackError as exc:
        raise StackError(f"{exc}\nits log {log}:\n{_tail(log)}") from None
    entry["pid"] = _postmaster_pid(data)
    _wait_until(lambda: _pg_query(entry["port"], "SELECT 1") == 1, "PostgreSQL", str(log), 30)


def _pg_stop(entry: dict[str, Any]) -> None:
    data = Path(entry["data_dir"])
    pid = _postmaster_pid(data) or entry.get("pid")
    if _pid_alive(pid, "postgres"):
        try:
            _pg_run(
                [str(_pg_bin_dir() / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w", "-s"],
                "pg_ctl stop",
                timeout=60,
            )
        except StackError:
            # pg_ctl could not do it (a broken data dir): SIGINT is PostgreSQL's fast shutdown.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
            _terminate([pid], "postgres")
    entry["pid"] = None


def _start_primary(topology: Topology) -> str:
    entry = topology["primary"]
    _init_primary(entry)
    _pg_start(entry)
    port = entry["port"]
    if not _pg_query(port, "SELECT 1 FROM pg_database WHERE datname = 'shop'"):
        _pg_query(port, "CREATE DATABASE shop")
    if _pg_extension_available():
        _pg_query(port, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements", dbname="shop")
    return f"{LOOPBACK}:{port}  pid {entry['pid']}"


def _start_replica(topology: Topology) -> str:
    entry, primary = topology["replica"], topology["primary"]
    primary_up = is_alive(topology, "primary")
    if not _replica_usable(entry, primary):
        if not primary_up:
            raise StackError("the replica must be cloned from the primary, which is down")
        _clone_replica(entry, primary)
    _pg_start(entry)
    if not primary_up:
        return f"{LOOPBACK}:{entry['port']}  pid {entry['pid']}  (hot standby, primary down)"
    streaming = "SELECT status FROM pg_stat_wal_receiver"
    _wait_until(
        lambda: _pg_query(entry["port"], streaming) == "streaming",
        "replica streaming from the primary",
        entry["log"],
        30,
    )
    return f"{LOOPBACK}:{entry['port']}  pid {entry['pid']}  (hot standby, streaming)"


def _wait_replica_caught_up(topology: Topology) -> None:
    """The catalogue is read from the replica: it must hold the seed before apps serve."""
    target = _pg_query(topology["primary"]["port"], "SELECT pg_current_wal_lsn()::text")
    _wait_until(
        lambda: _pg_query(
            topology["replica"]["port"],
            "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
            params=(target,),
        ),
        "replica catching up with the primary",
        topology["replica"]["log"],
        30,
    )


# ------------------------------------------------------------------------------------- Redis


def _start_redis(topology: Topology) -> str:
    entry = topology["redis"]
    pidfile, log = Path(entry["pidfile"]), Path(entry["log"])
    pidfile.unlink(missing_ok=True)
    data = Path(topology["work_dir"]) / "redis"
    data.mkdir(exist_ok=True)
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    args = [binary, "--port", str(entry["port"]), "--bind", LOOPBACK, "--save", ""]
    args += ["--appendonly", "no", "--daemonize", "yes", "--pidfile", str(pidfile)]
    args += ["--logfile", str(log), "--dir", str(data)]
    done = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise StackError(f"redis-server failed:\n{(done.stdout + done.stderr).strip()}")

    def ready() -> bool:
        import redis

        if not pidfile.exists():
            return False
        client = redis.Redis(host=LOOPBACK, port=entry["port"], socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()

    _wait_until(ready, "Redis", str(log), 20)
    entry["pid"] = int(pidfile.read_text().strip())
    return f"{LOOPBACK}:{entry['port']}  pid {entry['pid']}  (no persistence)"


# ------------------------------------------------------------------------------ apps, setup


def _run_flask(topology: Topology, args: list[str]) -> None:
    """A ``flask --app shop`` command with app1's settings; output appended to setup.log."""
    env = dict(topology["apps"]["app1"]["env"], SHOP_INSTANCE_NAME="stack-setup")
    env.pop("SHOP_BIND", None)
    log_path = topology["setup_log"]
    with open(log_path, "ab") as log:
        log.write(f"$ flask --app shop {' '.join(args)}\n".encode())
        log.flush()
        done = subprocess.run(
            [str(_venv_bin() / "flask"), "--app", "shop", *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        raise StackError(f"flask {' '.join(args)} failed; its log {log_path}:\n{_tail(log_path)}")


def _migrate_and_seed(topology: Topology, products: int) -> str:
    _run_flask(topology, ["db", "upgrade"])
    empty = _pg_query(
        topology["primary"]["port"], "SELECT NOT EXISTS (SELECT 1 FROM products)", dbname="shop"
    )
    if not empty or products <= 0:
        count = _pg_query(
            topology["primary"]["port"], "SELECT count(*) FROM products", dbname="shop"
        )
        return f"migrated; catalogue kept ({count} products)"
    _run_flask(topology, ["seed", "--products", str(products)])
    return f"migrated; seeded {products} demo products"


def _clear_app_leftovers(entry: dict[str, Any]) -> None:
    """Workers of a killed master keep the port until they notice; finish them first."""
    _terminate(_group_pids(entry.get("pid"), "gunicorn"), "gunicorn")


def _spawn_app(entry: dict[str, Any]) -> None:
    _clear_app_leftovers(entry)
    if not _wait_port_free(entry["port"]):
        raise StackError(
            f"{entry['name']}: port {entry['port']} still taken ({_port_owner(entry['port'])})"
        )
    with open(entry["log"], "ab") as log:
        proc = subprocess.Popen(
            entry["command"],
            cwd=entry["cwd"],
            env=entry["env"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    entry["pid"] = proc.pid
    Path(entry["pidfile"]).write_text(f"{proc.pid}\n")


def _wait_app(topology: Topology, entry: dict[str, Any], timeout: float = 60.0) -> str:
    # /readyz needs the primary and Redis; with either down the process can only be "alive".
    deps_up = is_alive(topology, "primary") and is_alive(topology, "redis")
    path = "/readyz" if deps_up else "/healthz"

    def ready() -> bool:
        if not _pid_alive(entry["pid"], "gunicorn"):
            raise StackError(
                f"{entry['name']} exited; its log {entry['log']}:\n{_tail(entry['log'])}"
            )
        return _http_status(entry["url"] + path, timeout=3) == 200

    _wait_until(ready, f"{entry['name']} ({path})", entry["log"], timeout)
    return f"{entry['url']}  pid {entry['pid']}  ({path} 200)"


def _start_app(topology: Topology, name: str, wait: bool = True) -> str:
    entry = topology["apps"][name]
    _spawn_app(entry)
    save_topology(topology)
    return _wait_app(topology, entry) if wait else f"{entry['url']}  pid {entry['pid']}"


def _stop_app(entry: dict[str, Any], pid: int | None) -> None:
    """The master and its workers: the whole process group, orphaned workers included."""
    pids = set(_group_pids(entry.get("pid"), "gunicorn")) | set(_group_pids(pid, "gunicorn"))
    _terminate(sorted(pids | ({pid} if pid else set())), "gunicorn")
    entry["pid"] = None


# ---------------------------------------------------------------------------------- HAProxy


def _render_haproxy(topology: Topology) -> str:
    entry = topology["balancer"]
    if "tls_port" not in entry:
        raise StackError("topology.json was written by an older stack.py: make stack-down first")
    servers = "\n".join(
        f"    server {name} {LOOPBACK}:{app['port']}" for name, app in topology["apps"].items()
    )
    return Template(HAPROXY_TEMPLATE.read_text()).substitute(
        port=entry["port"],
        tls_port=entry["tls_port"],
        tls_pem=entry["tls_pem"],
        stats_socket=entry["stats_socket"],
        servers=servers,
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
    entry = topology["balancer"]
    config = Path(entry["config"])
    config.write_text(_render_haproxy(topology))
    _tls_certificate(Path(entry["tls_pem"]))
    check = subprocess.run(
        [_haproxy_binary(), "-c", "-q", "-f", str(config)], capture_output=True, text=True
    )
    if check.returncode != 0:
        raise StackError(f"haproxy rejects {config}:\n{(check.stdout + check.stderr).strip()}")
    Path(entry["stats_socket"]).unlink(missing_ok=True)
    # Foreground (-db) under Popen rather than -D: "log stdout" then lands in our log file.
    with open(entry["log"], "ab") as log:
        proc = subprocess.Popen(
            [_haproxy_binary(), "-db", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    entry["pid"] = proc.pid
    Path(entry["pidfile"]).write_text(f"{proc.pid}\n")
    save_topology(topology)
    if wait:
        _wait_balancer(topology)
    return f"{entry['url']}  pid {entry['pid']}"


def _wait_balancer(topology: Topology, timeout: float = 30.0) -> None:
    entry = topology["balancer"]
    live_apps = [name for name in APP_NAMES if is_alive(topology, name)]
    # Without the primary or Redis no /readyz passes: then only the stats socket must answer.
    deps_up = is_alive(topology, "primary") and is_alive(topology, "redis")

    def ready() -> bool:
        if not _pid_alive(entry["pid"], "haproxy"):
            raise StackError(f"haproxy exited; its log {entry['log']}:\n{_tail(entry['log'])}")
        states = haproxy_backends(topology)
        if not deps_up:
            return True
        if any(states.get(name) != "UP" for name in live_apps):
            return False
        return _http_status(entry["url"] + "/readyz") == 200

    _wait_until(ready, "HAProxy with every live instance UP", entry["log"], timeout)


def _stats(topology: Topology, command: str) -> str:
    path = topology["balancer"]["stats_socket"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def haproxy_backends(topology: Topology, backend: str = "apps") -> dict[str, str]:
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
    backend: str = "apps",
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


# ------------------------------------------------------------------------------- components


def _read_pid(path: str | os.PathLike[str]) -> int | None:
    try:
        return int(Path(path).read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _live_pid(topology: Topology, name: str) -> int | None:
    """The component's live pid: its pidfile first (postmaster.pid for PostgreSQL), as the
    server may have been restarted outside this module, then the pid recorded at start."""
    entry = _entry(topology, name)
    if name in ("primary", "replica"):
        first = _postmaster_pid(Path(entry["data_dir"]))
    else:
        first = _read_pid(entry["pidfile"]) if entry.get("pidfile") else None
    for pid in (first, entry.get("pid")):
        if _pid_alive(pid, _MARKERS[name]):
            return pid
    return None


def is_alive(topology: Topology, name: str) -> bool:
    return _live_pid(topology, name) is not None


def stack_status(topology: Topology) -> dict[str, bool]:
    """Each component: is its process alive (not: is it ready)."""
    return {name: is_alive(topology, name) for name in COMPONENTS}


def _start_one(topology: Topology, name: str, wait: bool = True) -> str:
    if name == "primary":
        return _start_primary(topology)
    if name == "replica":
        return _start_replica(topology)
    if name == "redis":
        return _start_redis(topology)
    if name in APP_NAMES:
        return _start_app(topology, name, wait)
    return _start_balancer(topology, wait)


def start_component(topology: Topology, name: str, *, wait: bool = True) -> Topology:
    """Start ``name`` unless it is alive; wait until it is ready (``wait=False``: apps and the
    balancer only get spawned). Redis always comes back empty."""
    entry = _entry(topology, name)
    if is_alive(topology, name):
        return topology
    if name in APP_NAMES:
        _clear_app_leftovers(entry)
    if not _wait_port_free(entry["port"]):
        _require_ports_free({name: entry["port"]})
    try:
        _start_one(topology, name, wait)
    finally:
        save_topology(topology)
    return topology


def stop_component(topology: Topology, name: str) -> Topology:
    """Stop ``name`` by pid (PostgreSQL: ``pg_ctl stop -m fast``) and wait for its port."""
    entry = _entry(topology, name)
    pid = _live_pid(topology, name)
    if name in ("primary", "replica"):
        _pg_stop(entry)
    elif name in APP_NAMES:
        _stop_app(entry, pid)
    else:
        _terminate([pid] if pid else [], _MARKERS[name])
        entry["pid"] = None
    if name == "balancer":
        Path(entry["stats_socket"]).unlink(missing_ok=True)
    if name != "redis" and entry.get("pidfile"):  # Redis removes its own
        Path(entry["pidfile"]).unlink(missing_ok=True)
    save_topology(topology)
    if not _wait_port_free(entry["port"]):
        raise StackError(f"{name} stopped but port {entry['port']} is still taken")
    return topology


def restart_app(topology: Topology, name: str, *, wait: bool = True) -> Topology:
    """Stop the instance if it lives (leftover workers too), start it with its recorded
    command and env, and (``wait``) until it answers its health check."""
    if name not in APP_NAMES:
        raise StackError(f"unknown app {name!r}; one of {', '.join(APP_NAMES)}")
    stop_component(topology, name)
    return start_component(topology, name, wait=wait)


def kill_app(topology: Topology, name: str, sig: int = signal.SIGKILL) -> int:
    """Send ``sig`` to the instance's gunicorn master only (a crash); returns its pid."""
    entry = topology["apps"][name]
    pid = entry.get("pid")
    if not _pid_alive(pid, "gunicorn"):
        raise StackError(f"{name} is not running")
    os.kill(pid, sig)
    return pid


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
    echo(f"shop      {topology['url']}")
    balancer = topology["balancer"]
    if "tls_url" in balancer:
        echo(f"          {balancer['tls_url']}  (certificate: {balancer['tls_pem']})")
    rows = [("balancer", topology["balancer"]["log"])]
    rows += [(name, topology[name]["log"]) for name in ("primary", "replica", "redis")]
    rows += [(name, app["log"]) for name, app in topology["apps"].items()]
    rows.append(("setup", topology["setup_log"]))
    for i, (name, path) in enumerate(rows):
        echo(f"{'logs' if i == 0 else '':<9} {name:<9} {path}")
    echo(f"topology  {Path(topology['work_dir']) / 'topology.json'}")


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
    echo = _serialized(echo)
    work = _work(work_dir)
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
            _clear_app_leftovers(old["apps"][name])

    _prepare_work(work)
    ports = ports or Ports.from_env()
    topology = _build_topology(work, ports)
    _require_ports_free(ports.all())
    save_topology(topology)
    echo(f"starting the stack in {work}")

    _parallel(
        lambda: _timed(echo, "primary", lambda: _start_primary(topology), topology),
        lambda: _timed(echo, "redis", lambda: _start_redis(topology), topology),
    )
    save_topology(topology)
    _parallel(
        lambda: _timed(echo, "replica", lambda: _start_replica(topology), topology),
        lambda: _timed(
            echo, "schema", lambda: _migrate_and_seed(topology, seed_products), topology
        ),
    )
    _wait_replica_caught_up(topology)
    save_topology(topology)
    for name in APP_NAMES:
        _spawn_app(topology["apps"][name])
    save_topology(topology)
    app_started = time.monotonic()
    _parallel(
        *[
            lambda name=name: echo(
                f"  {name:<9} {_wait_app(topology, topology['apps'][name])}"
                f"  ({time.monotonic() - app_started:.1f} s)"
            )
            for name in APP_NAMES
        ]
    )
    _timed(echo, "balancer", lambda: _start_balancer(topology), topology)
    save_topology(topology)
    echo(f"stack up in {time.monotonic() - started:.1f} s")
    _summary(topology, echo)
    return topology


def _restart_dead(topology: Topology, name: str) -> str:
    start_component(topology, name)
    entry = _entry(topology, name)
    return f"port {entry['port']}  pid {entry.get('pid')}"


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
                _pg_stop({"data_dir": str(data), "pid": None})
                echo(f"  {name:<9} stopped (found by its postmaster.pid)")
    else:
        for name in reversed(COMPONENTS):
            entry = _entry(topology, name)
            alive = is_alive(topology, name)
            leftovers = name in APP_NAMES and _group_pids(entry.get("pid"), "gunicorn")
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
        for sub in ("pg", "logs", "run", "redis"):
            shutil.rmtree(work / sub, ignore_errors=True)
        for name in ("secret_key", "haproxy.cfg", "tls.pem", "topology.json.tmp"):
            (work / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            work.rmdir()
        echo(f"purged {work}")
    echo("stack down")


def _ports_of(topology: Topology) -> dict[str, int]:
    return {name: _entry(topology, name)["port"] for name in COMPONENTS}


# -------------------------------------------------------------------------------------- CLI


def _status(topology: Topology | None, echo: Echo = print) -> int:
    if topology is None:
        echo("no stack recorded (run make stack)")
        return 1
    status = stack_status(topology)
    for name in COMPONENTS:
        entry = _entry(topology, name)
        state = "alive" if status[name] else "DEAD"
        echo(f"  {name:<9} {state:<6} port {entry['port']}  pid {entry.get('pid')}")
    if status["balancer"]:
        with contextlib.suppress(OSError):
            echo(f"  haproxy backends: {haproxy_backends(topology)}")
    echo(f"shop      {topology['url']}")
    return 0 if all(status.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stack.py", description="The shop on loopback: PostgreSQL, Redis, 3 x gunicorn."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start what is not running")
    down = commands.add_parser("down", help="stop everything by pid")
    down.add_argument("--purge", action="store_true", help="also delete data and logs")
    commands.add_parser("status", help="what is alive")
    restart = commands.add_parser("restart-app", help="restart one shop instance")
    restart.add_argument("name", choices=APP_NAMES)
    args = parser.parse_args(argv)

    def echo(line: str) -> None:
        print(line, flush=True)

    try:
        if args.command == "up":
            start_stack(echo=echo)
        elif args.command == "down":
            purge = args.purge or os.environ.get("STACK_PURGE", "") in ("1", "true", "yes")
            stop_stack(purge=purge, echo=echo)
        elif args.command == "status":
            return _status(load_topology(), echo)
        else:
            topology = load_topology()
            if topology is None:
                raise StackError("no stack recorded (run make stack)")
            started = time.monotonic()
            restart_app(topology, args.name)
            entry = topology["apps"][args.name]
            echo(
                f"  {args.name:<9} restarted, pid {entry['pid']}"
                f"  ({time.monotonic() - started:.1f} s)"
            )
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        topology = load_topology() if args.command == "up" else None
        if topology is not None and any(stack_status(topology).values()):
            print("what did start is still running: make stack-down stops it", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
