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

Each process also remembers, per address, the answer the app gave with a kept page
(:meth:`PageCache.remember`), for as long as the tier holds that very page: the next visitor
to the address is answered in front of the app (``shop.web.cached_pages.WarmPages``).

What renders a page must read the catalogue inside its ``render`` (after the cache has noted
the invalidation epoch), never before: a page made from data read earlier could be stored
after an invalidation it missed. For the same reason ``render``'s reads skip this process's
memory and go to Redis, which applies an invalidation before any process hears of it.
"""

from __future__ import annotations

import functools
import hashlib
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from .catalogue import GridQuery
from .catalogue_cache import CacheAside
from .local_tier import LocalTier

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


class WarmAnswer(NamedTuple):
    """An anonymous visitor's answer for one address, as the app gave it: the page it filled
    (answered again only while the in-process tier still holds that very page; a weak
    reference, so a page the tier let go of is not kept alive here), the hole's fill, the
    headers, the page's tags, and the route for the metrics. A visitor with a session gets the
    same page with their own fill and private headers."""

    key: str
    page: weakref.ref[CachedPage]
    account: bytes
    headers: tuple[tuple[str, str], ...]
    xkey: tuple[str, str]
    route: str


# The environ keys of one request: where it was asked (the address a warm answer is kept
# under), and the tier's generation when it arrived (an answer made while a drop happened is
# not kept: the address may since mean another page).
ADDRESS_KEY = "shop.page_address"
GENERATION_KEY = "shop.page_generation"
# Where an answer given without Flask names its route, for the metrics (shop/metrics.py).
ROUTE_KEY = "shop.route"


@dataclass
class PageCache:
    cache: CacheAside
    version: str = "-"  # render_version(): pages of other templates or settings are not ours
    max_addresses: int = 10_000
    # Addresses (script root, path, query string, exactly as asked) the app answered with a
    # kept page, so the next visitor is answered without it (shop.web.cached_pages.WarmPages).
    _answers: dict[tuple[str, str, str], WarmAnswer] = field(
        default_factory=dict, init=False, repr=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def local(self) -> LocalTier | None:
        return self.cache.local

    @staticmethod
    def address(environ: Mapping[str, Any]) -> tuple[str, str, str]:
        return (
            environ.get("SCRIPT_NAME", ""),
            environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""),
        )

    def warm(self, address: tuple[str, str, str]) -> tuple[WarmAnswer, CachedPage] | None:
        """The answer kept for this address, and its page, while that page is the one the tier
        still holds under its key (a drop, an expiry or a new list generation ends it): a
        dictionary lookup and the tier's own, no lock."""
        answer = self._answers.get(address)
        if answer is None or self.local is None:
            return None
        page = answer.page()
        if page is None or self.local.get(answer.key) is not page:
            if page is None:  # the tier let it go: nothing here will answer for it again
                with self._lock:
                    if self._answers.get(address) is answer:
                        del self._answers[address]
            return None
        return answer, page

    def remember(self, environ: Mapping[str, Any], answer: WarmAnswer) -> None:
        """Keep ``answer`` for the address of this request, unless the tier dropped anything
        since the request arrived (or it did not come through WarmPages). At most
        ``max_addresses`` are kept, the oldest forgotten first: addresses with made-up query
        parameters can push out other addresses, never the catalogue's entries."""
        address = environ.get(ADDRESS_KEY)
        local = self.local
        if address is None or local is None or environ.get(GENERATION_KEY) != local.generation:
            return
        known = self._answers.get(address)
        if known is not None and known.page() is answer.page():
            return
        with self._lock:
            self._answers.pop(address, None)
            while len(self._answers) >= self.max_addresses:
                self._answers.pop(next(iter(self._answers)))
            self._answers[address] = answer

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
