"""Throttling before any hash: failed logins back off per account and per address, rate rules
per address for logins, sign-ups and cart writes, and a bound on hashes per process."""

from __future__ import annotations

import threading
import time

import pytest

from shop import accounts
from shop.errors import ServiceUnavailable, TooManyRequests
from shop.throttle import HashSlots, Throttle, client_key
from tests.support import KETTLE, Shopper, fake_client

PASSWORD = "correct horse 42"


@pytest.fixture
def hashes(monkeypatch) -> list[int]:
    """Counts password checks, to prove a refused attempt never reached one."""
    calls: list[int] = []
    real = accounts.check_password_hash

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(accounts, "check_password_hash", counting)
    return calls


def _login(shopper: Shopper, email: str = "ada@example.com", password: str = "wrong password!"):
    return shopper.api("POST", "/session/login", {"email": email, "password": password})


def test_failed_logins_back_off_before_any_hash(make_app, hashes):
    app = make_app(login_free_failures=3, limit_login="")
    shopper = Shopper(app.test_client(), app)
    shopper.register()  # signs up, then logs in: one check of its own
    hashes.clear()
    answers = [_login(shopper) for _ in range(6)]
    assert [a.status_code for a in answers[:3]] == [401, 401, 401]
    refused = answers[3]
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 2
    assert refused.get_json()["error"]["retry_after"] == int(refused.headers["Retry-After"])
    assert len(hashes) == 3  # the refused attempts cost no hash
    # The right password is refused too while the wait runs: the attacker learns nothing.
    assert _login(shopper, password=PASSWORD).status_code == 429


def test_the_wait_doubles_with_each_failure(make_app, redis_clock):
    app = make_app(login_free_failures=1, limit_login="")
    shopper = Shopper(app.test_client(), app)
    shopper.register()
    waits = []
    for _ in range(2):
        assert _login(shopper).status_code == 401
        refused = _login(shopper)
        assert refused.status_code == 429
        waits.append(int(refused.headers["Retry-After"]))
        redis_clock.advance(waits[-1] + 0.05)
    assert waits == [1, 2]
    assert _login(shopper, password=PASSWORD).status_code == 200


def test_an_account_takes_at_most_so_many_failures_an_hour(fake_redis_server):
    client = fake_client(fake_redis_server)
    throttle = Throttle(client, "t:", {}, account_failures="4/hour", free_failures=100)
    for _ in range(4):
        throttle.check_login("ada@example.com", "10.0.0.1")
        throttle.login_failed("ada@example.com", "10.0.0.1")
    with pytest.raises(TooManyRequests) as refused:
        throttle.check_login("ada@example.com", "10.0.0.2")  # from anywhere
    assert 3000 < refused.value.retry_after <= 3600
    throttle.check_login("bob@example.com", "10.0.0.2")  # other accounts are not affected


def test_the_hourly_cap_is_100_failures_by_default(app):
    throttle = app.extensions["shop"].throttle
    assert str(throttle.failure_caps["account"]) == "100 per 1 hour"


def test_many_accounts_from_one_address_are_throttled(make_app, hashes):
    app = make_app(limit_login="10/minute")
    attacker = Shopper(app.test_client(), app)
    answers = [_login(attacker, email=f"user{i}@example.com") for i in range(12)]
    assert [a.status_code for a in answers[:10]] == [401] * 10
    assert answers[10].status_code == 429 and "Retry-After" in answers[10].headers
    assert len(hashes) == 10


def test_sign_ups_per_address_are_limited(make_app):
    app = make_app(limit_signup="2/minute")
    codes = []
    for i in range(3):
        visitor = Shopper(app.test_client(), app)
        codes.append(visitor.sign_up(email=f"new{i}@example.com").status_code)
    assert codes[:2] == [200, 200]
    assert codes[2] == 429


def test_the_login_page_says_when_to_come_back(make_app):
    app = make_app(limit_login="1/minute")
    shopper = Shopper(app.test_client(), app)
    shopper.login(password="wrong password!")
    page = shopper.login(password="wrong password!")
    assert page.status_code == 429
    assert "Retry-After" in page.headers
    assert b"Too many sign-in attempts" in page.data
    assert b'name="email"' in page.data  # the form again


def test_addresses_behind_the_trusted_proxy_are_counted_apart(make_app):
    app = make_app(limit_login="2/minute", trusted_proxies=1)
    first = Shopper(app.test_client(), app)
    second = Shopper(app.test_client(), app)
    for _ in range(2):
        assert (
            first.login(
                password="wrong password!", headers={"X-Forwarded-For": "203.0.113.7"}
            ).status_code
            == 401
        )
    assert first.login(headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 429
    assert (
        second.login(
            password="wrong password!", headers={"X-Forwarded-For": "198.51.100.9"}
        ).status_code
        == 401
    )


def test_a_client_cannot_choose_its_address_without_a_trusted_proxy(make_app):
    app = make_app(limit_login="2/minute", trusted_proxies=0)
    shopper = Shopper(app.test_client(), app)
    codes = [
        shopper.login(
            password="wrong password!", headers={"X-Forwarded-For": f"203.0.113.{i}"}
        ).status_code
        for i in range(3)
    ]
    assert codes == [401, 401, 429]


def test_new_carts_per_address_are_limited(make_app):
    app = make_app(limit_new_cart="3/minute")
    codes = [Shopper(app.test_client(), app).add(KETTLE).status_code for _ in range(4)]
    assert codes == [303, 303, 303, 429]
    assert len(app.extensions["shop"].redis.keys("*{s:*}:cart")) == 3


def test_cart_writes_per_address_are_limited(make_app):
    app = make_app(limit_cart="3/minute")
    shopper = Shopper(app.test_client(), app)
    codes = [shopper.add(KETTLE).status_code for _ in range(4)]
    assert codes == [303, 303, 303, 429]
    assert shopper.cart()["count"] == 3
    refused = shopper.api("POST", "/cart/items", {"product_id": KETTLE, "quantity": 1})
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "rate_limited"


def test_ipv6_clients_are_counted_by_their_64():
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9")
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_key(None) == "unknown"


def test_a_flood_of_hashes_waits_behind_itself_then_is_told_to_retry():
    slots = HashSlots(1, 1, wait=0.2)
    inside, release = threading.Event(), threading.Event()

    def hashing() -> None:
        with slots.hold():
            inside.set()
            release.wait(5)

    holder = threading.Thread(target=hashing)
    holder.start()
    inside.wait(5)
    waiter_result: list[str] = []

    def waiting() -> None:
        try:
            with slots.hold():
                waiter_result.append("ran")
        except ServiceUnavailable:
            waiter_result.append("busy")

    waiter = threading.Thread(target=waiting)
    waiter.start()
    time.sleep(0.05)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as busy, slots.hold():  # queue full: refused at once
        pass
    assert time.monotonic() - started < 0.05
    assert busy.value.headers() == {"Retry-After": "1"}
    waiter.join()
    assert waiter_result == ["busy"]  # waited its 0.2 s, then was told to come back
    release.set()
    holder.join()
    with slots.hold():  # free again
        pass


def test_searches_that_miss_the_cache_are_limited_per_address(make_app, fake_redis_server):
    app = make_app(limit_search="3/minute")
    client = app.test_client()
    for word in ("kettle", "mug", "tea"):
        assert client.get(f"/?q={word}").status_code == 200
    refused = client.get("/?q=guide")  # a fourth new search: it would read the database
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    api = client.get("/api/v1/products?q=birds")
    assert api.status_code == 429 and api.get_json()["error"]["code"] == "rate_limited"
    # Searches someone made a moment ago are served from the cache, uncounted, and browsing
    # without a search is never counted.
    assert client.get("/?q=kettle").status_code == 200
    assert client.get("/?page=2").status_code == 200
    assert client.get("/?category=books").status_code == 200
    other = app.test_client()  # the same address: the same rule
    assert other.get("/?q=field").status_code == 429


def test_a_search_is_not_refused_when_redis_is_down(make_app):
    from shop.redis_client import connect

    app = make_app(
        limit_search="1/minute",
        redis_client=connect("redis://127.0.0.1:1/0", socket_timeout=0.2),
    )
    client = app.test_client()
    assert [client.get(f"/?q={w}").status_code for w in ("kettle", "mug")] == [200, 200]
