"""Where the primary's log stood after the last write to each product, for rebuilds to honour.

A rebuild of a cache entry must not read a replica that has not replayed the writes to what
the entry shows (the writer would see its change undone, and the old value cached for a TTL).
One position for every write made any write a reason to avoid every lagging replica: during a
sale nearly every rebuild, of any product, went to the primary. So each invalidation records
its position under each product it names (``<prefix>written:{<id>}``, kept for ``ttl`` seconds:
a replica further behind than that is broken, not lagging; its hash tag is the product's, as
for the product's tag set), and a structural change under one key for all (``structural``,
which every rebuild reads). A rebuild reads the positions of
what it knows it will show with its lock, in the round trip it makes anyway, and, for a list,
those of the products the list turned out to show, in one more round trip on that miss only.
Nothing is read on a hit.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import redis


class WritePositions:
    def __init__(self, prefix: str, *, ttl: int, structural: str) -> None:
        self.prefix = prefix
        self.ttl = ttl
        self.structural_key = structural

    def key(self, product_id: int) -> str:
        return f"{self.prefix}written:{{{product_id}}}"

    def keys(self, product_ids: Iterable[int]) -> list[str]:
        return [self.key(product_id) for product_id in product_ids]

    def queue(self, pipe: redis.client.Pipeline, product_ids: Collection[int]) -> int:
        """Add the reads of the structural position and these products' to ``pipe``; returns
        how many replies they add (read them with :meth:`highest`)."""
        pipe.get(self.structural_key)
        for key in self.keys(product_ids):
            pipe.get(key)
        return 1 + len(product_ids)

    @staticmethod
    def highest(replies: Iterable[Any]) -> int:
        return max((int(reply) for reply in replies if reply), default=0)

    def of(self, client: redis.Redis, product_ids: Collection[int]) -> int:
        """The highest position recorded for these products (one round trip)."""
        if not product_ids:
            return 0
        pipe = client.pipeline(transaction=False)
        for key in self.keys(product_ids):
            pipe.get(key)
        return self.highest(pipe.execute())
