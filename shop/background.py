"""Background work of one process: a daemon thread that runs a pass every ``interval`` seconds.

Every instance runs the same loops (mail delivery, expiring payment holds); each is safe to run
in many processes at once, because the work it claims is claimed in the database. A loop starts
with the process's first request and again in a forked child (threads do not survive a fork,
and gunicorn forks its workers), so :meth:`ProcessLoop.ensure_running` is a pid comparison,
cheap on every request.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class ProcessLoop:
    """Runs :meth:`run_pass` every ``interval`` seconds in a daemon thread of this process; a
    failing pass (the database is down) is logged and tried again after a doubling wait, at
    most ``max_wait``. The first pass comes one interval after the start, so a process's first
    request is not slowed by it. Give ``run_pass`` or override it."""

    name = "shop-background"

    def __init__(
        self,
        run_pass: Callable[[threading.Event], None] | None = None,
        *,
        interval: float,
        max_wait: float = 60.0,
        name: str | None = None,
    ) -> None:
        self._run_pass = run_pass
        self.interval = interval
        self.max_wait = max_wait
        self.name = name or self.name
        self._pid: int | None = None
        self._stopped = False
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run_pass(self, stop: threading.Event) -> None:
        assert self._run_pass is not None, "give run_pass or override it"
        self._run_pass(stop)

    def thread_ended(self) -> None:
        """Release what the thread's passes made (called in the thread, as it ends)."""

    def ensure_running(self) -> None:
        if self._pid == os.getpid() or self._stopped:
            return
        with self._lock:
            if self._pid == os.getpid() or self._stopped:
                return
            self._pid = os.getpid()
            self._stop_event = threading.Event()  # a forked child's own
            self._thread = threading.Thread(
                target=self._run, args=(self._stop_event,), name=self.name, daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """End the thread (after the pass in progress, waiting at most ``timeout``)."""
        with self._lock:
            self._stopped = True
            self._stop_event.set()
            thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self, stop: threading.Event) -> None:
        wait = self.interval
        try:
            while not stop.wait(wait):
                try:
                    self.run_pass(stop)
                    wait = self.interval
                except Exception as exc:  # noqa: BLE001 - any failure: try again later
                    wait = min(max(wait, self.interval) * 2, self.max_wait)
                    log.warning(
                        "%s: pass failed (%s: %s); next in %.0f s",
                        self.name,
                        type(exc).__name__,
                        exc,
                        wait,
                    )
        finally:
            self.thread_ended()
