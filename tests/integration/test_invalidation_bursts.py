"""A burst of invalidations on real Redis pub/sub: each process applies it in a few passes,
not one per message, and nothing waits longer than the coalescing window for it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from shop.catalogue_cache import CacheAside
from shop.local_tier import COALESCE_SECONDS, LocalTier


def _instance(client, prefix: str) -> CacheAside:
    cache = CacheAside(client, f"{prefix}cat:", ttl=60, local_ttl=30)
    assert cache.local is not None
    cache.local.get("-")  # starts the listener
    deadline = time.monotonic() + 3
    while not cache.local.live:
        assert time.monotonic() < deadline, "the invalidation listener never subscribed"
        time.sleep(0.01)
    return cache


def _fill(tier: LocalTier, products: range) -> None:
    for pid in products:
        tier.put(f"p:{pid}", {"id": pid}, generation=tier.generation, tags=[pid], is_list=False)
        tier.put(f"l:{pid}", {"items": [pid]}, generation=tier.generation, tags=[pid], is_list=True)


@contextlib.contextmanager
def _seller_and_shop(real_redis, products: range) -> Iterator[tuple[CacheAside, LocalTier]]:
    """Two processes' caches on one Redis: the one that invalidates, and the in-process tier of
    the other, holding a product entry and a list for each of ``products``; both stopped after."""
    client, prefix = real_redis
    seller, shop = _instance(client, prefix), _instance(client, prefix)
    assert shop.local is not None
    _fill(shop.local, products)
    try:
        yield seller, shop.local
    finally:
        for cache in (seller, shop):
            assert cache.local is not None
            cache.local.stop()


def _until(condition, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, what
        time.sleep(0.0005)
    return time.monotonic() - started


def test_a_sale_of_one_invalidation_per_order_is_a_few_passes_per_process(real_redis):
    with _seller_and_shop(real_redis, range(1, 601)) as (seller, tier):
        orders = 300
        started = time.monotonic()
        for pid in range(1, orders + 1):  # one order a product, each invalidating at once
            seller.invalidate([pid], keys=[f"p:{pid}"], min_position=pid)
        _until(lambda: tier.messages == orders, 5, f"{tier.messages} of {orders} messages arrived")
        burst = time.monotonic() - started
        # At most one pass per window (and the first at once), however fast the orders come.
        assert tier.passes <= burst / COALESCE_SECONDS + 2, (tier.passes, burst)
        # And far fewer than one a message (one each without the window: 299-300 of 300). Each
        # invalidation is a few round trips on the cluster-safe path, so the burst is slow enough
        # for several windows; a third was seen.
        assert tier.passes <= orders * 4 // 5, f"{tier.passes} passes for {orders} messages"
        for pid in (1, 150, 300):
            assert tier.tagged(pid) == frozenset()
        for pid in (301, 450, 600):
            assert tier.tagged(pid) == {f"p:{pid}", f"l:{pid}"}
        assert len(tier) == 600


def test_a_lone_invalidation_is_applied_at_once_and_a_burst_within_the_window(real_redis):
    with _seller_and_shop(real_redis, range(1, 201)) as (seller, tier):
        time.sleep(0.05)  # a quiet spell: the next message opens a pass at once
        seller.invalidate([1], keys=["p:1"])
        lone = _until(lambda: not tier.tagged(1), 1, "the lone invalidation never arrived")
        time.sleep(0.05)
        for pid in range(2, 201):  # a burst, paced as orders come: about one every 0.2 ms
            seller.invalidate([pid], keys=[f"p:{pid}"])
        last = _until(
            lambda: not tier.tagged(200), 1, "the burst's last invalidation never arrived"
        )
        # Generous for a shared machine: the bound is a message's time plus the window.
        assert lone < 0.05, lone
        assert last < 0.05 + COALESCE_SECONDS, last
        assert len(tier) == 0
        assert tier.passes < tier.messages, (tier.passes, tier.messages)
