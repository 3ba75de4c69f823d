"""The browser holds only an opaque id; sessions live in Redis and cost nothing until needed."""

from __future__ import annotations

import re

import pytest

from shop.session_ids import csrf_token_for, csrf_token_valid
from shop.sessions import SessionStore
from tests.support import KETTLE, SECRET, StatementCounter, redis_snapshot


def _cookie_header(response, name="shop_sid") -> str:
    headers = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(name + "=")]
    assert headers, f"no {name} cookie set"
    return headers[0]


def test_cookie_is_an_opaque_random_id_with_safe_flags(make_app):
    app = make_app(env="production")
    response = app.test_client().get("/login")  # a form with a CSRF token: an id issued
    header = _cookie_header(response, name="__Host-shop_sid")
    value = header.split(";")[0].split("=", 1)[1]
    # 32 random bytes, the time they were issued and the server's signature: nothing else.
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{6,8}\.[A-Za-z0-9_-]{43}", value)
    assert "Path=/" in header and "Domain" not in header  # what __Host- requires
    assert "HttpOnly" in header
    assert "SameSite=Lax" in header
    assert "Secure" in header
    other = app.test_client().get("/login")
    assert _cookie_header(other, name="__Host-shop_sid") != header


def test_cookie_name_and_secure_flag_are_configurable(make_app):
    app = make_app(session_cookie_name="sid", session_cookie_secure=False, env="production")
    header = _cookie_header(app.test_client().get("/login"), name="sid")
    assert "Secure" not in header


def test_secure_is_off_only_in_development(make_app):
    app = make_app(env="development")
    assert "Secure" not in _cookie_header(app.test_client().get("/login"))


def test_browsing_writes_nothing_to_redis_and_runs_no_sql_when_warm(app, shopper):
    services = app.extensions["shop"]
    pages = ["/", "/?page=2", f"/products/{KETTLE}", "/?category=kitchen", "/?q=kettle"]
    for path in pages:  # warm the cache
        assert shopper.client.get(path).status_code == 200
    before = redis_snapshot(services.redis)
    counter = StatementCounter(services.engines.primary)
    for path in pages * 3:
        assert shopper.client.get(path).status_code == 200
    assert counter.count == 0
    assert redis_snapshot(services.redis) == before
    assert not [k for k in before if ":s:" in k], "a session record exists for a browser"


def test_csrf_token_is_an_hmac_of_the_id_and_needs_no_storage(app, shopper):
    body = shopper.client.get("/api/v1/session").get_json()
    assert body["user"] is None
    token = body["csrf_token"]
    assert csrf_token_valid(SECRET, shopper.session_id, token)
    # Masked afresh for each response (BREACH), and each form of it is accepted.
    again = shopper.client.get("/api/v1/session").get_json()["csrf_token"]
    assert again != token and csrf_token_valid(SECRET, shopper.session_id, again)
    assert csrf_token_valid(SECRET, shopper.session_id, csrf_token_for(SECRET, shopper.session_id))
    assert not csrf_token_valid(SECRET, "x" * 43, token)
    assert not csrf_token_valid(SECRET, shopper.session_id, token[:-2] + "AA")
    assert not app.extensions["shop"].redis.keys("*:s:*")


def test_first_state_change_creates_the_session_record(app, shopper):
    store = app.extensions["shop"].sessions
    shopper.client.get("/login")  # an id issued for the form's token, nothing stored
    assert not store.client.exists(store.key(shopper.session_id))
    assert shopper.add(KETTLE).status_code == 303
    assert store.client.exists(store.key(shopper.session_id))
    assert 0 < store.ttl(shopper.session_id) <= app.extensions["shop"].settings.session_idle_timeout


def test_state_change_without_csrf_token_is_refused(shopper):
    shopper.client.get("/")
    response = shopper.client.post("/cart/add", data={"product_id": KETTLE, "quantity": 1})
    assert response.status_code == 403
    assert shopper.cart()["count"] == 0


def test_tampered_cookie_is_a_new_visitor_and_cannot_post(app, shopper):
    shopper.add(KETTLE)
    good = shopper.cookie
    token = shopper.csrf()
    tampered = ("A" if good[0] != "A" else "B") + good[1:]
    shopper.client.set_cookie("shop_sid", tampered)
    refused = shopper.client.post(
        "/api/v1/cart/items",
        json={"product_id": KETTLE, "quantity": 1},
        headers={"X-CSRF-Token": token},
    )
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "csrf_failed"
    shopper.client.set_cookie("shop_sid", "not-a-session-id")
    page = shopper.client.get("/login")
    assert page.status_code == 200
    assert shopper.cookie != "not-a-session-id"  # a fresh id was issued
    shopper.client.set_cookie("shop_sid", good)
    assert shopper.cart()["count"] == 1  # the real session was untouched


def test_login_rotates_the_id_and_logout_deletes_the_record(app, shopper):
    store = app.extensions["shop"].sessions
    shopper.add(KETTLE)
    anonymous = shopper.session_id
    shopper.register()
    logged_in = shopper.session_id
    assert logged_in != anonymous
    assert not store.client.exists(store.key(anonymous))
    assert store.client.exists(store.key(logged_in))
    assert shopper.client.get("/api/v1/session").get_json()["user"]["email"] == "ada@example.com"
    assert shopper.logout().status_code == 303
    assert shopper.session_id != logged_in
    assert not store.client.exists(store.key(logged_in))
    assert shopper.client.get("/api/v1/session").get_json()["user"] is None
    # The old id, replayed, is nobody.
    shopper.client.set_cookie("shop_sid", logged_in)
    assert shopper.client.get("/api/v1/session").get_json()["user"] is None


def test_absolute_lifetime_ends_a_session_however_active(fake_redis_server):
    from tests.support import fake_client

    now = [1_000_000.0]
    store = SessionStore(
        fake_client(fake_redis_server),
        "t:",
        idle_timeout=60,
        absolute_lifetime=100,
        clock=lambda: now[0],
    )
    store.save("a" * 43, {"k": 1}, user_id=7, created=now[0])
    now[0] += 50
    loaded = store.load("a" * 43)
    assert loaded is not None and loaded != "ended"
    assert loaded.user_id == 7 and loaded.data == {"k": 1}
    now[0] += 51  # active all along, but 101 s old
    assert store.load("a" * 43) == "ended"  # and the id never works again
    assert not store.client.exists(store.key("a" * 43))


def test_idle_ttl_slides_on_use_but_not_on_every_request(fake_redis_server):
    from tests.support import fake_client

    client = fake_client(fake_redis_server)
    store = SessionStore(client, "t:", idle_timeout=3600, absolute_lifetime=86400)
    sid = "b" * 43
    store.save(sid, {}, user_id=None, created=store.clock())
    client.expire(store.key(sid), 3000)  # as if 10 minutes passed
    store.load(sid)
    assert store.ttl(sid) > 3500  # slid back to the idle timeout
    client.expire(store.key(sid), 3590)  # 10 s later: no write needed yet
    store.load(sid)
    assert store.ttl(sid) <= 3590


@pytest.mark.parametrize("path", ["/", "/cart", "/login"])
def test_no_per_user_state_in_process(make_app, path):
    """Everything a request needs comes from Redis: a second app sees the same session."""
    first, second = make_app(), make_app()
    from tests.support import Shopper, shopper_on

    browser = Shopper(first.test_client(), first)
    browser.add(KETTLE)
    browser.register()
    moved = shopper_on(second, cookie_from=browser)
    page = moved.client.get(path)
    assert page.status_code == 200
    assert b"ada@example.com" in page.data
    assert moved.cart()["count"] == 1


def test_responses_that_need_no_id_set_no_cookie(client):
    for path in ("/healthz", "/readyz", "/static/shop.css", "/api/v1/products/1"):
        response = client.get(path)
        assert response.status_code == 200
        assert "Set-Cookie" not in response.headers, path
    for path in ("/", "/?category=kitchen", "/?q=kettle", "/products/1"):  # same for all
        assert "Set-Cookie" not in client.get(path).headers, path
    assert "Set-Cookie" in client.get("/login").headers  # its form carries a CSRF token
