"""Carts live in Redis, hold ids and quantities only, and follow the shopper to their account."""

from __future__ import annotations

import pytest

from shop.cart import CartLine, CartOwner, CartStore
from shop.errors import InvalidQuantity, QuantityUnavailable
from tests.support import KETTLE, MUG, TEAPOT, Shopper, fake_client


@pytest.fixture
def carts(fake_redis_server) -> CartStore:
    return CartStore(
        fake_client(fake_redis_server),
        "t:",
        visitor_ttl=100,
        account_ttl=1000,
        max_line_quantity=99,
    )


def test_cart_holds_quantities_and_the_price_each_line_was_seen_at(carts):
    """One compact hash field per line, "quantity:cents" (was: the quantity alone)."""
    owner = CartOwner.session("x" * 43)
    carts.add(owner, KETTLE, 2, stock=10, price_cents=1999)
    carts.add(owner, KETTLE, 3, stock=10, price_cents=2499)  # added again at a new price: seen
    carts.add(owner, MUG, 1, stock=3, price_cents=599)
    assert carts.client.hgetall(carts.key(owner)) == {str(KETTLE): "5:2499", str(MUG): "1:599"}
    assert carts.get(owner) == {KETTLE: 5, MUG: 1}
    assert carts.lines(owner) == {KETTLE: CartLine(5, 2499), MUG: CartLine(1, 599)}


def test_quantity_changes_keep_the_seen_price_and_confirming_replaces_it(carts):
    owner, account = CartOwner.session("p" * 43), CartOwner.account(7)
    carts.add(owner, KETTLE, 1, stock=10, price_cents=1999)
    carts.set(owner, KETTLE, 4, stock=10, price_cents=2499)  # the cart page, price since raised
    carts.set(owner, MUG, 2, stock=3, price_cents=599)  # a new line by quantity: seen now
    assert carts.lines(owner) == {KETTLE: CartLine(4, 1999), MUG: CartLine(2, 599)}
    carts.confirm_prices(owner, {KETTLE: 2499, TEAPOT: 2500})  # a line not in the cart: ignored
    assert carts.lines(owner) == {KETTLE: CartLine(4, 2499), MUG: CartLine(2, 599)}
    carts.client.hset(carts.key(account), str(MUG), "1")  # a line kept before prices were
    assert carts.lines(account) == {MUG: CartLine(1, None)}
    carts.merge(owner, account, {KETTLE: 10, MUG: 3})  # this browser's prices win
    assert carts.lines(account) == {KETTLE: CartLine(4, 2499), MUG: CartLine(3, 599)}


def test_add_past_stock_is_refused_and_changes_nothing(carts):
    owner = CartOwner.session("y" * 43)
    carts.add(owner, MUG, 2, stock=3, price_cents=100)
    with pytest.raises(QuantityUnavailable) as refused:
        carts.add(owner, MUG, 2, stock=3, price_cents=100)
    assert refused.value.available == 1
    assert carts.get(owner) == {MUG: 2}
    with pytest.raises(QuantityUnavailable):
        carts.add(owner, TEAPOT, 1, stock=0, price_cents=100)
    with pytest.raises(InvalidQuantity):
        carts.add(owner, MUG, 0, stock=3, price_cents=100)
    assert carts.get(owner) == {MUG: 2}


def test_set_zero_removes_the_line_and_ttls_follow_the_owner(carts):
    visitor, account = CartOwner.session("z" * 43), CartOwner.account(5)
    carts.set(visitor, KETTLE, 4, stock=10, price_cents=100)
    carts.set(account, KETTLE, 1, stock=10, price_cents=100)
    assert 0 < carts.client.ttl(carts.key(visitor)) <= 100
    assert 100 < carts.client.ttl(carts.key(account)) <= 1000
    carts.set(visitor, KETTLE, 0, stock=10, price_cents=100)
    assert carts.get(visitor) == {}


def test_merge_adds_up_capped_by_stock(carts):
    visitor, account = CartOwner.session("m" * 43), CartOwner.account(9)
    carts.set(account, MUG, 2, stock=3, price_cents=100)
    carts.set(account, KETTLE, 1, stock=10, price_cents=100)
    carts.set(visitor, MUG, 2, stock=3, price_cents=100)
    carts.set(visitor, 4, 5, stock=50, price_cents=100)
    carts.merge(visitor, account, {MUG: 3, 4: 50})
    assert carts.get(account) == {MUG: 3, KETTLE: 1, 4: 5}
    assert not carts.client.exists(carts.key(visitor))


def test_cart_page_shows_lines_and_totals(shopper):
    shopper.add(KETTLE, 2)
    shopper.add(MUG)
    page = shopper.client.get("/cart")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Blue Kettle" in text and "Red Mug" in text
    assert "€39.98" in text  # 2 × 19.99
    assert "€45.97" in text  # cart total
    assert shopper.cart() == {
        "items": [
            {
                "product_id": KETTLE,
                "name": "Blue Kettle",
                "quantity": 2,
                "unit_price_cents": 1999,
                "line_total_cents": 3998,
                "seen_unit_price_cents": 1999,
            },
            {
                "product_id": MUG,
                "name": "Red Mug",
                "quantity": 1,
                "unit_price_cents": 599,
                "line_total_cents": 599,
                "seen_unit_price_cents": 599,
            },
        ],
        "total_cents": 4597,
        "count": 3,
        "price_changes": [],
        "unavailable": [],
    }


def test_header_shows_the_item_count_on_every_page(shopper):
    shopper.add(KETTLE, 2)
    shopper.add(MUG)
    for path in ["/", f"/products/{MUG}", "/cart", "/login"]:
        text = shopper.client.get(path).get_data(as_text=True)
        assert 'data-testid="cart-count">3<' in text, path


def test_change_and_remove_lines_from_the_cart_page(shopper):
    shopper.add(KETTLE, 2)
    shopper.add(MUG)
    assert (
        shopper.post_form("/cart/update", {"product_id": KETTLE, "quantity": 5}).status_code == 303
    )
    assert shopper.post_form("/cart/remove", {"product_id": MUG}).status_code == 303
    assert shopper.cart()["items"][0]["quantity"] == 5
    assert shopper.cart()["count"] == 5
    shopper.post_form("/cart/update", {"product_id": KETTLE, "quantity": 0})
    assert shopper.cart()["count"] == 0


def test_api_cart_changes_answer_with_the_cart(shopper):
    added = shopper.api("POST", "/cart/items", json={"product_id": KETTLE, "quantity": 2})
    assert added.status_code == 200 and added.get_json()["count"] == 2
    changed = shopper.api("PUT", f"/cart/items/{KETTLE}", json={"quantity": 4})
    assert changed.get_json()["items"][0]["quantity"] == 4
    removed = shopper.api("DELETE", f"/cart/items/{KETTLE}")
    assert removed.get_json() == {
        "items": [],
        "total_cents": 0,
        "count": 0,
        "price_changes": [],
        "unavailable": [],
    }


def test_visitor_cart_merges_into_the_account_cart_at_login(make_app):
    app = make_app()
    first = Shopper(app.test_client(), app)
    first.register()
    first.add(MUG, 2)
    first.add(KETTLE, 1)
    first.logout()
    assert first.cart()["count"] == 0  # logged out: an empty visitor cart
    first.add(MUG, 2)  # 2 + 2 > stock 3: capped at login
    first.add(4, 1)
    first.login()
    assert {i["product_id"]: i["quantity"] for i in first.cart()["items"]} == {
        KETTLE: 1,
        MUG: 3,
        4: 1,
    }
    # Another browser finds the same cart after logging in.
    second = Shopper(app.test_client(), app)
    second.login()
    assert second.cart()["count"] == 5


def test_account_cart_lasts_thirty_days_by_default(app, shopper):
    shopper.register()
    shopper.add(KETTLE)
    services = app.extensions["shop"]
    user_id = shopper.client.get("/api/v1/session").get_json()["user"]["id"]
    ttl = services.redis.ttl(services.carts.key(CartOwner.account(user_id)))
    assert 29 * 86400 < ttl <= 30 * 86400


def test_line_maximum_and_stock_are_two_rules_with_their_own_messages(carts):
    owner = CartOwner.session("q" * 43)
    carts.add(owner, KETTLE, 60, stock=500, price_cents=100)
    with pytest.raises(QuantityUnavailable) as past_maximum:
        carts.add(owner, KETTLE, 50, stock=500, price_cents=100)
    assert past_maximum.value.message == (
        "The per-product maximum is 99, and 60 are already in your cart."
    )
    assert past_maximum.value.available == 39
    with pytest.raises(QuantityUnavailable) as past_stock:
        carts.add(owner, KETTLE, 50, stock=70, price_cents=100)
    assert past_stock.value.message == "Only 70 available and 60 already in your cart."
    with pytest.raises(InvalidQuantity) as too_many:
        carts.add(owner, MUG, 100, stock=500, price_cents=100)
    assert too_many.value.message == "Quantity must be at most 99."
    assert carts.get(owner) == {KETTLE: 60}


def test_forms_take_their_maximum_from_the_setting(make_app):
    app = make_app(max_line_quantity=5)
    shopper = Shopper(app.test_client(), app)
    assert 'max="5"' in shopper.client.get(f"/products/{KETTLE}").get_data(as_text=True)
    six = shopper.add(KETTLE, 6)
    assert six.status_code == 400
    assert "Quantity must be at most 5." in six.get_data(as_text=True)
    api_six = shopper.api("POST", "/cart/items", json={"product_id": KETTLE, "quantity": 6})
    assert api_six.get_json()["error"]["message"] == "Quantity must be at most 5."
    assert shopper.add(KETTLE, 5).status_code == 303
    assert 'max="5"' in shopper.client.get("/cart").get_data(as_text=True)
    one_more = shopper.add(KETTLE, 1)
    assert one_more.status_code == 409
    assert "The per-product maximum is 5, and 5 are already in your cart." in one_more.get_data(
        as_text=True
    )
    past_stock = shopper.add(MUG, 4)  # 3 in stock, under the maximum: the stock's message
    assert past_stock.status_code == 409
    assert "Only 3 available." in past_stock.get_data(as_text=True)
    assert shopper.cart()["count"] == 5
