"""The shopper's journey on a 390 px phone, drawn by Chromium: no page scrolls sideways, every
button, field and navigation link is a 44 px tap target inside the screen, the first Tab lands
on "Skip to content", and "Add to cart" says what it added. The app is the embedded default
(``make run``'s settings: SQLite, in-process fakeredis, the demo catalogue) served from a thread;
each page leaves a screenshot, artifacts/screenshots/phone-*.png."""

from __future__ import annotations

import re
import secrets

import pytest

from shop import create_app
from shop.config import Settings
from tests.support.browser import PHONE, TAP, check_fits_phone, chromium_context, serving


@pytest.fixture(scope="module")
def shop_url(tmp_path_factory):
    app = create_app(Settings(instance_path=str(tmp_path_factory.mktemp("phone"))).validated())
    with serving(app) as url:
        yield url
    app.extensions["shop"].close()


@pytest.fixture
def phone(shop_url):
    with chromium_context(viewport=PHONE, is_mobile=True, has_touch=True) as context:
        yield context.new_page()


def submit(page, target) -> None:
    """Press a button or link (a selector or a locator) and wait for the page it leads to."""
    with page.expect_navigation():
        (page.locator(target) if isinstance(target, str) else target).click()


def check_skip_link(page, name: str) -> None:
    """The first Tab lands on a visible link to the page's main content."""
    page.evaluate("window.scrollTo(0, 0)")
    page.locator("body").focus()
    page.keyboard.press("Tab")
    focused = page.evaluate(
        """() => { const el = document.activeElement, box = el.getBoundingClientRect();
                   return {text: el.innerText, href: el.getAttribute('href'),
                           top: box.top, height: box.height, width: box.width}; }"""
    )
    assert focused["text"] == "Skip to content" and focused["href"] == "#content", (name, focused)
    assert focused["top"] >= 0 and focused["height"] >= TAP and focused["width"] > 1, focused
    page.keyboard.press("Enter")
    assert page.evaluate("location.hash") == "#content"


def test_the_journey_fits_a_phone(phone, shop_url):
    page = phone
    page.goto(shop_url + "/")
    check_fits_phone(page, "01-grid")
    check_skip_link(page, "grid")

    page.fill("#q", "no such thing anywhere")
    submit(page, "form.search button[type=submit]")
    assert "No products match" in page.locator("main").inner_text()
    check_fits_phone(page, "02-search-empty")

    page.goto(shop_url + "/")
    link = page.locator(".card:has(.stock-in) h2 a").first
    name = link.inner_text()
    submit(page, link)
    check_fits_phone(page, "03-product")

    page.fill("input[name=quantity]", "2")
    submit(page, "button:has-text('Add to cart')")
    notice = page.locator("[data-testid=added]")
    assert notice.inner_text() == f"Added 2 × {name} to your cart — View cart"
    assert page.locator("[data-testid=cart-count]").inner_text() == "2"
    check_fits_phone(page, "04-added")

    page.goto(shop_url + "/")
    submit(page, page.locator(".card:has(.stock-in) button:has-text('Add to cart')").nth(1))
    assert "Added 1 × " in page.locator("[data-testid=added]").inner_text()
    submit(page, "[data-testid=added] a")
    assert page.locator("h1").inner_text() == "Your cart"
    assert name in page.locator("main").inner_text()
    check_fits_phone(page, "05-cart")
    check_skip_link(page, "cart")

    email = f"phone-{secrets.token_hex(4)}@example.com"
    page.goto(shop_url + "/register")
    page.fill("#email", email)
    page.fill("#password", "a long phone passphrase")
    check_fits_phone(page, "06-register")
    submit(page, "form.stacked button[type=submit]")
    assert "We sent a message to " + email in page.content()

    page.goto(shop_url + "/login")
    page.fill("#email", email)
    page.fill("#password", "a long phone passphrase")
    check_fits_phone(page, "07-login")
    submit(page, "form.stacked button[type=submit]")
    assert email in page.content()
    check_fits_phone(page, "08-logged-in-grid")

    page.goto(shop_url + "/checkout")
    page.fill("#name", "Phone Shopper")
    page.fill("#address", "12 Narrow Street\nSmall Screen City")
    check_fits_phone(page, "09-checkout")
    submit(page, "button:has-text('Place order')")
    assert "TEST MODE" in page.locator("main").inner_text()
    check_fits_phone(page, "10-payment")
    submit(page, "button[value=succeed]")
    assert "Thank you" in page.locator("main").inner_text()
    check_fits_phone(page, "10b-paid")

    page.goto(shop_url + "/orders")
    check_fits_phone(page, "11-orders")
    submit(page, page.locator("main a", has_text=re.compile(r"^Order #")).first)
    assert name in page.locator("main").inner_text()
    check_fits_phone(page, "12-order")

    for path, step in (("/account", "13-account"), ("/account/sessions", "14-sessions")):
        page.goto(shop_url + path)
        check_fits_phone(page, step)


def test_a_guest_checks_out_declines_then_pays_on_a_phone(phone, shop_url):
    page = phone
    page.goto(shop_url + "/")
    submit(page, page.locator(".card:has(.stock-in) button:has-text('Add to cart')").first)
    submit(page, "[data-testid=added] a")
    submit(page, "main a.button:has-text('Check out')")
    assert page.locator("#email").is_visible()  # a guest: no login asked for
    page.fill("#email", f"phone-guest-{secrets.token_hex(4)}@example.com")
    page.fill("#name", "Phone Guest")
    page.fill("#address", "3 Thumb Road\nPocket Town")
    check_fits_phone(page, "20-guest-checkout")

    submit(page, "button:has-text('Place order')")
    check_fits_phone(page, "21-guest-payment")
    submit(page, "button[value=decline]")
    assert "The payment was declined" in page.locator("main").inner_text()
    check_fits_phone(page, "22-guest-declined")

    submit(page, "main a:has-text('try again')")  # the cart is still there
    page.fill("#email", f"phone-guest-{secrets.token_hex(4)}@example.com")
    page.fill("#name", "Phone Guest")
    page.fill("#address", "3 Thumb Road\nPocket Town")
    submit(page, "button:has-text('Place order')")
    submit(page, "button[value=succeed]")
    main = page.locator("main").inner_text()
    assert "Thank you" in main and "?token=" in main  # the guest's access link, on one screen
    check_fits_phone(page, "23-guest-paid")
