"""The visitors of workloads (a) and (b), made with real HTTP calls, and what their pages cost:
the paths they walk, the sessions with a three-line cart, the app's own per-request counts
(sampled outside the timed runs) and Redis's own command statistics (over the timed runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import redis
import requests

from .shop_templates import PER_PAGE

CART_LINES = 3
GRID_PAGES = 100  # grid pages a visitor walks through, at most
PRODUCTS_OPENED = 2  # products opened from each grid page


def grid_pages(products: int, pages: int = GRID_PAGES) -> int:
    """How many of the first ``pages`` grid pages a catalogue of ``products`` fills."""
    return min(pages, max(1, products // PER_PAGE))


def page_paths(products: int, pages: int = GRID_PAGES, opened: int = PRODUCTS_OPENED) -> list[str]:
    """A visitor paging through the grid: each grid page, then ``opened`` products on it."""
    paths = []
    for page in range(1, grid_pages(products, pages) + 1):
        first = (page - 1) * PER_PAGE + 1
        paths.append(f"/?page={page}")
        # 13 and PER_PAGE are coprime: the products opened from a page are distinct.
        paths += [f"/products/{first + (page * 7 + 13 * k) % PER_PAGE}" for k in range(opened)]
    return paths


CATEGORY_PAGES = 5  # pages of each category in the floor comparison's browsing


def catalogue_paths(
    products: int, categories: Sequence[str], pages_each: int = CATEGORY_PAGES
) -> list[str]:
    """The browsing of :func:`page_paths` with category pages among it: after every few grid
    pages, the next page of the next category (grid, category and product pages, all warm)."""
    browsing = page_paths(products)
    per_category = min(pages_each, max(1, products // len(categories) // PER_PAGE))
    extra = [
        f"/?category={slug}&page={page}"
        for page in range(1, per_category + 1)
        for slug in categories
    ]
    step = max(1, len(browsing) // max(1, len(extra)))
    paths: list[str] = []
    for i, path in enumerate(browsing):
        paths.append(path)
        if i % step == step - 1 and extra:
            paths.append(extra.pop(0))
    return paths + extra


# Products in the carts of workload (b): set by the runner to ids with stock (seeded stock
# includes 0, and a cart refuses what is sold out).
CART_PRODUCTS = [5, 22, 39]


def shop_session(base: str) -> str:
    """A shop visitor with a three-line cart, made through the API; returns its Cookie header."""
    http = requests.Session()
    token = http.get(base + "/api/v1/session", timeout=10).json()["csrf_token"]
    for product_id in CART_PRODUCTS[:CART_LINES]:
        response = http.post(
            base + "/api/v1/cart/items",
            json={"product_id": product_id, "quantity": 1},
            headers={"X-CSRF-Token": token},
            timeout=10,
        )
        response.raise_for_status()
    return "; ".join(f"{k}={v}" for k, v in http.cookies.items())


def conventional_session(base: str) -> str:
    """A visitor of the conventional build with the same cart, through its pages."""
    http = requests.Session()
    http.get(base + "/", timeout=10)
    for product_id in CART_PRODUCTS[:CART_LINES]:
        response = http.post(  # as a browser submits the page's form (it has no token)
            base + "/cart/add",
            data={"product_id": product_id, "quantity": 1, "next": "/"},
            headers={"Sec-Fetch-Site": "same-origin"},
            timeout=10,
            allow_redirects=False,
        )
        if response.status_code != 303:
            raise RuntimeError(f"conventional cart add answered {response.status_code}")
    return "; ".join(f"{k}={v}" for k, v in http.cookies.items())


def sessions(make, base: str, n: int) -> list[str]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _i: make(base), range(n)))


def warm(base: str, paths: Sequence[str], cookies: Sequence[str] = (), passes: int = 2) -> None:
    """Every path, ``passes`` times over 4 connections, so each worker has seen it."""

    def fetch(chunk: list[str]) -> None:
        http = requests.Session()
        for i, path in enumerate(chunk):
            headers = {"Cookie": cookies[i % len(cookies)]} if cookies else {}
            http.get(base + path, headers=headers, timeout=30).raise_for_status()

    work = list(paths) * passes
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(fetch, [work[i::4] for i in range(4)]))


class RedisStats:
    """Command counts from the Redis server itself (``INFO commandstats``): every command,
    those inside Lua scripts included, and which of them write (``COMMAND INFO`` flags)."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self._writes: dict[str, bool] = {}

    def snapshot(self) -> dict[str, int]:
        stats = self.client.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}

    def is_write(self, command: str) -> bool:
        if command not in self._writes:
            name = command.split("|")[0]
            info = self.client.execute_command("COMMAND", "INFO", name) or {}
            flags = (info.get(name) or {}).get("flags", [])
            self._writes[command] = "write" in flags
        return self._writes[command]

    def delta(self, before: dict[str, int], after: dict[str, int]) -> dict:
        grown = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}
        grown.pop("info", None)
        grown.pop("command|info", None)
        writes = {k: v for k, v in grown.items() if self.is_write(k)}
        return {"commands": grown, "writes": writes}
