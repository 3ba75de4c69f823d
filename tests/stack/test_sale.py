"""A sale through the balancer: buyers check out one product as fast as they can for 10 s, each
order invalidating it on every instance, while other shoppers browse the rest of the catalogue
and its entries keep expiring. pg_stat_statements on both servers shows where the catalogue's
rebuilds went: those of other products and lists to the replica, none to the primary (a write
to one product is no reason to avoid the replica for another); the instances' metrics show that
those rebuilds were kept (an order's invalidation drops only what shows the sold product); and
each buyer, right after their own order, is shown the sold product's stock with their order
taken."""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import requests

from deploy.stack import stack as stack_module
from shop.catalogue_cache import CacheAside
from shop.local_tier import COALESCE_SECONDS, LocalTier
from tests.stack.conftest import (
    Shopper,
    in_stock_products,
    instance_counter,
    set_stock,
    sql,
    stack_redis,
)

SALE_SECONDS = 10.0
BUYERS = 6
BROWSERS = 3
EXPIRE_EVERY = 2.0  # the other products' entries are forgotten this often (as by their TTL)
# How far behind the primary the replica applies commits during the sale: a replica in another
# zone, under load. On one machine it would otherwise replay within a millisecond, and almost
# no rebuild would find it behind, whatever the shop did.
REPLICA_DELAY_MS = 50
CATALOGUE_READS = "%FROM products JOIN categories%"


def catalogue_reads(topology: stack_module.Topology, server: str) -> Counter:
    """Calls of the catalogue's two queries on ``server``: a product (its row) and a list (a
    grid page: the query with a LIMIT). Checkout's reads of products join no category."""
    counts: Counter = Counter()
    rows = sql(
        topology,
        server,
        "SELECT query, calls FROM pg_stat_statements WHERE query ILIKE %s",
        CATALOGUE_READS,
    )
    for query, calls in rows:
        counts["list" if " LIMIT " in query.upper() else "product"] += calls
    return counts


@contextlib.contextmanager
def lagging_replica(topology: stack_module.Topology, delay_ms: int) -> Iterator[None]:
    """The replica applies each commit ``delay_ms`` after the primary made it, until the end."""

    def apply_delay(setting: str) -> None:
        conn = psycopg2.connect(topology.component("replica").dsn, connect_timeout=3)
        try:
            conn.autocommit = True  # ALTER SYSTEM takes no transaction
            with conn.cursor() as cur:
                cur.execute(f"ALTER SYSTEM SET recovery_min_apply_delay = '{setting}'")
                cur.execute("SELECT pg_reload_conf()")
        finally:
            conn.close()

    apply_delay(f"{delay_ms}ms")
    try:
        yield
    finally:
        apply_delay("0")


class Expiry:
    """Forget catalogue entries the way their TTL would: Redis's copies deleted and each
    instance's memory told by the shop's own message, with no write position recorded (no
    write happened to them)."""

    def __init__(self, topology: stack_module.Topology) -> None:
        self.client = stack_redis(topology)
        self.cache = CacheAside(self.client, "shop:cat:", ttl=1)
        self.channel = topology.purger.channel

    def expire(self, product_ids: list[int]) -> None:
        """These products' entries and every list."""
        keys = [self.cache.key("p", pid) for pid in product_ids]
        self.client.delete(*keys)
        self.client.incr(self.cache.generation_key)  # every list in Redis orphaned
        self.client.publish(self.channel, LocalTier.message([], keys, True))


def rebuild_outcomes(topology: stack_module.Topology) -> Counter:
    """The instances' catalogue rebuilds by how they ended (stored, invalidated, ...)."""
    return instance_counter(topology, "shop_cache_rebuilds_total", "outcome")


def test_a_sale_of_one_product_leaves_other_rebuilds_on_the_replica(healthy_stack):
    url = healthy_stack.url
    sold = in_stock_products(healthy_stack, 1)[0]
    sold_id, sold_category = sold["id"], sold["category"]
    set_stock(healthy_stack, sold_id, 1_000_000)
    others = []
    for page in itertools.count(1):
        listing = requests.get(f"{url}/api/v1/products?per_page=96&page={page}", timeout=10)
        if listing.status_code == 404:
            break
        others += [p["id"] for p in listing.json()["items"] if p["id"] != sold_id]
    categories = [
        c["slug"]
        for c in requests.get(f"{url}/api/v1/categories", timeout=10).json()["items"]
        if c["slug"] != sold_category
    ]
    lists = [f"/api/v1/products?category={slug}&page=1&per_page=24" for slug in categories]
    expiry = Expiry(healthy_stack)

    before = {s: catalogue_reads(healthy_stack, s) for s in ("primary", "replica")}
    outcomes_before = rebuild_outcomes(healthy_stack)
    stop_at = time.monotonic() + SALE_SECONDS
    statuses: Counter = Counter()
    stale: list[dict] = []
    orders: list[int] = []
    lock = threading.Lock()

    def buy(_: int) -> None:
        while time.monotonic() < stop_at:  # a new guest each time: one order per cart
            buyer = Shopper(url)
            line = {"product_id": sold_id, "quantity": 1}
            assert buyer.api("POST", "/cart/items", json=line).status_code == 200
            stock_before = sql(
                healthy_stack, "primary", "SELECT stock FROM products WHERE id = %s", sold_id
            )[0][0]
            placed = buyer.api(
                "POST",
                "/orders",
                headers={"Idempotency-Key": secrets.token_hex(8)},
                json={"shipping": {"name": "Sale", "address": "1 Rush"}, "email": "b@example.com"},
            )
            placed_at = time.monotonic()
            assert placed.status_code == 201, placed.text
            shown = buyer.get(f"/api/v1/products/{sold_id}").json()["stock"]
            with lock:
                orders.append(placed.json()["order"]["id"])
            if shown <= stock_before - 1:
                continue
            while shown > stock_before - 1 and time.monotonic() - placed_at < 1:
                time.sleep(0.001)
                shown = buyer.get(f"/api/v1/products/{sold_id}").json()["stock"]
            with lock:
                stale.append(
                    {"ms": (time.monotonic() - placed_at) * 1000, "fresh": shown < stock_before}
                )

    def browse(seed: int) -> None:
        rng = random.Random(seed)
        browser = requests.Session()
        while time.monotonic() < stop_at:
            path = (
                rng.choice(lists)
                if rng.random() < 0.2
                else f"/api/v1/products/{rng.choice(others)}"
            )
            answer = browser.get(url + path, timeout=15)
            with lock:
                statuses[answer.status_code] += 1

    def expire() -> None:
        while time.monotonic() < stop_at:
            expiry.expire(others)
            time.sleep(EXPIRE_EVERY)

    with (
        lagging_replica(healthy_stack, REPLICA_DELAY_MS),
        ThreadPoolExecutor(max_workers=BUYERS + BROWSERS + 1) as pool,
    ):
        done = [pool.submit(buy, n) for n in range(BUYERS)]
        done += [pool.submit(browse, n) for n in range(BROWSERS)]
        done.append(pool.submit(expire))
        for future in done:
            future.result()
    after = {s: catalogue_reads(healthy_stack, s) for s in ("primary", "replica")}
    delta = {s: after[s] - before[s] for s in after}
    outcomes = rebuild_outcomes(healthy_stack)
    outcomes.subtract(outcomes_before)
    figures = {
        "seconds": SALE_SECONDS,
        "orders": len(orders),
        "browsed": sum(statuses.values()),
        "statuses": dict(statuses),
        "rebuilds": {s: dict(delta[s]) for s in delta},
        "rebuild_outcomes": dict(outcomes),
        "stale_first_reads": len(stale),
        "stale_ms": sorted(round(s["ms"], 1) for s in stale),
        "coalesce_ms": COALESCE_SECONDS * 1000,
        "replica_delay_ms": REPLICA_DELAY_MS,
    }
    print("sale:", json.dumps(figures))
    assert set(statuses) == {200}, statuses
    assert len(orders) >= 20, figures
    # Other products' rebuilds: many, and all on the replica.
    assert delta["replica"]["product"] >= 50 and delta["replica"]["list"] >= 5, figures
    assert delta["primary"]["list"] == 0, figures
    # The primary read only the sold product (at most once per reader of it per order).
    assert delta["primary"]["product"] <= 2 * len(orders) + BUYERS, figures
    # Those rebuilds were kept: an order's invalidation throws away only a rebuild showing the
    # sold product (one shared epoch made it drop every rebuild under way, of any product: 209
    # of 956 in a run at this size, against 5 of 698 with a mark per product, 17 of 812 on a
    # Redis Cluster, where an invalidation's steps take more round trips).
    assert outcomes["stored"] >= 50, figures
    assert outcomes["invalidated"] <= len(orders) // 4, figures
    # Read-your-writes for the sold product: each buyer saw their order in the stock, at once
    # or within the staleness bound (a message's time plus the coalescing window).
    assert all(s["fresh"] for s in stale), figures
    assert len(stale) <= len(orders) // 20, figures
    final = sql(healthy_stack, "primary", "SELECT stock FROM products WHERE id = %s", sold_id)
    shown = requests.get(f"{url}/api/v1/products/{sold_id}", timeout=5).json()["stock"]
    assert shown == final[0][0]
