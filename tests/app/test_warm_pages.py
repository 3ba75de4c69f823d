"""Warm anonymous pages answered before Flask (shop.web.cached_pages.WarmPages): the bytes and
headers the app gave for that address, without a request context, only while the page is the
one this process's tier holds, and never to a visitor with a session."""

from __future__ import annotations

import time

import pytest
from flask import Flask, request
from prometheus_client import REGISTRY
from sqlalchemy import update

from shop.local_tier import MISSING
from shop.models import products
from shop.page_cache import ADDRESS_KEY, GENERATION_KEY
from shop.web.cached_pages import WarmPages
from tests.support import KETTLE, MUG, RedisRoundTrips, Shopper, wait_for_local_tier

PAGES = ["/", "/?category=kitchen", "/?q=kettle", f"/products/{KETTLE}", "/?page=2&per_page=12"]


def _through_app(app: Flask) -> list[str]:
    """The requests the app itself handled from now on (its hooks ran), by path and query."""
    seen: list[str] = []
    app.before_request(lambda: seen.append(request.full_path.rstrip("?")))
    return seen


def _headers(response) -> dict[str, str]:
    return {name: value for name, value in response.headers.items() if name != "X-Request-ID"}


@pytest.fixture
def warm_app(make_app) -> tuple[Flask, list[str]]:
    app = make_app()
    seen = _through_app(app)
    wait_for_local_tier(app)
    return app, seen


@pytest.mark.parametrize("path", PAGES)
def test_a_warm_page_is_answered_without_the_app_with_the_same_bytes_and_headers(warm_app, path):
    app, seen = warm_app
    client = app.test_client()
    first = client.get(path)
    again = [client.get(path), app.test_client().get(path)]
    assert seen == [path]  # only the first reached the app
    for response in again:
        assert response.status_code == 200
        assert response.data == first.data
        assert _headers(response) == _headers(first)
        assert response.headers["X-Request-ID"] != first.headers["X-Request-ID"]
        assert "Set-Cookie" not in response.headers
    assert "Content-Security-Policy" in again[0].headers  # the security headers still added
    assert int(again[0].headers["Content-Length"]) == len(first.data)


@pytest.mark.parametrize("signed_in", [False, True])
def test_a_visitor_with_a_session_gets_their_header_in_the_warm_page_from_one_load(
    warm_app, signed_in
):
    app, seen = warm_app
    shopper = Shopper(app.test_client(), app)
    if signed_in:
        shopper.register("warm@example.com")
    for product_id in (KETTLE, MUG, 4):
        shopper.add(product_id)
    path = f"/products/{MUG}"
    first = shopper.client.get(path)  # the app: renders the header's shape for this visitor
    seen.clear()
    with RedisRoundTrips() as redis:
        again = shopper.client.get(path)
    # The session's load and nothing else (a signed-in session's cart is its account's: the
    # store reads it in a second round trip, as it does for the app).
    assert seen == [] and redis.count == (2 if signed_in else 1)
    assert again.data == first.data
    assert _headers(again) == _headers(first)
    text = again.get_data(as_text=True)
    assert 'data-testid="cart-count">3<' in text
    assert ("warm@example.com" in text) is signed_in
    expected = "private, no-cache, no-store" if signed_in else "private, no-cache"
    assert again.headers["Cache-Control"] == expected
    assert "Set-Cookie" not in again.headers
    # Another visitor's session is its own: their count, not this one's.
    other = Shopper(app.test_client(), app)
    other.add(KETTLE)
    assert 'data-testid="cart-count">1<' in other.client.get(path).get_data(as_text=True)


def test_a_cookie_that_is_no_live_session_goes_to_the_app_which_loads_nothing_again(warm_app):
    app, seen = warm_app
    path = f"/products/{MUG}"
    app.test_client().get(path)
    shopper = Shopper(app.test_client(), app)
    shopper.add(KETTLE)
    shopper.client.get(path)
    cookie = shopper.client.get_cookie(shopper.cookie_name).value
    app.extensions["shop"].redis.delete(*app.extensions["shop"].redis.keys("*{s:*"))
    seen.clear()
    with RedisRoundTrips() as redis:
        page = shopper.client.get(path)
    assert seen == [path] and redis.count == 1  # loaded once, in front of the app
    assert page.headers["Cache-Control"].startswith("public")  # no record: anonymous
    forged = app.test_client()
    forged.set_cookie(shopper.cookie_name, cookie[:-2] + "xx")
    assert forged.get(path).headers["Cache-Control"].startswith("public")
    assert seen == [path, path]


def test_other_methods_always_reach_the_app(warm_app):
    app, seen = warm_app
    path = f"/products/{MUG}"
    app.test_client().get(path)  # warm: the next anonymous visitor is answered before the app
    seen.clear()
    anonymous = app.test_client()
    assert anonymous.head(path).status_code == 200
    anonymous.post(path)  # 405, from the app
    # A cookie of another site's script is no session: still the warm answer.
    anonymous.set_cookie("_ga", "GA1.1.42")
    assert anonymous.get(path).status_code == 200
    assert seen == [path, path]


def test_pages_the_app_does_not_keep_are_never_answered_before_it(warm_app):
    app, seen = warm_app
    shopper = Shopper(app.test_client(), app)
    client = app.test_client()
    for _ in range(2):
        assert client.get("/?page=99").status_code == 404
        assert client.get("/?per_page=7").status_code == 400
    added = shopper.add(KETTLE, next="/?category=kitchen")
    seen.clear()
    for _ in range(2):
        page = shopper.client.get(added.headers["Location"])
        assert "Added 1 × Blue Kettle" in page.get_data(as_text=True)
    assert len(seen) == 2


def test_a_change_sends_the_next_visitor_to_the_app_on_every_instance(make_app):
    first, second = make_app(), make_app()
    seen = _through_app(second)
    for app in (first, second):
        wait_for_local_tier(app)
    path = f"/products/{KETTLE}"
    for app in (first, second):
        for _ in range(2):
            assert "€19.99" in app.test_client().get(path).get_data(as_text=True)
    assert seen == [path]
    services = first.extensions["shop"]
    tier = second.extensions["shop"].catalogue.cache.local
    before = tier.generation
    with services.engines.primary.begin() as conn:
        conn.execute(update(products).where(products.c.id == KETTLE).values(price_cents=2450))
    services.catalogue.invalidate([KETTLE])
    assert "€24.50" in first.test_client().get(path).get_data(as_text=True)
    deadline = time.monotonic() + 3
    while tier.generation == before:  # the message on its way to the other instance
        assert time.monotonic() < deadline, "the change never reached the other instance"
        time.sleep(0.005)
    assert "€24.50" in second.test_client().get(path).get_data(as_text=True)
    assert seen == [path, path]


def test_an_answer_made_while_the_tier_dropped_something_is_not_kept(warm_app):
    app, seen = warm_app
    pages = app.extensions["shop"].pages
    path = f"/products/{KETTLE}"
    original = pages.remember

    def drop_meanwhile(environ, answer):
        # Another instance's change arrives while this request is being answered.
        pages.local.drop([MUG], [], False)
        return original(environ, answer)

    pages.remember = drop_meanwhile
    app.test_client().get(path)
    pages.remember = original
    assert pages.warm(("", path, "")) is None
    app.test_client().get(path)  # answered afresh: kept this time
    assert pages.warm(("", path, "")) is not None
    assert seen == [path, path]


def test_made_up_addresses_are_bounded_and_push_out_only_each_other(warm_app):
    app, seen = warm_app
    services = app.extensions["shop"]
    services.pages.max_addresses = 3
    client = app.test_client()
    for i in range(5):
        client.get(f"/?utm_source=mail{i}")
    warm = [services.pages.warm(("", "/", f"utm_source=mail{i}")) is not None for i in range(5)]
    assert warm == [False, False, True, True, True]  # the oldest two were forgotten
    assert len(seen) == 5
    local = services.catalogue.cache.local
    assert local.get(services.pages.grid_key(warm_grid(app))) is not MISSING  # the page stays


def warm_grid(app: Flask):
    with app.test_request_context("/"):
        return app.extensions["shop"].catalogue.grid_query(
            category=None,
            q="",
            page=1,
            per_page=app.extensions["shop"].catalogue.paging.per_page_default,
        )


def test_the_remembered_address_is_the_one_asked_for(warm_app):
    app, _ = warm_app
    pages = app.extensions["shop"].pages
    environ = {"PATH_INFO": "/", "QUERY_STRING": "a=1", "SCRIPT_NAME": "/shop"}
    assert pages.address(environ) == ("/shop", "/", "a=1")
    assert ADDRESS_KEY.startswith("shop.") and GENERATION_KEY.startswith("shop.")


def _middlewares(app: Flask) -> list[type]:
    found, layer = [], app.wsgi_app
    while hasattr(layer, "wsgi_app") or hasattr(layer, "app"):
        found.append(type(layer))
        layer = getattr(layer, "wsgi_app", None) or layer.app
    return found


def test_not_where_the_catalogue_checks_its_sqlite_file_before_each_lookup(make_app):
    assert WarmPages in _middlewares(make_app())
    # Without a Redis URL (the embedded mode), the ``product`` command of another process
    # changes the file the catalogue watches: every lookup must go through it.
    alone = make_app(redis_url=None)
    assert alone.extensions["shop"].catalogue.changes is not None
    assert WarmPages not in _middlewares(alone)


def test_a_warm_answer_is_counted_under_its_route_and_as_a_local_page_hit(make_app):
    app = make_app(metrics_port=9999)
    wait_for_local_tier(app)
    client = app.test_client()
    route = {"route": "/products/<id:product_id>", "method": "GET", "status": "200"}

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    client.get(f"/products/{MUG}")
    requests = sample("shop_http_requests_total", **route)
    hits = sample("shop_cache_lookups_total", cache="page", tier="local")
    client.get(f"/products/{MUG}")
    assert sample("shop_http_requests_total", **route) == requests + 1
    assert sample("shop_cache_lookups_total", cache="page", tier="local") == hits + 1
