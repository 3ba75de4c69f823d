"""The edge purger: every catalogue invalidation of the shop, as a purge of the edge cache.

``python -m deploy.stack.edge_purger --redis URL --channel NAME --varnish HOST:PORT``

The shop publishes each invalidation on ``<SHOP_REDIS_PREFIX>cat:invalidations``
(:meth:`shop.local_tier.LocalTier.message`: ``{"ids": [...], "keys": [...], "structural": b}``)
from the same Lua script that deletes the Redis entries (shop/catalogue_cache.py), after the
database commit: when the message arrives, neither the database nor Redis holds the old value,
so a page fetched after the purge is built from the new one. The instances' in-process tiers
drop theirs when the same message reaches them, at about the same moment; a page rebuilt in the
few milliseconds before one has could put the old page back in the edge, which is why every
purge is sent once more ``--repeat-after`` seconds later (the page's s-maxage bounds it anyway).

Tags (the ``xkey`` header the shop sends with each cacheable page): ``shop`` on every page,
``p<id>`` for each product a page shows. :func:`tags_for` maps a message to the tags to purge.
Messages that arrive together (an import, a burst of orders) go out as one purge. After any
(re)subscription everything is purged, as changes made while the purger was not listening were
never heard; while Varnish cannot be reached the tags wait and are sent when it answers.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import re
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

import redis

from deploy.varnish import PURGE_HEADER

log = logging.getLogger("edge_purger")

# On every cacheable page: purging it purges the whole edge.
SHOP_TAG = "shop"
# A catalogue cache key for one product (CacheAside.key("p", id): "<prefix>{p:<id>}", the
# braces being its Redis Cluster hash tag).
_PRODUCT_KEY = re.compile(r"(?:^|:)\{p:(\d+)\}$")
# Messages taken in one go before a purge is sent, and the most tags one purge request names
# (a header of at most a few KB: Varnish's limit is 8 KB).
MAX_BATCH = 1000
HEADER_BUDGET = 4000
# More tags than this waiting (Varnish away for long): purge everything instead.
MAX_PENDING = 10_000


def tags_for(message: str | bytes) -> set[str]:
    """The edge tags one invalidation names: ``{"shop"}`` for a structural change (a product
    added or archived, a category changed: every list may change shape), else ``p<id>`` for
    each product id and for each product's own cache key. Anything else it names (the
    categories' key) or cannot be read also gives ``{"shop"}``: purging too much costs misses,
    too little shows a stale page."""
    try:
        change = json.loads(message)
        ids, keys, structural = change["ids"], change["keys"], change["structural"]
        if structural is not False:
            return {SHOP_TAG}
        tags = set()
        for product_id in ids:
            if type(product_id) is not int:
                return {SHOP_TAG}
            tags.add(f"p{product_id}")
        for key in keys:
            found = _PRODUCT_KEY.search(key) if isinstance(key, str) else None
            if found is None:
                return {SHOP_TAG}
            tags.add(f"p{int(found.group(1))}")
        return tags
    except (ValueError, KeyError, TypeError):
        return {SHOP_TAG}


def header_values(tags: Iterable[str], budget: int = HEADER_BUDGET) -> list[str]:
    """``tags`` as space-separated header values of at most ``budget`` characters each."""
    values: list[str] = []
    current = ""
    for tag in sorted(tags):
        if current and len(current) + 1 + len(tag) > budget:
            values.append(current)
            current = ""
        current = f"{current} {tag}" if current else tag
    if current:
        values.append(current)
    return values


class PurgeFailed(OSError):
    """Varnish could not be reached, or did not answer a purge with 200."""


class VarnishPurge:
    """Sends ``PURGE /`` with the tags in ``xkey-purge`` to Varnish's purge socket; returns how
    many objects it dropped."""

    def __init__(self, host: str, port: int, timeout: float = 3.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout

    def __call__(self, tags: Collection[str]) -> int:
        purged = 0
        for value in header_values(tags):
            connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                connection.request("PURGE", "/", headers={PURGE_HEADER: value})
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as exc:
                raise PurgeFailed(f"{self.host}:{self.port}: {exc}") from None
            finally:
                connection.close()
            if response.status != 200:
                raise PurgeFailed(f"{self.host}:{self.port} answered {response.status}")
            purged += int(response.headers.get("X-Purged") or 0)
        return purged


class EdgePurger:
    """Reads invalidations from ``pubsub`` messages and sends their tags to ``send``: at once,
    batched with whatever else has arrived, and again ``repeat_after`` seconds later."""

    def __init__(
        self,
        send: Callable[[Collection[str]], int],
        *,
        repeat_after: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.send = send
        self.repeat_after = repeat_after
        self.clock = clock
        self.pending: set[str] = set()
        self.repeats: dict[str, float] = {}  # tag -> when it is purged once more
        self.retry_at = 0.0
        self.backoff = 0.1
        self.failing = False

    def take(self, message: dict[str, Any]) -> None:
        """One message from the subscription (subscribe confirmations included)."""
        if message["type"] == "subscribe":
            log.info(
                "listening on %s; purging everything (changes made before were not heard)",
                _text(message["channel"]),
            )
            self.pending.add(SHOP_TAG)
        elif message["type"] == "message":
            self.pending |= tags_for(message["data"])
        if len(self.pending) > MAX_PENDING:
            self.pending = {SHOP_TAG}

    def step(self, pubsub: Any, max_wait: float = 1.0) -> None:
        """Wait for a message (at most until a purge is due), take every message already
        there, then purge."""
        message = pubsub.get_message(timeout=self.wait(max_wait))
        taken = 0
        while message is not None:
            self.take(message)
            taken += 1
            if taken >= MAX_BATCH:
                break
            message = pubsub.get_message(timeout=0.0)
        self.flush()

    def wait(self, max_wait: float) -> float:
        """How long to wait for a message before something is due."""
        now = self.clock()
        due = [*self.repeats.values()]
        if self.pending:
            due.append(self.retry_at)
        if not due:
            return max_wait
        return max(0.0, min(max_wait, min(due) - now))

    def flush(self) -> None:
        """Purge what is waiting and what is due again; on failure keep it for later."""
        now = self.clock()
        if self.pending and now < self.retry_at:
            return
        again = {tag for tag, at in self.repeats.items() if at <= now}
        fresh = set(self.pending)
        tags = fresh | again
        if not tags:
            return
        if SHOP_TAG in tags:
            tags = {SHOP_TAG}
        try:
            purged = self.send(tags)
        except PurgeFailed as exc:
            if not self.failing:
                log.warning("purge failed (%s); keeping %d tags to send again", exc, len(tags))
            self.failing = True
            self.pending = fresh | again
            for tag in again:
                self.repeats.pop(tag, None)
            self.retry_at = now + self.backoff
            self.backoff = min(self.backoff * 2, 2.0)
            return
        if self.failing:
            log.info("Varnish answers again")
        self.failing, self.backoff, self.retry_at = False, 0.1, 0.0
        self.pending.clear()
        for tag in again:
            self.repeats.pop(tag, None)
        if SHOP_TAG in fresh:
            self.repeats.clear()
        if self.repeat_after > 0:
            for tag in {SHOP_TAG} if SHOP_TAG in fresh else fresh:
                self.repeats[tag] = now + self.repeat_after
        label = "purged" if fresh else "purged again"
        log.info("%s %s (%d objects)", label, _describe(tags), purged)

    def run(self, client: redis.Redis, channel: str, stop: threading.Event) -> None:
        """Subscribe to ``channel`` and purge until ``stop`` is set, resubscribing (and
        purging everything) after any lost connection."""
        backoff = 0.1
        lost = False
        while not stop.is_set():
            pubsub = client.pubsub(ignore_subscribe_messages=False)
            try:
                pubsub.subscribe(channel)
                while not stop.is_set():
                    self.step(pubsub)
                    backoff = 0.1
                    lost = False
            except (redis.RedisError, OSError) as exc:
                if not lost:
                    log.warning("lost the subscription to %s (%s); subscribing again", channel, exc)
                lost = True
                stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    pubsub.close()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _describe(tags: Collection[str], most: int = 20) -> str:
    shown = sorted(tags)[:most]
    more = f" and {len(tags) - most} more" if len(tags) > most else ""
    return " ".join(shown) + more


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", required=True, help="the shop's Redis URL")
    parser.add_argument("--channel", required=True, help="<SHOP_REDIS_PREFIX>cat:invalidations")
    parser.add_argument("--varnish", required=True, help="HOST:PORT of Varnish's purge socket")
    parser.add_argument("--repeat-after", type=float, default=1.0, help="seconds; 0: never")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    host, _, port = args.varnish.rpartition(":")
    purger = EdgePurger(VarnishPurge(host, int(port)), repeat_after=args.repeat_after)
    client = redis.Redis.from_url(args.redis, socket_timeout=5, socket_connect_timeout=2)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("purging %s from %s on %s", args.varnish, args.channel, args.redis)
    purger.run(client, args.channel, stop)


if __name__ == "__main__":
    main()
