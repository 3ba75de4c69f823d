"""Our processes by pid: alive or not (never a recycled pid), stopped, their ports, waits."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from deploy.stack.topology import (
    APP_NAMES,
    COMPONENTS,
    LOOPBACK,
    STOP_TIMEOUT,
    PgServer,
    StackError,
    Topology,
)

# What a component's /proc/<pid>/cmdline must contain, so a recycled pid is never taken for ours.
_MARKERS = {"primary": "postgres", "replica": "postgres", "redis": "redis-server"}
_MARKERS["smtp"] = "smtp_sink"
_MARKERS.update({name: "gunicorn" for name in APP_NAMES}, balancer="haproxy")
_MARKERS.update(cache="varnishd", purger="edge_purger", pgbouncer="pgbouncer")
_MARKERS.update(
    prometheus="prometheus",
    redis_exporter="prometheus-redis-exporter",
    postgres_exporter="prometheus-postgres-exporter",
)

# Popen objects of the children we started, so they are reaped rather than left as zombies
# (and no "subprocess still running" ResourceWarning when one would be garbage-collected).
_CHILDREN: dict[int, subprocess.Popen] = {}


# --------------------------------------------------------------------------------- processes


def spawn_child(
    argv: Sequence[str],
    *,
    log: str,
    pidfile: str,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start a foreground child in a session of its own, its output appended to ``log``;
    remember it (to reap it) and write its pid file. Returns the pid."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    Path(pidfile).write_text(f"{proc.pid}\n")
    return proc.pid


# How children of ours that were reaped ended (their Popen's return code), by pid, for the
# error that says one exited; the last few only.
_ENDED: dict[int, int] = {}


def _reap(pid: int) -> None:
    """Collect a child of ours that has exited, so it does not linger as a zombie. A child we
    spawned is collected by its Popen, which keeps how it ended (see :func:`exited`)."""
    proc = _CHILDREN.get(pid)
    if proc is None:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        return
    code = proc.poll()
    if code is not None:
        _CHILDREN.pop(pid, None)
        _ENDED[pid] = code
        while len(_ENDED) > 64:
            _ENDED.pop(next(iter(_ENDED)))


def exited(what: str, pid: int | None, log: str | os.PathLike[str]) -> StackError:
    """The error for a process that should be running and is not: how it ended (its exit
    status, or the signal that ended it) and the end of its log."""
    if pid is not None:
        _reap(pid)
    code = _ENDED.get(pid) if pid is not None else None
    if code is None:
        how = "how, unknown: not a child of this process"
    elif code < 0:
        how = f"killed by {signal.Signals(-code).name}"
    else:
        how = f"exit status {code}"
    return StackError(f"{what} (pid {pid}) exited, {how}; its log {log}:\n{_tail(log)}")


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
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    if not argv[0]:
        return _just_started_as(pid, marker)
    return marker in _program_names(argv)


def _just_started_as(pid: int, marker: str) -> bool:
    """Whether a process whose arguments are not there yet is ``marker``'s program. A child's
    arguments appear a moment after its ``exec`` has closed the pipe that tells Popen it
    succeeded (the kernel names the new program first, and sets its arguments once it has
    mapped them), so a check right after starting one can find none: under load, often enough
    to call a healthy new process dead and stop it. The kernel's name for it (at most 15
    characters) must then be the one its ``exec`` gives: for a child of ours, the program we
    started (and the marker in the arguments we gave it); for another process, the marker."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    name = stat.partition("(")[2].rpartition(")")[0]
    proc = _CHILDREN.get(pid)
    if proc is None:
        return bool(name) and name == marker[:15]
    argv = [os.fsdecode(arg) for arg in proc.args]  # type: ignore[union-attr]
    return name == Path(argv[0]).name[:15] and marker in _program_names(argv)


def _program_names(argv: list[str]) -> set[str]:
    """The names a process's program goes by: the parts of its executable's path (``postgres``
    for ``postgres: 15/main: ...``), and, for a Python interpreter, of the script or module it
    runs (``gunicorn``, ``smtp_sink``). Only these: pids are reused (32,768 of them here), and
    a marker found anywhere in a command line (``postgres`` in ``prometheus-postgres-exporter``
    or in PgBouncer's ``-u postgres``) would let a stale pid file stop someone else's process."""
    program = [part for part in argv[:1]]
    if argv and Path(argv[0].split(" ")[0]).name.startswith("python"):
        program += [part for part in argv[1:3] if not part.startswith("-") or part == "-m"]
    return {name for part in program for name in re.split(r"[/ :.]+", part) if name}


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


def _postmaster_pid(data: Path) -> int | None:
    try:
        return int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _read_pid(path: str | os.PathLike[str]) -> int | None:
    try:
        return int(Path(path).read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _live_pid(topology: Topology, name: str) -> int | None:
    """The component's live pid: its pidfile first (postmaster.pid for PostgreSQL), as the
    server may have been restarted outside this module, then the pid recorded at start."""
    entry = topology.component(name)
    if isinstance(entry, PgServer):
        first = _postmaster_pid(Path(entry.data_dir))
    else:
        first = _read_pid(entry.pidfile)
    for pid in (first, entry.pid):
        if _pid_alive(pid, _MARKERS[name]):
            return pid
    return None


def is_alive(topology: Topology, name: str) -> bool:
    return _live_pid(topology, name) is not None


def stack_status(topology: Topology) -> dict[str, bool]:
    """Each component: is its process alive (not: is it ready)."""
    return {name: is_alive(topology, name) for name in COMPONENTS}
