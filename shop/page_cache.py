"""Rendered catalogue pages (grid, category, search, product), kept like the catalogue's data.

A page is rendered once, with what differs per visitor (the header's cart and account links)
left as a hole, and kept in the catalogue's own cache (:class:`shop.catalogue_cache.CacheAside`:
Redis, then this process's memory), under a key made from what the page shows: the canonical
grid query (:class:`shop.catalogue.GridQuery`) or the product's id. Each page is tagged with
the products it shows and kept as a list, so :meth:`shop.catalogue.Catalogue.invalidate` drops
it with the data, on every instance, in the same script and the same pub/sub message: a change
to a product drops the pages that show it, and a structural change (which also changes the
category bar every page shows) drops them all. The staleness bound is therefore the
catalogue's. A warm page costs a dictionary lookup and the hole's fill: no template render,
no SQL, and no Redis command while the in-process tier is live.

What renders a page must read the catalogue inside its ``render`` (after the cache has noted
the invalidation epoch), never before: a page made from data read earlier could be stored
after an invalidation it missed. For the same reason ``render``'s reads skip this process's
memory and go to Redis, which applies an invalidation before any process hears of it.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .catalogue import GridQuery
from .catalogue_cache import CacheAside

# Where the header's cart and account links go. Jinja escapes every "<" of the catalogue's
# text, so nothing a product or a search says can forge the marker.
ACCOUNT_HOLE = "<!--shop:hole:account-->"


@dataclass(frozen=True)
class CachedPage:
    """A page's bytes before and after its one hole, and the products it shows."""

    head: bytes
    tail: bytes
    products: tuple[int, ...]

    def filled(self, account: str) -> bytes:
        return b"".join((self.head, account.encode(), self.tail))

    @classmethod
    def of(cls, stored: dict[str, Any]) -> CachedPage:
        head, marker, tail = stored["html"].partition(ACCOUNT_HOLE)
        if not marker:
            raise ValueError("a cached page must have the account hole")
        return cls(head.encode(), tail.encode(), tuple(stored["products"]))


def render_version(shown_settings: Iterable[object], *sources: Path) -> str:
    """A digest of what a page's text is made of besides the catalogue: the templates and the
    code (``sources``: folders) and the settings pages show (the currency, the image host).
    Instances that differ in any of them, such as old and new during a rolling deploy, keep
    their pages apart in Redis instead of serving each other's."""
    digest = hashlib.sha1(repr(list(shown_settings)).encode())
    for source in sources:
        digest.update(_folder_digest(source).encode())
    return digest.hexdigest()[:12]


@functools.cache
def _folder_digest(folder: Path) -> str:
    """Every file's path and bytes, once per process (the files do not change under it)."""
    digest = hashlib.sha1()
    files = (p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in sorted(files):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@dataclass
class PageCache:
    cache: CacheAside
    version: str = "-"  # render_version(): pages of other templates or settings are not ours

    def grid_key(self, query: GridQuery) -> str:
        return self.cache.key("html", self.version, *query.key_parts)

    def product_key(self, product_id: int) -> str:
        return self.cache.key("html", self.version, "p", product_id)

    def get(self, key: str, render: Callable[[], tuple[str, Iterable[int]]]) -> CachedPage:
        """The page under ``key``, or ``render()``'s (its text with the hole, and the ids of
        the products it shows), kept for the next visitor. Whatever ``render`` raises (a 404,
        a refused search) propagates and nothing is kept."""

        def load(_position: int) -> dict[str, Any]:
            html, products = render()
            return {"html": html, "products": sorted(set(products))}

        return self.cache.get_or_load(
            key,
            load,
            tags=lambda stored: stored["products"],
            is_list=True,  # every page shows the category bar: structural changes drop it
            prepare=CachedPage.of,
            kind="page",
            honours_positions=False,  # render() reads through the cache, whose entries do
            reads_through=True,  # ... from Redis, where the invalidations are already applied
        )
