"""Catalogue pages at the cost of bytes: the same bytes for every anonymous visitor, no cookie,
public for a shared cache; kept rendered per process and in Redis, dropped with the catalogue's
data on every instance; a visitor with a session gets their own header filled in."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import update

from shop.models import categories, products
from shop.redis_client import connect
from tests.support import (
    KETTLE,
    MUG,
    RedisRoundTrips,
    Shopper,
    StatementCounter,
    fake_client,
    redis_snapshot,
    wait_for_local_tier,
)

PAGES = ["/", "/?category=kitchen", "/?q=kettle", f"/products/{KETTLE}"]


def _renders(monkeypatch) -> list[str]:
    """The catalogue templates rendered from now on, by name."""
    from shop.web import catalogue

    rendered: list[str] = []
    original = catalogue.render_template

    def counted(name, **context):
        rendered.append(name)
        return original(name, **context)

    monkeypatch.setattr(catalogue, "render_template", counted)
    return rendered


def _html_keys(app) -> list[str]:
    redis = app.extensions["shop"].redis
    return [key for key in redis.scan_iter("*cat:{html:*") if not key.endswith(":lock")]


def _until(check, timeout: float = 2.0) -> None:
    """For what another instance learns by pub/sub: the time a message takes."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the change never reached the other instance"
        time.sleep(0.01)


@pytest.mark.parametrize("path", PAGES)
def test_anonymous_visitors_get_the_same_bytes_no_cookie_and_a_public_page(make_app, path):
    app = make_app()
    first, second = app.test_client(), make_app().test_client()  # two instances
    one, other = first.get(path), second.get(path)
    assert one.status_code == other.status_code == 200
    assert one.data == other.data == first.get(path).data
    for response in (one, other):
        assert "Set-Cookie" not in response.headers
        assert response.headers["Cache-Control"] == (
            "public, max-age=0, s-maxage=10, stale-while-revalidate=30"
        )
        assert response.headers["Vary"] == "Cookie"
        assert b"csrf_token" not in response.data
    tags = one.headers["xkey"].split()
    assert tags[0] == "shop" and f"p{KETTLE}" in tags
    assert not first.get_cookie(app.session_interface.cookie_name)


def test_edge_lifetimes_come_from_the_settings(make_app):
    app = make_app(page_edge_seconds=5, page_edge_stale_seconds=60)
    response = app.test_client().get("/")
    assert response.headers["Cache-Control"] == (
        "public, max-age=0, s-maxage=5, stale-while-revalidate=60"
    )


def test_xkey_names_every_product_shown(client):
    kitchen = client.get("/?category=kitchen").headers["xkey"]
    assert kitchen == "shop p1 p2 p3"
    assert client.get(f"/products/{MUG}").headers["xkey"] == f"shop p{MUG}"
    assert client.get("/?q=zeppelin").headers["xkey"] == "shop"


def test_a_warm_page_is_not_rendered_again_for_anyone(app, monkeypatch):
    anonymous = app.test_client()
    for path in PAGES:
        anonymous.get(path)
    rendered = _renders(monkeypatch)
    shopper = Shopper(app.test_client(), app)
    shopper.add(KETTLE, 2)
    shopper.register("ada@example.com")
    for path in PAGES:
        assert anonymous.get(path).status_code == 200
        page = shopper.client.get(path)
        assert page.status_code == 200
        assert page.headers["Cache-Control"].startswith("private")
        assert "no-cache" in page.headers["Cache-Control"]
        assert "no-store" in page.headers["Cache-Control"]  # signed in: never kept anywhere
        assert "Cookie" in page.headers["Vary"]
        text = page.get_data(as_text=True)
        assert 'data-testid="cart-count">2<' in text
        assert "ada@example.com" in text and "Log out" in text and "Log in" not in text
    assert [name for name in rendered if name.startswith("catalogue/")] == []


def test_a_visitor_with_a_session_gets_their_own_header_in_the_cached_page(app):
    anonymous = app.test_client().get(f"/products/{KETTLE}").get_data(as_text=True)
    shopper = Shopper(app.test_client(), app)
    shopper.add(MUG, 3)
    mine = shopper.client.get(f"/products/{KETTLE}")
    assert "Set-Cookie" not in mine.headers
    text = mine.get_data(as_text=True)
    assert 'data-testid="cart-count">3<' in text and 'data-testid="cart-count">0<' in anonymous
    # Everything but the header is the anonymous page's.
    assert text.split("</header>")[1] == anonymous.split("</header>")[1]


def test_the_signed_in_email_is_escaped_in_the_header(app):
    shopper = Shopper(app.test_client(), app)
    shopper.register("o'<b>x</b>@example.com")
    text = shopper.client.get("/").get_data(as_text=True)
    assert "<b>x</b>" not in text and "&lt;b&gt;x&lt;/b&gt;" in text


def test_staff_see_the_back_office_link_in_a_cached_page(app):
    from tests.support import back_office_user

    app.test_client().get("/")  # cached by an anonymous visitor
    staff = back_office_user(app, "staff")
    assert 'href="/admin' in staff.client.get("/").get_data(as_text=True)
    assert 'href="/admin' not in app.test_client().get("/").get_data(as_text=True)


def test_unknown_parameters_and_spellings_share_one_entry(app):
    client = app.test_client()
    plain = client.get("/?category=kitchen")
    for path in (
        "/?category=kitchen&utm_source=mail",
        "/?utm_campaign=x&category=kitchen&page=1",
        "/?category=kitchen&per_page=24&fbclid=abc",
    ):
        assert client.get(path).data == plain.data, path
    assert len(_html_keys(app)) == 1
    # The links and the forms' way back are the canonical URL, never the request's.
    text = client.get("/?category=kitchen&utm_source=mail").get_data(as_text=True)
    assert "utm_source" not in text and 'name="next" value="/?category=kitchen"' in text
    client.get("/?q=+Blue+KETTLE+")
    client.get("/?q=blue%20kettle")
    assert len(_html_keys(app)) == 2


def test_a_product_change_drops_its_pages_on_every_instance(make_app):
    first, second = make_app(), make_app()
    for app in (first, second):
        wait_for_local_tier(app)
    paths = [f"/products/{KETTLE}", "/?category=kitchen"]
    for app in (first, second):
        for path in paths:
            assert "€19.99" in app.test_client().get(path).get_data(as_text=True)
    services = first.extensions["shop"]
    with services.engines.primary.begin() as conn:
        conn.execute(update(products).where(products.c.id == KETTLE).values(price_cents=2450))
    services.catalogue.invalidate([KETTLE])
    # At once on the instance that made the change, and in Redis: a third instance, its own
    # memory empty, reads the new page.
    third = make_app()
    for app in (first, third):
        for path in paths:
            assert "€24.50" in app.test_client().get(path).get_data(as_text=True), path
    for path in paths:  # the other: as the message arrives
        _until(lambda path=path: "€24.50" in second.test_client().get(path).get_data(as_text=True))
    # A page that does not show the Kettle was left alone.
    assert len([k for k in _html_keys(first) if ":p:" in k]) == 1


def test_a_structural_change_drops_product_pages_too(make_app):
    first, second = make_app(), make_app()
    for app in (first, second):
        wait_for_local_tier(app)
    path = f"/products/{MUG}"
    for app in (first, second):
        assert ">Kitchen</a>" in app.test_client().get(path).get_data(as_text=True)
    services = first.extensions["shop"]
    with services.engines.primary.begin() as conn:
        conn.execute(update(categories).where(categories.c.id == 1).values(name="Cookware"))
    services.catalogue.invalidate([], structural=True)
    assert ">Cookware</a>" in first.test_client().get(path).get_data(as_text=True)
    assert ">Cookware</a>" in make_app().test_client().get(path).get_data(as_text=True)
    _until(lambda: ">Cookware</a>" in second.test_client().get(path).get_data(as_text=True))


def test_the_product_command_and_a_checkout_reach_the_cached_pages(app, shopper):
    client = app.test_client()
    assert "only 3 left" in client.get(f"/products/{MUG}").get_data(as_text=True)
    result = app.test_cli_runner().invoke(args=["product", "set", str(MUG), "--stock", "4"])
    assert result.exit_code == 0, result.output
    assert "only 4 left" in client.get(f"/products/{MUG}").get_data(as_text=True)
    shopper.register()
    shopper.add(MUG, 2)
    shopper.checkout()
    assert "only 2 left" in shopper.client.get(f"/products/{MUG}").get_data(as_text=True)
    assert "only 2 left" in client.get("/?category=kitchen").get_data(as_text=True)


def test_a_warm_anonymous_page_costs_no_redis_and_no_sql(app):
    wait_for_local_tier(app)
    client = app.test_client()
    for path in PAGES:
        client.get(path)
    services = app.extensions["shop"]
    counter = StatementCounter(services.engines.primary)
    with RedisRoundTrips() as redis:
        for path in PAGES * 3:
            assert client.get(path).status_code == 200
    assert redis.count == 0 and counter.count == 0


def test_a_warm_page_for_a_session_costs_one_redis_round_trip_and_writes_nothing(app):
    wait_for_local_tier(app)
    shopper = Shopper(app.test_client(), app)
    for product_id in (KETTLE, MUG, 4):
        shopper.add(product_id)
    for path in PAGES:
        shopper.client.get(path)
    services = app.extensions["shop"]
    before = redis_snapshot(services.redis)
    counter = StatementCounter(services.engines.primary)
    for path in PAGES:
        with RedisRoundTrips() as redis:
            page = shopper.client.get(path)
        assert 'data-testid="cart-count">3<' in page.get_data(as_text=True)
        assert redis.count == 1, path  # the session's load
    assert counter.count == 0
    assert redis_snapshot(services.redis) == before


def test_pages_that_are_not_kept(app, shopper):
    client = app.test_client()
    assert client.get("/?page=99").status_code == 404
    assert client.get("/products/9999").status_code == 404
    assert client.get("/?category=nope").status_code == 404
    assert client.get("/?per_page=7").status_code == 400
    assert _html_keys(app) == []
    started = time.monotonic()
    assert client.get("/?page=99").status_code == 404  # no rebuild lock was left behind
    assert time.monotonic() - started < 1
    # The page an add redirects to names what was added, for this visitor alone.
    added = shopper.add(KETTLE, next="/?category=kitchen&utm=1")
    page = shopper.client.get(added.headers["Location"])
    assert "Added 1 × Blue Kettle" in page.get_data(as_text=True)
    assert page.headers["Cache-Control"].startswith("private")
    assert "Added" not in client.get("/?category=kitchen").get_data(as_text=True)


def test_pages_render_without_redis(make_app):
    app = make_app(redis_client=connect("redis://127.0.0.1:1/0", socket_timeout=0.2))
    client = app.test_client()
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 200, path
        assert "Blue Kettle" in response.get_data(as_text=True)
        assert "Set-Cookie" not in response.headers


def test_a_browser_adds_to_cart_from_a_cached_page_without_a_token(app):
    """The form as a browser submits it: no token in the page, Sec-Fetch-Site sent."""
    browser = app.test_client()
    page = browser.get("/?category=kitchen").get_data(as_text=True)
    assert 'name="csrf_token"' not in page
    added = browser.post(
        "/cart/add",
        data={"product_id": KETTLE, "quantity": 1, "next": "/?category=kitchen"},
        headers={"Sec-Fetch-Site": "same-origin"},
    )
    assert added.status_code == 303 and "Set-Cookie" in added.headers
    after = browser.get(added.headers["Location"])
    assert 'data-testid="cart-count">1<' in after.get_data(as_text=True)
    assert 'data-testid="cart-count">1<' in browser.get("/").get_data(as_text=True)
    logged_out = browser.post("/logout", headers={"Sec-Fetch-Site": "same-origin"})
    assert logged_out.status_code in (302, 303)


def test_instances_with_other_templates_or_settings_keep_their_pages_apart(
    make_app, fake_redis_server
):
    euro = make_app().test_client().get(f"/products/{KETTLE}").get_data(as_text=True)
    dollar = make_app(currency="USD", redis_client=fake_client(fake_redis_server))
    assert "€19.99" in euro
    assert "$19.99" in dollar.test_client().get(f"/products/{KETTLE}").get_data(as_text=True)


def test_a_page_rebuilt_before_this_process_hears_of_a_change_is_made_from_redis(
    fake_redis_server,
):
    """Redis applies an invalidation before any process hears of it: a page rebuilt in that
    moment must not be made of this process's old copy and stored, under the new epoch, for
    every instance to serve until its TTL."""
    from shop.catalogue_cache import CacheAside
    from shop.page_cache import ACCOUNT_HOLE, PageCache
    from tests.support import fake_client

    writer = CacheAside(fake_client(fake_redis_server), "t:", ttl=60)
    reader = CacheAside(fake_client(fake_redis_server), "t:", ttl=60, local_ttl=30)
    assert reader.local is not None
    reader.local.live, reader.local._pid = True, -1  # subscribed, but no message arrives yet
    shown = {"name": "Kitchen"}

    def categories() -> dict:
        key = reader.key("categories")
        return reader.get_or_load(key, lambda _position: dict(shown), is_list=True)

    assert categories() == {"name": "Kitchen"}  # kept in the reader's memory
    shown["name"] = "Cooking"  # renamed on another instance: Redis forgets at once
    writer.invalidate(keys=[writer.key("categories")], structural=True)
    page = PageCache(reader).get(
        "t:html:p:1", lambda: (f"<h1>{categories()['name']}</h1>{ACCOUNT_HOLE}", [1])
    )
    assert b"Cooking" in page.head
    kept = PageCache(writer).get("t:html:p:1", lambda: pytest.fail("the page was not kept"))
    assert b"Cooking" in kept.head
