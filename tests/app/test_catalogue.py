"""Catalogue reads: cache-aside through Redis, replicas first, invalidated by every write."""

from __future__ import annotations

import shutil

import fakeredis
import pytest
import redis
from redis.exceptions import MovedError
from sqlalchemy import create_engine, text, update

from shop.catalogue import stock_state
from shop.catalogue_cache import CacheAside
from shop.models import products
from shop.redis_client import connect
from tests.support import KETTLE, MUG, TEAPOT, StatementCounter


def test_stock_states():
    assert stock_state(0) == "sold out"
    assert stock_state(3) == "only 3 left"
    assert stock_state(6) == "in stock"


def test_product_page_shows_price_description_and_stock_state(client):
    text = client.get(f"/products/{MUG}").get_data(as_text=True)
    assert "Red Mug" in text and "€5.99" in text and "Holds tea." in text
    assert "only 3 left" in text
    sold_out = client.get(f"/products/{TEAPOT}").get_data(as_text=True)
    assert "sold out" in sold_out and "disabled" in sold_out


def test_grid_paginates_filters_and_searches(client):
    first = client.get("/api/v1/products?per_page=12").get_json()
    assert first["total"] == 33 and len(first["items"]) == 12 and first["page"] == 1
    assert set(first["items"][0]) == {
        "id",
        "name",
        "description",
        "price_cents",
        "stock",
        "category",
        "image",  # the first image (null: none), docs/api.md
    }
    last = client.get("/api/v1/products?per_page=12&page=3").get_json()
    assert [p["id"] for p in last["items"]] == list(range(25, 34))
    kitchen = client.get("/api/v1/products?category=kitchen").get_json()
    assert [p["name"] for p in kitchen["items"]] == ["Blue Kettle", "Red Mug", "Sold Out Teapot"]
    found = client.get("/api/v1/products?q=tea").get_json()  # name or description
    assert {p["id"] for p in found["items"]} == {MUG, TEAPOT}
    both_words = client.get("/api/v1/products?q=holds+TEA").get_json()
    assert [p["id"] for p in both_words["items"]] == [MUG]
    assert client.get("/api/v1/products?q=50%25").get_json()["total"] == 0  # % is literal
    page = client.get("/?page=2").get_data(as_text=True)
    assert "Page 2 of 2" in page and 'rel="prev"' in page
    assert [c["slug"] for c in client.get("/api/v1/categories").get_json()["items"]] == [
        "books",
        "kitchen",
    ]


def test_a_search_that_matches_nothing_says_so(client):
    page = client.get("/?q=zeppelin")
    assert page.status_code == 200
    assert "No products match “zeppelin”." in page.get_data(as_text=True)


def test_a_warm_catalogue_runs_no_sql(app, client):
    services = app.extensions["shop"]
    client.get(f"/api/v1/products/{KETTLE}")
    client.get("/api/v1/products?page=2")
    counter = StatementCounter(services.engines.primary)
    for _ in range(5):
        assert client.get(f"/api/v1/products/{KETTLE}").status_code == 200
        assert client.get("/api/v1/products?page=2").status_code == 200
    assert counter.count == 0


def test_product_change_by_command_reaches_the_next_request(app):
    client = app.test_client()
    assert client.get(f"/api/v1/products/{KETTLE}").get_json()["price_cents"] == 1999
    assert (
        client.get("/api/v1/products?category=kitchen").get_json()["items"][0]["price_cents"]
        == 1999
    )
    result = app.test_cli_runner().invoke(
        args=["product", "set", str(KETTLE), "--price", "24.50", "--stock", "4"]
    )
    assert result.exit_code == 0, result.output
    assert "invalidated" in result.output
    product = client.get(f"/api/v1/products/{KETTLE}").get_json()
    assert (product["price_cents"], product["stock"]) == (2450, 4)
    grid = client.get("/api/v1/products?category=kitchen").get_json()
    assert grid["items"][0]["price_cents"] == 2450
    assert "only 4 left" in client.get(f"/products/{KETTLE}").get_data(as_text=True)


def test_product_add_command_shows_up_in_lists(app):
    client = app.test_client()
    assert client.get("/api/v1/products?category=kitchen").get_json()["total"] == 3
    result = app.test_cli_runner().invoke(
        args=[
            "product",
            "add",
            "--name",
            "Green Whisk",
            "--category",
            "kitchen",
            "--price",
            "3.5",
            "--stock",
            "7",
        ]
    )
    assert result.exit_code == 0, result.output
    kitchen = client.get("/api/v1/products?category=kitchen").get_json()
    assert kitchen["total"] == 4
    assert kitchen["items"][-1]["name"] == "Green Whisk"
    assert kitchen["items"][-1]["price_cents"] == 350


@pytest.mark.parametrize("price", ["abc", "-1", "1.234", ""])
def test_product_command_refuses_a_bad_price(app, price):
    result = app.test_cli_runner().invoke(args=["product", "set", str(KETTLE), "--price", price])
    assert result.exit_code != 0
    assert app.test_client().get(f"/api/v1/products/{KETTLE}").get_json()["price_cents"] == 1999


def test_checkout_invalidates_the_stock_it_changed(app, shopper):
    assert "only 3 left" in shopper.client.get(f"/products/{MUG}").get_data(as_text=True)
    shopper.register()
    shopper.add(MUG, 2)
    shopper.checkout()
    assert "only 1 left" in shopper.client.get(f"/products/{MUG}").get_data(as_text=True)
    assert (
        shopper.client.get("/api/v1/products?category=kitchen").get_json()["items"][1]["stock"] == 1
    )


def test_misses_read_from_the_replica_and_fall_back_to_the_primary(make_app, sqlite_url, tmp_path):
    primary_file = sqlite_url.removeprefix("sqlite:///")
    replica_file = tmp_path / "replica.db"
    shutil.copy(primary_file, replica_file)
    replica = create_engine(f"sqlite:///{replica_file}")
    with replica.begin() as conn:  # mark the replica's copy so reads can be told apart
        conn.execute(update(products).where(products.c.id == KETTLE).values(name="Replica Kettle"))
    replica.dispose()
    missing = f"sqlite:///{tmp_path}/no/such/dir/replica.db"
    app = make_app(replica_urls=(missing, f"sqlite:///{replica_file}"))
    client = app.test_client()
    for product_id in (KETTLE, MUG, 4, 5):  # every miss: the dead replica is skipped
        assert client.get(f"/api/v1/products/{product_id}").status_code == 200
    assert client.get(f"/api/v1/products/{KETTLE}").get_json()["name"] == "Replica Kettle"
    # Checkout and order pages read the primary.
    only_dead = make_app(replica_urls=(missing,), redis_prefix="other:")
    assert (
        only_dead.test_client().get(f"/api/v1/products/{KETTLE}").get_json()["name"]
        == "Blue Kettle"
    )
    status = only_dead.test_client().get("/readyz")
    body = status.get_json()
    assert status.status_code == 200 and body["replicas"]["replica1"]["ok"] is False


def test_catalogue_is_served_from_the_database_when_redis_is_down(make_app, caplog):
    app = make_app(redis_client=connect("redis://127.0.0.1:1/0", socket_timeout=0.2))
    client = app.test_client()
    assert client.get("/").status_code == 200
    assert client.get(f"/products/{KETTLE}").status_code == 200
    assert client.get("/api/v1/products?q=kettle").get_json()["total"] == 1
    assert "reading from the database" in caplog.text
    cart = client.get("/api/v1/cart")
    assert cart.status_code == 503
    assert "unavailable" in cart.get_json()["error"]["message"]
    assert client.get("/cart").status_code == 503
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["redis"]["ok"] is False


def test_seed_command_adds_products_with_a_progress_bar(app):
    result = app.test_cli_runner().invoke(args=["seed", "--products", "250", "--batch-size", "100"])
    assert result.exit_code == 0, result.output
    assert "seeding products" in result.output and "added 250 products" in result.output
    total = app.test_client().get("/api/v1/products").get_json()["total"]
    assert total == 33 + 250


def test_db_commands_migrate_down_and_up_again(app):
    from alembic.script import ScriptDirectory

    from shop.migrate import MIGRATIONS, alembic_config

    engine = app.extensions["shop"].engines.primary
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    runner = app.test_cli_runner()
    assert runner.invoke(args=["db", "current"]).output.strip() == head
    assert runner.invoke(args=["db", "downgrade", "base"]).exit_code == 0
    assert "empty" in runner.invoke(args=["db", "current"]).output
    upgraded = runner.invoke(args=["db", "upgrade"])
    assert upgraded.exit_code == 0 and head in upgraded.output
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
    assert MIGRATIONS.exists()


def test_replicas_are_used_in_turn(make_app, sqlite_url, tmp_path):
    copies = []
    for name in ("r1.db", "r2.db"):
        shutil.copy(sqlite_url.removeprefix("sqlite:///"), tmp_path / name)
        copies.append(f"sqlite:///{tmp_path / name}")
    app = make_app(replica_urls=tuple(copies))
    engines = app.extensions["shop"].engines
    counter = StatementCounter(engines.primary, *(r.engine for r in engines.replicas))
    client = app.test_client()
    for product_id in range(4, 14):
        assert client.get(f"/api/v1/products/{product_id}").status_code == 200
    per_replica = [counter.by_engine.get(str(r.engine.url), 0) for r in engines.replicas]
    assert per_replica == [10, 10]  # each product: its row, then its images
    assert counter.by_engine.get(str(engines.primary.url), 0) == 0


def test_in_process_tiers_serve_without_redis_and_drop_what_any_instance_changes(
    fake_redis_server,
):
    import time

    from shop.catalogue_cache import CacheAside
    from tests.support import fake_client

    def instance() -> CacheAside:
        cache = CacheAside(fake_client(fake_redis_server), "t:", ttl=60, local_ttl=30)
        cache.local.get("-")  # start the listener
        deadline = time.monotonic() + 3
        while not cache.local.live:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        return cache

    first, second = instance(), instance()
    loads: list[int] = []

    def loader(_position: int) -> dict:
        loads.append(1)
        return {"version": len(loads)}

    key = first.key("p", 1)
    assert first.get_or_load(key, loader) == {"version": 1}
    assert second.get_or_load(key, loader) == {"version": 1}  # from Redis
    first.client.delete(key)  # Redis forgets; each process still knows
    assert first.get_or_load(key, loader) == second.get_or_load(key, loader) == {"version": 1}
    first.invalidate([1], keys=[key])  # a change on the first instance ...
    assert first.get_or_load(key, loader) == {"version": 2}  # ... is seen there at once
    deadline = time.monotonic() + 2
    while second.get_or_load(key, loader) != {"version": 2}:  # ... and on the second by pub/sub
        assert time.monotonic() < deadline, "the invalidation never reached the other instance"
        time.sleep(0.01)
    assert len(loads) == 2
    for cache in (first, second):
        cache.local.stop()


def test_a_value_read_before_an_invalidation_is_not_kept_after_it(fake_redis_server):
    from shop.local_tier import MISSING, LocalTier
    from tests.support import fake_client

    tier = LocalTier(fake_client(fake_redis_server), "t:invalidations", max_age=30)
    tier.live = True  # as if subscribed
    tier._pid = -1  # and no listener thread: this test plays the messages itself
    generation = tier.generation  # a request reads Redis ...
    tier.drop([7], [], structural=False)  # ... an invalidation arrives ...
    tier.put("t:p:7", {"stale": True}, generation=generation, tags=[7], is_list=False)
    assert tier.get("t:p:7") is MISSING  # ... and the value it read is not kept
    tier.put("t:l:1", {"items": [7]}, generation=tier.generation, tags=[7], is_list=True)
    tier.put("t:l:2", {"items": [8]}, generation=tier.generation, tags=[8], is_list=True)
    tier.drop([7], [], structural=False)
    assert tier.get("t:l:1") is MISSING and tier.get("t:l:2") == {"items": [8]}
    tier.drop([], [], structural=True)
    assert tier.get("t:l:2") is MISSING


def test_a_store_lost_to_a_redis_outage_still_reads_the_database_once(fake_redis_server):
    import redis

    from shop.catalogue_cache import CacheAside
    from tests.support import fake_client

    cache = CacheAside(fake_client(fake_redis_server), "t:", ttl=60)

    def store_fails(**_kwargs):
        raise redis.ConnectionError("Redis went away after the query")

    cache._store = store_fails
    loads: list[int] = []
    value = cache.get_or_load(cache.key("p", 1), lambda _position: loads.append(1) or {"v": 1})
    assert value == {"v": 1} and loads == [1]


class TooManySearches(Exception):
    """What a rate limit raises from ``admit``."""


def refuse() -> None:
    raise TooManySearches


def test_a_listing_asks_admit_only_before_reading_the_database(app):
    catalogue = app.extensions["shop"].catalogue
    asked: list[str] = []

    def search(q: str, admit) -> dict:
        return catalogue.page(category=None, q=q, page=1, per_page=24, admit=admit)

    with pytest.raises(TooManySearches):
        search("tea", refuse)
    assert search("tea", lambda: asked.append("tea"))["total"] == 2
    assert search("tea", refuse)["total"] == 2  # a hit: not asked
    assert search("  TEA ", refuse)["total"] == 2  # the same search, spelt otherwise
    assert asked == ["tea"]


def test_admit_is_asked_once_when_redis_is_down():
    from shop.catalogue_cache import CacheAside

    cache = CacheAside(connect("redis://127.0.0.1:1/0", socket_timeout=0.2), "x:", ttl=60)
    steps: list[str] = []

    def load(_position: int) -> dict:
        steps.append("load")
        return {"items": []}

    key = cache.key("l", "-", "tea", 1, 24)
    admitted = cache.get_or_load(key, load, is_list=True, admit=lambda: steps.append("admit"))
    assert admitted == {"items": []} and steps == ["admit", "load"]
    with pytest.raises(TooManySearches):
        cache.get_or_load(key, load, is_list=True, admit=refuse)
    assert steps == ["admit", "load"]  # refused: not read


@pytest.mark.parametrize(
    "error", [MovedError("3999 127.0.0.1:7001"), redis.ResponseError("ERR a bug")], ids=repr
)
def test_a_rebuild_whose_store_fails_lets_its_lock_go(error):
    """Readers of the key must not wait out a lock a failed rebuild left behind (add-to-cart
    stalled on it): the lock goes whether the failure is an outage (the value is served) or a
    bug (it surfaces)."""
    client = fakeredis.FakeRedis(decode_responses=True)
    cache = CacheAside(client, "t:", ttl=60)

    def refuse(*_args, **_kwargs):
        raise error

    cache._store = refuse  # type: ignore[method-assign]
    key = cache.key("p", 1)
    if isinstance(error, MovedError):
        assert cache.get_or_load(key, lambda _position: {"id": 1}) == {"id": 1}
    else:
        with pytest.raises(redis.ResponseError):
            cache.get_or_load(key, lambda _position: {"id": 1})
    assert client.exists(key + ":lock") == 0
