"""Checkout on the real PostgreSQL: concurrent buyers can neither oversell nor duplicate."""

from __future__ import annotations

import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, func, insert, select

from shop.db import make_engine, pool_sizes
from shop.errors import OutOfStock
from shop.models import metadata, order_events, order_lines, orders, products, users
from shop.order_lifecycle import expire_overdue
from shop.order_records import load_order
from shop.orders import Shipping, place_order
from tests.support import KETTLE, MUG, Shopper, shopper_on

SHIP = Shipping("Ada", "1 Analytical St")
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _place(engine, user_id: int | None, cart: dict[int, int], key: str, *, owner: str = ""):
    """An account's order (or, with ``owner``, a guest's), held for 900 s from NOW."""
    return place_order(
        engine,
        owner_key=owner or f"u:{user_id}",
        user_id=user_id,
        email="ada@example.com",
        cart=cart,
        shipping=SHIP,
        idempotency_key=key,
        now=NOW,
        hold_seconds=900,
        secret="test-secret-key-0123456789",
    )


def _make_users(engine, count: int) -> list[int]:
    with engine.begin() as conn:
        return list(
            conn.execute(
                insert(users).returning(users.c.id),
                [{"email": f"u{i}@example.com", "password_hash": "x"} for i in range(count)],
            ).scalars()
        )


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """As in shop/migrations/env.py: the PostgreSQL-only search column is not in the models."""
    return not (reflected and name in {"search_vector", "ix_products_search_vector"})


def test_migrations_match_the_models(pg_url):
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": include_object})
        diff = compare_metadata(context, metadata)
    engine.dispose()
    assert diff == []


def test_thirty_concurrent_buyers_cannot_oversell_ten_units(pg_url):
    engine = make_engine(pg_url, name="primary", pool=pool_sizes(30))  # all 30 race at once
    buyers = _make_users(engine, 30)
    start = threading.Barrier(len(buyers))

    def buy(user_id: int) -> str:
        start.wait()
        cart = {KETTLE: 1, MUG: 1} if user_id % 2 else {KETTLE: 1}  # mugs run out first
        try:
            _place(engine, user_id, cart, f"k{user_id}")
        except OutOfStock:
            return "short"
        return "ok"

    with ThreadPoolExecutor(max_workers=len(buyers)) as pool:
        results = list(pool.map(buy, buyers))
    with engine.connect() as conn:
        kettle, mug = (
            conn.execute(select(products.c.stock).where(products.c.id == pid)).scalar_one()
            for pid in (KETTLE, MUG)
        )
        sold_kettles = conn.execute(
            select(func.coalesce(func.sum(order_lines.c.quantity), 0)).where(
                order_lines.c.product_id == KETTLE
            )
        ).scalar_one()
        sold_mugs = conn.execute(
            select(func.coalesce(func.sum(order_lines.c.quantity), 0)).where(
                order_lines.c.product_id == MUG
            )
        ).scalar_one()
        placed = conn.execute(select(func.count()).select_from(orders)).scalar_one()
    engine.dispose()
    assert kettle >= 0 and mug >= 0
    assert sold_kettles + kettle == 10 and sold_mugs + mug == 3
    assert results.count("ok") == placed
    assert results.count("short") == 30 - placed
    assert kettle == 0 or mug == 0  # someone was refused because stock ran out


@pytest.mark.both_redis
def test_a_sale_of_the_last_mugs_through_two_instances_sells_each_once(make_real_app):
    """Eight shoppers, each with a mug in a cart kept in Redis, check out at once on two
    instances: the three mugs go to three of them, the others are told it ran out."""
    apps = [make_real_app(), make_real_app()]
    shoppers = [Shopper(apps[i % 2].test_client(), apps[i % 2]) for i in range(8)]
    for i, shopper in enumerate(shoppers):
        assert shopper.add(MUG, 1).status_code == 303
        if i % 3 == 0:
            shopper.register(f"buyer{i}@example.com")  # a cart merged into an account's
    start = threading.Barrier(len(shoppers))

    def check_out(shopper: Shopper) -> int:
        assert shopper.cart()["count"] == 1
        guest = shopper.client.get("/api/v1/session").get_json()["user"] is None
        email = {"email": f"guest{id(shopper)}@example.com"} if guest else {}
        start.wait()
        placed = shopper.api(
            "POST",
            "/orders",
            json={"shipping": {"name": "Ada", "address": "1 St"}, **email},
            headers={"Idempotency-Key": secrets.token_hex(8)},
        )
        return placed.status_code

    with ThreadPoolExecutor(max_workers=len(shoppers)) as pool:
        statuses = list(pool.map(check_out, shoppers))
    assert sorted(statuses) == [201] * 3 + [409] * 5, statuses
    assert apps[0].test_client().get(f"/api/v1/products/{MUG}").get_json()["stock"] == 0


def test_concurrent_submits_with_one_key_make_one_order(pg_url):
    engine = make_engine(pg_url, name="primary", pool=pool_sizes(12))
    (buyer,) = _make_users(engine, 1)
    start = threading.Barrier(12)

    def submit(_: int) -> int:
        start.wait()
        placed = _place(engine, buyer, {KETTLE: 2}, "double-click")
        return placed.order.id

    with ThreadPoolExecutor(max_workers=12) as pool:
        ids = set(pool.map(submit, range(12)))
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(orders)).scalar_one()
        stock = conn.execute(select(products.c.stock).where(products.c.id == KETTLE)).scalar_one()
    engine.dispose()
    assert len(ids) == 1 and count == 1 and stock == 8


@pytest.mark.both_redis
def test_cart_login_and_checkout_continue_across_two_instances(make_real_app):
    first, second = make_real_app(), make_real_app()
    browser = Shopper(first.test_client(), first)
    browser.add(KETTLE, 2)
    moved = shopper_on(second, cookie_from=browser)
    assert moved.cart()["count"] == 2
    moved.register()
    back = shopper_on(first, cookie_from=moved)
    assert back.client.get("/api/v1/session").get_json()["user"]["email"] == "ada@example.com"
    back.add(MUG, 1)
    again = shopper_on(second, cookie_from=back)
    placed = again.api(
        "POST",
        "/orders",
        json={"shipping": {"name": "Ada", "address": "1 St"}},
        headers={"Idempotency-Key": "two-instances"},
    )
    assert placed.status_code == 201, placed.get_json()
    order = placed.get_json()["order"]
    assert order["total_cents"] == 2 * 1999 + 599
    order_id = order["id"]
    assert back.client.get(f"/api/v1/orders/{order_id}").status_code == 200
    # Paid through the test provider on one instance: the cart is cleared for every instance.
    assert again.client.post(order["payment_url"], json={"outcome": "succeed"}).status_code == 200
    assert back.cart()["count"] == 0
    assert again.client.get(f"/products/{MUG}").get_data(as_text=True).count("only 2 left") == 1


def test_nul_characters_are_refused_before_postgresql_sees_them(make_real_app):
    app = make_real_app()
    shopper = Shopper(app.test_client(), app)
    assert shopper.client.get("/api/v1/products?q=tea%00pot").status_code == 400
    assert shopper.client.get("/?q=tea%00pot").status_code == 400
    bad_user = shopper.api("POST", "/users", json={"email": "a\x00@b.co", "password": "x" * 12})
    assert bad_user.status_code == 400
    shopper.register()
    shopper.add(KETTLE)
    order = shopper.api(
        "POST",
        "/orders",
        json={"shipping": {"name": "Ada\x00", "address": "1 St"}},
        headers={"Idempotency-Key": "nul"},
    )
    assert order.status_code == 400
    assert shopper.checkout(name="Ada\x00Lovelace").status_code == 400
    assert shopper.cart()["count"] == 1


def test_search_uses_the_full_text_index_and_counts_stay_cheap(pg_url, monkeypatch):
    from shop import catalogue

    engine = make_engine(pg_url, name="primary")
    with engine.connect() as conn:

        def ids(q: str, category_id: int | None = None) -> set[int]:
            page = catalogue.query_page(conn, category_id=category_id, q=q, page=1, per_page=50)
            return {item["id"] for item in page["items"]}

        assert ids("tea") == {MUG, 3}  # word prefixes: "tea." and "Teapot"
        assert ids("HOLDS tea") == {MUG}
        assert ids("50%") == set() and ids("%") == set()
        assert ids("birds", category_id=1) == set()
        assert len(ids("field guide")) == 30
        monkeypatch.setattr(catalogue, "SEARCH_COUNT_CAP", 10)
        capped = catalogue.query_page(conn, category_id=None, q="guide", page=1, per_page=5)
        assert (capped["total"], capped["total_capped"]) == (10, True)
        grid = catalogue.query_page(conn, category_id=2, q="", page=1, per_page=5)
        assert (grid["total"], grid["total_capped"]) == (30, False)
        plan = "\n".join(
            row[0]
            for row in conn.exec_driver_sql(
                "EXPLAIN SELECT id FROM products "
                "WHERE search_vector @@ to_tsquery('simple', 'tea:*')"
            )
        )
    engine.dispose()
    assert "search_vector" in plan


def test_category_counts_follow_added_and_moved_products(make_real_app):
    app = make_real_app()
    runner = app.test_cli_runner()
    client = app.test_client()
    assert client.get("/api/v1/products?category=kitchen").get_json()["total"] == 3
    added = runner.invoke(
        args=["product", "add", "--name", "Pan", "--category", "kitchen", "--price", "9.99"]
    )
    assert added.exit_code == 0, added.output
    assert client.get("/api/v1/products?category=kitchen").get_json()["total"] == 4
    moved = runner.invoke(args=["product", "set", str(KETTLE), "--category", "books"])
    assert moved.exit_code == 0, moved.output
    assert client.get("/api/v1/products?category=kitchen").get_json()["total"] == 3
    assert client.get("/api/v1/products?category=books").get_json()["total"] == 31
    assert client.get("/api/v1/products").get_json()["total"] == 34


def _stock_of(engine, product_id: int) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(products.c.stock).where(products.c.id == product_id)
        ).scalar_one()


def test_two_sweepers_racing_expire_each_order_and_return_its_stock_once(pg_url):
    engine = make_engine(pg_url, name="primary")
    buyers = _make_users(engine, 5)
    for buyer in buyers:
        _place(engine, buyer, {KETTLE: 2}, f"hold-{buyer}")
    assert _stock_of(engine, KETTLE) == 0
    later = NOW + timedelta(seconds=901)
    for _ in range(3):  # a few rounds, so the race is not won by luck once
        start = threading.Barrier(4)

        def sweep(_: int, start: threading.Barrier = start) -> list[int]:
            start.wait()
            return expire_overdue(engine, now=later)

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(sweep, range(4)))
    with engine.connect() as conn:
        statuses = set(conn.execute(select(orders.c.status)).scalars())
        expired_events = conn.execute(
            select(func.count()).select_from(order_events).where(order_events.c.status == "expired")
        ).scalar_one()
    stock = _stock_of(engine, KETTLE)
    engine.dispose()
    assert statuses == {"expired"} and expired_events == 5
    assert stock == 10  # every unit back, none twice


def test_concurrent_checkouts_of_one_cart_with_different_keys_place_one_order(pg_url):
    engine = make_engine(pg_url, name="primary", pool=pool_sizes(6))
    start = threading.Barrier(6)

    def submit(i: int) -> int:
        start.wait()
        placed = _place(engine, None, {KETTLE: 2, MUG: 1}, f"tab-{i}", owner="s:one-cart")
        return placed.order.id

    with ThreadPoolExecutor(max_workers=6) as pool:
        ids = set(pool.map(submit, range(6)))
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(orders)).scalar_one()
    stock = _stock_of(engine, KETTLE)
    engine.dispose()
    assert len(ids) == 1 and count == 1 and stock == 8


def test_a_payment_racing_the_expiry_either_pays_or_expires_never_both(pg_url):
    from shop.payment_test_provider import TestProvider
    from shop.payments import apply_notification, ensure_payment

    engine = make_engine(pg_url, name="primary")
    later = NOW + timedelta(seconds=901)
    provider = TestProvider("webhook-secret-0123456789", "ids", clock=lambda: later.timestamp())
    refunds: list[str] = []
    provider.refund = lambda ref, cents: refunds.append(ref) or "re"  # type: ignore[method-assign]
    outcomes = []
    for round_ in range(6):
        placed = _place(engine, None, {KETTLE: 2}, f"race-{round_}", owner=f"s:race-{round_}")
        ensure_payment(engine, provider, placed.order, return_url="http://shop/orders/1")
        with engine.connect() as conn:
            order = load_order(conn, placed.order.id)
        headers, body = provider.notification(provider.payment(order.payment_ref), "succeed")
        start = threading.Barrier(2)

        def pay(start: threading.Barrier = start, headers=headers, body=body) -> None:
            start.wait()
            apply_notification(engine, provider, headers, body, now=later)

        def sweep(start: threading.Barrier = start) -> None:
            start.wait()
            expire_overdue(engine, now=later)

        with ThreadPoolExecutor(max_workers=2) as pool:
            for future in [pool.submit(pay), pool.submit(sweep)]:
                future.result()
        with engine.connect() as conn:
            outcomes.append(load_order(conn, placed.order.id).status)
    stock = _stock_of(engine, KETTLE)
    engine.dispose()
    assert set(outcomes) <= {"paid", "expired"}
    assert stock == 10 - 2 * outcomes.count("paid")  # an expired order's stock came back once
    assert len(refunds) == outcomes.count("expired")  # a payment that lost the race is refunded
