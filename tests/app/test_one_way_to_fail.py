"""One way to fail: with Redis or the primary database down, every route of the app answers in
the same shape, decided by ``shop.web.errors`` alone.

The walk goes through ``app.url_map`` itself, so a route added later is walked too (a route
with no values for its path below fails the test until it gets some). Each route is asked with
GET or each unsafe method it allows, with a valid CSRF token and a plausible body, once by an
anonymous visitor and once by a signed-in shopper. The browsers get their cookies from a healthy
instance on the same database and Redis, as they would behind a balancer.
"""

from __future__ import annotations

import html
import itertools
import re
import secrets

import fakeredis
import pytest
import redis
from flask import Flask
from redis.exceptions import AskError, ClusterDownError, MasterDownError, MovedError, TryAgainError
from werkzeug.test import TestResponse

from shop.redis_client import connect
from tests.support import KETTLE, Shopper, free_port, shopper_on

EMAIL, PASSWORD, NEW_PASSWORD = "ada@example.com", "correct horse 42", "another horse 77"
SHIPPING = {"name": "Ada Lovelace", "address": "1 Analytical St"}
GENEROUS = {f"limit_{rule}": "10000/minute" for rule in ("login", "signup", "reset", "cart")}

# Routes that may still answer 2xx without the service that is down, and why. (A redirect
# after a form, 303, is checked only for staying on the site.)
WORKS_WITHOUT_REDIS = {
    "catalogue.grid",  # the catalogue is read from the database
    "catalogue.product",
    "api.products",
    "api.product",
    "api.categories",
    "account.register_page",  # GET: the empty form needs no session
    "account.login",
    "credentials.reset_request",
    "api.session_info",  # says the session store is down as a visitor with no session
    "credentials.confirm_email",  # a mailed link is its own proof: the database alone
    "ops.healthz",  # the process answers, whatever its dependencies do
    "static",
    "payments.test_payment_page",  # the test provider keeps no state: its id is signed
    "payments.test_payment",  # the provider's side; the shop's webhook then needs the database
}
WORKS_WITHOUT_PRIMARY = {
    "catalogue.grid",  # the catalogue is read from a replica
    "catalogue.product",
    "api.products",
    "api.product",
    "api.categories",
    "cart.view",  # the cart is in Redis, priced from the replica's catalogue
    "api.cart",
    "api.add_item",
    "api.cart_item",
    "checkout.checkout",  # GET: the form, with the cart
    "account.register_page",  # GET: the forms need no database
    "account.login",
    "credentials.reset_request",
    "credentials.password_change",
    "credentials.email_change",
    "api.logout",  # sessions are in Redis
    "api.session_info",
    "payments.test_payment_page",
    "account_sessions.page",
    "account_sessions.api_list",
    "account_sessions.api_end_others",
    "ops.healthz",
    "static",
}
# Not the error shape: the load balancer's endpoints answer their own JSON.
OPS = {"ops.healthz", "ops.readyz"}


def _bodies(links: dict[str, str]) -> dict[tuple[str, str], dict]:
    """A plausible, valid body per (method, rule): the request gets as far as a service."""
    return {
        ("POST", "/register"): {"email": "new@example.com", "password": PASSWORD},
        ("POST", "/login"): {"email": EMAIL, "password": PASSWORD},
        ("POST", "/password/reset"): {"email": EMAIL},
        ("POST", "/password/reset/<token>"): {"new_password": NEW_PASSWORD},
        ("POST", "/account/password"): {
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
        },
        ("POST", "/account/email"): {"password": PASSWORD, "email": "new@example.com"},
        ("POST", "/account/sessions/end"): {"id": links["other_session"]},
        ("POST", "/cart/add"): {"product_id": KETTLE, "quantity": 1},
        ("POST", "/cart/update"): {"product_id": KETTLE, "quantity": 2},
        ("POST", "/cart/remove"): {"product_id": KETTLE},
        ("POST", "/checkout"): {**SHIPPING, "idempotency_key": secrets.token_hex(8)},
        ("POST", "/api/v1/users"): {"email": "new@example.com", "password": PASSWORD},
        ("POST", "/api/v1/session/login"): {"email": EMAIL, "password": PASSWORD},
        ("POST", "/api/v1/password/reset"): {"email": EMAIL},
        ("POST", "/api/v1/password/reset/confirm"): {
            "token": links["reset"],
            "new_password": NEW_PASSWORD,
        },
        ("PUT", "/api/v1/account/password"): {
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
        },
        ("POST", "/api/v1/account/email"): {"password": PASSWORD, "email": "new@example.com"},
        ("POST", "/api/v1/cart/items"): {"product_id": KETTLE, "quantity": 1},
        ("PUT", "/api/v1/cart/items/<id:product_id>"): {"quantity": 2},
        ("POST", "/api/v1/orders"): {"shipping": SHIPPING},
        ("POST", "/test-payments/<payment_id>"): {"outcome": "succeed"},
    }


def _path_values(rule: str, links: dict[str, str]) -> dict[str, str]:
    values = {
        "/products/<id:product_id>": {"product_id": KETTLE},
        "/api/v1/products/<id:product_id>": {"product_id": KETTLE},
        "/api/v1/cart/items/<id:product_id>": {"product_id": KETTLE},
        "/orders/<id:order_id>": {"order_id": links["order"]},
        "/api/v1/orders/<id:order_id>": {"order_id": links["order"]},
        "/orders/<id:order_id>/pay": {"order_id": links["order"]},
        "/api/v1/payments/webhook/<provider>": {"provider": "test"},
        "/test-payments/<payment_id>": {"payment_id": links["payment"]},
        "/verify/<token>": {"token": links["verify"]},
        "/password/reset/<token>": {"token": links["reset"]},
        "/account/email/confirm/<token>": {"token": links["confirm_email"]},
        "/api/v1/account/sessions/<id>": {"id": links["other_session"]},
        "/static/<path:filename>": {"filename": "shop.css"},
        "/images/<name>": {"name": "0" * 64 + ".webp"},  # well-formed; the store is asked
    }
    if "<" not in rule:
        return {}
    if rule.startswith("/admin/"):
        # The walk's browsers are no staff: the back office's guard answers before any view
        # reads its arguments, so any well-formed value does (tests/app/test_admin_access.py
        # walks it as staff).
        return {name: 1 if kind == "id" else "x" for kind, name in _ARGUMENTS.findall(rule)}
    assert rule in values, f"the walk needs valid values for the path of {rule}"
    return values[rule]


_ARGUMENTS = re.compile(r"<(?:([^:<>]+):)?([^<>]+)>")


def _token(link: str, prefix: str) -> str:
    return link.split(prefix, 1)[1]


def _prepare(healthy: Flask, mailbox) -> dict[str, str]:
    """An account with an order, a second session, a pending confirmation, reset and
    address-change links; the values the walk fills paths with."""
    ada = Shopper(healthy.test_client(), healthy)
    ada.sign_up(EMAIL, PASSWORD)
    verify = _token(mailbox.last(EMAIL).link("/verify/"), "/verify/")
    ada.login(EMAIL, PASSWORD)
    ada.add(KETTLE)
    placed = ada.checkout()
    assert placed.status_code == 303, placed.get_data(as_text=True)[:300]
    order = placed.headers["Location"].split("/orders/")[1].split("/")[0]
    payment = ada.client.get(placed.headers["Location"]).headers["Location"]
    ada.post_form("/account/email", {"password": PASSWORD, "email": "next@example.com"})
    confirm = mailbox.last("next@example.com").link("/account/email/confirm/")
    Shopper(healthy.test_client(), healthy).post_form("/password/reset", {"email": EMAIL})
    reset = mailbox.last(EMAIL).link("/password/reset/")
    phone = Shopper(healthy.test_client(), healthy)
    phone.login(EMAIL, PASSWORD)
    sessions = phone.client.get("/api/v1/account/sessions").get_json()["items"]
    other = next(s["id"] for s in sessions if not s["current"])
    return {
        "verify": verify,
        "order": order,
        "payment": payment.split("/test-payments/")[1],
        "confirm_email": _token(confirm, "/account/email/confirm/"),
        "reset": _token(reset, "/password/reset/"),
        "other_session": other,
    }


def _browser(healthy: Flask, broken: Flask, *, signed_in: bool) -> Shopper:
    """A browser whose cookie a healthy instance issued (signed in, or a visitor's)."""
    source = Shopper(healthy.test_client(), healthy)
    if signed_in:
        # The walk may have followed the reset or address-change link with the database up.
        logins = (
            source.login(email, password).status_code
            for email in (EMAIL, "next@example.com")
            for password in (PASSWORD, NEW_PASSWORD)
        )
        assert 303 in logins, "the walk's account can no longer log in"
    else:
        source.csrf()  # a visitor's id
    return shopper_on(broken, cookie_from=source)


def _requests(app: Flask, links: dict[str, str]):
    bodies = _bodies(links)
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        path = app.url_map.bind("localhost").build(
            rule.endpoint, _path_values(rule.rule, links), method=sorted(rule.methods)[0]
        )
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method, path, bodies.get((method, rule.rule))


def _send(browser: Shopper, method: str, path: str, body: dict | None) -> TestResponse:
    if method == "GET":
        return browser.client.get(path)
    if path.startswith("/api/"):
        headers = {"X-CSRF-Token": browser.csrf(), "Idempotency-Key": secrets.token_hex(8)}
        return browser.client.open(path, method=method, json=body or {}, headers=headers)
    return browser.client.open(
        path, method=method, data={"csrf_token": browser.csrf(), **(body or {})}
    )


def _shape_problems(
    endpoint: str, path: str, response: TestResponse, works_without: set[str]
) -> list[str]:
    status = response.status_code
    problems = []
    if status in (200, 201, 202, 204):
        if endpoint not in works_without:
            problems.append(f"{status}, but it needs the service that is down")
    elif not (status == 303 or 400 <= status < 500 or status == 503):
        problems.append(f"status {status}")
    if status in (429, 503) and "Retry-After" not in response.headers:
        problems.append(f"{status} without Retry-After")
    if status == 303 and not response.headers.get("Location", "").startswith("/"):
        problems.append("a redirect off the site")
    if status >= 400 and endpoint not in OPS:
        if path.startswith("/api/"):
            error = (response.get_json(silent=True) or {}).get("error") or {}
            if response.mimetype != "application/json" or not (
                error.get("code") and error.get("message")
            ):
                problems.append(f"{status} not in the JSON error shape")
        elif response.mimetype != "text/html":
            problems.append(f"{status} page as {response.mimetype}")
        elif not html.unescape(response.get_data(as_text=True)).strip():
            problems.append(f"{status} with an empty page")
    return problems


def _walk(
    healthy: Flask,
    broken: Flask,
    links: dict[str, str],
    works_without: set[str],
    *,
    both_ways: bool = True,
):
    """Every route, as a visitor and signed in (``both_ways=False``: each route one way, the
    two ways taking turns, for a walk that repeats one with both)."""
    problems = {}
    seen = set()
    for index, (rule, method, path, body) in enumerate(_requests(broken, links)):
        for signed_in in (False, True) if both_ways else (bool(index % 2),):
            browser = _browser(healthy, broken, signed_in=signed_in)
            response = _send(browser, method, path, body)
            who = "signed in" if signed_in else "visitor"
            found = _shape_problems(rule.endpoint, path, response, works_without)
            if found:
                problems[f"{method} {path} ({who})"] = found
            seen.add(rule.endpoint)
    assert seen == {rule.endpoint for rule in broken.url_map.iter_rules()}
    assert problems == {}


@pytest.fixture
def healthy(make_app) -> Flask:
    return make_app(**GENEROUS)


def test_every_route_fails_one_way_with_redis_down(make_app, healthy, mailbox):
    links = _prepare(healthy, mailbox)
    broken = make_app(redis_client=connect("redis://127.0.0.1:1/0", socket_timeout=0.2))
    _walk(healthy, broken, links, WORKS_WITHOUT_REDIS)


class RefusingRedis(fakeredis.FakeRedis):
    """A Redis whose every command (and pipeline) is answered with the next of ``errors``: a
    cluster resharding (MOVED, ASK, TRYAGAIN) or failing over (CLUSTERDOWN, MASTERDOWN), or a
    plain client sent to one node of a cluster."""

    def __init__(self, errors: list[Exception]) -> None:
        super().__init__(decode_responses=True)
        self.errors = itertools.cycle(errors)

    def execute_command(self, *args, **options):
        raise next(self.errors)

    def pipeline(self, transaction: bool = True, shard_hint=None):
        pipe = super().pipeline(transaction, shard_hint)
        pipe.execute = lambda raise_on_error=True: self.execute_command()  # type: ignore[method-assign]
        return pipe


CLUSTER_REFUSALS = [
    MovedError("3999 127.0.0.1:7001"),
    AskError("3999 127.0.0.1:7001"),
    TryAgainError("Multiple keys request during rehashing of slot"),
    ClusterDownError("The cluster is down"),
    MasterDownError("Link with MASTER is down and replica-serve-stale-data is set to 'no'."),
]


def test_every_route_fails_one_way_when_a_cluster_refuses(make_app, healthy, mailbox):
    links = _prepare(healthy, mailbox)
    broken = make_app(redis_client=RefusingRedis(CLUSTER_REFUSALS))
    # The walk with Redis down covers every route both ways; the refusals take the same path
    # from the client on (shop.redis_client), so each route once, visitor and signed in by turns.
    _walk(healthy, broken, links, WORKS_WITHOUT_REDIS, both_ways=False)


def test_a_redis_bug_is_a_500_page_that_still_renders(make_app):
    """An error that is no outage (a script's bug) is a 500, and the page saying so renders:
    the session it shows is read from Redis too."""
    app = make_app(redis_client=RefusingRedis([redis.ResponseError("ERR a bug in a script")]))
    browser = shopper_on(app)
    for path in ("/", f"/products/{KETTLE}", "/cart", "/no-such-page"):
        response = browser.client.get(path)
        assert response.status_code in (200, 404, 500), (path, response.status_code)
        assert response.mimetype == "text/html" and "</html>" in response.get_data(as_text=True)
    added = browser.client.post("/cart/add", data={"product_id": KETTLE, "quantity": 1})
    assert added.status_code in (400, 403, 500, 503)
    assert "</html>" in added.get_data(as_text=True)


def test_every_route_fails_one_way_with_the_primary_down(make_app, healthy, mailbox, sqlite_url):
    links = _prepare(healthy, mailbox)
    closed = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/test"
    broken = make_app(database_url=closed, replica_urls=(sqlite_url,), db_connect_timeout=1)
    _walk(healthy, broken, links, WORKS_WITHOUT_PRIMARY)


def test_a_logged_out_page_post_is_sent_to_log_in_and_the_api_answers_401(shopper):
    ended = shopper.post_form("/account/sessions/end", {"id": "x"})
    assert ended.status_code == 303
    assert ended.headers["Location"] == "/login?next=/account/sessions/end"
    api = shopper.api("POST", "/account/sessions/end-others")
    assert api.status_code == 401
    assert api.get_json()["error"]["code"] == "login_required"
