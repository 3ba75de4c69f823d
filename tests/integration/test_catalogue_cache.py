"""The catalogue cache on the real Redis: every entry expires, a structural change is constant
work however many lists are cached, and no instance serves a list from before it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from flask import Flask

from shop.catalogue_cache import CacheAside
from tests.support import KETTLE, wait_for_local_tier

FILLER_LISTS = 20_000
_READS = {"GET", "MGET", "EXISTS", "TTL", "PTTL", "HGETALL", "PING"}


@contextmanager
def redis_commands(client: redis.Redis, prefix: str) -> Iterator[list[str]]:
    """The commands run on keys under ``prefix`` (by clients or their Lua scripts) while the
    block runs, as Redis's MONITOR reports them (other tests' commands carry other prefixes),
    but for a client's plain reads (another instance reading the cache meanwhile)."""
    seen: list[str] = []
    sentinel = f"GET {prefix}monitor-done"
    ready = threading.Event()

    def watch() -> None:
        with client.monitor() as monitor:
            ready.set()
            while True:
                command = monitor.next_command()
                if command["command"] == sentinel:
                    return
                plain_read = command["command"].split(" ", 1)[0] in _READS
                if prefix in command["command"] and not (
                    plain_read and command["client_type"] != "lua"
                ):
                    seen.append(command["command"])

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    assert ready.wait(3), "MONITOR did not start"
    yield seen
    client.get(f"{prefix}monitor-done")
    thread.join(5)
    assert not thread.is_alive(), "MONITOR never saw the end of the block"


PATHS = {
    "kitchen": "/api/v1/products?category=kitchen",
    "blue": "/api/v1/products?q=blue",
    "all": "/api/v1/products",
    "categories": "/api/v1/categories",
    "grid": "/?category=kitchen",
}


def catalogue_view(app: Flask) -> dict:
    """What a first-time visitor of ``app`` is shown, and whether it cost any Redis round trip."""
    browser = app.test_client(use_cookies=False)
    got = {name: browser.get(path) for name, path in PATHS.items()}
    return {
        "kitchen": [p["name"] for p in got["kitchen"].get_json()["items"]],
        "blue": got["blue"].get_json()["total"],
        "all": got["all"].get_json()["total"],
        "categories": [c["slug"] for c in got["categories"].get_json()["items"]],
        "grid shows the whisk": "Blue Whisk" in got["grid"].get_data(as_text=True),
        "redis round trips": sum(int(r.headers["X-Shop-Redis"]) for r in got.values()),
    }


def add_product(app: Flask, name: str, category: str) -> None:
    result = app.test_cli_runner().invoke(
        args=["product", "add", "--name", name, "--category", category, "--price", "9.99"]
    )
    assert result.exit_code == 0, result.output


def wait_for_message(app: Flask, generation_before: int) -> None:
    """Until ``app``'s in-process tier has applied an invalidation published by another one."""
    tier = app.extensions["shop"].catalogue.cache.local
    deadline = time.monotonic() + 3
    while tier.generation == generation_before:
        assert time.monotonic() < deadline, "the invalidation never reached the other instance"
        time.sleep(0.005)


def test_a_structural_change_is_constant_work_and_no_instance_serves_an_old_list(
    make_real_app, real_redis
):
    client, prefix = real_redis
    first, second = make_real_app(instrument=True), make_real_app(instrument=True)
    redis_only = make_real_app(instrument=True, catalogue_local_ttl=0)
    for app in (first, second):
        wait_for_local_tier(app)
    cache = first.extensions["shop"].catalogue.cache
    second_tier = second.extensions["shop"].catalogue.cache.local

    def warm_everywhere() -> None:
        for app in (first, second, redis_only):
            catalogue_view(app)
        for app in (first, second):  # now served from each process's memory
            assert catalogue_view(app)["redis round trips"] == 0

    def structural_change(name: str, category: str) -> list[str]:
        before = second_tier.generation
        with redis_commands(client, prefix) as commands:
            add_product(first, name, category)
        wait_for_message(second, before)
        return commands

    def expect_everywhere(expected: dict) -> None:
        for app in (first, second, redis_only):
            view = catalogue_view(app)
            view.pop("redis round trips")
            assert view == expected

    # A few lists cached: the change takes so many commands.
    warm_everywhere()
    few = structural_change("Blue Whisk", "kitchen")
    kitchen = ["Blue Kettle", "Red Mug", "Sold Out Teapot", "Blue Whisk"]
    expect_everywhere(
        {
            "kitchen": kitchen,
            "blue": 2,
            "all": 34,
            "categories": ["books", "kitchen"],
            "grid shows the whisk": True,
        }
    )

    # Twenty thousand more lists cached, each tagged with a product.
    warm_everywhere()
    filler = CacheAside(client, cache.prefix, ttl=300)
    filler_keys = [cache.key("l", "filler", i) for i in range(FILLER_LISTS)]

    def fill(i: int) -> None:
        filler.get_or_load(
            filler_keys[i],
            lambda _position: {"items": [{"id": 4 + i % 30}]},
            tags=lambda value: [value["items"][0]["id"]],
            is_list=True,
        )

    for i in range(FILLER_LISTS):
        fill(i)
    cached_lists = set(client.scan_iter(f"{cache.prefix}{{l:*", count=5000))
    assert len(cached_lists) > FILLER_LISTS

    many = structural_change("Blue Spade", "garden")

    # The same commands, whatever is cached.
    assert len(many) == len(few) <= 8, "\n".join(["few:", *few, "many:", *many])
    assert not any(command.startswith(("DEL", "UNLINK")) and "{l:" in command for command in many)
    assert cached_lists <= set(client.scan_iter(f"{cache.prefix}{{l:*", count=5000))  # untouched
    expect_everywhere(
        {
            "kitchen": kitchen,
            "blue": 3,
            "all": 35,
            "categories": ["books", "kitchen", "garden"],  # a new category comes last
            "grid shows the whisk": True,
        }
    )
    # None of the orphans can be read any more: the next reader of each rebuilds it.
    generation = int(client.get(cache.generation_key))
    assert client.exists(*(cache.list_key(k, generation) for k in filler_keys)) == 0
    assert client.exists(*(cache.list_key(k, generation - 1) for k in filler_keys)) == FILLER_LISTS
    reloaded = []
    filler.get_or_load(filler_keys[0], lambda _position: reloaded.append(1) or {}, is_list=True)
    assert reloaded == [1]


@pytest.mark.both_redis
def test_tags_expire_and_forget_expired_lists_under_a_hot_product(real_redis):
    client, prefix = real_redis
    cache = CacheAside(client, f"{prefix}cat:", ttl=1, jitter=0)

    def show(name: str, product_id: int) -> str:
        key = cache.key("l", name)
        cache.get_or_load(
            key, lambda _position: {"id": product_id}, tags=lambda v: [v["id"]], is_list=True
        )
        return cache.list_key(key, 0)

    hot = cache.tag_key(7)
    first = show("first", 7)  # expires after 1 s; its tag entry is scored 2 s ahead
    time.sleep(1.5)
    second = show("second", 7)  # the product is still shown: the tag lives on
    time.sleep(1.5)
    third = show("third", 7)
    assert client.exists(first) == 0
    assert set(client.zrange(hot, 0, -1)) == {second, third}  # the expired one was dropped
    assert 0 < client.ttl(hot) <= 2  # and the tag itself expires

    other = show("other", 8)
    cache.invalidate([7])  # a change to product 7 drops what shows it, and only that
    assert client.exists(second, third, hot) == 0
    assert client.exists(other) == 1
    time.sleep(2.2)
    assert client.exists(other, cache.tag_key(8)) == 0  # nothing outlives its entries


@pytest.mark.both_redis
def test_every_catalogue_key_expires_except_three_counters(make_real_app, real_redis):
    client, _ = real_redis
    app = make_real_app()
    cache = app.extensions["shop"].catalogue.cache
    browser = app.test_client()
    for path in ["/", "/?page=2", "/?q=tea", "/?category=kitchen", "/products/1"]:
        assert browser.get(path).status_code == 200
    runner = app.test_cli_runner()
    assert runner.invoke(args=["product", "set", "2", "--price", "7.00"]).exit_code == 0
    add_product(app, "Green Whisk", "kitchen")
    for path in ["/", "/?q=tea", "/?q=whisk"]:
        assert browser.get(path).status_code == 200
    keys = set(client.scan_iter(f"{cache.prefix}*"))
    counters = {cache.epoch_key, cache.position_key, cache.generation_key}
    assert len(keys - counters) > 5
    assert {key for key in keys - counters if client.ttl(key) < 0} == set()
    assert all(len(client.get(key)) < 20 for key in counters & keys)


class TooManySearches(Exception):
    """What a rate limit raises from ``admit``."""


@pytest.mark.both_redis
def test_admit_is_asked_once_before_a_miss_reads_the_database_and_never_on_a_hit(real_redis):
    client, prefix = real_redis
    cache = CacheAside(client, f"{prefix}cat:", ttl=60, local_ttl=30)
    cache.local.get("-")  # start the listener: a value can then be served from memory
    deadline = time.monotonic() + 3
    while not cache.local.live:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    key = cache.key("l", "-", "tea", 1, 24)
    stored = cache.list_key(key, 0)
    steps: list[str] = []

    def load(_position: int) -> dict:
        steps.append("load")
        return {"items": [{"id": 2}]}

    def admit() -> None:
        assert client.exists(stored + ":lock") == 0  # never asked holding the rebuild lock
        steps.append("admit")

    def refuse() -> None:
        steps.append("refused")
        raise TooManySearches

    def page(admit) -> dict:
        return cache.get_or_load(
            key, load, tags=lambda v: [i["id"] for i in v["items"]], is_list=True, admit=admit
        )

    with pytest.raises(TooManySearches):  # a miss refused: nothing read, locked or stored
        page(refuse)
    assert steps == ["refused"]
    assert client.exists(stored, stored + ":lock", cache.tag_key(2)) == 0

    steps.clear()
    assert page(admit) == {"items": [{"id": 2}]}  # a miss admitted: asked once, then read
    assert steps == ["admit", "load"]

    steps.clear()
    assert page(refuse) == {"items": [{"id": 2}]}  # a hit in this process's memory
    cache.local.stop()
    assert page(refuse) == {"items": [{"id": 2}]}  # a hit in Redis
    assert steps == []

    def redis_goes_away() -> None:  # a limiter on the same Redis, failing: its error, not ours
        steps.append("admit")
        raise redis.ConnectionError("the limiter's Redis is down")

    cache.invalidate([2])
    with pytest.raises(redis.ConnectionError):
        page(redis_goes_away)
    assert steps == ["admit"]
    assert client.exists(stored, stored + ":lock") == 0


def test_a_cached_list_costs_one_redis_round_trip_and_no_write_without_the_memory_tier(
    make_real_app, real_redis
):
    client, prefix = real_redis
    app = make_real_app(instrument=True, catalogue_local_ttl=0)
    browser = app.test_client(use_cookies=False)
    paths = ["/api/v1/products?page=2", "/api/v1/products?q=tea", "/api/v1/categories"]
    for path in paths:
        browser.get(path)
    before = {key: client.get(key) for key in client.scan_iter(f"{prefix}*") if ":l:" in key}
    for path in paths:
        response = browser.get(path)
        assert (response.headers["X-Shop-SQL"], response.headers["X-Shop-Redis"]) == ("0", "1")
    after = {key: client.get(key) for key in client.scan_iter(f"{prefix}*") if ":l:" in key}
    assert after == before
    add_product(app, "Green Whisk", "kitchen")  # a new list generation: this process
    for path in paths:  # reads each list once more, then is back to one round trip
        browser.get(path)
        response = browser.get(path)
        assert (response.headers["X-Shop-SQL"], response.headers["X-Shop-Redis"]) == ("0", "1")


@pytest.mark.parametrize("replicated", [True, False])
def test_positions_cost_no_round_trip_on_a_hit_and_one_on_a_list_miss(
    make_real_app, real_redis, pg_url, replicated
):
    """Per-product write positions: a product's is read with the rebuild's lock (no extra
    round trip), a list's products' in one more round trip on that miss, none on a hit; a
    shop without replicas reads none (its reads all see every write)."""
    client, _ = real_redis
    replicas = (pg_url,) if replicated else ()  # the same database: a replica never behind
    app = make_real_app(instrument=True, catalogue_local_ttl=0, replica_urls=replicas)
    browser = app.test_client(use_cookies=False)
    cache = app.extensions["shop"].catalogue.cache
    product, listing = f"/api/v1/products/{KETTLE}", "/api/v1/products?page=1"

    def redis_trips(path: str) -> int:
        response = browser.get(path)
        assert response.status_code == 200, response.text
        return int(response.headers["X-Shop-Redis"])

    def misses(position: int) -> dict[str, int]:
        cache.invalidate([KETTLE], keys=[cache.key("p", KETTLE)], min_position=position)
        return {path: redis_trips(path) for path in (product, listing)}

    misses(0)  # the scripts loaded into Redis
    assert redis_trips(product) == redis_trips(listing) == 1  # hits
    after_a_write = misses(5)
    # A lookup, the lock with the epoch and positions, the tags, the store, the epoch read
    # again (the cluster-safe store: shop/catalogue_cache.py); a list: its products' positions
    # too, in one more round trip, on a replicated shop only.
    assert after_a_write == {product: 4, listing: 6 if replicated else 5}
    assert client.get(cache.positions.key(KETTLE)) == "5"
    assert redis_trips(product) == redis_trips(listing) == 1
