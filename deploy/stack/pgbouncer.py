"""The stack's PgBouncer: the instances reach the primary and the replica through it.

Why: each instance's workers hold ``threads`` connections to each server (shop.db.pool_sizes),
so the servers' connection count grows with every instance added; PgBouncer in transaction
pooling lends a server connection for one transaction at a time, so the servers see at most
its pool, however many instances run (docs/deploy.md, "Connection budget").

One PgBouncer with two databases rather than one per server: ``shop`` is the primary and
``shop_replica`` the replica. A failover is then one line of its config and a reload (or a
restart, the instances reconnect by themselves), the instances' URLs never change, and there is
one process to watch and one console; it mirrors RDS Proxy, one proxy with a read/write and a
read-only endpoint. Migrations and the seed go straight to the primary (deploy/stack/apps.py).

What transaction pooling takes away, and why the shop does not mind (docs/deploy.md): no
session state survives a transaction (the shop sets none: no ``SET``, no session advisory lock,
no ``LISTEN``, no server-side prepared statement with psycopg2; the seed's lock is
``pg_advisory_xact_lock``); a replica read checks the replayed WAL position and runs its query
in one transaction, so on one server connection. Startup parameters other than the ones
PgBouncer tracks are refused (``options=-csearch_path=...`` gets "unsupported startup
parameter"): set a role's ``search_path`` with ``ALTER ROLE`` instead; ignoring ``options``
(``ignore_startup_parameters``) would silently drop it.
"""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

from deploy.stack.processes import _pid_alive, _wait_until, exited, spawn_child
from deploy.stack.topology import LOOPBACK, PgBouncer, Topology, save_topology

# Of the server connections PgBouncer may open to each database (``server_connections`` in the
# topology: 12, within 0.8 of the servers' max_connections in postgres.py), these wait for a
# client that has waited 1 s; the rest are its pool.
RESERVE_POOL = 2
# A query waits this long for a server connection (the server is down, or every connection is
# busy), then the instance gets an error it answers 503: below HAProxy's 5 s health-check
# timeout, far below gunicorn's 30 s.
QUERY_WAIT_TIMEOUT = 3


def pgbouncer_binary() -> str:
    return shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def render(entry: PgBouncer, topology: Topology) -> str:
    """The config: both databases, transaction pooling, short waits so an outage is a quick
    error rather than a hang, and a quick retry so a server that is back is used at once."""
    primary, replica = topology.primary, topology.replica
    lines = [
        ";; Written by deploy/stack/pgbouncer.py on every start; edits here are overwritten.",
        "[databases]",
        f"shop = host={LOOPBACK} port={primary.port} dbname=shop",
        f"shop_replica = host={LOOPBACK} port={replica.port} dbname=shop",
        "",
        "[pgbouncer]",
        f"listen_addr = {LOOPBACK}",
        f"listen_port = {entry.port}",
        "unix_socket_dir =",
        # The stack's PostgreSQL trusts loopback; PgBouncer still wants the user listed.
        "auth_type = trust",
        f"auth_file = {entry.auth_file}",
        "admin_users = postgres",
        "pool_mode = transaction",
        "max_client_conn = 500",
        f"default_pool_size = {entry.server_connections - RESERVE_POOL}",
        f"reserve_pool_size = {RESERVE_POOL}",
        "reserve_pool_timeout = 1",
        f"max_db_connections = {entry.server_connections}",
        f"query_wait_timeout = {QUERY_WAIT_TIMEOUT}",
        # A server that refused a login is tried again after 1 s (default 15 s), so the shop
        # recovers within a second of PostgreSQL coming back.
        "server_login_retry = 1",
        "server_connect_timeout = 2",
        "server_idle_timeout = 60",
        # The shop's application_name is passed on; nothing else is accepted (see above).
        "ignore_startup_parameters =",
        "",
    ]
    return "\n".join(lines)


def _as_postgres() -> list[str]:
    """PgBouncer refuses to run as root: it switches to ``postgres`` itself (-u)."""
    if os.geteuid() != 0:
        return []
    pwd.getpwnam("postgres")  # KeyError: no such user, as for the stack's PostgreSQL
    return ["-u", "postgres"]


def _admin_answers(entry: PgBouncer) -> bool:
    import psycopg2

    conn = psycopg2.connect(entry.admin_dsn, connect_timeout=2)
    try:
        conn.autocommit = True  # the console takes no transactions
        with conn.cursor() as cur:
            cur.execute("SHOW VERSION")
            return cur.fetchone() is not None
    finally:
        conn.close()


def _start_pgbouncer(topology: Topology) -> str:
    """Write its config and user list, start it in the foreground (stopped by pid) and wait
    until its console answers. It needs neither server up: it connects on demand."""
    entry = topology.pgbouncer
    Path(entry.config).write_text(render(entry, topology))
    Path(entry.auth_file).write_text('"postgres" ""\n')
    argv = [pgbouncer_binary(), *_as_postgres(), entry.config]
    entry.pid = spawn_child(argv, log=entry.log, pidfile=entry.pidfile)
    save_topology(topology)

    def ready() -> bool:
        if not _pid_alive(entry.pid, "pgbouncer"):
            raise exited("pgbouncer", entry.pid, entry.log)
        return _admin_answers(entry)

    _wait_until(ready, "PgBouncer", entry.log, 15)
    return (
        f"{LOOPBACK}:{entry.port}  pid {entry.pid}  "
        f"(shop -> primary, shop_replica -> replica; {entry.server_connections} each)"
    )


def wait_until_reachable(topology: Topology, database: str, timeout: float = 10.0) -> None:
    """After a server (re)starts: wait until a query through PgBouncer reaches it, as the
    instances' will. Its logins failed while the server was down, and for ``server_login_retry``
    after one it answers "try again later" without trying; a server is ready for the shop once
    that has passed. Nothing to wait for while PgBouncer itself is down."""
    import psycopg2

    entry = topology.pgbouncer
    if not _pid_alive(entry.pid, "pgbouncer"):
        return

    def answers() -> bool:
        conn = psycopg2.connect(
            host=LOOPBACK, port=entry.port, user="postgres", dbname=database, connect_timeout=2
        )
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                return cur.fetchone() == (1,)
        finally:
            conn.close()

    _wait_until(answers, f"{database} through PgBouncer", entry.log, timeout)


def admin_rows(entry: PgBouncer, command: str) -> list[dict[str, object]]:
    """A console command's rows (``SHOW POOLS``, ``SHOW CLIENTS``), as dicts by column."""
    import psycopg2

    conn = psycopg2.connect(entry.admin_dsn, connect_timeout=2)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(command)
            names = [column.name for column in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()
