"""The edge cache (Varnish, between HAProxy's rules and the instances) through the stack's
public URL: an anonymous catalogue page is kept and served from it, a product change reaches
the next anonymous load (the purger turns the shop's invalidation into a purge), and a signed-in
shopper's pages, or any answer that sets a cookie, are never kept nor served from it.

``X-Cache`` says what the edge did: ``HIT`` (from its copy), ``MISS`` (fetched, kept if the
shop marked it public) or ``PASS`` (never a candidate: a session, a POST, a private path).
"""

from __future__ import annotations

import html
import re
import secrets
import time

import requests

from deploy.stack import stack as stack_module
from deploy.stack.cli import run_flask
from tests.stack.conftest import Shopper
from tests.stack.test_stack import sign_up_and_log_in

_PRODUCT_LINK = re.compile(r'href="/products/(\d+)"')


def visitor_get(topology: stack_module.Topology, path: str) -> requests.Response:
    """A new visitor's load: no cookie, nothing remembered."""
    return requests.get(topology.url + path, timeout=10)


def a_product_on_the_grid(topology: stack_module.Topology, nth: int = 0) -> int:
    found = _PRODUCT_LINK.findall(visitor_get(topology, "/").text)
    assert len(found) > nth, "the grid links too few products"
    return int(sorted(set(found), key=found.index)[nth])


def product_name(topology: stack_module.Topology, product_id: int) -> str:
    answer = requests.get(f"{topology.url}/api/v1/products/{product_id}", timeout=10)
    return answer.json()["name"]


def test_an_anonymous_catalogue_page_is_a_miss_then_a_hit(healthy_stack):
    token = secrets.token_hex(4)
    product_id = a_product_on_the_grid(healthy_stack)
    for path in (f"/?q=edge{token}", f"/products/{product_id}?from=edge{token}"):
        first, second = visitor_get(healthy_stack, path), visitor_get(healthy_stack, path)
        assert first.status_code == second.status_code == 200
        assert first.headers.get("X-Cache") == "MISS", (path, first.headers)
        assert second.headers.get("X-Cache") == "HIT", (path, second.headers)
        assert "Set-Cookie" not in second.headers
        assert "public" in second.headers.get("Cache-Control", "")
        assert "xkey" not in second.headers, "the tags stay in the edge"
        assert second.headers.get("X-Served-By") == first.headers.get("X-Served-By")
        assert second.text == first.text


def test_a_product_change_reaches_the_next_anonymous_load(healthy_stack):
    product_id = a_product_on_the_grid(healthy_stack)
    old_name = product_name(healthy_stack, product_id)
    pages = [f"/products/{product_id}", "/"]
    for path in pages:  # warm: the second load is the edge's copy
        visitor_get(healthy_stack, path)
        again = visitor_get(healthy_stack, path)
        assert again.headers.get("X-Cache") == "HIT", (path, again.headers)
        assert old_name in html.unescape(again.text)
    new_name = f"Edge kettle {secrets.token_hex(3)}"
    try:
        done = run_flask(
            healthy_stack,
            ["product", "set", str(product_id), "--name", new_name],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        for path in pages:
            after = visitor_get(healthy_stack, path)
            assert new_name in html.unescape(after.text), (path, after.headers.get("X-Cache"))
            assert after.headers.get("X-Cache") == "MISS", path
    finally:
        run_flask(
            healthy_stack,
            ["product", "set", str(product_id), "--name", old_name],
            capture_output=True,
            timeout=60,
        )
        # The purger purges each tag again a second later (deploy/stack/edge_purger.py): let
        # that pass, or it drops the next test's fresh copies of this same product mid-test.
        time.sleep(1.5)


def test_a_signed_in_shopper_never_gets_the_edges_copy(healthy_stack):
    # Not the product the test above changes: the purger purges it once more a second after
    # its last change (deploy/stack/edge_purger.py), which could fall between this test's loads.
    product_id = a_product_on_the_grid(healthy_stack, nth=1)
    path = f"/products/{product_id}"
    for _ in range(2):
        visitor_get(healthy_stack, path)
    assert visitor_get(healthy_stack, path).headers.get("X-Cache") == "HIT"

    shopper = Shopper(healthy_stack.url)
    email = f"edge-{secrets.token_hex(5)}@example.com"
    sign_up_and_log_in(shopper, email)
    shopper.get(path)
    assert shopper.submit("/cart/add", {"product_id": product_id, "quantity": 1}).ok
    for each in (path, "/", path):
        page = shopper.get(each)
        assert page.headers.get("X-Cache") == "PASS", (each, page.headers)
        assert email in page.text, f"{each}: not the shopper's own header"
        assert shopper.cart_count == "1", each
        assert "private" in page.headers.get("Cache-Control", ""), each

    anonymous = visitor_get(healthy_stack, path)
    assert anonymous.headers.get("X-Cache") == "HIT", "the shared copy is still the anonymous one"
    assert email not in anonymous.text


def test_an_answer_that_sets_a_cookie_is_never_served_from_the_edge(healthy_stack):
    """A kept Set-Cookie would hand one session to every visitor: each answer that sets one
    must come from an instance, each with a session of its own."""
    product_id = a_product_on_the_grid(healthy_stack)
    cookies: list[str] = []
    for path in ("/", f"/products/{product_id}", "/login", "/cart"):
        for _ in range(3):
            answer = visitor_get(healthy_stack, path)
            if "Set-Cookie" in answer.headers:
                assert answer.headers.get("X-Cache") != "HIT", (path, answer.headers)
                cookies.append(answer.headers["Set-Cookie"].split(";")[0])
    assert cookies, "no page set a cookie: /login always does (its form's CSRF token)"
    assert len(set(cookies)) == len(cookies), "a session cookie was handed out twice"
