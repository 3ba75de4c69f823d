"""A background thread per process that expires unpaid orders past their hold.

Started by the process's first request (after a fork, so each gunicorn worker has its own) and
stopped with the services. Every instance may run one: an order is expired by whichever
sweeper's conditional UPDATE gets there first (shop.order_lifecycle.expire_overdue), so more
sweepers only make expiry more prompt. Checkout and the order page also sweep, and
``flask --app shop order expire`` does from cron.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class HoldSweeper:
    def __init__(self, sweep: Callable[[], None], *, interval: float) -> None:
        self.sweep = sweep
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the thread once (cheap to call on every request)."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="shop-hold-sweeper", daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except Exception as exc:  # noqa: BLE001 - a database outage must not end the thread
                log.warning("expiring unpaid orders failed, will retry: %s", exc)
