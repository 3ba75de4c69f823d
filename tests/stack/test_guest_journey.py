"""A stranger buys as a guest, in Chromium through the balancer, on a desktop (1280x800) and on
a phone (390x844, touch): the grid, a product, "Added ... View cart", the cart, checkout with
an e-mail address and a shipping address, the TEST MODE payment page, Pay, the order page
(paid, with its history); then the confirmation mail the stack's SMTP sink kept, exactly once,
whose link (the guest's access token) opens the order in a browser with no cookies, where the
bare order number does not. On the phone every page fits 390 px with 44 px targets. Each step
leaves artifacts/screenshots/journey-<device>-*.png."""

from __future__ import annotations

import re
import secrets
import time
from email.message import EmailMessage
from typing import Any

import pytest

from deploy.stack.smtp_sink import read_mail
from deploy.stack.topology import Topology
from shop.config import Settings
from tests.support.browser import PHONE, SCREENSHOTS, check_fits_phone, chromium_context

DEVICES: dict[str, dict[str, Any]] = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {"viewport": PHONE, "is_mobile": True, "has_touch": True},
}
_ORDER_PATH = re.compile(r"/orders/(\d+)$")


class Journey:
    """One device's browser tab: each step waits for the page it leads to, and leaves a
    screenshot; on the phone it also checks the page fits (``check_fits_phone``)."""

    def __init__(self, page: Any, device: str) -> None:
        self.page, self.device = page, device

    def shows(self, step: str) -> None:
        prefix = f"journey-{self.device}"
        if self.device == "phone":
            check_fits_phone(self.page, step, prefix=prefix)
        else:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(SCREENSHOTS / f"{prefix}-{step}.png"), full_page=True)

    def press(self, target: Any) -> None:
        """Tap (phone) or click (desktop) a button or link, and wait for the next page."""
        locator = self.page.locator(target) if isinstance(target, str) else target
        with self.page.expect_navigation():
            locator.tap() if self.device == "phone" else locator.click()

    def main_text(self) -> str:
        return self.page.locator("main").inner_text()


def confirmations(maildir: str, address: str) -> list[EmailMessage]:
    return [m for m in read_mail(maildir) if m["To"] == address and "confirmed" in m["Subject"]]


def wait_for_confirmation(topology: Topology, address: str, timeout: float = 30) -> EmailMessage:
    """The instances' mail workers poll the outbox every ``SHOP_MAIL_POLL_SECONDS``: wait for
    the mail with a deadline, then three more polls to see that no second copy follows."""
    maildir = topology.smtp.maildir
    env = topology.apps["app1"].env
    poll = float(env.get("SHOP_MAIL_POLL_SECONDS", Settings.mail_poll_seconds))
    deadline = time.monotonic() + timeout
    while not confirmations(maildir, address):
        assert time.monotonic() < deadline, f"no confirmation mail for {address} in {timeout} s"
        time.sleep(0.2)
    time.sleep(3 * poll)
    found = confirmations(maildir, address)
    assert len(found) == 1, [m["Subject"] for m in found]
    return found[0]


@pytest.mark.parametrize("device", DEVICES)
def test_a_guest_buys_pays_and_opens_the_order_from_the_mail(device, healthy_stack):
    base = healthy_stack.url
    email = f"guest-{device}-{secrets.token_hex(5)}@example.com"
    served: list[str] = []
    with chromium_context(**DEVICES[device]) as context:
        tab = context.new_page()
        tab.on("response", lambda r: served.append(r.headers.get("x-served-by", "")))
        journey = Journey(tab, device)

        tab.goto(base + "/")
        assert tab.locator(".card").count() > 0
        journey.shows("01-grid")

        link = tab.locator(".card:has(.stock-in) h2 a").first
        name = link.inner_text()
        journey.press(link)
        assert tab.locator("h1").inner_text() == name
        journey.shows("02-product")

        tab.fill("input[name=quantity]", "2")
        journey.press("button:has-text('Add to cart')")
        notice = tab.locator("[data-testid=added]")
        assert notice.inner_text() == f"Added 2 × {name} to your cart — View cart"
        assert tab.locator("[data-testid=cart-count]").inner_text() == "2"
        journey.shows("03-added")

        journey.press("[data-testid=added] a")
        assert tab.locator("h1").inner_text() == "Your cart"
        assert name in journey.main_text()
        journey.shows("04-cart")

        journey.press("main a.button:has-text('Check out')")
        assert tab.locator("h1").inner_text() == "Checkout"
        tab.fill("#email", email)
        tab.fill("#name", "Guest Shopper")
        tab.fill("#address", "12 Balancer Lane\nRound Robin City")
        journey.shows("05-checkout")

        journey.press("button:has-text('Place order')")
        assert "TEST MODE" in journey.main_text()
        assert "/test-payments/" in tab.url
        amount = tab.locator(".amount").inner_text()
        assert tab.locator("button[value=succeed]").inner_text() == f"Pay {amount}"
        journey.shows("06-payment")

        journey.press("button[value=succeed]")
        found = _ORDER_PATH.search(tab.url)
        assert found, tab.url
        order_id = int(found.group(1))
        text = journey.main_text()
        assert "Thank you" in text and f"Order #{order_id}" in text and name in text
        assert "Status: Paid" in text
        history = tab.locator("ol.order-history li")
        statuses = [history.nth(i).get_attribute("data-status") for i in range(history.count())]
        assert statuses == ["pending_payment", "paid"], history.all_inner_texts()
        assert ": Awaiting payment" in history.nth(0).inner_text()
        assert tab.locator("[data-testid=cart-count]").inner_text() == "0"
        journey.shows("07-paid")
    assert len({name for name in served if name}) >= 2  # no stickiness, even for a browser

    mail = wait_for_confirmation(healthy_stack, email)
    assert mail.get_content_type() == "multipart/alternative"
    plain, page = mail.get_body(("plain",)), mail.get_body(("html",))
    assert plain is not None and page is not None
    assert name in plain.get_content() and f"order {order_id}" in plain.get_content()
    links = re.findall(r"Your order: (\S+)", plain.get_content())
    assert len(links) == 1 and links[0].startswith(f"{base}/orders/{order_id}?token=")
    assert f'href="{links[0]}"' in page.get_content()

    with chromium_context(**DEVICES[device]) as stranger:  # no cookies: only the link
        tab = stranger.new_page()
        journey = Journey(tab, device)
        bare = tab.goto(f"{base}/orders/{order_id}")
        assert bare is not None and bare.status == 404
        journey.shows("08-bare-order-404")
        opened = tab.goto(links[0])
        assert opened is not None and opened.status == 200
        text = journey.main_text()
        assert f"Order #{order_id}" in text and "Status: Paid" in text and name in text
        journey.shows("09-from-mail")
