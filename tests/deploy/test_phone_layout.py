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
from tests.support.browser import SCREENSHOTS, chromium_context, serving

PHONE = {"width": 390, "height": 844}
TAP = 44  # px: Apple's and WCAG 2.5.5's minimum target size

# What a thumb presses: buttons, fields, button-like links, the navigation's links.
_TARGETS = """() => {
  const selector = 'button, input:not([type=hidden]), textarea, select, a.button, nav a';
  const found = [];
  for (const el of document.querySelectorAll(selector)) {
    if (el.closest('.skip-link') || ['checkbox', 'radio'].includes(el.type)) continue;
    const box = el.getBoundingClientRect();
    const hidden = getComputedStyle(el).visibility === 'hidden';
    if (box.width === 0 || box.height === 0 || hidden) continue;
    const name = (el.innerText || el.value || el.name || el.id || '').trim().slice(0, 30);
    found.push({what: `${el.tagName.toLowerCase()} "${name}"`, height: box.height,
                left: box.left + window.scrollX, right: box.right + window.scrollX});
  }
  return found;
}"""


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


def check_fits(page, name: str) -> None:
    """The page as a phone shows it: a screenshot, then the layout rules."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"phone-{name}.png"), full_page=True)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{name}: {width} px wide, scrolls sideways"
    targets = page.evaluate(_TARGETS)
    assert targets, f"{name}: nothing to press?"
    small = [f"{t['what']}: {t['height']:.0f} px" for t in targets if t["height"] < TAP - 0.5]
    assert not small, f"{name}: tap targets under {TAP} px high: {small}"
    outside = [t["what"] for t in targets if t["left"] < 0 or t["right"] > PHONE["width"] + 0.5]
    assert not outside, f"{name}: off the screen: {outside}"
    assert page.locator("main#content").count() == 1, f"{name}: no <main id=content>"


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
    check_fits(page, "01-grid")
    check_skip_link(page, "grid")

    page.fill("#q", "no such thing anywhere")
    submit(page, "form.search button[type=submit]")
    assert "No products match" in page.locator("main").inner_text()
    check_fits(page, "02-search-empty")

    page.goto(shop_url + "/")
    link = page.locator(".card:has(.stock-in) h2 a").first
    name = link.inner_text()
    submit(page, link)
    check_fits(page, "03-product")

    page.fill("input[name=quantity]", "2")
    submit(page, "button:has-text('Add to cart')")
    notice = page.locator("[data-testid=added]")
    assert notice.inner_text() == f"Added 2 × {name} to your cart — View cart"
    assert page.locator("[data-testid=cart-count]").inner_text() == "2"
    check_fits(page, "04-added")

    page.goto(shop_url + "/")
    submit(page, page.locator(".card:has(.stock-in) button:has-text('Add to cart')").nth(1))
    assert "Added 1 × " in page.locator("[data-testid=added]").inner_text()
    submit(page, "[data-testid=added] a")
    assert page.locator("h1").inner_text() == "Your cart"
    assert name in page.locator("main").inner_text()
    check_fits(page, "05-cart")
    check_skip_link(page, "cart")

    email = f"phone-{secrets.token_hex(4)}@example.com"
    page.goto(shop_url + "/register")
    page.fill("#email", email)
    page.fill("#password", "a long phone passphrase")
    check_fits(page, "06-register")
    submit(page, "form.stacked button[type=submit]")
    assert "We sent a message to " + email in page.content()

    page.goto(shop_url + "/login")
    page.fill("#email", email)
    page.fill("#password", "a long phone passphrase")
    check_fits(page, "07-login")
    submit(page, "form.stacked button[type=submit]")
    assert email in page.content()
    check_fits(page, "08-logged-in-grid")

    page.goto(shop_url + "/checkout")
    page.fill("#name", "Phone Shopper")
    page.fill("#address", "12 Narrow Street\nSmall Screen City")
    check_fits(page, "09-checkout")
    submit(page, "button:has-text('Place order')")
    check_fits(page, "10-after-placing")

    page.goto(shop_url + "/orders")
    check_fits(page, "11-orders")
    submit(page, page.locator("main a", has_text=re.compile(r"^Order #")).first)
    assert name in page.locator("main").inner_text()
    check_fits(page, "12-order")

    for path, step in (("/account", "13-account"), ("/account/sessions", "14-sessions")):
        page.goto(shop_url + path)
        check_fits(page, step)
