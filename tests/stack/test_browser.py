"""A real browser through the balancer: headless Chromium (Debian's), driven by Playwright,
does a shopper's journey and leaves a screenshot of each step in artifacts/screenshots/."""

from __future__ import annotations

import secrets

import pytest

from tests.support.browser import SCREENSHOTS, chromium_context


@pytest.fixture
def page(healthy_stack):
    with chromium_context(viewport={"width": 1200, "height": 900}) as context:
        yield context.new_page()


def test_a_shopper_buys_two_products_in_chromium(page, healthy_stack):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    served: list[str] = []
    page.on("response", lambda r: served.append(r.headers.get("x-served-by", "")))

    def snap(step: str) -> None:
        page.screenshot(path=str(SCREENSHOTS / f"{step}.png"), full_page=True)

    page.goto(healthy_stack.url + "/")
    assert page.locator(".card").count() > 0
    snap("01-grid")

    in_stock = page.locator(".card:has(.stock-in) h2 a")
    first_name = in_stock.nth(0).inner_text()
    second_name = in_stock.nth(1).inner_text()
    in_stock.nth(0).click()
    page.wait_for_selector("h1")
    assert page.locator("h1").inner_text() == first_name
    snap("02-product")
    page.fill("input[name=quantity]", "2")
    page.click("button:has-text('Add to cart')")
    assert page.locator("[data-testid=cart-count]").inner_text() == "2"

    page.goto(healthy_stack.url + "/")
    page.locator(".card:has(.stock-in) h2 a").nth(1).click()
    page.click("button:has-text('Add to cart')")
    assert page.locator("[data-testid=cart-count]").inner_text() == "3"
    page.click("a.cart-link")
    assert first_name in page.content() and second_name in page.content()
    snap("03-cart")

    page.click("text=Register")
    email = f"browser-{secrets.token_hex(5)}@example.com"
    page.fill("#email", email)
    page.fill("#password", "a long browser passphrase")
    snap("04-register")
    page.click("form.stacked button[type=submit]")
    assert "We sent a message to " + email in page.content()
    page.click("main a:has-text('Log in')")  # registering signs nobody in
    page.fill("#email", email)
    page.fill("#password", "a long browser passphrase")
    page.click("form.stacked button[type=submit]")
    assert email in page.content()

    page.click("a.cart-link")
    page.click("text=Check out")
    page.fill("#name", "Browser Shopper")
    page.fill("#address", "12 Chromium Way\nHeadless City")
    snap("05-checkout")
    page.click("button:has-text('Place order')")
    page.wait_for_selector("text=TEST MODE")  # the test provider's hosted page (issue 10)
    snap("06-payment")
    page.click("button:has-text('Pay')")
    page.wait_for_selector("text=Thank you")
    assert first_name in page.content() and second_name in page.content()
    assert page.locator("[data-testid=cart-count]").inner_text() == "0"
    snap("07-confirmation")
    assert len({name for name in served if name}) >= 2  # no stickiness, even for a browser
