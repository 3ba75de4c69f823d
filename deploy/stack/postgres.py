"""PostgreSQL primary and streaming hot standby: initdb, pg_basebackup -R, start, stop."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from deploy.stack.processes import (
    _pid_alive,
    _postmaster_pid,
    _proc_stat,
    _tail,
    _terminate,
    _wait_until,
    is_alive,
)
from deploy.stack.topology import LOOPBACK, PgServer, StackError, Topology, _pg_bin_dir

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
        # The instances come through PgBouncer, at most 12 server connections per database
        # (PgBouncer.under in topology.py): within 0.8 of this, the rest for migrations, tools
        # and the tests.
        "max_connections = 50",
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


def _init_primary(entry: PgServer) -> None:
    data = Path(entry.data_dir)
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


def _replica_usable(replica: PgServer, primary: PgServer) -> bool:
    """A standby of *this* primary, pointed at its current port; otherwise it is re-made."""
    data = Path(replica.data_dir)
    if not (_pg_initialized(data) and (data / "standby.signal").exists()):
        return False
    try:
        auto = (data / "postgresql.auto.conf").read_text()
    except OSError:
        return False
    if f"port={primary.port}" not in auto:
        return False
    ours = _system_identifier(data)
    return ours is not None and ours == _system_identifier(Path(primary.data_dir))


def _clone_replica(replica: PgServer, primary: PgServer) -> None:
    data = Path(replica.data_dir)
    fresh = data.with_name(data.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    args = [str(_pg_bin_dir() / "pg_basebackup"), "--pgdata", str(fresh)]
    args += ["--host", LOOPBACK, "--port", str(primary.port), "--username=postgres"]
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


def _pg_start(entry: PgServer) -> None:
    data, log = Path(entry.data_dir), Path(entry.log)
    _clear_stale_postmaster_pid(data)
    _write_pg_conf(data, entry.port)
    log.touch()
    _chown_postgres(log)
    try:
        args = [str(_pg_bin_dir() / "pg_ctl"), "start", "-D", str(data), "-l", str(log)]
        _pg_run([*args, "-w", "-t", "60", "-s"], "pg_ctl start", timeout=90)
    except StackError as exc:
        raise StackError(f"{exc}\nits log {log}:\n{_tail(log)}") from None
    entry.pid = _postmaster_pid(data)
    _wait_until(lambda: _pg_query(entry.port, "SELECT 1") == 1, "PostgreSQL", str(log), 30)


def _pg_stop(entry: PgServer) -> None:
    _pg_stop_data_dir(Path(entry.data_dir), entry.pid)
    entry.pid = None


def _pg_stop_data_dir(data: Path, recorded_pid: int | None = None) -> None:
    """``pg_ctl stop -m fast`` on the server of ``data`` (its postmaster.pid, else the pid we
    recorded), if it runs."""
    pid = _postmaster_pid(data) or recorded_pid
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


def _start_primary(topology: Topology) -> str:
    entry = topology.primary
    _init_primary(entry)
    _pg_start(entry)
    port = entry.port
    if not _pg_query(port, "SELECT 1 FROM pg_database WHERE datname = 'shop'"):
        _pg_query(port, "CREATE DATABASE shop")
    if _pg_extension_available():
        _pg_query(port, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements", dbname="shop")
    return f"{LOOPBACK}:{port}  pid {entry.pid}"


def _start_replica(topology: Topology) -> str:
    entry, primary = topology.replica, topology.primary
    primary_up = is_alive(topology, "primary")
    if not _replica_usable(entry, primary):
        if not primary_up:
            raise StackError("the replica must be cloned from the primary, which is down")
        _clone_replica(entry, primary)
    _pg_start(entry)
    if not primary_up:
        return f"{LOOPBACK}:{entry.port}  pid {entry.pid}  (hot standby, primary down)"
    streaming = "SELECT status FROM pg_stat_wal_receiver"
    _wait_until(
        lambda: _pg_query(entry.port, streaming) == "streaming",
        "replica streaming from the primary",
        entry.log,
        30,
    )
    return f"{LOOPBACK}:{entry.port}  pid {entry.pid}  (hot standby, streaming)"


def _wait_replica_caught_up(topology: Topology) -> None:
    """The catalogue is read from the replica: it must hold the seed before apps serve."""
    target = _pg_query(topology.primary.port, "SELECT pg_current_wal_lsn()::text")
    _wait_until(
        lambda: _pg_query(
            topology.replica.port,
            "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
            params=(target,),
        ),
        "replica catching up with the primary",
        topology.replica.log,
        30,
    )
