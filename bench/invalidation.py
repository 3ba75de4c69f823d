"""Invalidation at any tier size: the time one product's invalidation takes in an instance's
in-process tier (shop/local_tier.py) holding 100, 10,000 and 100,000 entries.

Each tier is filled with entries of other products (a list of four products each, as a grid
page shows many), then, for each repetition, one product's entries are put back (its data, its
page and grid pages showing it: the same number whatever the size) and dropped, timed around
:meth:`LocalTier.drop` alone. Beside it, the same tier scanned as every message did before the
tier was indexed by product (each entry's tags tested), for comparison. In this process, with
no server, the collector paused while timing: what is measured is the tier's own work.
"""

from __future__ import annotations

import gc
import random
import statistics
import time

from shop.local_tier import LocalTier

SIZES = (100, 10_000, 100_000)
ENTRIES_OF_THE_PRODUCT = 8  # its data, its page, six grid pages showing it
PRODUCT = 1


def _tier(size: int) -> LocalTier:
    tier = LocalTier(None, "bench:invalidations", max_age=3600, max_entries=size + 64)  # type: ignore[arg-type]
    tier.live = True
    tier._pid = -1  # no listener: the drops are called here
    rng = random.Random(size)
    others = range(1000, 1000 + max(1000, size // 4))
    for n in range(size):
        tags = rng.sample(others, 4)
        tier.put(f"l:{n}", {"n": n}, generation=tier.generation, tags=tags, is_list=True)
    return tier


def _put_the_product(tier: LocalTier, round_: int) -> None:
    for n in range(ENTRIES_OF_THE_PRODUCT):
        tier.put(
            f"x:{round_}:{n}",
            {"n": n},
            generation=tier.generation,
            tags=[PRODUCT, 1000 + n],
            is_list=n > 1,
        )


def _scan(tier: LocalTier, ids: set[int]) -> list[str]:
    """What a message cost before the index: every entry's tags tested."""
    return [key for key, entry in list(tier._entries.items()) if entry.tags & ids]


def _micro(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median_us": statistics.median(ordered) * 1e6,
        "p99_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6,
    }


def measure(sizes: tuple[int, ...] | list[int], repetitions: int) -> dict:
    """Drop-one-product timings per tier size, and a whole-tier scan's for comparison."""
    by_size: dict[str, dict] = {}
    for size in sizes:
        tier = _tier(size)
        drops, scans = [], []
        gc.collect()
        gc.disable()  # a collection inside a timed drop would be the collector's time
        try:
            for round_ in range(repetitions):
                _put_the_product(tier, round_)
                assert len(tier.tagged(PRODUCT)) == ENTRIES_OF_THE_PRODUCT
                started = time.perf_counter()
                tier.drop([PRODUCT], (), structural=False)
                drops.append(time.perf_counter() - started)
                assert not tier.tagged(PRODUCT)
            _put_the_product(tier, repetitions)
            for _ in range(max(3, repetitions * 10_000 // max(size, 10_000) // 10)):
                started = time.perf_counter()
                scanned = _scan(tier, {PRODUCT})
                scans.append(time.perf_counter() - started)
                assert len(scanned) == ENTRIES_OF_THE_PRODUCT
        finally:
            gc.enable()
        by_size[str(size)] = {
            "entries": len(tier),
            "drop": _micro(drops),
            "scan": _micro(scans),
            "scans": len(scans),
        }
    smallest, largest = by_size[str(min(sizes))], by_size[str(max(sizes))]
    return {
        "sizes": list(sizes),
        "repetitions": repetitions,
        "entries_of_the_product": ENTRIES_OF_THE_PRODUCT,
        "by_size": by_size,
        "ratio": largest["drop"]["median_us"] / smallest["drop"]["median_us"],
    }
