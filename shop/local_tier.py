"""Catalogue entries kept in this process's memory, dropped the moment any instance changes them.

Every invalidation is published on a Redis channel; a listener thread in each process applies
it here, so a warm page costs no Redis round trip and a change still reaches every instance in
about the time a message takes. The tier is used only while the listener is subscribed: before
that, after a lost connection, and until it has subscribed again, lookups fall through to Redis,
and every (re)subscription starts from an empty tier, so no invalidation can be missed. A
generation counter keeps a value read from Redis just before an invalidation from being stored
just after it: one that names its key or a product it shows (or any list, if structural); the
last few drops are remembered to tell, so a sale's stream of invalidations for one product
does not keep every other product's entries out. ``max_age`` bounds an entry's life should
everything else fail.

Dropping costs what it drops, not the tier's size: each entry is indexed under the products it
shows, so a product's invalidation visits only its own entries, and a structural change starts
a new list generation (the old lists are then misses, freed as they are met or evicted). The
tier holds at most ``max_entries``, evicting the least recently used. Lookups take no lock;
whatever changes what the tier holds does, so the index and the entries change together.

Messages that arrive together are applied in one pass (:data:`COALESCE_SECONDS`): a burst of
orders, one message each, costs each process one pass per window rather than one per order.
The first message after a quiet spell is applied at once.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import redis

log = logging.getLogger(__name__)

MISSING = object()

# A pass of the listener applies every message that has arrived, and starts at most once per
# this many seconds: a message arriving within it of the last pass waits for the window's end
# (so it adds at most this to the staleness bound), one after a quiet spell is applied at once.
COALESCE_SECONDS = 0.002
# The most messages one pass takes (the rest go into the next one).
MAX_BATCH = 1000
# Drops remembered for the values read before them: a value read longer ago is not kept.
RECENT_DROPS = 64


class _Entry(NamedTuple):
    expires: float
    value: Any
    tags: frozenset[int]
    lists: int | None  # the list generation it belongs to; None: not a list


class _Drop(NamedTuple):
    """What one generation's drop named; ``everything`` for a clear."""

    ids: frozenset[int]
    keys: frozenset[str]
    structural: bool
    everything: bool = False

    def concerns(self, key: str, tags: frozenset[int], is_list: bool) -> bool:
        return (
            self.everything
            or key in self.keys
            or not self.ids.isdisjoint(tags)
            or (self.structural and is_list)
        )


class LocalTier:
    def __init__(
        self,
        client: redis.Redis,
        channel: str,
        *,
        max_age: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        coalesce: float = COALESCE_SECONDS,
    ) -> None:
        self.client = client
        self.channel = channel
        self.max_age = max_age
        self.max_entries = max_entries
        self.clock = clock
        self.coalesce = coalesce
        self.generation = 0
        self.live = False
        # What the listener has done: messages read and the passes they were applied in.
        self.messages = 0
        self.passes = 0
        self._lists = 0  # the list generation: a structural change moves it on
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._by_tag: dict[int, set[str]] = {}  # product id -> keys of the entries showing it
        self._drops: deque[_Drop] = deque(maxlen=RECENT_DROPS)  # generations up to this one
        self._pid: int | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    # -- lookups (request threads) ---------------------------------------------------------

    def get(self, key: str) -> Any:
        """The value, or MISSING; starts the listener in a new process (after a fork)."""
        if self._pid != os.getpid() and self._pid != -1:
            self._start_listener()
        if not self.live:
            return MISSING
        entry = self._entries.get(key)
        if entry is None:
            return MISSING
        if entry.expires <= self.clock() or (
            entry.lists is not None and entry.lists != self._lists
        ):
            with self._lock:
                if self._entries.get(key) is entry:
                    self._remove(key)
            return MISSING
        try:  # noqa: SIM105 - every warm page passes here: suppress() would cost more than it
            self._entries.move_to_end(key)  # the most recently used (one C call, no lock)
        except KeyError:  # dropped by another thread since: served all the same
            pass
        return entry.value

    def put(
        self, key: str, value: Any, *, generation: int, tags: Iterable[int] = (), is_list: bool
    ) -> None:
        """Keep ``value`` unless an invalidation that concerns it (its key, a product it shows,
        any list if structural) arrived since ``generation`` was read."""
        if not self.live:
            return
        entry = _Entry(self.clock() + self.max_age, value, frozenset(tags), None)
        with self._lock:
            if self._dropped_since(generation, key, entry.tags, is_list):
                return
            if is_list:
                entry = entry._replace(lists=self._lists)
            self._remove(key)
            while len(self._entries) >= self.max_entries:
                # The least recently used, in one call: a lookup may reorder meanwhile.
                self._unindex(*self._entries.popitem(last=False))
            self._entries[key] = entry
            for tag in entry.tags:
                self._by_tag.setdefault(tag, set()).add(key)

    def _dropped_since(
        self, generation: int, key: str, tags: frozenset[int], is_list: bool
    ) -> bool:
        """Whether a drop after ``generation`` concerns this entry (the lock is held); a drop
        too old to be remembered counts as one that does."""
        missed = self.generation - generation
        if missed == 0:
            return False
        if missed < 0 or missed > len(self._drops):
            return True
        return any(
            drop.concerns(key, tags, is_list)
            for drop in itertools.islice(reversed(self._drops), missed)
        )

    def tagged(self, product_id: int) -> frozenset[str]:
        """The keys of the entries held as showing this product (for tests and the bench)."""
        return frozenset(self._by_tag.get(product_id, ()))

    # -- invalidations ---------------------------------------------------------------------

    @staticmethod
    def message(product_ids: Iterable[int], keys: Iterable[str], structural: bool) -> str:
        return json.dumps({"ids": list(product_ids), "keys": list(keys), "structural": structural})

    def drop(self, product_ids: Iterable[int], keys: Iterable[str], structural: bool) -> None:
        """Forget every entry for these keys, showing these products, or (structural) any
        list: work in proportion to the entries dropped, whatever the tier holds."""
        drop = _Drop(frozenset(product_ids), frozenset(keys), structural)
        with self._lock:
            self.generation += 1
            self._drops.append(drop)
            if structural:
                self._lists += 1
            for key in drop.keys:
                self._remove(key)
            for product_id in drop.ids:
                for key in self._by_tag.pop(product_id, ()):
                    self._remove(key)

    def clear(self) -> None:
        """Forget everything (a change this process could not hear about in detail)."""
        with self._lock:
            self.generation += 1
            self._drops.append(_Drop(frozenset(), frozenset(), True, everything=True))
            self._entries.clear()
            self._by_tag.clear()

    def _remove(self, key: str) -> None:
        """Forget one entry and its place in the index (the lock is held)."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._unindex(key, entry)

    def _unindex(self, key: str, entry: _Entry) -> None:
        for tag in entry.tags:
            keys = self._by_tag.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_tag[tag]

    # -- the listener thread ---------------------------------------------------------------

    def apply(self, messages: list[dict[str, Any]]) -> None:
        """One pass over messages read from the subscription, in order: a subscription
        confirmation empties the tier and makes it live, the changes are applied together."""
        ids: set[int] = set()
        keys: set[str] = set()
        structural = False
        for message in messages:
            if message["type"] == "subscribe":
                ids, keys, structural = set(), set(), False  # the clear covers them
                self.clear()  # anything kept before may have missed a message
                self.live = True
            elif message["type"] == "message":
                change = json.loads(message["data"])
                ids.update(change["ids"])
                keys.update(change["keys"])
                structural = structural or bool(change["structural"])
                self.messages += 1
        if ids or keys or structural:
            self.drop(ids, keys, structural)
            self.passes += 1

    def stop(self) -> None:
        """End the listener (within a second) and stop using the tier."""
        with self._lock:
            self._pid = -1
            self.live = False
            self._entries.clear()
            self._by_tag.clear()

    def _start_listener(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self.live = False
            self._entries.clear()
            self._by_tag.clear()
        thread = threading.Thread(target=self._listen, name="catalogue-invalidations", daemon=True)
        thread.start()

    def _listen(self) -> None:
        pid = os.getpid()
        backoff = 0.1
        while self._pid == pid:
            pubsub = None
            last_pass = float("-inf")
            try:
                # Inside the try: a cluster client that cannot reach any node fails right here.
                pubsub = self.client.pubsub(ignore_subscribe_messages=False)
                pubsub.subscribe(self.channel)
                while self._pid == pid:
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    batch = [message]
                    # Whatever has arrived too; within the window of the last pass, whatever
                    # arrives until it ends.
                    window_ends = last_pass + self.coalesce
                    while len(batch) < MAX_BATCH:
                        wait = max(0.0, window_ends - time.monotonic())
                        message = pubsub.get_message(timeout=wait)
                        if message is None:
                            break
                        batch.append(message)
                    self.apply(batch)
                    last_pass = time.monotonic()
                    if self.live:
                        backoff = 0.1
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
