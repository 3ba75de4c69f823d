"""The stack's processes by pid: a component that should be running and is not is reported
with how it ended, so an exit and a signal from elsewhere are told apart."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from deploy.stack.processes import _pid_alive, exited, spawn_child


def _wait_gone(pid: int, program: str) -> None:
    deadline = time.monotonic() + 10
    while _pid_alive(pid, program):
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_child_that_exits_is_reported_with_its_status(tmp_path):
    log = tmp_path / "child.log"
    pid = spawn_child(
        [sys.executable, "-c", "print('bad config'); raise SystemExit(3)"],
        log=str(log),
        pidfile=str(tmp_path / "child.pid"),
    )
    _wait_gone(pid, Path(sys.executable).name)
    error = str(exited("the child", pid, log))
    assert f"the child (pid {pid}) exited, exit status 3" in error
    assert "bad config" in error


def test_a_child_ended_by_a_signal_says_which(tmp_path):
    log = tmp_path / "sleep.log"
    pid = spawn_child(["sleep", "30"], log=str(log), pidfile=str(tmp_path / "sleep.pid"))
    assert _pid_alive(pid, "sleep")
    os.kill(pid, signal.SIGTERM)
    _wait_gone(pid, "sleep")
    assert "exited, killed by SIGTERM" in str(exited("sleep", pid, log))


def test_a_pid_that_is_not_our_child_says_so(tmp_path):
    log = tmp_path / "none.log"
    log.write_text("")
    assert "not a child of this process" in str(exited("init", 1, log))


def test_a_child_caught_before_its_arguments_appear_is_still_recognised(tmp_path, monkeypatch):
    """Popen returns once ``exec`` has closed its pipe; the kernel sets the new program's
    arguments a moment later. A check in between must not call the new process dead (the stack
    then stopped a healthy PgBouncer or exporter it had just started), nor take another
    process for one of ours."""
    pid = spawn_child(["sleep", "30"], log=str(tmp_path / "s.log"), pidfile=str(tmp_path / "p"))
    real_read_bytes = Path.read_bytes

    def no_arguments_yet(path: Path) -> bytes:
        return b"" if str(path).startswith("/proc/") else real_read_bytes(path)

    try:
        monkeypatch.setattr(Path, "read_bytes", no_arguments_yet)
        assert _pid_alive(pid, "sleep")
        assert not _pid_alive(pid, "gunicorn")
        assert not _pid_alive(os.getppid(), "sleep")  # not our child: by the kernel's name
    finally:
        monkeypatch.undo()
        os.kill(pid, signal.SIGTERM)
        _wait_gone(pid, "sleep")
