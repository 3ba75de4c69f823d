"""An account sees where it is signed in and ends sessions; a session that has not been asked
for the password in a while is asked again before shipping to a new address."""

from __future__ import annotations

import time

from shop.session_ids import session_ref
from shop.web.account_sessions import describe_device
from tests.support import KETTLE, Shopper

PHONE = "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/131.0 Mobile Safari/537.36"
LAPTOP = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"


def _browser(app, agent: str) -> Shopper:
    browser = Shopper(app.test_client(), app)
    browser.client.environ_base["HTTP_USER_AGENT"] = agent
    return browser


def _user(shopper: Shopper):
    return shopper.client.get("/api/v1/session").get_json()["user"]


def test_the_sessions_page_shows_each_device_and_ends_one(app):
    laptop = _browser(app, LAPTOP)
    laptop.register()
    phone = _browser(app, PHONE)
    phone.login()
    page = laptop.client.get("/account/sessions")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Firefox on Linux" in text and "Chrome on Android" in text
    assert text.count("(this device)") == 1
    ended = laptop.post_form("/account/sessions/end", {"id": session_ref(phone.session_id)})
    assert ended.status_code == 303
    assert _user(phone) is None
    assert _user(laptop) is not None
    assert "Chrome on Android" not in laptop.client.get("/account/sessions").get_data(as_text=True)


def test_log_out_all_other_sessions_and_everywhere(app):
    here = _browser(app, LAPTOP)
    here.register()
    others = [_browser(app, PHONE) for _ in range(2)]
    for other in others:
        other.login()
    assert here.post_form("/account/sessions/end-others").status_code == 303
    assert [_user(o) for o in others] == [None, None]
    assert _user(here) is not None
    for other in others:
        other.login()
    assert here.post_form("/logout/everywhere").status_code == 303
    assert [_user(b) for b in (here, *others)] == [None, None, None]


def test_the_api_lists_and_ends_sessions(app):
    laptop = _browser(app, LAPTOP)
    laptop.register()
    phone = _browser(app, PHONE)
    phone.login()
    items = laptop.client.get("/api/v1/account/sessions").get_json()["items"]
    assert sorted(i["device"] for i in items) == ["Chrome on Android", "Firefox on Linux"]
    assert [i["current"] for i in items if i["device"] == "Firefox on Linux"] == [True]
    assert all(i["last_seen"] >= i["created"] > 0 for i in items)
    phone_id = session_ref(phone.session_id)
    assert laptop.api("DELETE", f"/account/sessions/{phone_id}").status_code == 204
    assert _user(phone) is None
    again = laptop.api("DELETE", f"/account/sessions/{phone_id}")
    assert again.status_code == 404 and again.get_json()["error"]["code"] == "not_found"


def test_one_account_cannot_end_anothers_session(app):
    ada = _browser(app, LAPTOP)
    ada.register()
    bob = _browser(app, PHONE)
    bob.register(email="bob@example.com")
    refused = ada.api("DELETE", f"/account/sessions/{session_ref(bob.session_id)}")
    assert refused.status_code == 404
    assert _user(bob)["email"] == "bob@example.com"


def test_sessions_need_a_login(app):
    visitor = Shopper(app.test_client(), app)
    assert visitor.client.get("/account/sessions").status_code == 303
    assert visitor.client.get("/api/v1/account/sessions").status_code == 401


def test_devices_are_described_for_people():
    assert describe_device(PHONE) == "Chrome on Android"
    assert describe_device(LAPTOP) == "Firefox on Linux"
    assert describe_device("") == "Unknown device"


# -- asking for the password again --------------------------------------------------------


def _later(app, seconds: float) -> None:
    store = app.extensions["shop"].sessions
    store.clock = lambda: time.time() + seconds


def test_a_new_address_in_an_old_session_asks_for_the_password(app):
    shopper = Shopper(app.test_client(), app)
    shopper.register()
    shopper.add(KETTLE)
    assert shopper.checkout(address="1 Analytical St").status_code == 303  # just signed in
    _later(app, 3600)
    shopper.add(KETTLE)
    assert shopper.checkout(address="1 Analytical St").status_code == 303  # known address
    shopper.add(KETTLE)
    asked = shopper.checkout(address="99 Unknown Rd")
    assert asked.status_code == 401
    assert b'name="password"' in asked.data and b"enter your password again" in asked.data
    # Nothing ordered (the cart now stays until an order is paid, so count the orders).
    assert len(shopper.client.get("/api/v1/orders").get_json()["items"]) == 2
    wrong = shopper.post_form(
        "/checkout",
        {
            "name": "Ada",
            "address": "99 Unknown Rd",
            "idempotency_key": "k-1",
            "password": "not my password",
        },
    )
    assert wrong.status_code == 401 and b"not your password" in wrong.data
    right = shopper.post_form(
        "/checkout",
        {
            "name": "Ada",
            "address": "99 Unknown Rd",
            "idempotency_key": "k-2",
            "password": "correct horse 42",
        },
    )
    assert right.status_code == 303
    assert len(shopper.client.get("/api/v1/orders").get_json()["items"]) == 3


def test_the_api_says_reauth_required_and_takes_the_password(app):
    shopper = Shopper(app.test_client(), app)
    shopper.register()
    _later(app, 3600)
    shopper.add(KETTLE)
    body = {"shipping": {"name": "Ada", "address": "5 New St"}}
    asked = shopper.api("POST", "/orders", body, {"Idempotency-Key": "a-1"})
    assert asked.status_code == 401
    assert asked.get_json()["error"]["code"] == "reauth_required"
    placed = shopper.api(
        "POST", "/orders", {**body, "password": "correct horse 42"}, {"Idempotency-Key": "a-1"}
    )
    assert placed.status_code == 201
