"""Checkout: one transaction that cannot oversell or duplicate; the cart is cleared after it."""

from __future__ import annotations

import redis
from sqlalchemy import func, select

from shop.models import order_lines, orders
from tests.support import KETTLE, MUG, Shopper, shopper_on


def _count(app, table) -> int:
    with app.extensions["shop"].engines.primary.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _stock(shopper: Shopper, product_id: int) -> int:
    return shopper.client.get(f"/api/v1/products/{product_id}").get_json()["stock"]


def pay(shopper: Shopper, placed, outcome: str = "succeed"):
    """Follow the payment step to the test provider's page and press its button."""
    provider_page = shopper.client.get(placed.headers["Location"]).headers["Location"]
    assert "/test-payments/" in provider_page
    return shopper.client.post(provider_page, data={"outcome": outcome})


def test_checkout_places_the_order_and_shows_a_confirmation(app, shopper):
    shopper.add(KETTLE, 2)
    shopper.add(MUG, 1)
    guest_page = shopper.client.get("/checkout").get_data(as_text=True)  # guests may check out
    assert 'name="email"' in guest_page and "/login?next=/checkout" in guest_page
    shopper.register()
    page = shopper.client.get("/checkout")
    assert page.status_code == 200 and b"Place order" in page.data and b"45.97" in page.data
    assert b'name="email"' not in page.data
    placed = shopper.checkout(name="Ada", address="1 Analytical St\nLondon")
    assert placed.status_code == 303
    assert shopper.cart()["count"] == 3  # kept until the order is paid
    confirmation = shopper.client.get(pay(shopper, placed).headers["Location"])
    text = confirmation.get_data(as_text=True)
    assert "Thank you" in text and "Blue Kettle" in text and "€45.97" in text
    assert "1 Analytical St" in text
    assert shopper.cart()["count"] == 0
    assert _stock(shopper, KETTLE) == 8 and _stock(shopper, MUG) == 2
    orders_page = shopper.client.get("/orders").get_data(as_text=True)
    assert "Red Mug" in orders_page and "Order #" in orders_page


def test_api_order_is_idempotent_per_key(app, shopper):
    account = {"email": "bo@example.com", "password": "a long passphrase"}
    assert shopper.api("POST", "/users", json=account).status_code == 202
    assert shopper.api("POST", "/session/login", json=account).status_code == 200
    shopper.api("POST", "/cart/items", json={"product_id": KETTLE, "quantity": 3})
    body = {"shipping": {"name": "Bo", "address": "2 Road"}}
    first = shopper.api("POST", "/orders", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201
    order = first.get_json()["order"]
    assert order["total_cents"] == 3 * 1999 and order["status"] == "pending_payment"
    assert "/test-payments/" in order["payment_url"] and order["access_token"]
    assert order["lines"] == [
        {
            "product_id": KETTLE,
            "name": "Blue Kettle",
            "quantity": 3,
            "unit_price_cents": 1999,
            "line_total_cents": 5997,
        }
    ]
    again = shopper.api("POST", "/orders", json=body, headers={"Idempotency-Key": "k-1"})
    assert again.status_code == 200 and again.get_json()["order"]["id"] == order["id"]
    assert _count(app, orders) == 1 and _count(app, order_lines) == 1
    assert _stock(shopper, KETTLE) == 7
    listed = shopper.client.get("/api/v1/orders").get_json()["items"]
    assert [o["id"] for o in listed] == [order["id"]]
    one = shopper.client.get(f"/api/v1/orders/{order['id']}").get_json()["order"]
    assert one == {**listed[0], "access_token": order["access_token"]}


def test_double_submitted_checkout_form_makes_one_order(app, shopper):
    shopper.register()
    shopper.add(KETTLE)
    first = shopper.checkout(key="same-form")
    second = shopper.checkout(key="same-form")
    assert first.headers["Location"] == second.headers["Location"]
    assert _count(app, orders) == 1


def test_short_stock_writes_nothing_and_names_the_lines(app, shopper):
    shopper.register()
    shopper.add(MUG, 3)
    shopper.add(KETTLE, 1)
    other = Shopper(app.test_client(), app)
    other.register(email="cy@example.com")
    other.add(MUG, 2)
    assert other.checkout().status_code == 303  # now 1 mug left
    refused = shopper.checkout()
    assert refused.status_code == 409
    text = refused.get_data(as_text=True)
    assert "Red Mug" in text and "1 left" in text and 'name="address"' in text
    assert _stock(shopper, KETTLE) == 10  # the kettle line was rolled back too
    assert _count(app, orders) == 1
    assert shopper.cart()["count"] == 4  # the cart is kept for the shopper to fix
    api = shopper.api(
        "POST",
        "/orders",
        json={"shipping": {"name": "A", "address": "B"}},
        headers={"Idempotency-Key": "short"},
    )
    assert api.status_code == 409
    error = api.get_json()["error"]
    assert error["code"] == "out_of_stock"
    assert error["lines"] == [
        {"product_id": MUG, "name": "Red Mug", "requested": 3, "available": 1}
    ]


def test_order_stands_when_the_cart_cannot_be_cleared(app, shopper, monkeypatch):
    shopper.register()
    shopper.add(KETTLE)
    carts = app.extensions["shop"].carts

    def redis_gone(owner):
        raise redis.ConnectionError("Redis went away after the commit")

    monkeypatch.setattr(carts, "clear", redis_gone)
    placed = shopper.checkout()
    assert placed.status_code == 303
    assert pay(shopper, placed).status_code == 303
    assert _count(app, orders) == 1
    order_id = int(placed.headers["Location"].split("/orders/")[1].split("/")[0])
    assert shopper.client.get(f"/api/v1/orders/{order_id}").get_json()["order"]["status"] == "paid"


def test_another_shoppers_order_is_not_found(app, shopper):
    shopper.register()
    shopper.add(KETTLE)
    location = shopper.checkout().headers["Location"]
    order_id = int(location.split("/orders/")[1].split("/")[0])
    other = Shopper(app.test_client(), app)
    other.register(email="eve@example.com")
    assert other.client.get(f"/orders/{order_id}").status_code == 404
    assert other.client.get(f"/api/v1/orders/{order_id}").status_code == 404
    assert other.client.get("/api/v1/orders").get_json() == {"items": []}


def test_checkout_started_on_one_instance_finishes_on_another(make_app):
    first, second = make_app(), make_app()
    browser = Shopper(first.test_client(), first)
    browser.add(KETTLE, 2)
    browser.register()
    form = browser.client.get("/checkout").get_data(as_text=True)
    key = form.split('name="idempotency_key" value="')[1].split('"')[0]
    moved = shopper_on(second, cookie_from=browser)
    placed = moved.checkout(key=key)
    assert placed.status_code == 303
    again = Shopper(first.test_client(), first)
    again.client.set_cookie("shop_sid", moved.cookie)
    assert again.checkout(key=key).headers["Location"] == placed.headers["Location"]
    assert _count(first, orders) == 1
    order_page = placed.headers["Location"].removesuffix("/pay")
    assert again.client.get(order_page).status_code == 200
