"""What only a real Redis shows: expiry, atomicity under threads, one rebuild per key,
and recovery after an outage without a restart."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from deploy.stack.redis_server import ThrowawayRedis
from shop.cart import CartOwner, CartStore
from shop.catalogue_cache import CacheAside
from shop.redis_client import connect
from shop.session_ids import session_ref
from tests.support import KETTLE, REDIS_URL, Shopper, missing, wait_for_local_tier
from tests.support.tcp_proxy import TcpProxy


@pytest.mark.both_redis
def test_idle_session_and_its_cart_expire_in_redis(make_real_app, real_redis):
    client, prefix = real_redis
    app = make_real_app(session_idle_timeout=1)
    shopper = Shopper(app.test_client(), app)
    shopper.add(KETTLE, 2)
    ref = session_ref(shopper.session_id)
    assert client.exists(f"{prefix}{{s:{ref}}}", f"{prefix}{{s:{ref}}}:cart") == 2
    time.sleep(2.2)
    assert client.exists(f"{prefix}{{s:{ref}}}", f"{prefix}{{s:{ref}}}:cart") == 0
    assert shopper.cart()["count"] == 0


@pytest.mark.both_redis
def test_two_tabs_adding_at_once_lose_nothing(real_redis):
    client, prefix = real_redis
    carts = CartStore(client, prefix, visitor_ttl=60, account_ttl=60, max_line_quantity=1000)
    owner = CartOwner.session("t" * 43)
    start = threading.Barrier(8)

    def tab(_: int) -> None:
        start.wait()
        for _ in range(50):
            carts.add(owner, KETTLE, 1, stock=1000, price_cents=100)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(tab, range(8)))
    assert carts.get(owner) == {KETTLE: 400}


@pytest.mark.both_redis
def test_only_one_request_rebuilds_a_missing_key(real_redis):
    client, prefix = real_redis
    cache = CacheAside(client, f"{prefix}cat:", ttl=60)
    calls = []
    start = threading.Barrier(16)

    def loader(_position: int):
        calls.append(1)
        time.sleep(0.3)  # a slow query
        return {"value": 42}

    def reader(_: int):
        start.wait()
        return cache.get_or_load(cache.key("p", 1), loader)

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(reader, range(16)))
    assert results == [{"value": 42}] * 16
    assert len(calls) == 1
    ttl = client.ttl(cache.key("p", 1))
    assert 50 <= ttl <= 66  # 60 s with 10 % jitter


@pytest.mark.both_redis
def test_an_invalidation_during_a_rebuild_keeps_the_stale_value_out(real_redis):
    client, prefix = real_redis
    cache = CacheAside(client, f"{prefix}cat:", ttl=60)
    key = cache.key("p", 7)

    def stale_loader(_position: int):
        cache.invalidate([7], keys=[key])  # a price change commits while we read
        return {"price_cents": 100}

    assert cache.get_or_load(key, stale_loader) == {"price_cents": 100}
    assert client.get(key) is None  # not cached: the next reader loads the new price
    assert cache.get_or_load(key, lambda _: {"price_cents": 200}) == {"price_cents": 200}
    assert cache.get_or_load(key, lambda _: {"price_cents": 999}) == {"price_cents": 200}


@pytest.mark.both_redis
def test_an_invalidation_of_something_else_during_a_rebuild_leaves_its_value_stored(real_redis):
    """During a sale of product 7, each order's invalidation must not throw away the rebuilds
    of what does not show 7 (every rebuild was lost to one shared epoch), while a rebuild that
    shows 7, is of a key named, or races a structural change is still not stored."""
    client, prefix = real_redis
    cache = CacheAside(client, f"{prefix}cat:", ttl=60)
    grid = {"tags": lambda value: value["items"], "is_list": True}

    def stored(key: str, value: dict, during, **options) -> bool:
        """Whether a rebuild of ``key`` that reads ``value`` while ``during()`` runs (a write
        committed as the query reads) keeps it for the next reader."""

        def load(_position: int) -> dict:
            during()
            return value

        assert cache.get_or_load(key, load, **options) == value
        loads: list[int] = []
        cache.get_or_load(key, lambda _position: loads.append(1) or value, **options)
        return not loads

    def order_of_7() -> None:
        cache.invalidate([7], keys=[cache.key("p", 7)], min_position=10)

    def new_product() -> None:
        cache.invalidate([3], keys=[cache.key("p", 3)], structural=True)

    assert stored(cache.key("p", 8), {"id": 8}, order_of_7, shows=(8,))
    assert stored(cache.key("l", "kitchen"), {"items": [8, 9]}, order_of_7, **grid)
    assert not stored(cache.key("p", 7), {"id": 7}, order_of_7, shows=(7,))
    assert not stored(cache.key("l", "tea"), {"items": [9, 7]}, order_of_7, **grid)
    assert not stored(cache.key("x"), {"n": 1}, lambda: cache.invalidate(keys=[cache.key("x")]))
    assert not stored(cache.key("p", 9), {"id": 9}, new_product, shows=(9,))
    assert not stored(cache.key("l", "all"), {"items": [8]}, new_product, **grid)
    assert 0 < client.ttl(cache.mark_key(7)) <= 60
    assert 0 < client.ttl(cache.everything_mark_key) <= 60


@pytest.mark.both_redis
def test_rebuilds_are_told_the_log_position_of_writes_to_what_they_show_and_no_other(real_redis):
    client, prefix = real_redis
    cache = CacheAside(client, f"{prefix}cat:", ttl=60)
    seen: list[tuple[str, int]] = []

    def product(product_id: int):
        def load(position: int) -> dict:
            seen.append((f"p{product_id}", position))
            return {"id": product_id}

        return cache.get_or_load(cache.key("p", product_id), load, shows=(product_id,))

    def grid() -> dict:
        def load(position: int) -> dict:
            seen.append(("grid", position))
            return {"items": [1, 2]}

        return cache.get_or_load(
            cache.key("l", 1), load, tags=lambda value: value["items"], is_list=True
        )

    product(1)
    cache.invalidate([1], keys=[cache.key("p", 1)], min_position=5000)
    product(1)  # after a write to 1: a replica that has replayed it, or the primary
    product(3)  # a write to 1 leaves 3's rebuild free to read any replica
    cache.invalidate([1], keys=[cache.key("p", 1)], min_position=300)  # never lowers the bar
    product(1)
    grid()  # read anywhere, found to show 1: read again from where 1's write is
    assert seen == [("p1", 0), ("p1", 5000), ("p3", 0), ("p1", 5000), ("grid", 0), ("grid", 5000)]
    assert 0 < client.ttl(cache.positions.key(1)) <= 60
    cache.invalidate([3], keys=[cache.key("p", 3)], structural=True, min_position=7000)
    seen.clear()
    product(2)  # a structural change: every rebuild honours it
    assert seen == [("p2", 7000)]
    for _ in range(3):
        product(2), grid()  # hits: no load, and no position read
    assert seen == [("p2", 7000), ("grid", 7000)]


@pytest.fixture
def private_redis(tmp_path) -> Iterator[ThrowawayRedis]:
    """A redis-server of the test's own, whose command statistics count only the test."""
    try:
        server = ThrowawayRedis(tmp_path / "redis").start()
    except FileNotFoundError as exc:
        missing("redis-server", exc)
    yield server
    server.stop()


def test_browsing_sends_no_redis_write(private_redis, make_real_app):
    client = private_redis.client()
    url = private_redis.url
    app = make_real_app(redis_url=url, redis_client=connect(url, socket_timeout=1))
    anonymous = app.test_client()
    shopper = Shopper(app.test_client(), app)
    shopper.add(KETTLE)  # a session with a cart
    pages = ["/", "/?page=2", f"/products/{KETTLE}", "/?q=kettle"]
    for path in pages:
        anonymous.get(path)
        shopper.client.get(path)

    def browse(browser) -> dict:
        client.config_resetstat()
        for path in pages * 5:
            assert browser.get(path).status_code == 200
        stats = client.info("commandstats")
        writes = {
            name: value["calls"]
            for name, value in stats.items()
            if name.split("_", 1)[1] in {"set", "hset", "expire", "del", "sadd", "incr", "setex"}
        }
        assert writes == {}, writes
        return stats

    # No cookie: no session to load (catalogue pages issue none).
    assert "cmdstat_evalsha" not in browse(anonymous)
    stats = browse(shopper.client)
    assert stats["cmdstat_evalsha"]["calls"] == len(pages) * 5  # one session load a page


def test_redis_outage_degrades_and_recovers_without_restart(make_real_app):
    host, port = REDIS_URL.split("//")[1].split("/")[0].split(":")
    proxy = TcpProxy(host, int(port)).start()
    try:
        app = make_real_app(
            redis_client=connect(f"redis://127.0.0.1:{proxy.port}/0", socket_timeout=0.5)
        )
        shopper = Shopper(app.test_client(), app)
        shopper.add(KETTLE)
        proxy.stop()
        started = time.perf_counter()
        for _ in range(5):
            assert shopper.client.get("/").status_code == 200
            assert shopper.client.get(f"/products/{KETTLE}").status_code == 200
        assert time.perf_counter() - started < 5
        refused = shopper.api("POST", "/cart/items", json={"product_id": KETTLE, "quantity": 1})
        assert refused.status_code == 503
        assert "try again" in refused.get_json()["error"]["message"]
        assert shopper.client.get("/cart").status_code == 503
        proxy.start()
        time.sleep(1.2)  # the breaker's window passes
        assert shopper.cart()["count"] == 1
        assert shopper.add(KETTLE).status_code == 303
        assert shopper.cart()["count"] == 2
    finally:
        proxy.stop()


def test_a_warm_page_costs_no_sql_and_at_most_the_session_round_trip(make_real_app):
    app = make_real_app(instrument=True)
    wait_for_local_tier(app)
    first_visit = app.test_client(use_cookies=False)  # a crawler, or a visitor's first page
    returning = app.test_client()  # keeps the id it was given, but has no session record
    returning.get("/login")  # its form's token issues the id (catalogue pages issue none)
    pages = ["/", "/?page=2", f"/products/{KETTLE}", "/api/v1/products?q=kettle"]
    for path in pages:
        first_visit.get(path)
    for path in pages:
        response = first_visit.get(path)
        assert (response.headers["X-Shop-SQL"], response.headers["X-Shop-Redis"]) == ("0", "0")
        returning.get(path)
        response = returning.get(path)
        assert (response.headers["X-Shop-SQL"], response.headers["X-Shop-Redis"]) == ("0", "1")
    shopper = Shopper(app.test_client(), app)
    for product_id in (KETTLE, 4, 5):
        shopper.add(product_id)
    for path in pages:
        response = shopper.client.get(path)
        assert response.headers["X-Shop-SQL"] == "0", path
        assert response.headers["X-Shop-Redis"] == "1", path  # the session and its cart
    assert "X-Shop-SQL" not in make_real_app().test_client().get("/").headers
