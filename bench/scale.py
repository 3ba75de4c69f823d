"""Catalogue scale: the same catalogue requests on 1,000 and on 1,000,000 products, each on a
cache miss.

One shop instance per schema, its in-process tier off (``SHOP_CATALOGUE_LOCAL_TTL=0``), and
every catalogue key in Redis deleted before each timed request, so each one rebuilds from the
database (the category list included). Timed from the client, sequentially; the median of
the repetitions is compared.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import redis
import requests

from .servers import INSTRUMENTED, Process, ensure_catalogue, shop_env, start_gunicorn

# Five products whose name holds a word no demo product has, added after the demo catalogue
# (the highest ids: the far end of an index walk).
RARE_WORD = "zephyr"
RARE_PRODUCTS = [
    {"name": f"Zephyr Lantern {i}", "category": "outdoor", "price": "19.99", "stock": 5}
    for i in range(1, 6)
]
COMMON_WORD = "steel"  # the material of one demo product in eight
# The instances' in-process tier: off, so every timed request reaches Redis (and misses).
LOCAL_TTL = 0


def schema(size: int) -> str:
    """The PostgreSQL schema holding the catalogue of ``size`` products."""
    return f"scale_{size}"


def requests_to_time() -> dict[str, str]:
    return {
        "grid page 1": "/api/v1/products?page=1",
        "grid page 40": "/api/v1/products?page=40",
        "category page 1": "/api/v1/products?category=kitchen&page=1",
        "category page 5": "/api/v1/products?category=kitchen&page=5",
        f"search common word ({COMMON_WORD!r})": f"/api/v1/products?q={COMMON_WORD}",
        f"search rare word ({RARE_WORD!r})": f"/api/v1/products?q={RARE_WORD}",
    }


def prepare(sizes: list[int], redis_url: str, log_dir: Path, echo) -> dict[int, float | None]:
    return {
        size: ensure_catalogue(
            schema(size), size, redis_url, log_dir, extra=RARE_PRODUCTS, echo=echo
        )
        for size in sizes
    }


def start_instance(size: int, redis_url: str, log_dir: Path) -> Process:
    env = shop_env(
        schema(size),
        redis_url,
        SHOP_REDIS_PREFIX=f"bench-scale-{size}:",
        SHOP_CATALOGUE_LOCAL_TTL=str(LOCAL_TTL),
        **INSTRUMENTED["shop"],
    )
    return start_gunicorn(f"shop-scale-{size}", "wsgi:app", env, log_dir, ready_path="/healthz")


def time_misses(
    server: Process, size: int, redis_url: str, repetitions: int, progress: Callable[[str], None]
) -> dict[str, dict]:
    client = redis.Redis.from_url(redis_url)
    pattern = f"bench-scale-{size}:cat:*"
    http = requests.Session()
    results = {}
    for label, path in requests_to_time().items():
        times, sql, sizes, statuses = [], [], [], set()
        for i in range(repetitions + 1):
            keys = list(client.scan_iter(pattern, count=1000))
            if keys:
                client.delete(*keys)
            started = time.perf_counter()
            response = http.get(server.url + path, timeout=60)
            elapsed = time.perf_counter() - started
            statuses.add(response.status_code)
            if i == 0:
                continue  # the first request of a kind also warms PostgreSQL's buffers
            times.append(elapsed * 1000)
            sql.append(int(response.headers.get("X-Shop-SQL", -1)))
            body = response.json() if response.ok else {}
            sizes.append(len(body.get("items", [])))
        results[label] = {
            "path": path,
            "median_ms": statistics.median(times),
            "p90_ms": statistics.quantiles(times, n=10)[-1] if len(times) > 1 else times[0],
            "min_ms": min(times),
            "sql_per_request": statistics.median(sql),
            "items": statistics.median(sizes) if sizes else 0,
            "statuses": sorted(statuses),
        }
        progress(
            f"  (scale) {size:>9,} products  {label:<32} median "
            f"{results[label]['median_ms']:7.1f} ms  ({results[label]['items']:.0f} items, "
            f"{results[label]['sql_per_request']:.0f} SQL)"
        )
    return results
