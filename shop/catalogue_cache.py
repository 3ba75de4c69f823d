"""Cache-aside (lazy loading) through Redis, with one rebuild per missing key and invalidation
by product.

A hit is one read command and no write. On a miss one request takes a short lock and rebuilds;
the others wait for its value instead of all querying the database (no stampede). Every entry
expires. Each cached list is tagged with the products it shows, so a change to a product deletes
exactly the entries that show it; a tag expires with the longest-lived entry it names and drops
the names of expired ones as entries are added. Lists live under a generation number (read with
the list in the same round trip), and a structural change (a product added, a category changed)
starts a new generation: one INCR orphans every cached list at once, however many there are, and
the orphans expire by their TTL.
A rebuild stores its value only if nothing it shows was invalidated while it read the database,
so a stale read can never be cached after an invalidation: every invalidation takes a number
from one counter (the epoch) and marks what it names with it (each product, each key; a
structural change marks everything), and a rebuild that read the epoch before its query drops
what it stored if a mark on what the value shows is higher. During a sale of one product, the
orders' invalidations leave every other product's rebuild to be stored.
An invalidation may also record the writer's position in the primary's log (``min_position``),
per product it names (:mod:`shop.write_positions`; a structural change's in
one key for all); a rebuild hands its loader the highest position of what it shows, which the
loader must not read from a replica short of (see ``Engines.read``), or a replica lagging
behind the write would put the old value straight back in the cache, while a write to another
product leaves the rebuild free to read any replica. When Redis is unreachable, values come
straight from the loader.

In front of Redis sits an in-process tier (:mod:`shop.local_tier`; ``local_ttl`` is its entries'
longest life, 0 turns it off) so that a warm page costs no Redis round trip at all; every
invalidation is also published, and each process drops what it holds as the message arrives.
Values it returns are shared between requests: callers must not modify them.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import random
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

import redis

from .local_tier import MISSING, LocalTier
from .redis_client import RedisUnavailable, is_cluster
from .write_positions import WritePositions

log = logging.getLogger(__name__)

# Set while a loader that reads through the cache (a page) runs: its reads skip this process's
# memory, which may not yet have heard of an invalidation that Redis has already applied (the
# page would be made of the old value and stored under the new epoch).
_READING_THROUGH: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "catalogue_reading_through", default=False
)

# Redis Cluster: a value and its rebuild lock share a hash tag (the logical key, so entries
# spread over every slot), each product's tag set and mark have its own, a key's mark is on the
# key's, and the epoch, the write position, the list generation and the mark on everything share
# ``{writes}``. No script or command spans two tags: what was one
# script is a sequence of steps whose order keeps the promise (see _rebuild, invalidate).

# KEYS: value, lock. ARGV: token, value, ttl. Only the rebuild that holds the lock stores.
_STORE_SCRIPT = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('DEL', KEYS[2])
return 1
"""

# KEYS: lock. ARGV: token. Only the rebuild that took the lock lets it go.
_UNLOCK_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: epoch, structural write position, list generation, the mark on everything (one slot).
# ARGV: the writer's position in the primary's log (0: none), structural, the mark's TTL.
# Returns the invalidation's number (the new epoch). Structural: the position for all keeps the
# highest, one INCR of the list generation orphans every cached list, whatever their number
# (they expire by their TTL), and everything is marked with the number. The epoch moves with
# them, so a rebuild never sees the new epoch with the old position. (A product's own position
# is raised before: _RAISE_SCRIPT; its mark after, with the number: _mark.)
_BUMP_SCRIPT = """
local epoch = redis.call('INCR', KEYS[1])
if ARGV[2] == '1' then
  if tonumber(ARGV[1]) > tonumber(redis.call('GET', KEYS[2]) or '0') then
    redis.call('SET', KEYS[2], ARGV[1])
  end
  redis.call('INCR', KEYS[3])
  redis.call('SET', KEYS[4], epoch, 'EX', ARGV[3])
end
return epoch
"""

# A product's or a key's mark is a sorted set of one member, "epoch", scored with the number of
# the last invalidation that named it: ZADD GT keeps the highest when two invalidations mark it
# out of order, in plain commands that one pipeline sends to each node.
_MARK_MEMBER = "epoch"

# KEYS: a product's write position. ARGV: the writer's position, its TTL. Keeps the highest.
_RAISE_SCRIPT = """
if tonumber(ARGV[1]) > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return 1
"""


class CacheAside:
    """JSON values in Redis under ``prefix``, rebuilt lazily by the caller's loader."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        *,
        ttl: int,
        jitter: float = 0.1,
        lock_timeout: float = 5.0,
        wait_timeout: float = 2.0,
        local_ttl: float = 0.0,
        local_max_entries: int = 10_000,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self.jitter = jitter
        self.lock_timeout = lock_timeout
        self.wait_timeout = wait_timeout
        self.sleep = sleep
        self.clock = clock
        self.local = (
            LocalTier(
                client,
                f"{prefix}invalidations",
                max_age=local_ttl,
                max_entries=local_max_entries,
                clock=clock,
            )
            if local_ttl
            else None
        )
        self.epoch_key = f"{prefix}{{writes}}:epoch"
        self.positions = WritePositions(prefix, ttl=ttl, structural=f"{prefix}{{writes}}:position")
        self.position_key = self.positions.structural_key
        self.generation_key = f"{prefix}{{writes}}:generation"
        self.everything_mark_key = f"{prefix}{{writes}}:marked"
        self._generation = 0  # the list generation this process saw last
        self._store = client.register_script(_STORE_SCRIPT)
        self._bump = client.register_script(_BUMP_SCRIPT)
        self._raise = client.register_script(_RAISE_SCRIPT)
        self._unlock = client.register_script(_UNLOCK_SCRIPT)
        self._last_outage_log = 0.0
        # Told which tier answered each lookup ("local", "redis" or "database"), with the
        # lookup's kind, when metrics are on (shop/metrics.py).
        self.lookup_hook: Callable[[str, str], None] | None = None
        # Told how each rebuild that read the database ended, with the lookup's kind: stored,
        # invalidated (something it shows was invalidated while it read: served, not kept),
        # lock_lost (held past lock_timeout), busy (another request's rebuild outlived the
        # wait: served, not kept) or failed (Redis went away before the store).
        self.rebuild_hook: Callable[[str, str], None] | None = None

    def key(self, *parts: object) -> str:
        """``<prefix>{<parts>}``: the braces are the key's Redis Cluster hash tag, so entries
        spread over the slots by what they show, and a list's generations and its rebuild lock
        (``<key>:g<n>``, ``<key>:lock``) stay on its slot."""
        return self.prefix + "{" + ":".join(str(part) for part in parts) + "}"

    def tag_key(self, product_id: int) -> str:
        return f"{self.prefix}shows:{{{product_id}}}"

    def mark_key(self, product_id: int) -> str:
        """The number of the last invalidation that named this product (on its slot)."""
        return f"{self.prefix}marked:{{{product_id}}}"

    @staticmethod
    def key_mark_key(key: str) -> str:
        """The number of the last invalidation that named this key (on the key's slot)."""
        return f"{key}:marked"

    @staticmethod
    def list_key(key: str, generation: int) -> str:
        """Where a list lives in Redis: its key in the current list generation."""
        return f"{key}:g{generation}"

    def jittered_ttl(self) -> int:
        spread = self.ttl * self.jitter
        return max(1, round(self.ttl + random.uniform(-spread, spread)))

    def get_or_load(
        self,
        key: str,
        loader: Callable[[int], Any],
        *,
        tags: Callable[[Any], Iterable[int]] | None = None,
        is_list: bool = False,
        admit: Callable[[], None] | None = None,
        prepare: Callable[[Any], Any] | None = None,
        kind: str = "catalogue",
        shows: Iterable[int] = (),
        honours_positions: bool = True,
        reads_through: bool = False,
    ) -> Any:
        """The cached value for ``key``, or ``loader(min_position)``'s, stored for the next
        reader. ``admit`` is called once before this request would read the database (a miss,
        before the rebuild lock is taken, or Redis down), never on a hit: whatever it raises
        propagates, with no lock taken and nothing stored. ``prepare`` turns the stored (JSON)
        value into what is returned and kept in this process, once per entry, not per hit.
        ``kind`` names the lookup for the metrics (``catalogue``, ``page``).
        ``shows``: the products the value is known to show before it is read (a product's
        own entry), whose write positions are read with the rebuild's lock. A loader that
        reads no replica (``honours_positions=False``: a page rendered through this cache, or
        a shop without replicas) has no positions to honour: none is read. ``reads_through``:
        the loader reads through this cache (a page), from Redis only while it runs."""
        hook = self.lookup_hook
        generation = 0
        local = None if _READING_THROUGH.get() else self.local
        if local is not None:
            value = local.get(key)
            if value is not MISSING:
                if hook is not None:
                    hook(kind, "local")
                return value
            generation = local.generation
        try:
            cached, redis_key = self._read(key, is_list)
        except RedisUnavailable as exc:
            if hook is not None:
                hook(kind, "database")
            self._log_outage(exc)
            if admit is not None:
                admit()
            value = loader(0)
            return prepare(value) if prepare else value
        if hook is not None:
            hook(kind, "redis" if cached is not None else "database")
        if cached is not None:
            value = json.loads(cached)
        else:
            if admit is not None:
                admit()
            try:
                value = self._rebuild(
                    redis_key, loader, tags, set(shows), honours_positions, reads_through, kind
                )
            except RedisUnavailable as exc:  # before the loader ran: read it now
                self._log_outage(exc)
                value = loader(0)
                return prepare(value) if prepare else value
        kept = prepare(value) if prepare else value
        if local is not None:
            local.put(
                key,
                kept,
                generation=generation,
                tags=tags(value) if tags else (),
                is_list=is_list,
            )
        return kept

    def _read(self, key: str, is_list: bool) -> tuple[str | None, str]:
        """The cached text (or None) and the Redis key it lives under, in one round trip:
        a list is read together with the list generation, and again only when that changed
        since this process last looked."""
        if not is_list:
            return cast(str | None, self.client.get(key)), key
        seen = self._generation
        pipe = self.client.pipeline(transaction=False)  # two slots: one round trip per node
        pipe.get(self.generation_key)
        pipe.get(self.list_key(key, seen))
        generation, cached = cast(list[str | None], pipe.execute())
        current = int(generation or 0)
        if current == seen:
            return cached, self.list_key(key, seen)
        self._generation = current
        redis_key = self.list_key(key, current)
        return cast(str | None, self.client.get(redis_key)), redis_key

    def _rebuild(
        self,
        key,
        loader,
        tags,
        shows: set[int],
        honours_positions: bool,
        reads_through: bool,
        kind: str,
    ) -> Any:
        if reads_through:
            loader = _through_redis(loader)
        lock_key = key + ":lock"
        token = secrets.token_hex(8)
        products = shows if honours_positions else set()
        # The epoch before the positions: an invalidation raises a product's position before
        # it bumps the epoch, so a rebuild that sees the new epoch sees the new position (and
        # one that sees the old epoch is caught at the store). One server runs a pipeline in
        # order; a cluster's nodes do not, so there the products' positions come after.
        apart = bool(products) and is_cluster(self.client)
        pipe = self.client.pipeline(transaction=False)
        pipe.set(lock_key, token, nx=True, px=int(self.lock_timeout * 1000))
        pipe.get(self.epoch_key)  # the epoch and the structural position share one slot
        self.positions.queue(pipe, () if apart else products)
        got_lock, epoch, *positions = pipe.execute()
        min_position = self.positions.highest(positions)
        if apart:
            min_position = max(min_position, self.positions.of(self.client, products))
        if not got_lock:
            waited = self._wait_for(key)
            if waited is not None:
                return json.loads(waited)
            value = loader(min_position)  # the builder is slow or gone: serve, don't store
            if honours_positions and tags is not None:
                value = self._honour_positions(value, loader, tags, shows, min_position)
            self._rebuilt(kind, "busy")
            return value
        try:
            value = loader(min_position)
            if honours_positions and tags is not None:
                value = self._honour_positions(value, loader, tags, shows, min_position)
        except BaseException:  # nothing to store: let the next reader try at once
            with contextlib.suppress(*RedisUnavailable):
                self._unlock(keys=[lock_key], args=[token])
            raise
        try:
            outcome = self._store_unless_invalidated(
                key, lock_key, token, int(epoch or 0), value, tags, shows
            )
        except redis.RedisError as exc:
            # Never leave the lock behind: readers of this key would wait it out.
            with contextlib.suppress(redis.RedisError):
                self._unlock(keys=[lock_key], args=[token])
            self._rebuilt(kind, "failed")
            if not isinstance(exc, RedisUnavailable):
                raise
            self._log_outage(exc)  # served all the same
        else:
            self._rebuilt(kind, outcome)
        return value

    def _rebuilt(self, kind: str, outcome: str) -> None:
        if self.rebuild_hook is not None:
            self.rebuild_hook(kind, outcome)

    def _honour_positions(self, value, loader, tags, checked: set[int], read_at: int) -> Any:
        """``value`` again from a server that has replayed the last writes to the products it
        turned out to show, if they came after ``read_at`` (one more round trip, on a miss)."""
        for _ in range(3):  # a list read again may show other products: check those too
            unseen = set(tags(value)) - checked
            if not unseen:
                break
            checked |= unseen
            written = self.positions.of(self.client, unseen)
            if written <= read_at:
                break
            read_at = written
            value = loader(read_at)
        return value

    def _store_unless_invalidated(
        self, key, lock_key, token, epoch: int, value, tags, shows: set[int]
    ) -> str:
        """Tag, store, then read the marks on what the value shows: an invalidation that
        reads the tags after the tagging finds the key (and deletes it), and one that marked
        what the value shows after ``epoch`` was read is seen here (and the value deleted), so
        a value read before an invalidation never survives it. (An invalidation marks before
        it reads the tags, so one of the two always catches it.) An invalidation of anything
        else leaves the value stored. Returns the outcome (see ``rebuild_hook``)."""
        ttl = self.jittered_ttl()
        products = set(tags(value)) if tags is not None else set()
        tag_keys = [self.tag_key(pid) for pid in products]
        if tag_keys:
            self._tag_all(tag_keys, key, ttl)
        encoded = json.dumps(value, separators=(",", ":"))
        if not self._store(keys=[key, lock_key], args=[token, encoded, ttl]):
            return "lock_lost"  # expired, or an invalidation deleted it
        try:
            unchanged = self._last_mark(products | shows, key) <= epoch
        except RedisUnavailable:
            unchanged = False
        if unchanged:
            return "stored"
        self.client.delete(key)
        return "invalidated"

    def _last_mark(self, products: set[int], key: str) -> int:
        """The highest invalidation number marked on these products, on ``key`` or on
        everything (one round trip; on a cluster, one per node, in parallel)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.everything_mark_key)
        for mark_key in [self.key_mark_key(key), *map(self.mark_key, sorted(products))]:
            pipe.zscore(mark_key, _MARK_MEMBER)
        return max((int(reply) for reply in pipe.execute() if reply is not None), default=0)

    def _mark(self, mark_keys: list[str], number: int) -> None:
        """Mark each of these with the invalidation's number, keeping a higher one; a mark
        lives as long as a write position (far longer than any rebuild)."""
        if not mark_keys:
            return
        pipe = self.client.pipeline(transaction=False)
        for mark_key in mark_keys:
            pipe.zadd(mark_key, {_MARK_MEMBER: number}, gt=True)
            pipe.expire(mark_key, self.positions.ttl)
        pipe.execute()

    def _tag_all(self, tag_keys: list[str], key: str, ttl: int) -> None:
        """Add ``key`` to each tag, scored by when it expires, pruning expired members; a tag
        lives as long as its longest member. Plain commands in one pipeline (a cluster client
        sends each node its part; it runs no script in a pipeline)."""
        now = int(time.time())
        pipe = self.client.pipeline(transaction=False)
        for tag_key in tag_keys:
            pipe.zremrangebyscore(tag_key, "-inf", f"({now}")
            pipe.zadd(tag_key, {key: now + ttl + 1})
            pipe.expire(tag_key, ttl + 1, nx=True)
            pipe.expire(tag_key, ttl + 1, gt=True)
        pipe.execute()

    def _wait_for(self, key: str) -> str | None:
        deadline = time.monotonic() + self.wait_timeout
        delay = 0.005
        while time.monotonic() < deadline:
            self.sleep(delay)
            value = cast(str | None, self.client.get(key))
            if value is not None:
                return value
            if not self.client.exists(key + ":lock"):
                return cast(str | None, self.client.get(key))
            delay = min(delay * 2, 0.05)
        return None

    def invalidate(
        self,
        product_ids: Iterable[int] = (),
        keys: Iterable[str] = (),
        *,
        structural: bool = False,
        min_position: int = 0,
    ) -> None:
        """Drop what shows these products; ``structural`` also drops every cached list, in a
        constant number of commands (a new list generation). ``min_position``: the write's
        position in the primary's log, recorded under each product (and, structural, for
        all), for rebuilds to honour."""
        product_ids, keys = list(product_ids), list(keys)
        if self.local is not None:
            self.local.drop(product_ids, keys, structural)  # this process: at once
        if min_position and not structural:
            # Before the epoch (see _rebuild); each product's on its own slot.
            for position_key in self.positions.keys(product_ids):
                self._raise(keys=[position_key], args=[int(min_position), self.positions.ttl])
        # The number next, then the marks with it: a rebuild that read the epoch before it,
        # and stores a value showing what is marked, finds the mark (_store_unless_invalidated).
        number = self._bump(
            keys=[self.epoch_key, self.position_key, self.generation_key, self.everything_mark_key],
            args=[int(min_position), "1" if structural else "0", self.positions.ttl],
        )
        if not structural:  # structural: everything is marked already
            self._mark([*map(self.mark_key, product_ids), *map(self.key_mark_key, keys)], number)
        doomed = list(keys)
        tag_keys = [self.tag_key(pid) for pid in product_ids]
        if not structural and tag_keys:
            pipe = self.client.pipeline(transaction=False)
            for tag_key in tag_keys:
                pipe.zrange(tag_key, 0, -1)
            for members in pipe.execute():
                doomed += members
        # One DEL per node: a value and its lock share a slot, tags have their own.
        gone = [name for key in doomed for name in (key, key + ":lock")]
        if not structural:
            gone += tag_keys
        if gone:
            self.client.delete(*gone)
        if self.local is not None:  # the other processes, once Redis no longer has them
            message = LocalTier.message(product_ids, keys, structural)
            self.client.publish(self.local.channel, message)

    def _log_outage(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_outage_log > 10:
            self._last_outage_log = now
            log.warning("catalogue cache unavailable, reading from the database: %s", exc)


def _through_redis(loader: Callable[[int], Any]) -> Callable[[int], Any]:
    """``loader`` with the cache's reads made from Redis, not this process's memory."""

    def load(position: int) -> Any:
        token = _READING_THROUGH.set(True)
        try:
            return loader(position)
        finally:
            _READING_THROUGH.reset(token)

    return load
