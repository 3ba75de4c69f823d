"""Transport and headers: cross-site requests refused whatever token they carry, HSTS over
HTTPS, browser features denied, /readyz details only for the balancer, an opaque X-Served-By."""

from __future__ import annotations

import socket

import pytest

from tests.support import KETTLE, MUG, TEAPOT, Shopper

CROSS_SITE = [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},  # a sibling subdomain is another site too
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
]


@pytest.mark.parametrize("headers", CROSS_SITE)
def test_a_cross_site_state_change_is_refused_even_with_a_valid_token(shopper, headers):
    page = shopper.post_form("/cart/add", {"product_id": KETTLE, "quantity": 1}, headers=headers)
    assert page.status_code == 403
    assert b"came from another site" in page.data
    api = shopper.api("POST", "/cart/items", {"product_id": KETTLE, "quantity": 1}, headers)
    assert api.status_code == 403
    assert api.get_json()["error"]["code"] == "cross_origin"
    assert shopper.cart()["count"] == 0


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},  # typed into the address bar, a bookmark
        {"Origin": "http://localhost"},  # the test client's own host
        {},  # not a browser: the token alone decides
    ],
)
def test_same_origin_and_non_browser_requests_pass(shopper, headers):
    page = shopper.post_form("/cart/add", {"product_id": KETTLE, "quantity": 1}, headers=headers)
    assert page.status_code == 303
    assert shopper.cart()["count"] == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "same-origin"},  # every browser since 2023
        {"Sec-Fetch-Site": "none"},
        {"Origin": "http://localhost"},  # an older browser: Origin on every POST
    ],
)
def test_a_browser_on_the_shops_own_page_needs_no_token(client, headers):
    """A first visit's first click: no cookie, no token, and the page that sent it is ours."""
    form = {"product_id": KETTLE, "quantity": 2}
    added = client.post("/cart/add", data=form, headers=headers)
    assert added.status_code == 303
    assert client.get("/api/v1/cart").get_json()["count"] == 2
    api = client.post(
        "/api/v1/cart/items", json={"product_id": MUG, "quantity": 1}, headers=headers
    )
    assert api.status_code == 200 and api.get_json()["count"] == 3


@pytest.mark.parametrize("headers", CROSS_SITE)
def test_a_cross_site_form_without_a_token_is_refused_too(client, headers):
    refused = client.post("/cart/add", data={"product_id": KETTLE}, headers=headers)
    assert refused.status_code == 403 and b"came from another site" in refused.data
    assert "Set-Cookie" not in refused.headers


def test_a_request_that_says_nothing_of_its_origin_still_needs_the_token(shopper):
    """curl and API clients: docs/api.md's contract, 403 csrf_failed without the token."""
    client = shopper.client
    page = client.post("/cart/add", data={"product_id": KETTLE, "quantity": 1})
    assert page.status_code == 403 and b"CSRF token" in page.data
    api = client.post("/api/v1/cart/items", json={"product_id": KETTLE, "quantity": 1})
    assert api.get_json()["error"]["code"] == "csrf_failed"
    shopper.csrf()  # a session and its token: now the token alone decides
    wrong = client.post("/api/v1/cart/items", json={"product_id": KETTLE, "quantity": 1})
    assert wrong.get_json()["error"]["code"] == "csrf_failed"
    assert shopper.cart()["count"] == 0


def test_a_cross_site_get_is_not_refused(client):
    assert client.get("/", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200


def test_hsts_only_on_requests_that_came_over_https(make_app):
    app = make_app(trusted_proxies=1)
    secure = app.test_client().get("/healthz", headers={"X-Forwarded-Proto": "https"})
    assert secure.headers["Strict-Transport-Security"] == "max-age=63072000; includeSubDomains"
    plain = app.test_client().get("/healthz")
    assert "Strict-Transport-Security" not in plain.headers
    off = make_app(trusted_proxies=1, hsts_seconds=0).test_client()
    assert (
        "Strict-Transport-Security"
        not in off.get("/healthz", headers={"X-Forwarded-Proto": "https"}).headers
    )


def test_browser_features_and_window_openers_are_denied(client):
    response = client.get("/")
    assert "camera=()" in response.headers["Permissions-Policy"]
    assert "payment=()" in response.headers["Permissions-Policy"]
    assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"


def test_every_answer_carries_the_security_headers_once(client):
    """Pages, werkzeug's own errors (an unknown address, a wrong method) and the API alike;
    a request id the balancer sent is the one answered, and no header comes twice."""
    answers = [
        client.get("/"),
        client.get("/no-such-page"),
        client.put("/cart/add"),
        client.get("/api/v1/products?per_page=x", headers={"X-Request-ID": "edge-7"}),
    ]
    for answer in answers:
        names = [name.lower() for name, _ in answer.headers]
        for name in ("content-security-policy", "x-frame-options", "x-content-type-options"):
            assert names.count(name) == 1, (answer.status_code, name)
        assert names.count("x-request-id") == 1
    assert [a.status_code for a in answers] == [200, 404, 405, 400]
    assert answers[-1].headers["X-Request-ID"] == "edge-7"
    assert answers[0].headers["X-Request-ID"] != answers[1].headers["X-Request-ID"]


def test_readyz_details_only_for_the_balancer_or_a_token(make_app):
    app = make_app(trusted_proxies=1, readyz_token="operator-token-123")
    public = app.test_client().get("/readyz", headers={"X-Forwarded-For": "203.0.113.9"})
    assert public.status_code == 200
    assert public.get_json() == {"status": "ready"}
    with_token = app.test_client().get(
        "/readyz",
        headers={"X-Forwarded-For": "203.0.113.9", "X-Readyz-Token": "operator-token-123"},
    )
    assert with_token.get_json()["primary"]["ok"] is True
    wrong = app.test_client().get(
        "/readyz", headers={"X-Forwarded-For": "203.0.113.9", "X-Readyz-Token": "guess"}
    )
    assert wrong.get_json() == {"status": "ready"}
    balancer = app.test_client().get("/readyz")  # the test client is 127.0.0.1
    assert "redis" in balancer.get_json()


def test_readyz_without_details_still_says_not_ready(make_app):
    from shop.redis_client import connect

    app = make_app(
        trusted_proxies=1, redis_client=connect("redis://127.0.0.1:1/0", socket_timeout=0.2)
    )
    public = app.test_client().get("/readyz", headers={"X-Forwarded-For": "203.0.113.9"})
    assert public.status_code == 503
    assert public.get_json() == {"status": "not ready"}


def test_served_by_is_an_opaque_name_unless_one_is_set(make_app):
    first = make_app(instance_name=None).test_client().get("/healthz")
    name = first.headers["X-Served-By"]
    assert name.startswith("i-") and socket.gethostname() not in name
    assert (
        make_app(instance_name=None).test_client().get("/healthz").headers["X-Served-By"] == name
    )  # stable for the host
    assert (
        make_app(instance_name="app1").test_client().get("/healthz").headers["X-Served-By"]
        == "app1"
    )


def test_a_response_that_hands_out_an_id_is_never_stored(client):
    response = client.get("/api/v1/session")
    assert "Set-Cookie" in response.headers
    assert response.cache_control.no_store and response.cache_control.private


def test_a_cart_holds_a_bounded_number_of_products(make_app):
    app = make_app(max_cart_lines=2)
    shopper = Shopper(app.test_client(), app)
    assert shopper.add(KETTLE).status_code == 303
    assert shopper.add(MUG).status_code == 303
    refused = shopper.api("POST", "/cart/items", {"product_id": 4, "quantity": 1})
    assert refused.status_code == 409
    assert refused.get_json()["error"]["code"] == "cart_full"
    by_put = shopper.api("PUT", "/cart/items/5", {"quantity": 1})
    assert by_put.status_code == 409
    assert shopper.add(KETTLE).status_code == 303  # more of a product already there is fine
    assert shopper.cart()["count"] == 3
    assert TEAPOT not in {item["product_id"] for item in shopper.cart()["items"]}
