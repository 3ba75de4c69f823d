"""The shop's gunicorn instances, and the one-off flask commands (migrate, seed)."""

from __future__ import annotations

import subprocess

from deploy.stack.postgres import _pg_query
from deploy.stack.processes import (
    _group_pids,
    _http_status,
    _pid_alive,
    _port_owner,
    _tail,
    _terminate,
    _wait_port_free,
    _wait_until,
    exited,
    is_alive,
    spawn_child,
)
from deploy.stack.topology import REPO, App, StackError, Topology, _venv_bin, save_topology

# ------------------------------------------------------------------------------ apps, setup


def direct_env(topology: Topology) -> dict[str, str]:
    """app1's settings with the database reached directly, not through PgBouncer: for
    migrations and the seed, which are no shopper's traffic and may want a session of their
    own (a migration tool's session settings or locks would not survive transaction pooling)."""
    env = dict(topology.apps["app1"].env, SHOP_DATABASE_URL=topology.primary.url)
    env.pop("SHOP_REPLICA_URLS", None)
    return env


def _run_flask(topology: Topology, args: list[str]) -> None:
    """A ``flask --app shop`` command with app1's settings, straight to the primary (migrate,
    seed); output appended to setup.log."""
    env = dict(direct_env(topology), SHOP_INSTANCE_NAME="stack-setup")
    env.pop("SHOP_BIND", None)
    log_path = topology.setup_log
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
        topology.primary.port, "SELECT NOT EXISTS (SELECT 1 FROM products)", dbname="shop"
    )
    if not empty or products <= 0:
        count = _pg_query(topology.primary.port, "SELECT count(*) FROM products", dbname="shop")
        return f"migrated; catalogue kept ({count} products)"
    _run_flask(topology, ["seed", "--products", str(products)])
    return f"migrated; seeded {products} demo products"


def _clear_app_leftovers(entry: App) -> None:
    """Workers of a killed master keep the port until they notice; finish them first."""
    _terminate(_group_pids(entry.pid, "gunicorn"), "gunicorn")


def _spawn_app(entry: App) -> None:
    _clear_app_leftovers(entry)
    if not _wait_port_free(entry.port):
        raise StackError(f"{entry.name}: port {entry.port} still taken ({_port_owner(entry.port)})")
    entry.pid = spawn_child(
        entry.command, log=entry.log, pidfile=entry.pidfile, cwd=entry.cwd, env=entry.env
    )


def _wait_app(topology: Topology, entry: App, timeout: float = 60.0) -> str:
    # /readyz needs the primary and Redis; with either down the process can only be "alive".
    deps_up = is_alive(topology, "primary") and is_alive(topology, "redis")
    path = "/readyz" if deps_up else "/healthz"

    def ready() -> bool:
        if not _pid_alive(entry.pid, "gunicorn"):
            raise exited(entry.name, entry.pid, entry.log)
        return _http_status(entry.url + path, timeout=3) == 200

    _wait_until(ready, f"{entry.name} ({path})", entry.log, timeout)
    return f"{entry.url}  pid {entry.pid}  ({path} 200)"


def _start_app(topology: Topology, name: str, wait: bool = True) -> str:
    entry = topology.apps[name]
    _spawn_app(entry)
    save_topology(topology)
    return _wait_app(topology, entry) if wait else f"{entry.url}  pid {entry.pid}"


def _stop_app(entry: App, pid: int | None) -> None:
    """The master and its workers: the whole process group, orphaned workers included."""
    pids = set(_group_pids(entry.pid, "gunicorn")) | set(_group_pids(pid, "gunicorn"))
    _terminate(sorted(pids | ({pid} if pid else set())), "gunicorn")
    entry.pid = None
