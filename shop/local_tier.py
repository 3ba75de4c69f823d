"""Catalogue entries kept in this process's memory, dropped the moment any instance changes them.

Every invalidation is published on a Redis channel; a listener thread in each process applies
it here, so a warm page costs no Redis round trip and a change still reaches every instance in
about the time a message takes. The tier is used only while the listener is subscribed: before
that, after a lost connection, and until it has subscribed again, lookups fall through to Redis,
and every (re)subscription starts from an empty tier, so no invalidation can be missed. A
generation counter keeps a value read from Redis just before an invalidation from being stored
just after it. ``max_age`` bounds an entry's life should everything else fail.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

log = logging.getLogger(__name__)

MISSING = object()


class LocalTier:
    def __init__(
        self,
        client: redis.Redis,
        channel: str,
        *,
        max_age: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.channel = channel
        self.max_age = max_age
        self.max_entries = max_entries
        self.clock = clock
        self.generation = 0
        self.live = False
        self._entries: dict[str, tuple[float, Any, frozenset[int], bool]] = {}
        self._pid: int | None = None
        self._lock = threading.Lock()

    # -- lookups (request threads) ---------------------------------------------------------

    def get(self, key: str) -> Any:
        """The value, or MISSING; starts the listener in a new process (after a fork)."""
        if self._pid != os.getpid() and self._pid != -1:
            self._start_listener()
        if not self.live:
            return MISSING
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self.clock():
            return MISSING
        return entry[1]

    def put(
        self, key: str, value: Any, *, generation: int, tags: Iterable[int] = (), is_list: bool
    ) -> None:
        """Keep ``value`` unless an invalidation arrived since ``generation`` was read."""
        if not self.live or generation != self.generation:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.pop(next(iter(self._entries)), None)  # the oldest entry
        self._entries[key] = (self.clock() + self.max_age, value, frozenset(tags), is_list)

    # -- invalidations ---------------------------------------------------------------------

    @staticmethod
    def message(product_ids: Iterable[int], keys: Iterable[str], structural: bool) -> str:
        return json.dumps({"ids": list(product_ids), "keys": list(keys), "structural": structural})

    def drop(self, product_ids: Iterable[int], keys: Iterable[str], structural: bool) -> None:
        """Forget every entry for these keys, showing these products, or (structural) any list."""
        ids, keys = set(product_ids), set(keys)
        with self._lock:
            self.generation += 1
            for key, (_, _, tags, is_list) in list(self._entries.items()):
                if key in keys or tags & ids or (structural and is_list):
                    self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget everything (a change this process could not hear about in detail)."""
        with self._lock:
            self.generation += 1
            self._entries.clear()

    # -- the listener thread ---------------------------------------------------------------

    def stop(self) -> None:
        """End the listener (within a second) and stop using the tier."""
        with self._lock:
            self._pid = -1
            self.live = False
            self._entries.clear()

    def _start_listener(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self.live = False
            self._entries.clear()
        thread = threading.Thread(target=self._listen, name="catalogue-invalidations", daemon=True)
        thread.start()

    def _listen(self) -> None:
        pid = os.getpid()
        backoff = 0.1
        while self._pid == pid:
            pubsub = None
            try:
                # Inside the try: a cluster client that cannot reach any node fails right here.
                pubsub = self.client.pubsub(ignore_subscribe_messages=False)
                pubsub.subscribe(self.channel)
                while self._pid == pid:
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self.clear()  # anything kept before may have missed a message
                        self.live = True
                        backoff = 0.1
                    elif message["type"] == "message":
                        change = json.loads(message["data"])
                        self.drop(change["ids"], change["keys"], change["structural"])
            except Exception as exc:  # noqa: BLE001 - any failure: off until resubscribed
                if self.live:
                    log.warning("catalogue invalidations lost (%s); in-process tier off", exc)
                self.live = False
                self.clear()
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    if pubsub is not None:
                        pubsub.close()
