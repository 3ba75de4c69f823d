""" "Add to cart" says what it added on the page it returns to, with a link to the cart, without
JavaScript; and every page offers a skip link, a main landmark and labelled fields."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest

from shop.added_notice import ADDED_NOTICE_SECONDS, Added, added_token, read_added
from tests.support import (
    KETTLE,
    MUG,
    SECRET,
    StatementCounter,
    page_text,
    redis_snapshot,
    shopper_on,
)

NOTICE = re.compile(r'<p class="notice added"[^>]*>(.*?)</p>', re.S)


def notice_on(response) -> str | None:
    found = NOTICE.search(page_text(response))
    return re.sub(r"\s+", " ", found.group(1)).strip() if found else None


def test_the_page_the_add_returns_to_says_what_was_added(shopper):
    added = shopper.post_form(
        "/cart/add", {"product_id": KETTLE, "quantity": 2, "next": "/?page=2"}
    )
    assert added.status_code == 303
    back = urlsplit(added.headers["Location"])
    assert back.path == "/" and parse_qs(back.query)["page"] == ["2"]
    page = shopper.client.get(added.headers["Location"])
    assert page.status_code == 200
    assert notice_on(page) == 'Added 2 × Blue Kettle to your cart — <a href="/cart">View cart</a>'
    assert 'rel="prev" href="/?page=1"' in page_text(page)
    assert not re.search(r'href="[^"]*added=', page_text(page))  # no link carries it on

    again = shopper.post_form(
        "/cart/add", {"product_id": MUG, "quantity": 1, "next": added.headers["Location"]}
    )
    assert parse_qs(urlsplit(again.headers["Location"]).query)["added"][0].startswith(f"{MUG}.1.")
    assert notice_on(shopper.client.get(again.headers["Location"])).startswith("Added 1 × Red Mug")


def test_the_cart_itself_says_it_without_a_link_to_itself(shopper):
    added = shopper.add(KETTLE, 3)  # no next: the cart
    assert urlsplit(added.headers["Location"]).path == "/cart"
    page = shopper.client.get(added.headers["Location"])
    assert notice_on(page) == "Added 3 × Blue Kettle to your cart"
    assert notice_on(shopper.client.get("/cart")) is None  # only where the add returned


def test_the_notice_is_for_the_session_that_added_and_for_a_while(app, shopper):
    location = shopper.add(KETTLE, 2).headers["Location"]
    token = parse_qs(urlsplit(location).query)["added"][0]

    someone_else = shopper_on(app)
    someone_else.client.get("/")
    assert notice_on(someone_else.client.get(location)) is None  # a link sent to another

    forged = location.replace(f"added={KETTLE}.2.", f"added={KETTLE}.9.")
    assert forged != location and notice_on(shopper.client.get(forged)) is None
    for junk in ("", "1", "1.2.3", "x.y.z.w", "1.2.3.é", "9" * 200, token + "x"):
        page = shopper.client.get(f"/cart?added={junk}")
        assert page.status_code == 200 and notice_on(page) is None, junk

    services = app.extensions["shop"]
    issued = int(token.split(".")[2])
    services.clock = lambda: issued + ADDED_NOTICE_SECONDS
    assert notice_on(shopper.client.get(location)) is not None
    services.clock = lambda: issued + ADDED_NOTICE_SECONDS + 1  # a reload much later
    assert notice_on(shopper.client.get(location)) is None


def test_a_product_gone_since_or_an_error_page_names_nothing(app, shopper):
    shopper.add(KETTLE)
    now = app.extensions["shop"].clock()
    gone = added_token(SECRET, shopper.session_id, Added(99999, 1), now=now)
    page = shopper.client.get(f"/cart?added={gone}")
    assert page.status_code == 200 and notice_on(page) is None
    kettle = added_token(SECRET, shopper.session_id, Added(KETTLE, 1), now=now)
    assert notice_on(shopper.client.get(f"/cart?added={kettle}")) is not None
    missing = shopper.client.get(f"/no/such/page?added={kettle}")
    assert missing.status_code == 404 and notice_on(missing) is None


def test_showing_the_notice_writes_nothing_and_runs_no_sql_when_warm(app, shopper):
    location = shopper.add(KETTLE, 2, next=f"/products/{KETTLE}").headers["Location"]
    assert shopper.client.get(location).status_code == 200  # warm
    services = app.extensions["shop"]
    before = redis_snapshot(services.redis)
    counter = StatementCounter(services.engines.primary)
    for _ in range(3):
        assert notice_on(shopper.client.get(location)) is not None
    assert counter.count == 0
    assert redis_snapshot(services.redis) == before


def test_the_token_reads_back_only_as_issued():
    now = 1_800_000_000.0
    token = added_token("k", "sid", Added(7, 3), now=now)
    assert read_added("k", "sid", token, now=now + 5) == Added(7, 3)
    assert read_added("k", "sid", token, now=now - 30) == Added(7, 3)  # another clock, ahead
    assert read_added("k", "other sid", token, now=now) is None
    assert read_added("other key", "sid", token, now=now) is None
    assert read_added("k", "sid", token, now=now + ADDED_NOTICE_SECONDS + 1) is None
    assert read_added("k", "sid", None, now=now) is None
    zero = added_token("k", "sid", Added(7, 0), now=now)
    assert read_added("k", "sid", zero, now=now) is None


# -- what every page offers a keyboard, a screen reader and a phone -----------------------------


class _Page(HTMLParser):
    FOCUSABLE = {"a", "button", "input", "select", "textarea"}

    def __init__(self) -> None:
        super().__init__()
        self.in_body = False
        self.first_focusable: dict | None = None
        self.mains: list[dict] = []
        self.fields: list[dict] = []
        self.labelled: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attributes = {name: value or "" for name, value in attrs}
        if tag == "body":
            self.in_body = True
        if tag == "main":
            self.mains.append(attributes)
        if tag == "label" and "for" in attributes:
            self.labelled.add(attributes["for"])
        focusable = tag in self.FOCUSABLE and attributes.get("type") != "hidden"
        if focusable and attributes.get("tabindex") != "-1":
            if self.in_body and self.first_focusable is None:
                self.first_focusable = {"tag": tag, **attributes}
            if tag in {"input", "select", "textarea"}:
                self.fields.append(attributes)


@pytest.mark.parametrize(
    "path",
    ["/", "/?q=zeppelin", f"/products/{KETTLE}", "/cart", "/login", "/register", "/checkout",
     "/orders", "/account", "/account/sessions", "/no/such/page"],
)  # fmt: skip
def test_every_page_skips_to_its_labelled_content(shopper, path):
    shopper.register()
    shopper.add(KETTLE, 2)
    page = shopper.client.get(path)
    assert page.status_code in (200, 404)
    parsed = _Page()
    parsed.feed(page.get_data(as_text=True))
    first = parsed.first_focusable
    assert first and first["tag"] == "a" and first["href"] == "#content", first
    assert 'class="skip-link"' in page.get_data(as_text=True)
    assert [m.get("id") for m in parsed.mains] == ["content"]
    unlabelled = [
        f for f in parsed.fields if f.get("id") not in parsed.labelled and not f.get("aria-label")
    ]
    assert not unlabelled, unlabelled
