"""The servers a run needs, and their whole life: a database with one schema per catalogue size
(seeded once and kept between runs), a private Redis, and the contenders under gunicorn.

Every process started here is recorded in :data:`STARTED` and stopped by pid by
:func:`stop_all` (the runner calls it in a ``finally`` and on Ctrl-C). The machine's own
PostgreSQL and Redis are only ever used, never stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import redis

from deploy.stack.redis_server import RedisServerError, RedisServerMissing, ThrowawayRedis
from shop.throttle import RULES

from .shop_templates import REPO

# The shop's Redis catalogue TTL in the throughput runs: longer than a run, so "warm" stays warm
# (with the default 300 s the keys warmed at the start expire mid-run, all at once).
CACHE_TTL = 3600
# What turns on each app's own per-request counts (the X-Shop-* and X-Bench-* headers).
INSTRUMENTED = {"shop": {"SHOP_INSTRUMENT": "1"}, "conventional": {"BENCH_INSTRUMENT": "1"}}
VENV_BIN = Path(sys.prefix) / "bin"
POSTGRES_SERVER = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
DATABASE = os.environ.get("BENCH_DATABASE", "bench")
SECRET_KEY = "bench-secret-key-not-for-production-0123456789"
STARTED: list[Process] = []
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BenchError(RuntimeError):
    """Something the benchmark needs is missing or would not start; the message says what."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(url: str, timeout: float = 3.0) -> int:
    try:
        with _NO_PROXY.open(url, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


# -- processes ------------------------------------------------------------------------------


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def cpu_seconds(pid: int) -> float:
    return _cpu_ticks(pid) / TICKS


def _children(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == pid:
                    found.append(int(proc.name))
    return found


TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Process:
    """A server we started: its Popen, its log, and CPU time of it and its children."""

    name: str
    popen: subprocess.Popen
    log: Path
    url: str = ""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def pids(self) -> list[int]:
        return [self.pid, *_children(self.pid)]

    def workers(self) -> list[int]:
        return _children(self.pid)

    def cpu_seconds(self) -> float:
        return sum(_cpu_ticks(pid) for pid in self.pids()) / TICKS

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                # Our own process group (start_new_session): the master and its workers.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        if self in STARTED:
            STARTED.remove(self)


def spawn(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Process:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            args,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process = Process(name, popen, log)
    STARTED.append(process)
    return process


def wait_http(process: Process, path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not process.alive():
            raise BenchError(f"{process.name} exited; see {process.log}:\n{_tail(process.log)}")
        with contextlib.suppress(OSError):
            if http_status(process.url + path) == 200:
                return
        if time.monotonic() > deadline:
            raise BenchError(f"{process.name} not ready after {timeout:.0f} s; see {process.log}")
        time.sleep(0.1)


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def stop_all() -> None:
    for process in reversed(list(STARTED)):
        with contextlib.suppress(Exception):
            process.stop()


# -- Redis ----------------------------------------------------------------------------------


def start_redis(log_dir: Path) -> Process:
    """A private redis-server: its command statistics and memory are the benchmark's alone.
    Started in the foreground by deploy/stack/redis_server.py and stopped by :func:`stop_all`."""
    server = ThrowawayRedis(log_dir / "redis", logfile=log_dir / "redis.log")
    try:
        server.start()
    except RedisServerMissing:
        raise BenchError(
            "redis-server not found; install the Debian package redis-server"
        ) from None
    except RedisServerError as exc:
        raise BenchError(f"redis-server would not start: {exc}") from None
    assert server.process is not None  # a foreground server is our child
    process = Process("redis", server.process, server.log, url=server.url)
    STARTED.append(process)
    return process


def redis_version(url: str) -> str:
    return redis.Redis.from_url(url).info("server")["redis_version"]


# -- PostgreSQL -----------------------------------------------------------------------------


def _admin(dbname: str):
    conn = psycopg2.connect(f"{POSTGRES_SERVER}/{dbname}", connect_timeout=3)
    conn.autocommit = True
    return conn


def ensure_database() -> None:
    try:
        conn = _admin("postgres")
    except psycopg2.OperationalError as exc:
        raise BenchError(
            f"PostgreSQL at {POSTGRES_SERVER} does not answer ({exc}); "
            "set BENCH_POSTGRES_URL to a server the benchmark may create a database on"
        ) from None
    # Not `with conn`: since psycopg2 2.9 that opens a transaction even in autocommit mode, and
    # CREATE DATABASE cannot run inside one.
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        conn.close()


def schema_url(schema: str) -> str:
    """A SQLAlchemy URL whose connections see only ``schema``."""
    base = POSTGRES_SERVER.replace("postgresql://", "postgresql+psycopg2://", 1)
    return f"{base}/{DATABASE}?options=-csearch_path%3D{schema}"


def sql(schema: str, query: str, params: tuple = ()) -> list[tuple]:
    conn = _admin(DATABASE)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SET search_path TO {schema}")
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def postgres_version() -> str:
    conn = _admin(DATABASE)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            return cur.fetchone()[0]
    finally:
        conn.close()


def shop_env(schema: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of a shop process on ``schema`` (nothing from the caller's shell)."""
    env = {
        "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "SHOP_DATABASE_URL": schema_url(schema),
        "SHOP_REDIS_URL": redis_url,
        "SHOP_REDIS_PREFIX": "bench:",
        "SHOP_SECRET_KEY": SECRET_KEY,
        "SHOP_SESSION_COOKIE_SECURE": "0",  # plain HTTP on loopback; nothing else changes
        "SHOP_INSTANCE_NAME": "bench",
        # Every request of the benchmark comes from 127.0.0.1: the per-address rate rules would
        # refuse most of it. They cost one Redis script per counted request; measured off.
        **{f"SHOP_LIMIT_{rule.upper()}": "" for rule in RULES},
    }
    env.update(extra)
    return env


def flask_command(env: dict[str, str], *args: str, log: Path) -> None:
    with open(log, "ab") as out:
        done = subprocess.run(
            [str(VENV_BIN / "flask"), "--app", "shop", *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        raise BenchError(f"flask {' '.join(args)} failed; see {log}:\n{_tail(log)}")


def _fingerprint(extra: Sequence[dict]) -> str:
    """What the seeded schema depends on: the migrations, the seed, the extra products."""
    digest = hashlib.sha1(repr(list(extra)).encode())
    for path in sorted((REPO / "shop" / "migrations" / "versions").glob("*.py")):
        digest.update(path.read_bytes())
    digest.update((REPO / "shop" / "seed.py").read_bytes())
    return digest.hexdigest()


def ensure_catalogue(
    schema: str,
    products: int,
    redis_url: str,
    log_dir: Path,
    extra: Sequence[dict] = (),
    echo: Callable[[str], None] = print,
) -> float | None:
    """``schema`` migrated with the shop's Alembic, holding ``products`` demo products and the
    ``extra`` ones (added with ``flask product add``, so after them). Kept between runs while
    the migrations and the seed are unchanged; returns the seconds seeding took (None: kept)."""
    ensure_database()
    fingerprint = _fingerprint(extra)
    exists = sql("public", "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
    if exists:
        kept = sql(schema, "SELECT to_regclass('bench_fingerprint') IS NOT NULL")[0][0] and sql(
            schema, "SELECT value FROM bench_fingerprint"
        )
        if kept and kept[0][0] == fingerprint:
            return None
        sql("public", f"DROP SCHEMA {schema} CASCADE")
    echo(f"  seeding {products:,} products into schema {schema} (kept for later runs)")
    sql("public", f"CREATE SCHEMA {schema}")
    env = shop_env(schema, redis_url, SHOP_REDIS_PREFIX=f"bench-seed-{schema}:")
    log = log_dir / f"setup-{schema}.log"
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    flask_command(env, "db", "upgrade", log=log)
    flask_command(env, "seed", "--products", str(products), log=log)
    for product in extra:
        args = ["product", "add", "--name", product["name"], "--category", product["category"]]
        args += ["--price", product["price"], "--stock", str(product["stock"])]
        flask_command(env, *args, log=log)
    sql(schema, "ANALYZE")
    sql(schema, "CREATE TABLE bench_fingerprint (value text NOT NULL)")
    sql(schema, "INSERT INTO bench_fingerprint VALUES (%s)", (fingerprint,))
    return time.monotonic() - started


# -- gunicorn -------------------------------------------------------------------------------

WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
THREADS = int(os.environ.get("BENCH_THREADS", "4"))


def start_gunicorn(
    name: str, target: str, env: dict[str, str], log_dir: Path, ready_path: str = "/"
) -> Process:
    """``target`` under the shop's gunicorn.conf.py, with the same workers and threads for
    every contender, on a free loopback port."""
    port = free_port()
    env = dict(env)
    env.update(
        SHOP_BIND=f"127.0.0.1:{port}",
        SHOP_WORKERS=str(WORKERS),
        SHOP_THREADS=str(THREADS),
    )
    # gunicorn.conf.py allows several workers only with a shared Redis; every contender has it.
    env.setdefault("SHOP_REDIS_URL", env.get("BENCH_REDIS_URL", ""))
    args = [str(VENV_BIN / "gunicorn"), target, "-c", "gunicorn.conf.py"]
    process = spawn(name, args, env, log_dir)
    process.url = f"http://127.0.0.1:{port}"
    wait_http(process, ready_path)
    return process


def versions() -> dict[str, str]:
    from importlib.metadata import version

    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "flask": version("flask"),
        "flask-session": version("flask-session"),
        "sqlalchemy": version("sqlalchemy"),
        "gunicorn": version("gunicorn"),
        "wrk": (wrk.stdout or wrk.stderr).split("[")[0].strip(),
    }
