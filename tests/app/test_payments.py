"""Payment and the order's life cycle: paid only by a signed notification, once."""

from __future__ import annotations

import json
import re
import time

from shop.payments import SIGNATURE_HEADER, sign
from tests.support import KETTLE, Shopper

SHIPPING = {"name": "Ada", "address": "1 Analytical St"}


def _stock(shopper: Shopper) -> int:
    return shopper.client.get(f"/api/v1/products/{KETTLE}").get_json()["stock"]


def _guest_order(shopper: Shopper, key: str = "g-1", quantity: int = 2) -> dict:
    shopper.add(KETTLE, quantity)
    body = {"email": "guest@example.com", "shipping": SHIPPING}
    placed = shopper.api("POST", "/orders", json=body, headers={"Idempotency-Key": key})
    assert placed.status_code == 201, placed.get_json()
    return placed.get_json()["order"]


def _undelivered(shopper: Shopper, order: dict, outcome: str) -> tuple[dict, bytes]:
    twin = shopper.client.post(order["payment_url"], json={"outcome": outcome, "deliver": False})
    note = twin.get_json()["notification"]
    return note["headers"], note["body"].encode()


def _webhook(shopper: Shopper, headers: dict, body: bytes):
    return shopper.client.post("/api/v1/payments/webhook/test", data=body, headers=headers)


def test_a_guest_pays_and_the_order_is_paid_only_by_the_notification(app, shopper):
    order = _guest_order(shopper)
    assert order["status"] == "pending_payment" and order["access_token"]
    assert _stock(shopper) == 8
    headers, body = _undelivered(shopper, order, "succeed")
    # The browser returns first: nothing changes, the page says it waits.
    page = shopper.client.get(f"/orders/{order['id']}").get_data(as_text=True)
    assert "waiting for payment" in page and "Pay now" in page
    assert shopper.cart()["count"] == 2
    first = _webhook(shopper, headers, body)
    assert first.status_code == 200 and first.get_json()["changed"] is True
    again = _webhook(shopper, headers, body)  # the same notification twice
    assert again.status_code == 200 and again.get_json()["changed"] is False
    found = shopper.client.get(f"/api/v1/orders/{order['id']}").get_json()["order"]
    assert found["status"] == "paid"
    assert [event["status"] for event in found["history"]] == ["pending_payment", "paid"]
    assert shopper.cart()["count"] == 0 and _stock(shopper) == 8


def test_bad_signatures_and_stale_notifications_are_refused(app, shopper):
    order = _guest_order(shopper)
    headers, body = _undelivered(shopper, order, "succeed")
    tampered = body.replace(b'"succeeded"', b'"declined"')
    assert _webhook(shopper, headers, tampered).status_code == 400
    forged = {SIGNATURE_HEADER: sign("not the shop's secret key", int(time.time()), body)}
    assert _webhook(shopper, forged, body).get_json()["error"]["code"] == "invalid_notification"
    secret = app.extensions["shop"].settings.webhook_secret()
    stale = {SIGNATURE_HEADER: sign(secret, int(time.time()) - 3600, body)}
    assert _webhook(shopper, stale, body).status_code == 400
    assert _webhook(shopper, {}, body).status_code == 400
    found = shopper.client.get(f"/api/v1/orders/{order['id']}").get_json()["order"]
    assert found["status"] == "pending_payment"


def test_a_declined_payment_returns_the_stock_and_keeps_the_cart(app, shopper):
    order = _guest_order(shopper)
    declined = shopper.client.post(order["payment_url"], data={"outcome": "decline"})
    assert declined.status_code == 303 and declined.headers["Location"] == f"/orders/{order['id']}"
    page = shopper.client.get(declined.headers["Location"]).get_data(as_text=True)
    assert "declined" in page and "payment_failed" in page
    assert _stock(shopper) == 10 and shopper.cart()["count"] == 2
    retry = shopper.api(
        "POST",
        "/orders",
        json={"email": "guest@example.com", "shipping": SHIPPING},
        headers={"Idempotency-Key": "g-2"},
    )
    assert retry.status_code == 201 and _stock(shopper) == 8


def test_a_guest_order_is_seen_by_its_session_or_token_only(app, shopper):
    order = _guest_order(shopper)
    stranger = Shopper(app.test_client(), app)
    assert stranger.client.get(f"/api/v1/orders/{order['id']}").status_code == 404
    assert stranger.client.get(f"/orders/{order['id']}").status_code == 404
    wrong = stranger.client.get(f"/api/v1/orders/{order['id']}?token=nope")
    assert wrong.status_code == 404
    with_token = stranger.client.get(f"/api/v1/orders/{order['id']}?token={order['access_token']}")
    assert with_token.status_code == 200
    page = stranger.client.get(f"/orders/{order['id']}?token={order['access_token']}")
    assert page.status_code == 200 and "Create an account" in page.get_data(as_text=True)


def test_a_guest_who_signs_in_owns_the_order(app, shopper):
    order = _guest_order(shopper)
    shopper.register("guest@example.com")
    listed = shopper.client.get("/api/v1/orders").get_json()["items"]
    assert [o["id"] for o in listed] == [order["id"]]


def test_the_same_key_with_another_body_is_refused(app, shopper):
    order = _guest_order(shopper)
    other = {"email": "guest@example.com", "shipping": {**SHIPPING, "name": "Bo"}}
    reused = shopper.api("POST", "/orders", json=other, headers={"Idempotency-Key": "g-1"})
    assert reused.status_code == 422
    assert reused.get_json()["error"]["code"] == "idempotency_key_reused"
    fresh_key = shopper.api(
        "POST",
        "/orders",
        json={"email": "guest@example.com", "shipping": SHIPPING},
        headers={"Idempotency-Key": "g-9"},
    )
    assert fresh_key.status_code == 200  # one cart, one order
    assert fresh_key.get_json()["order"]["id"] == order["id"] and _stock(shopper) == 8


def test_an_unpaid_order_expires_after_its_hold_and_its_stock_returns(make_app, monkeypatch):
    app = make_app(payment_hold_seconds=60)
    shopper = Shopper(app.test_client(), app)
    order = _guest_order(shopper)
    headers, body = _undelivered(shopper, order, "succeed")  # the shopper pays too late
    app.extensions["shop"].clock = lambda: time.time() + 61
    found = shopper.client.get(f"/api/v1/orders/{order['id']}").get_json()["order"]
    assert found["status"] == "expired" and _stock(shopper) == 10
    assert [e["status"] for e in found["history"]] == ["pending_payment", "expired"]
    app.extensions["shop"].clock = time.time  # the notification arrives, fresh
    refunds: list[str] = []
    provider = app.extensions["shop"].payment_provider
    monkeypatch.setattr(provider, "refund", lambda ref, cents: refunds.append(ref) or "re_1")
    late = _webhook(shopper, headers, body)
    assert late.status_code == 200 and late.get_json()["status"] == "expired"
    assert _webhook(shopper, headers, body).status_code == 200  # the provider retries
    assert len(refunds) == 1  # refunded once, however often it is told


def test_the_cli_ships_and_cancels_and_refuses_illegal_moves(app, shopper):
    order = _guest_order(shopper)
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["order", "ship", str(order["id"])])
    assert refused.exit_code != 0 and "cannot become shipped" in refused.output
    shopper.client.post(order["payment_url"], json={"outcome": "succeed"})
    cancelled = runner.invoke(args=["order", "cancel", str(order["id"])])
    assert cancelled.exit_code == 0, cancelled.output
    assert _stock(shopper) == 10
    again = runner.invoke(args=["order", "ship", str(order["id"]), "--tracking", "T1"])
    assert again.exit_code != 0
    found = shopper.client.get(f"/api/v1/orders/{order['id']}").get_json()["order"]
    assert [e["status"] for e in found["history"]] == ["pending_payment", "paid", "cancelled"]


def test_listeners_run_in_the_transaction_of_the_change(app, shopper):
    seen: list[tuple[int, str]] = []
    app.extensions["shop"].order_listeners.append(
        lambda conn, o, status: seen.append((o.id, status))
    )
    order = _guest_order(shopper)
    shopper.client.post(order["payment_url"], json={"outcome": "succeed"})
    app.test_cli_runner().invoke(args=["order", "ship", str(order["id"])])
    assert seen == [(order["id"], "paid"), (order["id"], "shipped")]
    assert json.dumps(seen)


def test_each_process_sweeps_expired_holds_in_the_background(make_app):
    app = make_app(payment_hold_seconds=60)
    services = app.extensions["shop"]
    services.hold_sweeper.interval = 0.02
    shopper = Shopper(app.test_client(), app)
    order = _guest_order(shopper)  # its first request started the sweeper
    services.clock = lambda: time.time() + 61
    deadline = time.monotonic() + 3
    while _stock(shopper) != 10:  # no request of this test expires it: the thread does
        assert time.monotonic() < deadline, "the sweeper never expired the order"
        time.sleep(0.02)
    assert services.hold_sweeper._thread is not None
    found = shopper.client.get(f"/api/v1/orders/{order['id']}").get_json()["order"]
    assert found["status"] == "expired"


def test_a_guest_checks_out_with_the_pages_and_returns_to_a_paid_order(app, shopper):
    shopper.add(KETTLE, 1)
    placed = shopper.post_form(
        "/checkout",
        {"email": "guest@example.com", **SHIPPING, "idempotency_key": "form-1"},
    )
    assert placed.status_code == 303 and placed.headers["Location"].endswith("/pay")
    provider = shopper.client.get(placed.headers["Location"]).headers["Location"]
    page = shopper.client.get(provider).get_data(as_text=True)
    assert "TEST MODE" in page and "€19.99" in page
    back = shopper.client.post(provider, data={"outcome": "succeed"})
    order_page = shopper.client.get(back.headers["Location"]).get_data(as_text=True)
    assert "Thank you" in order_page and "access-link" in order_page and "?token=" in order_page
    assert "pending_payment" in order_page and "paid" in order_page  # the history
    assert shopper.cart()["count"] == 0


def test_order_pages_name_each_status_in_words_and_keep_the_code_for_machines(app, shopper):
    order = _guest_order(shopper)
    waiting = shopper.client.get(f"/orders/{order['id']}").get_data(as_text=True)
    assert 'data-status="pending_payment">Awaiting payment</span>' in waiting
    shopper.client.post(order["payment_url"], data={"outcome": "succeed"})
    paid = shopper.client.get(f"/orders/{order['id']}").get_data(as_text=True)
    assert 'data-status="paid">Paid</span>' in paid
    history = re.findall(r'<li data-status="(\w+)"><time [^>]*>[^<]*</time>: ([^<(]+)', paid)
    assert [(code, words.strip()) for code, words in history] == [
        ("pending_payment", "Awaiting payment"),
        ("paid", "Paid"),
    ]
    page = shopper.client.get(order["payment_url"]).get_data(as_text=True)
    assert 'class="test-mode"' in page and 'value="decline" class="secondary"' in page


def test_login_and_registration_from_checkout_come_back_to_it(app, shopper):
    shopper.add(KETTLE)
    register_page = shopper.client.get("/register?next=/checkout").get_data(as_text=True)
    assert 'name="next" value="/checkout"' in register_page
    sent = shopper.post_form(
        "/register",
        {"email": "ada@example.com", "password": "correct horse 42", "next": "/checkout"},
    ).get_data(as_text=True)
    assert "/login?next=/checkout" in sent
    offsite = shopper.client.get("/register?next=https://evil.example/").get_data(as_text=True)
    assert "evil.example" not in offsite
    back = shopper.post_form(
        "/login", {"email": "ada@example.com", "password": "correct horse 42", "next": "/checkout"}
    )
    assert back.status_code == 303 and back.headers["Location"] == "/checkout"


def test_the_test_provider_refuses_bad_outcomes_and_unknown_payments(app, shopper):
    order = _guest_order(shopper)
    bad = shopper.client.post(order["payment_url"], json={"outcome": "maybe"})
    assert bad.status_code == 400
    forged = order["payment_url"].rsplit("/", 1)[0] + "/not-a-signed-id"
    assert shopper.client.get(forged).status_code == 404
    assert shopper.client.post(forged, json={"outcome": "succeed"}).status_code == 404
    found = shopper.client.get(f"/api/v1/orders/{order['id']}").get_json()["order"]
    assert found["status"] == "pending_payment" and _stock(shopper) == 8
