"""Honest prices: the cart remembers the price each line was seen at, the cart and checkout
pages say when one changed, and an order is placed only at prices the shopper has seen."""

from __future__ import annotations

import re

from sqlalchemy import delete, func, select

from shop import create_app
from shop.cart import CartOwner, changed_prices
from shop.config import Settings
from shop.errors import PriceChange
from shop.models import orders, products
from tests.support import KETTLE, MUG, SECRET, Shopper, page_text, redis_snapshot

CHANGED = "The price of Blue Kettle changed from €19.99 to €24.99."


def _set_price(app, product_id: int, price: str) -> None:
    result = app.test_cli_runner().invoke(
        args=["product", "set", str(product_id), "--price", price]
    )
    assert result.exit_code == 0, result.output


def _count_orders(app) -> int:
    with app.extensions["shop"].engines.primary.connect() as conn:
        return conn.execute(select(func.count()).select_from(orders)).scalar_one()


def _stock(app, product_id: int) -> int:
    with app.extensions["shop"].engines.primary.connect() as conn:
        return conn.execute(
            select(products.c.stock).where(products.c.id == product_id)
        ).scalar_one()


def _hidden(page, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page.get_data(as_text=True))
    assert found, f"no {name} field"
    return found.group(1)


def _order(shopper: Shopper, key: str):
    return shopper.api(
        "POST",
        "/orders",
        json={"shipping": {"name": "Ada Lovelace", "address": "1 Analytical St"}},
        headers={"Idempotency-Key": key},
    )


def test_changed_prices_names_each_line_not_seen_at_its_price():
    current = {KETTLE: ("Blue Kettle", 2499), MUG: ("Red Mug", 599), 4: ("Field Guide 4", 1004)}
    assert changed_prices({KETTLE: 1999, MUG: 599}, current) == [
        PriceChange(KETTLE, "Blue Kettle", 1999, 2499),
        PriceChange(4, "Field Guide 4", None, 1004),  # never seen: a change too
    ]
    assert changed_prices({KETTLE: 2499, MUG: 599, 4: 1004}, current) == []


def test_the_cart_page_says_a_price_changed_and_accepting_it_is_a_button(app, shopper):
    shopper.add(KETTLE, 2)
    shopper.add(MUG)
    _set_price(app, KETTLE, "24.99")
    cart = shopper.client.get("/cart")
    assert CHANGED in page_text(cart)
    assert "was €19.99" in page_text(cart)  # and beside the line
    assert "Red Mug changed" not in page_text(cart)
    assert "€55.97" in page_text(cart)  # totals at today's price: 2 × 24.99 + 5.99
    assert shopper.cart()["price_changes"] == [
        {
            "product_id": KETTLE,
            "name": "Blue Kettle",
            "seen_unit_price_cents": 1999,
            "unit_price_cents": 2499,
        }
    ]
    assert CHANGED in page_text(shopper.client.get("/cart"))  # viewing alone accepts nothing
    shown = _hidden(cart, "shown_prices")
    _set_price(app, MUG, "6.49")  # changed after the page was shown: not accepted with it
    accepted = shopper.post_form("/cart/prices", {"shown_prices": shown})
    assert accepted.status_code == 303
    text = page_text(shopper.client.get("/cart"))
    assert CHANGED not in text
    assert "The price of Red Mug changed from €5.99 to €6.49." in text


def test_an_api_order_at_an_unseen_price_is_refused_until_the_client_confirms(app, shopper):
    shopper.register()
    shopper.api("POST", "/cart/items", json={"product_id": KETTLE, "quantity": 2})
    _set_price(app, KETTLE, "24.99")
    refused = _order(shopper, "k-1")
    assert refused.status_code == 409
    error = refused.get_json()["error"]
    assert error["code"] == "prices_changed" and "Blue Kettle" in error["message"]
    assert error["lines"] == [
        {
            "product_id": KETTLE,
            "name": "Blue Kettle",
            "seen_unit_price_cents": 1999,
            "unit_price_cents": 2499,
        }
    ]
    assert _count_orders(app) == 0 and _stock(app, KETTLE) == 10  # nothing written
    confirmed = shopper.api(
        "POST",
        "/cart/prices",
        json={"items": [{"product_id": KETTLE, "unit_price_cents": 2499}]},
    )
    assert confirmed.status_code == 200 and confirmed.get_json()["price_changes"] == []
    assert confirmed.get_json()["items"][0]["seen_unit_price_cents"] == 2499
    placed = _order(shopper, "k-2")
    assert placed.status_code == 201 and placed.get_json()["order"]["total_cents"] == 2 * 2499
    bad = shopper.api("POST", "/cart/prices", json={"items": [{"product_id": "x"}]})
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "invalid_input"


def test_the_checkout_page_shows_the_change_and_places_the_order_at_the_prices_it_showed(
    app, shopper
):
    shopper.register()
    shopper.add(KETTLE, 2)
    _set_price(app, KETTLE, "24.99")
    form = shopper.client.get("/checkout")
    assert CHANGED in page_text(form) and "€49.98" in page_text(form)
    _set_price(app, KETTLE, "29.99")  # changed again while the form was open
    data = {
        "name": "Ada",
        "address": "1 Analytical St",
        "idempotency_key": _hidden(form, "idempotency_key"),
        "shown_prices": _hidden(form, "shown_prices"),
    }
    refused = shopper.post_form("/checkout", data)
    assert refused.status_code == 409
    text = page_text(refused)
    assert "The price of Blue Kettle changed from €24.99 to €29.99." in text
    assert 'name="address"' in text and "€59.98" in text
    assert _count_orders(app) == 0 and _stock(app, KETTLE) == 10
    placed = shopper.post_form(
        "/checkout", {**data, "shown_prices": _hidden(refused, "shown_prices")}
    )
    assert placed.status_code == 303  # to the payment step; the order page shows what it costs
    order_page = placed.headers["Location"].removesuffix("/pay")
    assert "€59.98" in page_text(shopper.client.get(order_page))


def test_a_line_kept_before_carts_remembered_prices_asks_for_its_price(app, shopper):
    shopper.register()
    shopper.add(MUG)
    services = app.extensions["shop"]
    user_id = shopper.client.get("/api/v1/session").get_json()["user"]["id"]
    services.redis.hset(services.carts.key(CartOwner.account(user_id)), str(MUG), "1")
    assert "Check the price of Red Mug: it is €5.99." in page_text(shopper.client.get("/cart"))
    refused = _order(shopper, "old-cart")
    assert refused.status_code == 409
    assert refused.get_json()["error"]["lines"][0]["seen_unit_price_cents"] is None


def test_looking_at_a_cart_writes_nothing(app, shopper):
    shopper.client.get("/")
    before = redis_snapshot(app.extensions["shop"].redis)
    assert shopper.client.get("/cart").status_code == 200
    assert shopper.client.get("/api/v1/cart").status_code == 200
    assert shopper.post_form("/cart/prices", {"shown_prices": f"{KETTLE}:1"}).status_code == 303
    assert redis_snapshot(app.extensions["shop"].redis) == before


def test_a_product_gone_from_the_catalogue_shows_as_unavailable_and_can_be_removed(app, shopper):
    shopper.register()
    shopper.add(KETTLE)
    shopper.add(4, 2)
    with app.extensions["shop"].engines.primary.begin() as conn:
        conn.execute(delete(products).where(products.c.id == 4))
    app.extensions["shop"].catalogue.invalidate([4])
    cart = page_text(shopper.client.get("/cart"))
    assert "(no. 4, quantity 2) is no longer available" in cart
    assert 'name="product_id" value="4"' in cart  # its Remove button
    assert "€19.99" in cart and "Total (1 item)" in cart  # counted in no total
    assert shopper.cart()["unavailable"] == [{"product_id": 4, "quantity": 2}]
    assert shopper.cart()["total_cents"] == 1999
    checkout = page_text(shopper.client.get("/checkout"))
    assert "1 product in your cart is no longer available" in checkout
    refused = shopper.checkout()
    assert refused.status_code == 409
    assert "remove it from your cart to check out" in page_text(refused)
    api = _order(shopper, "gone")
    assert api.status_code == 409
    assert api.get_json()["error"]["code"] == "product_unavailable"
    assert api.get_json()["error"]["product_ids"] == [4]
    assert _count_orders(app) == 0 and _stock(app, KETTLE) == 10
    assert shopper.post_form("/cart/remove", {"product_id": 4}).status_code == 303
    assert shopper.checkout().status_code == 303


def test_a_full_cart_says_so_on_the_page_and_in_the_api(make_app):
    app = make_app(max_cart_lines=2)
    shopper = Shopper(app.test_client(), app)
    shopper.add(KETTLE)
    shopper.add(MUG)
    refused = shopper.add(4)
    assert refused.status_code == 409
    message = "A cart holds at most 2 different products. Check out or remove some first."
    assert message in page_text(refused)
    api = shopper.api("POST", "/cart/items", {"product_id": 4, "quantity": 1})
    assert api.get_json()["error"] == {"code": "cart_full", "message": message}
    assert shopper.cart()["count"] == 2


def test_a_cli_price_change_shows_on_the_embedded_servers_next_page(sqlite_url, tmp_path):
    """The embedded mode: the server and the ``flask`` CLI are two processes, each with its
    own in-process Redis, sharing only the SQLite file."""
    settings = Settings(
        database_url=sqlite_url, secret_key=SECRET, env="development", instance_name="x"
    ).validated()
    server, cli = create_app(settings), create_app(settings)
    assert server.extensions["shop"].redis is not cli.extensions["shop"].redis
    try:
        browser = server.test_client()
        for _ in range(2):  # warm: the Redis tier and the in-process one
            assert browser.get(f"/api/v1/products/{KETTLE}").get_json()["price_cents"] == 1999
            assert "€19.99" in page_text(browser.get("/?category=kitchen"))
        _set_price(cli, KETTLE, "24.99")
        assert browser.get(f"/api/v1/products/{KETTLE}").get_json()["price_cents"] == 2499
        assert "€24.99" in page_text(browser.get(f"/products/{KETTLE}"))
        grid = browser.get("/api/v1/products?category=kitchen").get_json()
        assert grid["items"][0]["price_cents"] == 2499
    finally:
        server.extensions["shop"].close()
        cli.extensions["shop"].close()


def test_the_product_command_refuses_a_price_the_shop_cannot_hold(app):
    runner = app.test_cli_runner()
    too_high = runner.invoke(args=["product", "set", str(KETTLE), "--price", "1000000000.00"])
    assert too_high.exit_code != 0
    assert "1000000000.00 is more than the highest price, 999999999.99" in too_high.output
    assert app.test_client().get(f"/api/v1/products/{KETTLE}").get_json()["price_cents"] == 1999
    _set_price(app, KETTLE, "999999999.99")
    assert (
        app.test_client().get(f"/api/v1/products/{KETTLE}").get_json()["price_cents"]
        == 999_999_999_99
    )


def test_three_items_at_ten_million_are_one_order(app, shopper):
    _set_price(app, KETTLE, "10000000.00")
    shopper.register()
    shopper.add(KETTLE, 3)
    placed = _order(shopper, "big")
    assert placed.status_code == 201, placed.get_json()
    order = placed.get_json()["order"]
    assert order["total_cents"] == 3_000_000_000
    assert "€30,000,000.00" in page_text(shopper.client.get(f"/orders/{order['id']}"))
